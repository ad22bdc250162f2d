"""The batched streaming session: shapes, exactness against the parallel model, state handling."""

from __future__ import annotations

import pytest
import torch

from aapt_world.conditions import ConditionConfig
from aapt_world.session import StreamingSession, from_uint8_frames
from aapt_world.transformer import dit_config
from aapt_world.vae import CausalVideoVAE, VAEConfig
from aapt_world.world_model import WorldModel, euler_schedule

H, W = 32, 48  # latent 4 x 6


def tiny_vae_config() -> VAEConfig:
    return VAEConfig(height=H, width=W, hi_channels=4, enc_channels=16, temporal_channels=16,
                     dec_channels=16, norm_groups=4, light_temporal_channels=8,
                     light_dec_channels=8)


@pytest.fixture(scope="module")
def models() -> tuple[WorldModel, CausalVideoVAE]:
    torch.manual_seed(0)
    cfg = dit_config("tiny", latent_height=H // 8, latent_width=W // 8, window=3)
    generator = WorldModel(cfg, ConditionConfig(kind="action", action_dim=4, hidden_dim=32,
                                                cond_dim=cfg.cond_dim)).eval()
    # zero-initialised output layers would make every rollout trivially equal: randomise them
    for p in generator.parameters():
        torch.nn.init.normal_(p, std=0.05)
    vae = CausalVideoVAE(tiny_vae_config()).eval()
    return generator, vae


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, H, W, 3), dtype=torch.uint8, generator=g)


def commands(steps: int, batch: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(steps, batch, 4, 4, generator=g) * 2 - 1


def run(session: StreamingSession, conds: torch.Tensor) -> torch.Tensor:
    return torch.stack([session.step(c) for c in conds])


def test_shapes_and_dtype(models) -> None:
    session = StreamingSession(*models, batch_size=2)
    first = session.reset(images(2))
    assert first.shape == (2, H, W, 3) and first.dtype == torch.uint8
    frames = session.step(commands(1, 2)[0])
    assert frames.shape == (2, 4, H, W, 3) and frames.dtype == torch.uint8
    assert session.timing.total > 0 and session.steps.tolist() == [1, 1]


def test_matches_parallel_generation(models) -> None:
    """The session's cached 1-NFE rollout equals running the DiT in parallel over the clip with
    the same noise and the session's own latents recycled (teacher forcing on its outputs)."""
    generator, vae = models
    steps = 8  # beyond window + 1 = 4: the window slides
    session = StreamingSession(generator, vae, batch_size=2, seed=5)
    session.reset(images(2))
    z0 = session.prev.clone()
    conds = commands(steps, 2)
    latents, noises = [], []
    for k in range(steps):
        rngs_before = [g.get_state() for g in session._rngs]
        session.step(conds[k])
        latents.append(session.prev.clone())
        gens = [torch.Generator().set_state(s) for s in rngs_before]
        noises.append(torch.stack([torch.randn(z0.shape[1:], generator=g) for g in gens]))
    with torch.no_grad():
        prev = torch.stack([z0, *latents[:-1]], dim=2)
        noise = torch.stack(noises, dim=2)
        v = generator(noise, prev, conds.transpose(0, 1), torch.ones(2))
        parallel = noise - v
    torch.testing.assert_close(parallel, torch.stack(latents, dim=2), atol=1e-5, rtol=0)


def test_multistep_sampling_matches_parallel(models) -> None:
    """N-step Euler sampling with one KV cache per step equals the parallel model run, per step
    i, over the clip with EVERY frame at t_i (stage 1's one-t-per-clip training) — past frames
    entering as their own i-th Euler iterates. Also: snapshot/fork stay exact with N caches."""
    generator, vae = models
    steps, n = 6, 3  # window 3: the caches slide
    session = StreamingSession(generator, vae, batch_size=2, seed=5, sample_steps=n,
                               timestep_shift=2.0)
    session.reset(images(2))
    z0 = session.prev.clone()
    conds = commands(steps, 2)
    ts = euler_schedule(n, 2.0).tolist()
    iterates: list[list[torch.Tensor]] = [[] for _ in range(n)]  # x^(i)_k per step i
    prev, latents = [z0], []
    for k in range(steps):
        rngs_before = [g.get_state() for g in session._rngs]
        session.step(conds[k])
        latents.append(session.prev.clone())
        gens = [torch.Generator().set_state(s) for s in rngs_before]
        x = torch.stack([torch.randn(z0.shape[1:], generator=g) for g in gens])
        with torch.no_grad():
            for i in range(n):
                iterates[i].append(x)
                v = generator(torch.stack(iterates[i], 2), torch.stack(prev, 2),
                              conds[:k + 1].transpose(0, 1), torch.full((2,), ts[i]))[:, :, -1]
                x = x + (ts[i + 1] - ts[i]) * v
        torch.testing.assert_close(session.prev, x, atol=1e-5, rtol=0)
        prev.append(x)
    snap = session.snapshot()
    fork = session.fork()
    a = run(session, conds[:3])
    session.restore(snap)
    assert torch.equal(a, run(session, conds[:3])) and torch.equal(a, run(fork, conds[:3]))
    with pytest.raises(ValueError, match="sample_steps"):
        StreamingSession(generator, vae, batch_size=1, sample_steps=0)


def test_temperature_scales_the_generators_input_noise(models) -> None:
    """temperature multiplies the noise the 1-NFE step starts from: at 0 the rollout no longer
    depends on the stream's seed, at 1 it is the default session, in between it moves."""
    generator, vae = models
    conds = commands(3, 2)

    def rollout(seed: int, temperature: float) -> torch.Tensor:
        session = StreamingSession(generator, vae, batch_size=2, seed=seed,
                                   temperature=temperature)
        session.reset(images(2))
        run(session, conds)
        return session.prev

    torch.testing.assert_close(rollout(3, 0.0), rollout(4, 0.0))  # no noise, no seed
    assert not torch.allclose(rollout(3, 1.0), rollout(4, 1.0))
    default = StreamingSession(generator, vae, batch_size=2, seed=3)
    default.reset(images(2))
    run(default, conds)
    torch.testing.assert_close(rollout(3, 1.0), default.prev)
    half = rollout(3, 0.5)
    assert not torch.allclose(half, rollout(3, 1.0)) and not torch.allclose(half, rollout(3, 0.0))
    assert default.fork().temperature == 1.0
    assert StreamingSession(generator, vae, batch_size=1, temperature=0.5).fork().temperature == 0.5
    with pytest.raises(ValueError, match="temperature"):
        StreamingSession(generator, vae, batch_size=1, temperature=-0.1)


def test_snapshot_restore_and_fork(models) -> None:
    session = StreamingSession(*models, batch_size=2)
    session.reset(images(2))
    conds = commands(6, 2)
    run(session, conds[:2])
    snap = session.snapshot()
    fork = session.fork()
    a = run(session, conds[2:])
    session.restore(snap)
    b = run(session, conds[2:])
    c = run(fork, conds[2:])
    assert torch.equal(a, b) and torch.equal(a, c)
    other = session.fork(seed=99)
    session.restore(snap)
    other.restore(snap)  # restoring brings the noise state back too
    assert torch.equal(run(other, conds[2:4]), run(session, conds[2:4]))


def test_per_item_reset_matches_fresh_stream(models) -> None:
    conds = commands(7, 2)
    batch = StreamingSession(*models, batch_size=2, seed=0)
    batch.reset(images(2))
    run(batch, conds[:3])
    untouched = batch.fork()
    restart = images(1, seed=3)
    batch.reset(restart, items=[1], seeds=[42])
    after = run(batch, conds[3:])
    alone = StreamingSession(*models, batch_size=1)
    alone.reset(restart, seeds=[42])
    expected = run(alone, conds[3:, 1:])
    torch.testing.assert_close(after[:, 1].float(), expected[:, 0].float(), atol=1, rtol=0)
    assert torch.equal(after[:, 0], run(untouched, conds[3:])[:, 0])  # item 0 unaffected


def test_reset_returns_reconstruction(models) -> None:
    generator, vae = models
    session = StreamingSession(generator, vae, batch_size=1)
    image = images(1)
    frame0 = session.reset(image)
    with torch.no_grad():
        video = from_uint8_frames(image).unsqueeze(2)
        recon = vae.decode(vae.encode(video).mode())[:, :, 0]
    expected = ((recon.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).movedim(1, -1)
    assert (frame0.int() - expected.int()).abs().max() <= 1


def test_bad_input(models) -> None:
    session = StreamingSession(*models, batch_size=2)
    with pytest.raises(RuntimeError, match="reset"):
        session.step(commands(1, 2)[0])
    with pytest.raises(ValueError, match=r"start_frames must be uint8 \(2, H, W, 3\)"):
        session.reset(images(3))
    with pytest.raises(ValueError, match="uint8"):
        session.reset(images(2).float())
    session.reset(images(2))
    with pytest.raises(ValueError, match=r"conditions must be \(2, 4, A\)"):
        session.step(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="items must index"):
        session.reset(images(1), items=[5])
    with pytest.raises(ValueError, match="wrong image size"):
        session.reset(torch.zeros(2, H + 8, W, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="one seed per"):
        session.reset(images(1), items=[0], seeds=[1, 2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_uint8_frames_round_half_up_and_leave_the_input_alone(dtype: torch.dtype) -> None:
    from aapt_world.session import to_uint8_frames

    video = (torch.randn(2, 4, 3, 8, 12) * 0.7).to(dtype)
    video[0, 0, 0, 0, :3] = torch.tensor([-3.0, 3.0, -1.0])  # out of range, and the ends
    before = video.clone()
    got = to_uint8_frames(video)
    want = ((video.float().clamp(-1, 1) + 1) * 127.5 + 0.5).floor().to(torch.uint8)
    assert got.shape == (2, 4, 8, 12, 3) and got.is_contiguous()
    assert torch.equal(got, want.movedim(-3, -1)) and torch.equal(video, before)
    assert got[0, 0, 0, :3, 0].tolist() == [0, 255, 0]


def test_non_finite_check_names_the_streams() -> None:
    from aapt_world.session import NonFiniteError, check_finite

    x = torch.zeros(3, 4, 2, 5).transpose(1, 2)  # strided, as the decoder's frames
    check_finite(x, "the decoded frame", torch.zeros(3, dtype=torch.long))
    x[2, 1, 3, 4] = float("inf")
    with pytest.raises(NonFiniteError, match=r"decoded frame is not finite .*streams \[2\]"):
        check_finite(x, "the decoded frame", torch.zeros(3, dtype=torch.long))


def test_guidance_mixes_conditioned_and_null_predictions(models) -> None:
    """guidance w: every step is v_null + w (v_cond - v_null), both from streams fed the same
    (guided) frames — equal to the parallel model run with and without conditions; w = 1 is
    the plain session; item resets restart a stream's null twin too; fork keeps w."""
    generator, vae = models
    steps, w = 6, 3.0  # window 3: the caches slide
    session = StreamingSession(generator, vae, batch_size=2, seed=5, guidance=w)
    session.reset(images(2))
    z0 = session.prev.clone()
    conds = commands(steps, 2)
    latents, noises = [], []
    for k in range(steps):
        gens = [torch.Generator().set_state(g.get_state()) for g in session._rngs]
        noises.append(torch.stack([torch.randn(z0.shape[1:], generator=g) for g in gens]))
        session.step(conds[k])
        latents.append(session.prev.clone())
    with torch.no_grad():
        prev = torch.stack([z0, *latents[:-1]], dim=2)
        noise = torch.stack(noises, dim=2)
        frame_conds = conds.transpose(0, 1)
        v_cond = generator(noise, prev, frame_conds, torch.ones(2))
        v_null = generator(noise, prev, frame_conds, torch.ones(2),
                           null=torch.ones(2, dtype=torch.bool))
        parallel = noise - (v_null + w * (v_cond - v_null))
    torch.testing.assert_close(parallel, torch.stack(latents, dim=2), atol=1e-5, rtol=0)
    assert not torch.allclose(v_cond, v_null)  # the null condition is another input

    plain = StreamingSession(generator, vae, batch_size=2, seed=5)
    one = StreamingSession(generator, vae, batch_size=2, seed=5, guidance=1.0)
    for s in (plain, one):
        s.reset(images(2))
        run(s, conds)
    torch.testing.assert_close(plain.prev, one.prev, atol=0, rtol=0)
    assert session.cache.batch_size == 4 and plain.cache.batch_size == 2

    # restarting stream 1 restarts its twin: it then rolls out as a fresh guided stream would
    session.reset(images(1, seed=9), items=torch.tensor([1]), seeds=[11])
    fresh = StreamingSession(generator, vae, batch_size=1, seed=11, guidance=w)
    fresh.reset(images(1, seed=9))
    for k in range(3):
        session.step(conds[k])
        fresh.step(conds[k, 1:])
    torch.testing.assert_close(session.prev[1:], fresh.prev, atol=1e-5, rtol=0)
    assert session.fork().guidance == w
    with pytest.raises(ValueError, match="guidance"):
        StreamingSession(generator, vae, batch_size=1, guidance=-1.0)
