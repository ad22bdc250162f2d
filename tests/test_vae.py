"""Tests for the causal video VAE: shapes, streaming == full, causality, state handling, errors."""

import pytest
import torch
from torch import nn

from aapt_world.vae import (
    CausalVideoVAE,
    DiagonalGaussian,
    LightDecoder,
    StreamState,
    VAEConfig,
    kl_divergence,
    reset_items,
)

H, W = 24, 32  # tiny frames -> latents 3 x 4
C = 4
TOL = 1e-5


def tiny_cfg(**kw) -> VAEConfig:
    base = dict(
        latent_channels=C,
        height=H,
        width=W,
        hi_channels=4,
        enc_channels=8,
        temporal_channels=16,
        dec_channels=8,
        light_temporal_channels=8,
        light_dec_channels=8,
        norm_groups=4,
    )
    return VAEConfig(**{**base, **kw})


def make_vae(light: bool = False, seed: int = 0) -> CausalVideoVAE:
    torch.manual_seed(seed)
    vae = CausalVideoVAE(tiny_cfg(light_decoder=light)).eval()
    # undo the zero init of residual branches so every path (incl. temporal) is exercised
    for m in vae.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
        elif isinstance(m, nn.GroupNorm):
            nn.init.normal_(m.weight, 1.0, 0.2)
            nn.init.normal_(m.bias, 0.0, 0.2)
    return vae


def video(b: int, t: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, H, W, generator=g) * 2 - 1


def latents(b: int, n: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, C, n, H // 8, W // 8, generator=g)


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def stream_decode(vae: CausalVideoVAE, z: torch.Tensor, state: StreamState | None = None):
    state = state or vae.init_decode_state(z.shape[0], H, W)
    outs = []
    for k in range(z.shape[2]):
        x, state = vae.decode_step(z[:, :, k : k + 1], state)
        outs.append(x)
    return outs, state


@pytest.mark.parametrize("t", [1, 5, 13])
def test_shapes(t: int) -> None:
    vae = make_vae()
    x = video(2, t)
    post = vae.encode(x)
    n = 1 + (t - 1) // 4
    assert post.mean.shape == post.logvar.shape == (2, C, n, H // 8, W // 8)
    assert vae.decode(post.mode()).shape == x.shape
    rec, post2 = vae(x)
    assert rec.shape == x.shape and isinstance(post2, DiagonalGaussian)


@pytest.mark.parametrize("light", [False, True])
@torch.no_grad()
def test_streaming_decode_matches_full(light: bool) -> None:
    vae = make_vae(light)
    assert isinstance(vae.decoder, LightDecoder) == light
    z = latents(2, 6)
    full = vae.decode(z)
    assert full.shape[2] == 1 + 4 * 5
    outs, _ = stream_decode(vae, z)
    assert all(o.shape == (2, 3, 4, H, W) for o in outs)
    # first step: all 4 slots are the reconstruction of frame 0
    for s in range(4):
        assert maxdiff(outs[0][:, :, s], full[:, :, 0]) <= TOL
    assert maxdiff(torch.cat(outs[1:], 2), full[:, :, 1:]) <= TOL


@torch.no_grad()
def test_streaming_encode_matches_full() -> None:
    vae = make_vae()
    x = video(2, 1 + 4 * 5)
    post = vae.encode(x)
    for first in (x[:, :, :1], x[:, :, :1].expand(-1, -1, 4, -1, -1), x[:, :, :4]):
        # first step reads frame slot 0 only: 1 frame, frame 0 x4, or junk in slots 1-3 all agree
        st = vae.init_encode_state(2, H, W)
        p, st = vae.encode_step(first, st)
        means, logvars = [p.mean], [p.logvar]
        for k in range(5):
            p, st = vae.encode_step(x[:, :, 1 + 4 * k : 5 + 4 * k], st)
            means.append(p.mean)
            logvars.append(p.logvar)
        assert maxdiff(torch.cat(means, 2), post.mean) <= TOL
        assert maxdiff(torch.cat(logvars, 2), post.logvar) <= TOL


@torch.no_grad()
def test_encoder_causal() -> None:
    vae = make_vae()
    x = video(1, 1 + 4 * 5)
    base = vae.encode(x).mean
    for j in (0, 3, 4, 8, 9):
        g = j // 4  # last latent whose frames (0 | 1-4 | 5-8 | ...) all lie in 0..j
        x2 = x.clone()
        x2[:, :, j + 1 :] = torch.rand_like(x2[:, :, j + 1 :])
        m = vae.encode(x2).mean
        assert maxdiff(m[:, :, : g + 1], base[:, :, : g + 1]) <= 1e-6
        assert maxdiff(m[:, :, g + 1 :], base[:, :, g + 1 :]) > 1e-3  # later latents do depend
    # and latent 0 depends only on frame 0, but does depend on it
    x3 = x.clone()
    x3[:, :, 0] = 0.0
    assert maxdiff(vae.encode(x3).mean[:, :, 0], base[:, :, 0]) > 1e-3


@torch.no_grad()
def test_decoder_causal() -> None:
    vae = make_vae()
    z = latents(1, 5)
    base = vae.decode(z)
    z2 = z.clone()
    z2[:, :, 3:] += 1.0
    out = vae.decode(z2)
    t0 = 1 + 4 * 2  # frames decoded from latents 0..2
    assert maxdiff(out[:, :, :t0], base[:, :, :t0]) <= 1e-6
    assert maxdiff(out[:, :, t0:], base[:, :, t0:]) > 1e-3


@torch.no_grad()
def test_state_snapshot_restore() -> None:
    vae = make_vae()
    z = latents(2, 6)
    _, st = stream_decode(vae, z[:, :, :3])
    snap = st.clone()
    a, _ = stream_decode(vae, z[:, :, 3:], st)
    b, _ = stream_decode(vae, z[:, :, 3:], snap)
    c, _ = stream_decode(vae, z[:, :, 3:], st)  # steps never mutate the state they were given
    for x, y, w in zip(a, b, c, strict=True):
        assert torch.equal(x, y) and torch.equal(x, w)
    # fork: a different continuation from the same snapshot diverges, the original is intact
    d, _ = stream_decode(vae, -z[:, :, 3:], snap)
    assert maxdiff(d[0], a[0]) > 1e-3
    e, _ = stream_decode(vae, z[:, :, 3:], snap)
    assert torch.equal(e[-1], a[-1])


@pytest.mark.parametrize("light", [False, True])
@torch.no_grad()
def test_reset_items_decode(light: bool) -> None:
    vae = make_vae(light)
    za, zb = latents(2, 6, seed=3), latents(1, 3, seed=4)
    ref_a = vae.decode(za[:1])  # item 0 runs uninterrupted
    ref_b = vae.decode(zb)  # item 1 restarts at step 3 with a new clip
    st = vae.init_decode_state(2, H, W)
    outs = []
    for k in range(6):
        if k == 3:
            st = reset_items(st, torch.tensor([False, True]))
            assert st.first.tolist() == [False, True]
        zk = za[:, :, k : k + 1].clone()
        if k >= 3:
            zk[1] = zb[0, :, k - 3 : k - 2]
        x, st = vae.decode_step(zk, st)
        outs.append(x)
    assert maxdiff(outs[0][:1, :, 0], ref_a[:, :, 0]) <= TOL
    assert maxdiff(torch.cat(outs[1:], 2)[:1], ref_a[:, :, 1:]) <= TOL
    for s in range(4):  # reset item on its first step: frame 0 repeated
        assert maxdiff(outs[3][1:, :, s], ref_b[:, :, 0]) <= TOL
    assert maxdiff(torch.cat(outs[4:], 2)[1:], ref_b[:, :, 1:]) <= TOL


@torch.no_grad()
def test_reset_items_encode() -> None:
    vae = make_vae()
    xa, xb = video(2, 1 + 4 * 4, seed=5), video(1, 1 + 4 * 1, seed=6)
    ref_a, ref_b = vae.encode(xa[:1]).mean, vae.encode(xb).mean
    st = vae.init_encode_state(2, H, W)
    p, st = vae.encode_step(xa[:, :, :1], st)
    means = [p.mean]
    for k in range(4):
        g = xa[:, :, 1 + 4 * k : 5 + 4 * k].clone()
        if k == 2:
            st = reset_items(st, torch.tensor([False, True]))
            g[1] = xb[0, :, :4]  # slot 0 = the new clip's frame 0; slots 1-3 are ignored
        if k == 3:
            g[1] = xb[0, :, 1:5]
        p, st = vae.encode_step(g, st)
        means.append(p.mean)
    m = torch.cat(means, 2)
    assert maxdiff(m[:1], ref_a) <= TOL
    assert maxdiff(m[1:, :, 3:], ref_b) <= TOL


def test_bad_inputs() -> None:
    vae = make_vae()
    with pytest.raises(ValueError, match="expected video"):
        vae.encode(torch.zeros(1, 3, 24, 32))
    with pytest.raises(ValueError, match="expected video"):
        vae.encode(torch.zeros(1, 1, 5, 24, 32))
    with pytest.raises(ValueError, match="divisible by 8.*H=20"):
        vae.encode(torch.zeros(1, 3, 5, 20, 32))
    with pytest.raises(ValueError, match=r"T = 1 \+ 4k.*T=6"):
        vae.encode(torch.zeros(1, 3, 6, 24, 32))
    with pytest.raises(ValueError, match="expected latents"):
        vae.decode(torch.zeros(1, C + 1, 2, 3, 4))
    st = vae.init_decode_state(1, H, W)
    with pytest.raises(ValueError, match="L=2"):
        vae.decode_step(torch.zeros(1, C, 2, 3, 4), st)
    with pytest.raises(ValueError, match="state is for"):
        vae.decode_step(torch.zeros(2, C, 1, 3, 4), st)  # batch mismatch
    with pytest.raises(ValueError, match="state is for"):
        vae.decode_step(torch.zeros(1, C, 1, 4, 4), st)  # size mismatch
    est = vae.init_encode_state(1, H, W)
    with pytest.raises(ValueError, match="state is for"):
        vae.encode_step(torch.zeros(1, 3, 1, 32, 32), est)
    with pytest.raises(ValueError, match="T=2"):
        vae.encode_step(torch.zeros(1, 3, 2, 24, 32), est)
    _, est = vae.encode_step(torch.zeros(1, 3, 1, 24, 32), est)
    with pytest.raises(ValueError, match="1-frame input"):
        vae.encode_step(torch.zeros(1, 3, 1, 24, 32), est)


def test_training_pass_and_helpers() -> None:
    vae = make_vae()
    x = video(1, 5)
    rec, post = vae(x)
    loss = (rec - x).abs().mean() + 1e-3 * post.kl()
    loss.backward()
    assert all(p.grad is not None for p in vae.parameters())
    assert kl_divergence(torch.zeros(3), torch.zeros(3)).abs().max() == 0
    assert post.sample().shape == post.mean.shape
    z = torch.randn(1, C, 2, 3, 4)
    vae.latent_scale.fill_(0.5)
    vae.latent_shift.fill_(0.3)
    assert maxdiff(vae.denormalize(vae.normalize(z)), z) <= 1e-6
    assert {"latent_scale", "latent_shift"} <= set(vae.state_dict())


def test_default_config_budget() -> None:
    vae = CausalVideoVAE()
    n_full = sum(p.numel() for p in vae.parameters())
    n_light = sum(p.numel() for p in LightDecoder(vae.cfg).parameters())
    assert n_full < 3_000_000
    assert n_light * 3 < sum(p.numel() for p in vae.decoder.parameters())
    st = vae.init_decode_state(1)
    assert st.caches[0].shape[-2:] == (12, 16)


def test_pixel_shuffle_matches_torch() -> None:
    from aapt_world.vae import pixel_shuffle

    for r, dtype in ((2, torch.float32), (4, torch.bfloat16)):
        x = torch.randn(3, 5 * r * r, 4, 6).to(dtype)
        assert torch.equal(pixel_shuffle(x, r), torch.nn.functional.pixel_shuffle(x, r))
