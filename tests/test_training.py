"""The training stack end to end on a tiny dataset recorded from the real game.

Every stage in order (vae -> latents -> diffusion -> consistency -> heads -> adversarial),
resume after ``kill -9`` (bit-exact against an uninterrupted run), student forcing == inference,
segment detaching, the ablation and long-video variants, and clear errors for bad configs.
All runs are tiny (64x48 video, a 2-block DiT, batch 2, a few steps) and single-threaded.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from training_run import (
    PIPELINE_STEPS,
    TRAINED_STAGES,
    fresh_run_dir,
    make_cfg,
    overrides,
    randomize,
)

from aapt_world.checkpoint import load_weights
from aapt_world.discriminator import Discriminator
from aapt_world.session import StreamingSession
from aapt_world.vae import CausalVideoVAE
from training.batches import latent_batch
from training.config import TrainConfig
from training.dataset import DatasetError
from training.latents import LatentClipDataset
from training.models import build_world_model
from training.stages import adversarial as adv
from training.stages.diffusion import diffusion_loss
from training.train import run_stage
from training.trainer import autocast, read_log

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- every stage, end to end -------------------------------------------------------------------


def test_every_stage_writes_checkpoint_and_finite_logs(pipeline: dict) -> None:
    out = pipeline["out"]
    for stage in TRAINED_STAGES:
        d = out / stage
        assert (d / "model.safetensors").exists() and (d / "trainer_state.pt").exists(), stage
        rows = read_log(d / "log.csv")
        steps = PIPELINE_STEPS[stage]
        assert [int(r["step"]) for r in rows] == list(range(1, steps + 1)), stage
        for row in rows:
            assert all(math.isfinite(v) for v in row.values()), (stage, row)
        state = torch.load(d / "trainer_state.pt", weights_only=True)
        assert state["step"] == steps
        tensors, meta = load_weights(d / "model.safetensors")
        assert meta["step"] == steps and meta["stage"] == stage
        assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())
        val = read_log(d / "val_log.csv")  # evaluated once, at the last step
        assert len(val) == 1 and all(math.isfinite(v) for v in val[0].values())
    assert {"loss", "psnr"} <= set(read_log(out / "vae" / "log.csv")[0])
    assert {"d_loss", "g_loss", "r1", "r2"} <= set(read_log(out / "adversarial" / "log.csv")[0])
    latents = out / "latents"
    assert (latents / "stats.json").exists()
    assert len(list(latents.glob("ep_*.first.npy"))) == 4
    assert pipeline["metrics"]["latents"]["episodes"] == 4


def test_diffusion_loss_decreases(pipeline: dict, data_root: Path) -> None:
    """Fixed clips, timesteps and noise: the trained stage-1 model beats its initialisation
    (zero output layer, v = 0), which it cannot do if the optimizer never stepped."""
    out = pipeline["out"]
    cfg = make_cfg(overrides(data_root, out, "stage=diffusion"))
    data = LatentClipDataset(out / "latents", data_root, cfg.data.clip_steps, "train")
    batch = latent_batch(data, np.random.default_rng(5), 8, torch.device("cpu"))
    z, conds = batch.latents, batch.conds

    def loss_of(model: torch.nn.Module) -> float:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return float(np.mean([diffusion_loss(model, z, conds, torch.full((8,), t), gen).item()
                                  for t in (0.3, 0.6, 0.9)]))

    initial = build_world_model(cfg).eval()
    trained = build_world_model(cfg).eval()
    tensors, _ = load_weights(out / "diffusion" / "model.safetensors")
    trained.load_state_dict({k[len("model."):]: v for k, v in tensors.items()})
    before, after = loss_of(initial), loss_of(trained)
    assert after < 0.8 * before, (before, after)
    rows = read_log(out / "diffusion" / "log.csv")
    first, last = np.mean([r["loss"] for r in rows[:5]]), np.mean([r["loss"] for r in rows[-5:]])
    assert last < first, (first, last)


def test_exported_world_matches_training(pipeline: dict, data_root: Path) -> None:
    """stage=export: the world holds the adversarial generator and the latent normalisation
    the DiT stages trained with (a start frame encodes to its cached, normalised latent)."""
    from aapt_world.world import load_world

    out = pipeline["out"]
    world = load_world(out / "world")
    trained, _ = load_weights(out / "adversarial" / "model.safetensors")
    for key, value in world.generator.state_dict().items():  # fp16 in the bundle
        torch.testing.assert_close(value, trained[f"generator.{key}"], atol=1e-3, rtol=1e-3)
    data = LatentClipDataset(out / "latents", data_root, 1, "val")
    episode = data.clips.episodes[0]
    frame0 = np.asarray(episode.arrays["frames"][0])
    assert np.array_equal(world.start_frames[0], frame0)
    expected = (data.first[episode.id][0].astype(np.float32) - data.mean) / data.std
    session = StreamingSession(world.generator, world.vae, batch_size=1)
    session.reset(torch.from_numpy(frame0[None].copy()))
    torch.testing.assert_close(session.prev[0], torch.from_numpy(expected), atol=0.05, rtol=0.02)


def test_export_baselines_and_their_sampling(pipeline: dict, data_root: Path,
                                             tmp_path: Path) -> None:
    """export.source picks the stage; the diffusion baseline is sampled with N Euler steps."""
    from aapt_world.world import load_world

    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents", "diffusion", "consistency")
    run_stage(make_cfg(overrides(data_root, out, "stage=export", "export.source=diffusion",
                                 "export.sample_steps=4", "diffusion.timestep_shift=2.0")))
    run_stage(make_cfg(overrides(data_root, out, "stage=export")))  # auto: latest = consistency
    diffusion, latest = load_world(out / "world-diffusion"), load_world(out / "world")
    assert (diffusion.config.sample_steps, diffusion.config.timestep_shift) == (4, 2.0)
    assert latest.config.sample_steps == 1 and latest.card["generator_stage"] == "consistency"
    trained, _ = load_weights(out / "diffusion" / "model.safetensors")
    for key, value in diffusion.generator.state_dict().items():
        torch.testing.assert_close(value, trained[f"model.{key}"], atol=1e-3, rtol=1e-3)
    session = diffusion.session(1)
    assert len(session.timesteps) == 5 and session.sample_steps == 4
    with pytest.raises(FileNotFoundError, match="export.source=adversarial"):
        run_stage(make_cfg(overrides(data_root, out, "stage=export",
                                     "export.source=adversarial")))


def test_max_minutes_stops_with_a_checkpoint_and_lr_decays(pipeline: dict, data_root: Path,
                                                          tmp_path: Path) -> None:
    from training.trainer import warmup_lr

    out = fresh_run_dir(pipeline, tmp_path, "latents")
    items = ["stage=diffusion", "run.steps=50", "run.ckpt_every=100"]
    run_stage(make_cfg(overrides(data_root, out, *items, "run.max_minutes=1e-9")))
    assert [row["step"] for row in read_log(out / "diffusion" / "log.csv")] == [1]
    assert torch.load(out / "diffusion" / "trainer_state.pt", weights_only=False)["step"] == 1
    run_stage(make_cfg(overrides(data_root, out, *items[:1], "run.steps=3")))  # resumes
    assert [row["step"] for row in read_log(out / "diffusion" / "log.csv")] == [1, 2, 3]
    cfg = make_cfg(overrides(data_root, out, "optim.lr=1.0", "optim.decay_start=10",
                             "optim.decay_steps=10", "optim.min_lr_ratio=0.1"))
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    lrs = []
    for step in (5, 10, 15, 20, 30):
        warmup_lr(opt, cfg.optim, step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 1.0, 0.55, 0.1, 0.1])


# -- resume after kill -9 --------------------------------------------------------------------------


def test_resume_after_kill_matches_uninterrupted(pipeline: dict, data_root: Path,
                                                 tmp_path: Path) -> None:
    killed = fresh_run_dir(pipeline, tmp_path / "killed", "latents")
    straight = fresh_run_dir(pipeline, tmp_path / "straight", "latents")
    base = ["stage=diffusion", "run.ckpt_every=5", "run.seed=3"]
    command = [sys.executable, "-m", "training.train",
               *overrides(data_root, killed, *base)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    state_path = killed / "diffusion" / "trainer_state.pt"
    proc = subprocess.Popen([*command, "run.steps=400"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not state_path.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    killed_at = time.time()
    saved = int(torch.load(state_path, weights_only=True)["step"])
    assert saved % 5 == 0 and 5 <= saved < 400
    steps = saved + 7  # resume, pass a checkpoint, end off the checkpoint grid
    done = subprocess.run([*command, f"run.steps={steps}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = read_log(killed / "diffusion" / "log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))  # continues, no repeats
    assert all(r["time"] < killed_at for r in rows if r["step"] <= saved)  # kept from run 1
    assert all(r["time"] > killed_at for r in rows if r["step"] > saved)  # resumed after it
    assert torch.load(state_path, weights_only=True)["step"] == steps

    run_stage(make_cfg(overrides(data_root, straight, *base, f"run.steps={steps}")))
    resumed, meta = load_weights(killed / "diffusion" / "model.safetensors")
    reference, _ = load_weights(straight / "diffusion" / "model.safetensors")
    assert meta["step"] == steps and resumed.keys() == reference.keys()
    different = [k for k in reference if not torch.equal(resumed[k], reference[k])]
    assert not different, f"resumed weights differ from the uninterrupted run: {different[:5]}"
    ref_rows = read_log(straight / "diffusion" / "log.csv")
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]


def test_resume_repairs_stale_export(pipeline: dict, data_root: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    """A kill between trainer_state.pt and model.safetensors: the state wins, the export is
    rewritten, and the already finished run does not train again."""
    out = fresh_run_dir(pipeline, tmp_path, "latents", "diffusion", "consistency")
    d = out / "consistency"
    stale = load_weights(d / "model.safetensors")[0]
    (d / "model.safetensors").unlink()
    cfg = make_cfg(overrides(data_root, out, "stage=consistency",
                             f"run.steps={PIPELINE_STEPS['consistency']}"))
    orphan = d / ".trainer_state.pt.x1y2.tmp"  # a kill during atomic_replace leaves one
    orphan.write_bytes(b"half a checkpoint")
    assert run_stage(cfg) == {}  # nothing left to train
    assert not orphan.exists()
    err = capsys.readouterr().err
    assert (f"consistency: resumed at step {PIPELINE_STEPS['consistency']}" in err
            and "already reached: nothing to train" in err)
    tensors, meta = load_weights(d / "model.safetensors")
    assert meta["step"] == PIPELINE_STEPS["consistency"]
    assert all(torch.equal(tensors[k], stale[k]) for k in stale)


# -- student forcing == inference --------------------------------------------------------------


def tiny_models(data_root: Path, tmp_path: Path) -> tuple[TrainConfig, torch.nn.Module,
                                                          CausalVideoVAE]:
    cfg = make_cfg(overrides(data_root, tmp_path, "stage=adversarial"))
    generator = randomize(build_world_model(cfg), seed=1)
    vae = CausalVideoVAE(cfg.model.vae).eval()
    return cfg, generator, vae


@pytest.mark.parametrize(("context_noise", "sample_steps", "guidance"),
                         [(0.0, 1, 1.0), (0.25, 1, 1.0), (0.25, 3, 2.5)],
                         ids=["1nfe", "context_noise", "3nfe_guided"])
def test_student_rollout_equals_streaming_session(data_root: Path, tmp_path: Path,
                                                  context_noise: float, sample_steps: int,
                                                  guidance: float) -> None:
    """Stage 3's student rollout is the world's inference, step for step — also when the
    world runs with context noise on its recycled frame (adversarial.context_noise), and with
    the N-step guided sampler of a stage-1 dream (what heads.sample_steps rolls out)."""
    cfg = make_cfg(overrides(data_root, tmp_path, "stage=adversarial",
                             "model.dit.context_noise_buckets=10"))
    generator = randomize(build_world_model(cfg), seed=1)
    vae = CausalVideoVAE(cfg.model.vae).eval()
    steps, batch = cfg.model.dit.window + 4, 2  # past window + 1 ring slots: the window slides
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 48, 64, 3), dtype=torch.uint8, generator=g)
    conds = torch.rand(batch, steps, 4, cfg.world.action_dim, generator=g) * 2 - 1

    session = StreamingSession(generator, vae, batch_size=batch, seed=11,
                               sample_steps=sample_steps, timestep_shift=3.0,
                               context_noise=context_noise, guidance=guidance)
    session.reset(images)
    start = session.prev.clone()
    # each stream draws its noise from its own generator (see test_session.py), then its
    # context noise when the level is > 0: replay both
    replay = [torch.Generator().set_state(r.get_state()) for r in session._rngs]
    draws = 2 if context_noise > 0 else 1
    per_step = [[torch.stack([torch.randn(start.shape[1:], generator=r) for r in replay])
                 for _ in range(draws)] for _ in range(steps)]
    noise = torch.stack([d[0] for d in per_step], dim=2)
    eps = torch.stack([d[-1] for d in per_step], dim=2) if context_noise > 0 else None

    generator.train()
    frames, cache = adv.student_rollout(generator, start, conds, noise,
                                        context_noise=context_noise, context_eps=eps,
                                        timesteps=session.timesteps, guidance=guidance)
    assert frames.requires_grad  # the training path is differentiable
    assert cache.step_count == steps

    latents = []
    for k in range(steps):
        session.step(conds[:, k])
        latents.append(session.prev.clone())
    torch.testing.assert_close(frames.detach(), torch.stack(latents, dim=2), atol=1e-5, rtol=0)


def test_model_used_for_inference_can_still_train(data_root: Path, tmp_path: Path) -> None:
    """A model that streamed under inference_mode (its RoPE tables cached then) still trains."""
    cfg, generator, vae = tiny_models(data_root, tmp_path)
    session = StreamingSession(generator, vae, batch_size=1)
    session.reset(torch.zeros(1, 48, 64, 3, dtype=torch.uint8))
    session.step(torch.zeros(1, 4, cfg.world.action_dim))
    c, h, w = cfg.model.dit.latent_channels, cfg.model.dit.latent_height, cfg.model.dit.latent_width
    frames, _ = adv.student_rollout(generator, torch.zeros(1, c, h, w),
                                    torch.zeros(1, 2, 4, cfg.world.action_dim),
                                    torch.randn(1, c, 2, h, w))
    frames.sum().backward()


# -- gradients through the cache, cut between segments ------------------------------------------


def test_segments_detach_and_gradient_flows_through_cache(data_root: Path,
                                                          tmp_path: Path) -> None:
    cfg, generator, _ = tiny_models(data_root, tmp_path)
    c, h, w = cfg.model.dit.latent_channels, cfg.model.dit.latent_height, cfg.model.dit.latent_width
    k, a = 3, cfg.world.action_dim
    g = torch.Generator().manual_seed(0)
    start = torch.randn(1, c, h, w, generator=g)
    conds1, conds2 = (torch.rand(1, k, 4, a, generator=g) for _ in range(2))
    noise1_data, noise2 = (torch.randn(1, c, k, h, w, generator=g) for _ in range(2))

    def segment_one():
        noise1 = noise1_data.clone().requires_grad_(True)
        frames1, cache = adv.student_rollout(generator, start, conds1, noise1)
        return noise1, frames1, cache

    # within a segment: the recycled frame is detached, so the last frame's loss reaches the
    # first step's input (its noise) only through the cached keys/values of that step; the
    # earlier OUTPUT frames get nothing (they are only recycled, detached)
    noise1, frames1, _ = segment_one()
    g_noise, g_frames = torch.autograd.grad(frames1[:, :, -1].square().sum(), [noise1, frames1])
    assert g_noise[:, :, 0].abs().sum() > 0
    assert g_frames[:, :, 0].abs().sum() == 0 and g_frames[:, :, -1].abs().sum() > 0

    # across segments WITHOUT detach_: the second segment's loss reaches segment one
    noise1, frames1, cache = segment_one()
    frames2, _ = adv.student_rollout(generator, frames1[:, :, -1], conds2, noise2, cache)
    linked = torch.autograd.grad(frames2.square().sum(), noise1, allow_unused=True)[0]
    assert linked is not None and linked.abs().sum() > 0

    # with detach_ (what long-video training does): no gradient path into segment one, while
    # the generator's parameters still learn from segment two
    noise1, frames1, cache = segment_one()
    cache.detach_()
    frames2, cache2 = adv.student_rollout(generator, frames1[:, :, -1], conds2, noise2, cache)
    params = [p for p in generator.parameters()]
    grads = torch.autograd.grad(frames2.square().sum(), [noise1, *params], allow_unused=True)
    assert grads[0] is None
    assert sum(gr.abs().sum() for gr in grads[1:] if gr is not None) > 0
    assert cache2.step_count == 2 * k  # the cache continued (window slides), not restarted


# -- the adversarial update ------------------------------------------------------------------------


def test_segment_update_penalties_and_steps(data_root: Path, tmp_path: Path) -> None:
    """R1/R2 compare D(x) with D(x + sigma n) under the SAME t and D-noise: at sigma = 0 both
    vanish exactly. Both players step; D's update leaves G alone and G's leaves D alone."""
    cfg, generator, _ = tiny_models(data_root, tmp_path)
    cfg.adversarial.r1_sigma = 0.0
    disc = Discriminator(randomize(build_world_model(cfg), seed=2), cfg.adversarial.disc_layers,
                         cfg.adversarial.disc_queries)
    g_opt = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.0, 0.9))
    d_opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.0, 0.9))
    c, h, w = cfg.model.dit.latent_channels, cfg.model.dit.latent_height, cfg.model.dit.latent_width
    g = torch.Generator().manual_seed(0)
    real = torch.randn(2, c, 3, h, w, generator=g)
    conds = torch.rand(2, 2, 4, cfg.world.action_dim, generator=g)
    frames, _ = adv.student_rollout(generator, real[:, :, 0], conds,
                                    torch.randn(2, c, 2, h, w, generator=g))
    fake = torch.cat([real[:, :, :1], frames], dim=2)
    g_before = [p.detach().clone() for p in generator.parameters()]
    d_before = [p.detach().clone() for p in disc.parameters()]
    m = adv.segment_update(cfg, generator, disc, g_opt, d_opt, 0, real, conds, fake, conds,
                           np.random.default_rng(0))
    assert m["r1"] == 0.0 and m["r2"] == 0.0
    assert all(math.isfinite(v) for v in m.values())
    assert any(not torch.equal(p, q) for p, q in zip(generator.parameters(), g_before))
    assert any(not torch.equal(p, q) for p, q in zip(disc.parameters(), d_before))
    assert all(p.requires_grad for p in disc.parameters())  # re-enabled after G's update
    cfg.adversarial.r1_sigma = 0.1
    frames, _ = adv.student_rollout(generator, real[:, :, 0], conds,
                                    torch.randn(2, c, 2, h, w, generator=g))
    fake = torch.cat([real[:, :, :1], frames], dim=2)
    m = adv.segment_update(cfg, generator, disc, g_opt, d_opt, 1, real, conds, fake, conds,
                           np.random.default_rng(1))
    assert m["r1"] > 0 and m["r2"] > 0


def test_recon_weight_pulls_the_rollout_to_the_real_continuation(data_root: Path,
                                                                tmp_path: Path) -> None:
    """``adversarial.recon_weight``: G also minimises the latent MSE between its student rollout
    and the real continuation, only where ``real`` is one (``paired``)."""
    mse = {}
    for weight, paired in ((0.0, True), (10.0, False), (10.0, True)):
        torch.manual_seed(0)  # D's new query heads draw from the global RNG
        cfg, generator, _ = tiny_models(data_root, tmp_path)
        cfg.adversarial.recon_weight = weight
        cfg.adversarial.g_lr, cfg.optim.warmup_steps = 3e-3, 0  # segment_update sets the lr
        disc = Discriminator(randomize(build_world_model(cfg), seed=2),
                             cfg.adversarial.disc_layers, cfg.adversarial.disc_queries)
        g_opt = torch.optim.Adam(generator.parameters(), betas=(0.0, 0.9))
        d_opt = torch.optim.Adam(disc.parameters(), betas=(0.0, 0.9))
        c, h, w = (cfg.model.dit.latent_channels, cfg.model.dit.latent_height,
                   cfg.model.dit.latent_width)
        g = torch.Generator().manual_seed(0)
        real = torch.randn(2, c, 3, h, w, generator=g)
        conds = torch.rand(2, 2, 4, cfg.world.action_dim, generator=g)
        noise = torch.randn(2, c, 2, h, w, generator=g)
        for step in range(6):
            frames, _ = adv.student_rollout(generator, real[:, :, 0], conds, noise)
            fake = torch.cat([real[:, :, :1], frames], dim=2)
            m = adv.segment_update(cfg, generator, disc, g_opt, d_opt, step, real, conds, fake,
                                   conds, np.random.default_rng(step), paired=paired)
        mse[(weight, paired)] = m["recon_mse"]
    # unpaired segments ignore the weight: the same run as weight 0
    assert mse[(10.0, False)] == pytest.approx(mse[(0.0, True)], rel=1e-5)
    assert mse[(10.0, True)] < 0.5 * mse[(0.0, True)]
    with pytest.raises(ValueError, match="recon_weight must be >= 0"):
        make_cfg(overrides(data_root, tmp_path / "r", "stage=adversarial",
                           "adversarial.recon_weight=-1")).validate()


@pytest.mark.parametrize("variant", [["adversarial.student_forcing=false"],
                                     ["adversarial.segments=3", "adversarial.segment_overlap=1"]],
                         ids=["teacher_forced_ablation", "long_video"])
def test_adversarial_variants_run(pipeline: dict, data_root: Path, tmp_path: Path,
                                  variant: list[str]) -> None:
    out = fresh_run_dir(pipeline, tmp_path, "latents", "diffusion", "consistency")
    metrics = run_stage(make_cfg(overrides(data_root, out, "stage=adversarial", "run.steps=2",
                                           *variant)))
    assert all(math.isfinite(v) for v in metrics.values())
    rows = read_log(out / "adversarial" / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2]
    if "adversarial.segments=3" in variant:
        assert {"d_loss_seg1", "g_loss_seg1", "d_loss_seg2", "g_loss_seg2"} <= set(metrics)
        assert metrics["latent_frames_per_s"] > 0


def test_bf16_precision_trains_the_generator_stages_on_cpu(pipeline: dict, data_root: Path,
                                                          tmp_path: Path) -> None:
    """run.precision=bf16 autocasts the VAE and generator stages on CPU too (AMX CPUs run them
    ~1.5x faster); "auto" stays fp32 on CPU. Every stage still trains to finite checkpoints."""
    layer = torch.nn.Linear(8, 8)
    x, cpu = torch.randn(2, 8), torch.device("cpu")
    with autocast(cpu, "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with autocast(cpu, "auto"):
        assert layer(x).dtype == torch.float32
    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents", "diffusion")
    for stage in ("vae", "diffusion", "consistency", "adversarial"):
        metrics = run_stage(make_cfg(overrides(data_root, out, f"stage={stage}",
                                               f"run.steps={PIPELINE_STEPS[stage] + 2}",
                                               "run.precision=bf16")))
        assert all(math.isfinite(v) for v in metrics.values()), stage
        tensors, meta = load_weights(out / stage / "model.safetensors")
        assert all(bool(torch.isfinite(t).all()) for t in tensors.values()
                   if t.is_floating_point()), stage


def test_compiled_forward_trains_stages_1_and_2(pipeline: dict, data_root: Path,
                                              tmp_path: Path) -> None:
    """run.compile=true: stages 1 and 2 train through torch.compile (inductor) graphs that give
    the eager loss, and checkpoints keep the plain module's names."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    out = fresh_run_dir(pipeline, tmp_path, "latents", "diffusion")
    for stage in ("diffusion", "consistency"):
        metrics = run_stage(make_cfg(overrides(data_root, out, f"stage={stage}",
                                               f"run.steps={PIPELINE_STEPS[stage] + 1}",
                                               "run.compile=true")))
        assert all(math.isfinite(v) for v in metrics.values()), stage
        tensors, _ = load_weights(out / stage / "model.safetensors")
        assert not any("_orig_mod" in name for name in tensors), stage
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # it did compile
    cfg = make_cfg(overrides(data_root, out, "stage=diffusion"))
    model = build_world_model(cfg)
    tensors, _ = load_weights(out / "diffusion" / "model.safetensors")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()})
    data = LatentClipDataset(out / "latents", data_root, cfg.data.clip_steps, "train")
    batch = latent_batch(data, np.random.default_rng(1), 2, torch.device("cpu"))
    t = torch.tensor([0.3, 0.8])
    losses = [diffusion_loss(m, batch.latents, batch.conds, t, torch.Generator().manual_seed(0))
              for m in (model, torch.compile(model, dynamic=False))]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)


# -- bad configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("items, match", [
    (["stage=nope"], r"stage must be one of .*got 'nope'"),
    (["run.batch_size=0"], r"run\.batch_size must be >= 1, got 0"),
    (["model.dit.latent_height=4"], r"model\.dit\.latent_height x latent_width \(4x8\) must be "
                                    r"model\.vae\.height x width / 8 \(6x8\)"),
    (["adversarial.disc_layers=[0,5]"], r"adversarial\.disc_layers \[0, 5\] must index blocks"),
    (["run.device=tpu"], r"run\.device must be auto, cpu or cuda"),
    (["consistency.loss=l1"], r"consistency\.loss must be pseudo_huber or l2"),
    (["run.precision=fp16"], r"run\.precision must be one of \('auto', 'fp32', 'bf16'\)"),
], ids=["stage", "batch_size", "latent_size", "disc_layers", "device", "cd_loss", "precision"])
def test_bad_config_names_the_field(data_root: Path, tmp_path: Path, items: list[str],
                                    match: str) -> None:
    cfg = make_cfg(overrides(data_root, tmp_path, *items))
    with pytest.raises(ValueError, match=match):
        run_stage(cfg)


def test_bad_setups_give_clear_errors(pipeline: dict, data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"needs the 'diffusion' stage's weights"):
        run_stage(make_cfg(overrides(data_root, tmp_path / "empty", "stage=consistency")))
    with pytest.raises(DatasetError, match=r"holds 64x48 frames but the model expects 128x96: "
                       r"record at that size \(`aapt-world collect .* width=128 height=96`\)"):
        items = overrides(data_root, tmp_path / "small", "stage=vae")
        run_stage(make_cfg([i if i != "model=tiny" else "model=small" for i in items]))
    with pytest.raises(DatasetError, match=r"longest train episode .* has 20 steps, fewer than "
                       r"data\.clip_steps=30"):
        run_stage(make_cfg(overrides(data_root, tmp_path / "long", "stage=vae",
                                     "data.clip_steps=30")))
    only_train = tmp_path / "only_train"
    shutil.copytree(data_root, only_train)
    manifest = json.loads((only_train / "manifest.json").read_text())
    for entry in manifest["episodes"]:
        entry["split"] = "train"
    (only_train / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"has no val episode .*num_episodes=2"):
        run_stage(make_cfg(overrides(only_train, tmp_path / "nv", "stage=vae")))
    out = fresh_run_dir(pipeline, tmp_path / "adv", "latents", "diffusion", "consistency")
    with pytest.raises(ValueError, match=r"data\.clip_steps >= 4"):
        run_stage(make_cfg(overrides(data_root, out, "stage=adversarial",
                                     "adversarial.rollout_steps=3", "adversarial.segments=2")))


def test_cli_reports_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from training.train import main

    argv = sys.argv
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["stage=nope", f"run.out_dir={tmp_path}", "model=tiny"])
    finally:
        sys.argv = argv
    assert exit_info.value.code != 0
    assert "stage must be one of" in capsys.readouterr().err
