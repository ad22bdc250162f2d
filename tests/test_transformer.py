"""Block-causal DiT: cached step == parallel forward, causality, window, reset, grads, long run."""

import pytest
import torch

from aapt_world.attention import Attention, flash_available, frame_visibility, parallel_layout
from aapt_world.transformer import BlockCausalDiT, count_parameters, dit_config, step_flops

TOL = 1e-5


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny ops run fastest (and robustly on a shared 2-core box) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(**overrides) -> BlockCausalDiT:
    """Tiny model with the zero-initialised (adaLN-Zero) weights randomised, so that every path
    actually carries signal."""
    torch.manual_seed(0)
    cfg = dit_config("tiny", **overrides)
    model = BlockCausalDiT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return model


def clip(model, batch, frames, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    shape = (batch, cfg.latent_channels, frames, cfg.latent_height, cfg.latent_width)
    return dict(
        noisy=torch.randn(shape, generator=g),
        prev=torch.randn(shape, generator=g),
        cond=torch.randn(batch, frames, cfg.cond_dim, generator=g),
        t=torch.rand(batch, frames, generator=g),
    )


def rollout(model, inputs, cache=None, start=0, stop=None):
    """Cached step-by-step outputs (B, C, T, h, w) for frames start..stop-1."""
    stop = inputs["noisy"].shape[2] if stop is None else stop
    if cache is None:
        cache = model.init_cache(inputs["noisy"].shape[0])
    outs = [
        model.step(inputs["noisy"][:, :, k], inputs["prev"][:, :, k], inputs["cond"][:, k],
                   inputs["t"][:, k], cache)
        for k in range(start, stop)
    ]
    return torch.stack(outs, dim=2)


def parallel(model, inputs, **kw):
    return model(inputs["noisy"], inputs["prev"], inputs["cond"], inputs["t"], **kw)


def select(inputs, items, frames=slice(None)):
    out = {}
    for key, x in inputs.items():
        if x is None:
            out[key] = None
        elif key in ("noisy", "prev"):
            out[key] = x[items][:, :, frames]
        else:
            out[key] = x[items][:, frames]
    return out


def test_frame_visibility():
    vis = frame_visibility(7, 2)
    assert vis[0].tolist() == [True] + [False] * 6
    assert vis[3].tolist() == [True, True, True, True, False, False, False]
    assert vis[6].tolist() == [True, False, False, False, True, True, True]


def test_parallel_layout_mask():
    t, n, window = 9, 2, 3
    lay = parallel_layout(t, n, window)
    copies = lay.num_offsets
    assert copies == t - window - 1
    per_copy = n  # each copy: the sink frame's tokens
    mask = lay.mask
    assert mask.shape == (t * n, copies * per_copy + (t - 1) * n)
    vis = frame_visibility(t, window)
    for q in range(t):
        row = mask[q * n]
        assert torch.equal(mask[q * n : (q + 1) * n], row.expand(n, -1))
        seen_copies = [o for o in range(copies) if row[o * per_copy : (o + 1) * per_copy].all()]
        assert seen_copies == [max(0, q - window - 1)]
        assert row[: copies * per_copy].sum() == per_copy  # nothing else from the copies
        frames = row[copies * per_copy :].view(t - 1, n)
        assert torch.equal(frames.all(1), vis[q, 1:]) and torch.equal(frames.any(1), vis[q, 1:])
        assert lay.query_time[q * n] == q
    # copy o sits at temporal position o: the sink is always q - offset(q) <= N + 1 behind
    assert lay.key_time[: copies * per_copy].view(copies, per_copy)[:, 0].tolist() == list(
        range(copies))


def test_attention_backends():
    attn = Attention(32, 4, backend="auto")  # auto: SDPA whenever flash-attn can't be used
    q, k, v = attn.project(torch.randn(2, 5, 32))
    assert attn.output(attn.attend(q, k, v)).shape == (2, 5, 32)
    if not flash_available():
        with pytest.raises(ImportError):
            Attention(32, 4, backend="flash")
    with pytest.raises(ValueError):
        Attention(32, 4, backend="xformers")


def test_zero_init_outputs_zero():
    cfg = dit_config("tiny")
    model = BlockCausalDiT(cfg)
    inputs = clip(make_model(), 1, 3)
    v = model(inputs["noisy"], inputs["prev"], inputs["cond"], 1.0)
    assert v.shape == inputs["noisy"].shape and not v.any()


@pytest.mark.parametrize("frames", [4, 12])  # window 3: 4 = N + 1 (no sliding), 12 = slides
def test_step_matches_parallel(frames):
    model = make_model()
    inputs = clip(model, batch=2, frames=frames)
    with torch.no_grad():
        v_par, hid_par = parallel(model, inputs, return_hidden=[0, -1])
        cache = model.init_cache(2)
        v_steps, hid_steps = [], []
        for k in range(frames):
            v, hid = model.step(inputs["noisy"][:, :, k], inputs["prev"][:, :, k],
                                inputs["cond"][:, k], inputs["t"][:, k], cache,
                                return_hidden=[0, -1])
            v_steps.append(v)
            hid_steps.append(hid)
    assert (torch.stack(v_steps, 2) - v_par).abs().max() < TOL
    assert v_par.abs().mean() > 0.05  # the comparison is not trivial
    for layer in range(2):
        h_step = torch.cat([h[layer] for h in hid_steps], dim=1)
        assert h_step.shape == hid_par[layer].shape == (2, frames, 4, model.cfg.dim)
        assert (h_step - hid_par[layer]).abs().max() < TOL


def test_scalar_and_per_item_timesteps():
    model = make_model()
    inputs = clip(model, 2, 5)
    with torch.no_grad():
        a = model(inputs["noisy"], inputs["prev"], inputs["cond"], 0.3)
        b = model(inputs["noisy"], inputs["prev"], inputs["cond"], torch.full((2,), 0.3))
        c = model(inputs["noisy"], inputs["prev"], inputs["cond"], torch.full((2, 5), 0.3))
    assert torch.equal(a, b) and torch.equal(a, c)


def test_per_item_reset_matches_fresh_rollout():
    model = make_model()
    total, reset_at = 14, 5
    inputs = clip(model, 2, total)
    with torch.no_grad():
        cache = model.init_cache(2)
        before = rollout(model, inputs, cache, 0, reset_at)
        cache.reset(torch.tensor([False, True]))
        after = rollout(model, inputs, cache, reset_at, total)
        alone_0 = rollout(model, select(inputs, [0]))
        alone_1 = rollout(model, select(inputs, [1], slice(reset_at, total)))
    assert (torch.cat([before, after], 2)[0:1] - alone_0).abs().max() < TOL
    assert (after[1:2] - alone_1).abs().max() < TOL


def test_causality():
    model = make_model()
    inputs = clip(model, 2, 8)
    j = 5
    changed = {k: (v.clone() if v is not None else None) for k, v in inputs.items()}
    changed["noisy"][:, :, j] += 1.0
    changed["cond"][:, j] += 1.0
    with torch.no_grad():
        a, b = parallel(model, inputs), parallel(model, changed)
    assert torch.equal(a[:, :, :j], b[:, :, :j])
    assert (a[:, :, j] - b[:, :, j]).abs().max() > 1e-3


def test_window_limits_receptive_field():
    model = make_model()
    n, depth, frames, j = model.cfg.window, model.cfg.depth, 14, 2
    inputs = clip(model, 1, frames)
    changed = {k: (v.clone() if v is not None else None) for k, v in inputs.items()}
    changed["noisy"][:, :, j] += 1.0
    with torch.no_grad():
        a, b = parallel(model, inputs), parallel(model, changed)
    diff = (a - b).abs().amax(dim=(0, 1, 3, 4))
    reach = j + depth * n  # each layer looks back at most N frames (the sink aside)
    assert (diff[j : j + n + 1] > 1e-4).all()
    assert (diff[reach + 1 :] == 0).all()
    # the sink is always visible
    sink = {k: (v.clone() if v is not None else None) for k, v in inputs.items()}
    sink["prev"][:, :, 0] += 1.0
    with torch.no_grad():
        c = parallel(model, sink)
    assert ((a - c).abs().amax(dim=(0, 1, 3, 4)) > 1e-4).all()


def test_positions_are_window_relative():
    """One layer: frame q far beyond the window sees exactly what the last frame of the short
    clip [sink, q-N .. q] sees - temporal positions never exceed N + 1."""
    model = make_model(depth=1)
    n, q = model.cfg.window, 11
    inputs = clip(model, 2, q + 1)
    keep = [0, *range(q - n, q + 1)]
    short = {k: (None if v is None else v[:, :, keep] if v.dim() == 5 else v[:, keep])
             for k, v in inputs.items()}
    with torch.no_grad():
        long_out = parallel(model, inputs)[:, :, q]
        short_out = parallel(model, short)[:, :, -1]
    assert (long_out - short_out).abs().max() < TOL


def test_gradients_flow_through_cache():
    model = make_model().train()
    inputs = clip(model, 2, 7)
    noisy0 = inputs["noisy"][:, :, 0].clone().requires_grad_(True)
    cache = model.init_cache(2)
    model.step(noisy0, inputs["prev"][:, :, 0], inputs["cond"][:, 0], inputs["t"][:, 0], cache)
    v = rollout(model, inputs, cache, 1, 7)
    loss = v[:, :, -1].square().mean()  # only the last step's output
    loss.backward()
    # frame 0 influences step 6 only through keys/values written into the cache at step 0
    assert noisy0.grad is not None and noisy0.grad.abs().sum() > 0
    step_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert all(g.isfinite().all() for g in step_grads.values())
    # the same loss through the parallel forward gives the same parameter gradients
    model.zero_grad()
    noisy = torch.cat([noisy0.detach()[:, :, None], inputs["noisy"][:, :, 1:]], 2)
    par_in = dict(inputs, noisy=noisy)
    parallel(model, par_in)[:, :, 6].square().mean().backward()
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, step_grads[name], atol=1e-5, rtol=1e-4), name


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_ten_thousand_step_rollout_is_stable_and_bounded():
    model = make_model()
    cfg = model.cfg
    period = 7  # frame f >= 1 gets input pool[f % period]: windows repeat, so outputs must too
    g = torch.Generator().manual_seed(3)
    shape = (1, cfg.latent_channels, cfg.latent_height, cfg.latent_width)
    pool = [(torch.randn(shape, generator=g), torch.randn(shape, generator=g),
             torch.randn(1, cfg.cond_dim, generator=g)) for _ in range(period)]
    steps = 10_000
    # probe: past the receptive field (depth * N frames), same input pattern as the last step
    probe = 6 * period + (steps - 1) % period
    with torch.inference_mode():
        cache = model.init_cache(1)
        ptrs = [t.data_ptr() for t in cache.k + cache.v]
        shapes = [t.shape for t in cache.k + cache.v]
        early = late = None
        rss_1000 = 0.0
        for f in range(steps):
            noisy, prev, cond = pool[f % period]
            v = model.step(noisy, prev, cond, 1.0, cache)
            if f == probe:
                early = v.clone()
            if f == 1000:
                rss_1000 = _rss_mb()
            if f % 1000 == 0:
                assert torch.isfinite(v).all()
        late = v
    assert torch.isfinite(late).all()
    assert (late - early).abs().max() < TOL  # step 9999 sees exactly what step 45 saw
    assert [t.data_ptr() for t in cache.k + cache.v] == ptrs
    assert [t.shape for t in cache.k + cache.v] == shapes
    assert _rss_mb() - rss_1000 < 50


def test_validation_and_accounting():
    model = make_model()
    inputs = clip(model, 1, 2)
    with pytest.raises(ValueError):
        model(inputs["noisy"], inputs["prev"], inputs["cond"][:, :1], 1.0)
    small = dit_config("small")
    assert small.tokens_per_frame == 48
    assert count_parameters(model) > 0 and step_flops(small) > 0
