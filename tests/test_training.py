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

from aapt_world.checkpoint import load_weights
from aapt_world.discriminator import Discriminator
from aapt_world.session import StreamingSession
from aapt_world.vae import CausalVideoVAE
from training.batches import latent_batch
from training.collect import CollectConfig, collect
from training.config import TrainConfig
from training.dataset import DatasetError
from training.latents import LatentClipDataset
from training.models import build_world_model
from training.stages import adversarial as adv
from training.stages.diffusion import diffusion_loss
from training.train import compose_config, run_stage
from training.trainer import Dist, autocast, read_log

TRAINED_STAGES = ("vae", "diffusion", "consistency", "heads", "adversarial")
PIPELINE_STEPS = {"vae": 3, "diffusion": 30, "consistency": 3, "heads": 3, "adversarial": 3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tinydata")
    collect(CollectConfig(root=str(root), num_episodes=4, steps_per_episode=20, width=64,
                          height=48, workers=1, val_every=2), progress=False)
    return root


def overrides(data_root: Path, out_dir: Path, *extra: str) -> list[str]:
    return ["model=tiny", f"data.root={data_root}", f"run.out_dir={out_dir}",
            "run.batch_size=2", "data.clip_steps=3", "data.val_batches=1", "run.progress=false",
            "run.threads=1", "run.log_every=1", "run.eval_every=1000", "optim.warmup_steps=1",
            "adversarial.rollout_steps=2", *extra]


def make_cfg(items: list[str]) -> TrainConfig:
    return compose_config(items)


def randomize(module: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """DiT output/adaLN layers start at zero: every rollout would be trivial. Randomise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.fixture(scope="module")
def pipeline(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every stage in order into one run directory."""
    out = tmp_path_factory.mktemp("run")
    metrics = {}
    for stage in ("vae", "latents", "diffusion", "consistency", "heads", "adversarial", "export"):
        extra = [f"stage={stage}", f"run.steps={PIPELINE_STEPS.get(stage, 0)}"]
        if stage == "diffusion":
            extra.append("optim.lr=1e-3")
        metrics[stage] = run_stage(make_cfg(overrides(data_root, out, *extra)))
    return {"out": out, "metrics": metrics}


def fresh_run_dir(pipeline: dict, tmp_path: Path, *stages: str) -> Path:
    """A new run directory holding copies of some finished stages of the pipeline."""
    for stage in stages:
        shutil.copytree(pipeline["out"] / stage, tmp_path / stage)
    return tmp_path


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


@pytest.mark.parametrize("context_noise", [0.0, 0.25])
def test_student_rollout_equals_streaming_session(data_root: Path, tmp_path: Path,
                                                  context_noise: float) -> None:
    """Stage 3's student rollout is the world's inference, step for step — also when the
    world runs with context noise on its recycled frame (adversarial.context_noise)."""
    cfg = make_cfg(overrides(data_root, tmp_path, "stage=adversarial",
                             "model.dit.context_noise_buckets=10"))
    generator = randomize(build_world_model(cfg), seed=1)
    vae = CausalVideoVAE(cfg.model.vae).eval()
    steps, batch = cfg.model.dit.window + 4, 2  # past window + 1 ring slots: the window slides
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 48, 64, 3), dtype=torch.uint8, generator=g)
    conds = torch.rand(batch, steps, 4, cfg.world.action_dim, generator=g) * 2 - 1

    session = StreamingSession(generator, vae, batch_size=batch, seed=11,
                               context_noise=context_noise)
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
                                        context_noise=context_noise, context_eps=eps)
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


def test_init_from_starts_a_fresh_stage_from_given_weights(tmp_path: Path) -> None:
    """``run.init_from``: a new stage starts from shipped (fp16) weights; bad files are named."""
    from aapt_world.checkpoint import CheckpointError, save_weights
    from training.trainer import Trainer

    cfg = TrainConfig(stage="heads")
    cfg.run.out_dir = str(tmp_path / "run")
    source = torch.nn.Linear(3, 2)
    save_weights(tmp_path / "init.safetensors", {f"m.{k}": v for k, v in
                                                 source.state_dict().items()}, {},
                 dtype=torch.float16)
    cfg.run.init_from = str(tmp_path / "init.safetensors")
    target = torch.nn.Linear(3, 2)
    trainer = Trainer(cfg, tmp_path / "run" / "heads", {"m": target}, {}, Dist())
    assert trainer.resume() is False  # nothing to resume: initialised instead
    torch.testing.assert_close(target.weight, source.weight.half().float())
    cfg.run.init_from = str(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="missing.safetensors"):
        Trainer(cfg, tmp_path / "run2" / "heads", {"m": target}, {}, Dist()).resume()


def test_decoder_stage_sharpens_light_decoder_only_and_export_uses_it(
        pipeline: dict, data_root: Path, tmp_path: Path) -> None:
    """stage=decoder: the light decoder trains against a patch discriminator with the encoder
    frozen (the latents, and the DiT stages trained on them, stay valid); export ships it."""
    from aapt_world.world import load_world

    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents", "diffusion", "consistency",
                        "adversarial")
    run_stage(make_cfg(overrides(data_root, out, "stage=decoder", "run.steps=2",
                                 "vae.decoder_noise=0.1")))
    val = read_log(out / "decoder" / "val_log.csv")
    assert math.isfinite(val[-1]["light_psnr"]) and val[-1]["hf_ratio"] > 0
    rows = read_log(out / "decoder" / "log.csv")
    assert {"adv", "d_loss", "l1"} <= set(rows[0]) and len(rows) == 2
    vae_w, _ = load_weights(out / "vae" / "model.safetensors")
    dec_w, _ = load_weights(out / "decoder" / "model.safetensors")
    assert not any(k.startswith("vae.encoder") for k in dec_w)  # the encoder is not touched
    changed = [k for k in dec_w if k.startswith("light_decoder.")
               and not torch.equal(dec_w[k], vae_w[k])]
    assert changed
    run_stage(make_cfg(overrides(data_root, out, "stage=export")))
    world = load_world(out / "world")
    key = changed[0][len("light_decoder."):]
    torch.testing.assert_close(world.vae.decoder.state_dict()[key],
                               dec_w[changed[0]].to(torch.float16).float(), atol=1e-3, rtol=1e-3)


def test_decoder_stage_learns_on_the_generators_latents(pipeline: dict, data_root: Path,
                                                        tmp_path: Path) -> None:
    """decoder.generated: clips decoded from the frozen generator's teacher-forced predictions
    (latent 0 stays the encoder's), scored against the real frames in validation; the light
    decoder can start from a given file (decoder.init_light)."""
    from training.stages.decoder import generated_latents_fn

    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents", "adversarial")
    generator, vae = out / "adversarial" / "model.safetensors", out / "vae" / "model.safetensors"
    extra = ("stage=decoder", "run.steps=2", "decoder.generated=1.0",
             f"decoder.generator={generator}", f"decoder.init_light={vae}")
    cfg = make_cfg(overrides(data_root, out, *extra))
    predict = generated_latents_fn(cfg, torch.device("cpu"))
    z = torch.randn(2, 16, 4, 6, 8)
    actions = torch.rand(2, 3, 4, 4)  # per-frame conditions
    pred = predict(z, actions, 5)
    assert pred.shape == z.shape and torch.equal(pred[:, :, 0], z[:, :, 0])
    assert not torch.allclose(pred[:, :, 1:], z[:, :, 1:])
    torch.testing.assert_close(predict(z, actions, 5), pred)  # seeded by the step
    changed = predict(z, actions.flip(0), 5)  # the commands reach the generator
    assert not torch.allclose(changed[:, :, 1:], pred[:, :, 1:])
    run_stage(cfg)
    val = read_log(out / "decoder" / "val_log.csv")
    assert math.isfinite(val[-1]["generated_psnr"]) and math.isfinite(val[-1]["light_psnr"])
    shutil.rmtree(out / "decoder")  # D alone judges the generated latents' decodes
    run_stage(make_cfg(overrides(data_root, out, *extra, "decoder.generated_loss=adversarial")))
    rows = read_log(out / "decoder" / "log.csv")
    assert len(rows) == 2 and all(math.isfinite(r["adv"]) for r in rows)
    with pytest.raises(ValueError, match="generated_loss"):
        make_cfg(overrides(data_root, out, "decoder.generated_loss=both")).validate()
    with pytest.raises(ValueError, match="decoder.generator"):
        generated_latents_fn(make_cfg(overrides(data_root, out, "stage=decoder",
                                                "decoder.generated=0.5")), torch.device("cpu"))


def test_heads_can_learn_on_the_generators_latents(pipeline: dict, data_root: Path,
                                                   tmp_path: Path) -> None:
    """heads.generated: the heads see the frozen generator's teacher-forced latents (the
    dream's) with the real steps' labels; without a generator the option says what is missing."""
    from training.stages.heads import build

    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents", "adversarial")
    generator = out / "adversarial" / "model.safetensors"
    extra = ("stage=heads", "run.steps=2", "heads.generated=1.0", f"heads.generator={generator}")
    run_stage(make_cfg(overrides(data_root, out, *extra)))
    rows = read_log(out / "heads" / "log.csv")
    assert len(rows) == 2 and all(math.isfinite(r["termination_bce"]) for r in rows)
    with pytest.raises(ValueError, match="heads.generator"):
        build(make_cfg(overrides(data_root, out, "stage=heads", "heads.generated=0.5")), Dist(),
              torch.device("cpu"))


def test_heads_can_learn_on_the_generators_free_rollouts(pipeline: dict, data_root: Path,
                                                         tmp_path: Path, monkeypatch) -> None:
    """heads.rollout_steps: generated clips are the generator's free rollout from the real
    first latent (the dream as the env runs it), and only each clip's last step is learned."""
    import training.stages.heads as heads_stage

    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents", "adversarial")
    generator = out / "adversarial" / "model.safetensors"
    calls, losses = [], []
    real_rollout, real_losses = heads_stage.student_rollout, heads_stage.heads_losses

    def rollout(gen, start, conds, noise, **kw):
        calls.append(conds.shape[1])
        return real_rollout(gen, start, conds, noise, **kw)

    def spy_losses(cfg, heads, z, conds, rewards, terminated):
        losses.append((z.shape[2], conds.shape[1], terminated.shape[1]))
        return real_losses(cfg, heads, z, conds, rewards, terminated)

    monkeypatch.setattr(heads_stage, "student_rollout", rollout)
    monkeypatch.setattr(heads_stage, "heads_losses", spy_losses)
    extra = ("stage=heads", "run.steps=2", "heads.generated=1.0", f"heads.generator={generator}",
             "heads.rollout_steps=3", "data.clip_steps=3")
    cfg = make_cfg(overrides(data_root, out, *extra))
    run_stage(cfg)
    evals = len(read_log(out / "heads" / "val_log.csv"))
    # one 3-step rollout per training batch, and per validation batch of each evaluation
    assert evals >= 1 and calls == [3] * (2 + evals * cfg.data.val_batches)
    assert set(losses) == {(2, 1, 1)}  # training and validation: the last step only
    rows = read_log(out / "heads" / "log.csv")
    assert len(rows) == 2 and all(math.isfinite(r["termination_bce"]) for r in rows)
    val = read_log(out / "heads" / "val_log.csv")[-1]  # calibration on real and dreamed clips
    assert math.isfinite(val["termination_bce"]) and math.isfinite(val["dream_termination_bce"])
    assert val["dream_death_rate_real"] == val["death_rate_real"]  # same clips, same labels
    with pytest.raises(ValueError, match="needs data.clip_steps equal"):
        make_cfg(overrides(data_root, out, *extra[:-1], "data.clip_steps=4")).validate()
    with pytest.raises(ValueError, match="needs heads.generated > 0"):
        make_cfg(overrides(data_root, out, "stage=heads", "heads.rollout_steps=3",
                           "data.clip_steps=3")).validate()


def test_bench_train_times_every_stage_with_the_stages_own_losses() -> None:
    from training.bench_train import STAGES, run

    result = run("tiny", list(STAGES), threads=1, timed=1, warmup=0,
                 precisions=("fp32", "bf16"))
    assert [(r["precision"], r["stage"]) for r in result["rows"]] == [
        (p, s) for p in ("fp32", "bf16") for s in STAGES]
    assert all(r["step_s"] > 0 and r["params_m"] > 0 for r in result["rows"])


@pytest.mark.parametrize("stage", ["diffusion", "adversarial"])
def test_bench_train_builds_the_stage_that_training_runs(stage: str) -> None:
    """The benchmark's step is the stage's own ``build()`` train_step: it updates the weights
    the stage checkpoints (under the names ``aapt-world train`` saves them) and reports its
    own metrics."""
    from training.bench_train import bench_config, build_stage

    parts = build_stage(stage, bench_config("tiny"), batch=2, steps=3)
    names = {"diffusion": {"model"}, "adversarial": {"generator", "discriminator"}}[stage]
    assert set(parts.modules) == names
    before = [p.detach().clone() for p in parts.trainable]
    metrics = parts.train_step(0)
    assert ("loss" if stage == "diffusion" else "g_loss") in metrics
    assert any(not torch.equal(a, b) for a, b in zip(before, parts.trainable))


def test_init_from_a_world_directory_starts_the_generator(tiny_world_factory,
                                                          tmp_path: Path) -> None:
    """``run.init_from=<world dir>``: a generator stage continues from a shipped world."""
    from aapt_world.checkpoint import CheckpointError
    from aapt_world.world import save_world
    from training.trainer import Trainer

    world = tiny_world_factory(heads=False)
    save_world(tmp_path / "world", world)
    cfg = TrainConfig(stage="diffusion")
    cfg.run.init_from = str(tmp_path / "world")
    model = type(world.generator)(world.config.dit, world.config.condition)
    Trainer(cfg, tmp_path / "run" / "diffusion", {"model": model}, {}, Dist()).resume()
    for (name, a), b in zip(model.state_dict().items(), world.generator.state_dict().values()):
        torch.testing.assert_close(a, b.half().float(), msg=name)
    with pytest.raises(CheckpointError, match="only a generator stage"):
        Trainer(cfg, tmp_path / "run" / "heads", {"heads": torch.nn.Linear(2, 2)}, {},
                Dist()).resume()


def test_stage3_continues_a_world_without_stage_1_and_2(pipeline: dict, data_root: Path,
                                                        tmp_path: Path) -> None:
    """``run.init_from=<world>`` + ``adversarial.disc_init=<world>``: stage 3 starts from a
    shipped world's generator (G and D's backbone) in a run holding only the VAE and latents,
    with student rollouts at the world's inference context noise."""
    from aapt_world.world import load_world
    from training.stages.adversarial import build
    from training.trainer import Dist

    world = pipeline["out"] / "world"
    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents")
    cfg = make_cfg(overrides(data_root, out, "stage=adversarial", "run.steps=1",
                             f"run.init_from={world}", f"adversarial.disc_init={world}",
                             "adversarial.context_noise=0.25"))
    shipped = load_world(world).generator.state_dict()
    parts = build(cfg, Dist(), torch.device("cpu"))
    for name, value in parts.modules["discriminator"].backbone.state_dict().items():
        torch.testing.assert_close(value, shipped[name].float(), msg=name)
    run_stage(cfg)
    rows = read_log(out / "adversarial" / "log.csv")
    assert len(rows) == 1 and math.isfinite(rows[0]["g_loss"])
    with pytest.raises(ValueError, match="context_noise must be in"):
        make_cfg(overrides(data_root, out, "stage=adversarial",
                           "adversarial.context_noise=1.5")).validate()


def test_d_steps_updates_the_discriminator_more_often(pipeline: dict, data_root: Path,
                                                      tmp_path: Path) -> None:
    """``adversarial.d_steps=k``: k D updates (each on the same rollout, own t_D) per G update."""
    from training.stages.adversarial import build
    from training.trainer import Dist

    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents", "diffusion", "consistency")
    for k in (1, 3):
        cfg = make_cfg(overrides(data_root, out, "stage=adversarial",
                                 f"adversarial.d_steps={k}", "optim.warmup_steps=0"))
        parts = build(cfg, Dist(), torch.device("cpu"))
        d0 = [p.detach().clone() for p in parts.modules["discriminator"].parameters()]
        metrics = parts.train_step(0)
        assert all(math.isfinite(v) for v in metrics.values())

        def steps(opt: torch.optim.Optimizer) -> set[int]:
            return {int(st["step"]) for st in opt.state.values()}

        assert steps(parts.optimizers["d"]) == {k} and steps(parts.optimizers["g"]) == {1}
        assert any(not torch.equal(p, q) for p, q in
                   zip(parts.modules["discriminator"].parameters(), d0))
    with pytest.raises(ValueError, match="d_steps must be >= 1"):
        make_cfg(overrides(data_root, out, "stage=adversarial", "adversarial.d_steps=0")
                 ).validate()


def test_a_wider_latent_continues_a_finished_run(pipeline: dict, data_root: Path,
                                                 tmp_path: Path) -> None:
    """doom_cpu_v7.sh's path: the VAE widened from a run's VAE (the adaptation itself is
    checked in test_fidelity), its latents, stage 1 from the run's world (the generator
    adapted to the new channels), the export; the widened world streams."""
    from aapt_world.world import load_world

    wide = ["model.vae.latent_channels=24", "model.dit.latent_channels=24"]
    vae_file = pipeline["out"] / "vae" / "model.safetensors"
    for stage, extra in (("vae", [f"run.init_from={vae_file}", "run.steps=1"]),
                         ("latents", []),
                         ("diffusion", [f"run.init_from={pipeline['out'] / 'world'}",
                                        "run.steps=1"]),
                         ("export", ["export.source=diffusion", "export.sample_steps=1"])):
        run_stage(make_cfg(overrides(data_root, tmp_path, f"stage={stage}", *wide, *extra)))
    world = load_world(tmp_path / "world-diffusion")
    assert world.config.vae.latent_channels == world.config.dit.latent_channels == 24
    session = world.session(1)
    session.reset(torch.zeros(1, 48, 64, 3, dtype=torch.uint8), seeds=[0])
    conds = torch.zeros(1, 4, world.config.condition.action_dim)
    assert session.step(conds).shape == (1, 4, 48, 64, 3)
    with pytest.raises(ValueError, match=r"model\.dit\.latent_channels \(24\) must equal "
                                         r"model\.vae\.latent_channels \(16\)"):
        make_cfg(overrides(data_root, tmp_path, "model.dit.latent_channels=24")).validate()


def test_latents_rerun_encodes_new_episodes_and_keeps_the_normalisation(
        pipeline: dict, data_root: Path, tmp_path: Path) -> None:
    """Later stages trained on the first statistics: re-running stage=latents after episodes
    were added (or removed) must not move them; deleting stats.json recomputes them."""
    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents")
    stats = json.loads((out / "latents" / "stats.json").read_text())
    for first in list((out / "latents").glob("ep_*.first.npy"))[:1]:
        first.unlink()  # one episode's latents missing: as if it had just been recorded
    cfg = make_cfg(overrides(data_root, out, "stage=latents"))
    run_stage(cfg)
    assert len(list((out / "latents").glob("ep_*.first.npy"))) == 4
    assert json.loads((out / "latents" / "stats.json").read_text()) == stats
    (out / "latents" / "stats.json").write_text(json.dumps({**stats, "std": [9.0]}))
    run_stage(cfg)
    assert json.loads((out / "latents" / "stats.json").read_text())["std"] == [9.0]
    (out / "latents" / "stats.json").unlink()
    run_stage(cfg)
    assert json.loads((out / "latents" / "stats.json").read_text())["std"] == stats["std"]


# -- weight average (run.ema_decay) ----------------------------------------------------------------


def test_weight_average_follows_its_formula() -> None:
    from training.ema import WeightEMA

    live = torch.nn.Linear(3, 2)
    ema = WeightEMA(live, decay=0.9)
    start = live.weight.detach().clone()
    expected = start.clone()
    for n in range(1, 30):
        with torch.no_grad():
            live.weight.add_(0.1)
        ema.update()
        d = min(0.9, (1 + n) / (10 + n))  # warm-up, then the decay
        expected = d * expected + (1 - d) * live.weight.detach()
        torch.testing.assert_close(ema.shadow.weight, expected)
    assert not ema.shadow.weight.requires_grad and ema.updates == 29
    ema.restart()
    assert torch.equal(ema.shadow.weight, live.weight) and ema.updates == 0
    with pytest.raises(ValueError, match="ema_decay"):
        WeightEMA(live, decay=1.0)


def test_weight_average_is_saved_resumed_and_exported(pipeline: dict, data_root: Path,
                                                      tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """run.ema_decay: the stage saves <module>_ema.*; a resumed run keeps averaging exactly as
    an uninterrupted one; a stage without a saved average starts one (and says so); export
    ships the average unless export.ema=false, and the card says which."""
    from aapt_world.world import load_world

    split = fresh_run_dir(pipeline, tmp_path / "split", "vae", "latents")
    straight = fresh_run_dir(pipeline, tmp_path / "straight", "latents")
    base = ["stage=diffusion", "run.ema_decay=0.8", "run.seed=5"]
    run_stage(make_cfg(overrides(data_root, split, *base, "run.steps=3")))
    run_stage(make_cfg(overrides(data_root, split, *base, "run.steps=6")))
    run_stage(make_cfg(overrides(data_root, straight, *base, "run.steps=6")))
    resumed, _ = load_weights(split / "diffusion" / "model.safetensors")
    reference, _ = load_weights(straight / "diffusion" / "model.safetensors")
    averaged = [k for k in reference if k.startswith("model_ema.")]
    assert averaged and len(averaged) == sum(k.startswith("model.") for k in reference)
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
    assert any(not torch.equal(reference[k], reference["model." + k[len("model_ema."):]])
               for k in averaged)  # the average lags the live weights

    run_stage(make_cfg(overrides(data_root, split, "stage=export", "export.source=diffusion")))
    run_stage(make_cfg(overrides(data_root, split, "stage=export", "export.source=diffusion",
                                 "export.ema=false", f"export.out={split / 'live'}")))
    shipped, live = load_world(split / "world-diffusion"), load_world(split / "live")
    assert shipped.card["generator_weights"].startswith("weight average")
    assert live.card["generator_weights"] == "live"
    for key, value in shipped.generator.state_dict().items():
        torch.testing.assert_close(value, resumed[f"model_ema.{key}"], atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(live.generator.state_dict()[key], resumed[f"model.{key}"],
                                   atol=1e-3, rtol=1e-3)

    # the next stage starts from the average too (consistency's teacher and student)
    from training.stages.consistency import build as build_consistency
    from training.trainer import Dist

    parts = build_consistency(make_cfg(overrides(data_root, split, "stage=consistency")), Dist(),
                              torch.device("cpu"))
    for key, value in parts.modules["model"].state_dict().items():
        assert torch.equal(value, resumed[f"model_ema.{key}"])
    # a frozen generator read from the stage's file (heads.generator=..) is the shipped average
    from training.trainer import generator_tensors

    frozen = generator_tensors(split / "diffusion" / "model.safetensors")
    assert frozen and all(torch.equal(v, resumed[f"model_ema.{k}"]) for k, v in frozen.items())
    # the fp16 snapshot a fresh clone resumes from (python -m training.snapshot) is the average
    from training.snapshot import main as snapshot

    snapshot(["--stage", str(split / "diffusion"), "--out", str(tmp_path / "s1.safetensors")])
    small, meta = load_weights(tmp_path / "s1.safetensors")
    assert set(small) == {k.replace("model_ema.", "model.") for k in averaged}
    assert all(v.dtype == torch.float16 for v in small.values())
    torch.testing.assert_close(small["model." + averaged[0][len("model_ema."):]].float(),
                               resumed[averaged[0]], atol=1e-3, rtol=1e-3)
    assert meta["generator_weights"] == "weight average" and int(meta["step"]) == 6
    with pytest.raises(SystemExit):
        snapshot(["--stage", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.safetensors")])

    older = fresh_run_dir(pipeline, tmp_path / "older", "latents")
    run_stage(make_cfg(overrides(data_root, older, "stage=diffusion", "run.steps=2")))
    capsys.readouterr()
    run_stage(make_cfg(overrides(data_root, older, *base, "run.steps=3")))
    assert "holds no weight average" in capsys.readouterr().err
    assert any(k.startswith("model_ema.") for k in
               load_weights(older / "diffusion" / "model.safetensors")[0])
    with pytest.raises(ValueError, match="ema_decay"):
        make_cfg(overrides(data_root, older, "run.ema_decay=1.5")).validate()


def test_condition_dropout_trains_the_null_condition(pipeline: dict, data_root: Path,
                                                     tmp_path: Path) -> None:
    """diffusion.cond_dropout: the stage runs with it, a dropped clip's loss ignores its
    commands (the null condition), and export writes the world's guidance."""
    from aapt_world.world import load_world
    from training.stages.diffusion import diffusion_loss

    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents")
    run_stage(make_cfg(overrides(data_root, out, "stage=diffusion", "run.steps=3",
                                 "diffusion.cond_dropout=0.5")))
    model = randomize(build_world_model(make_cfg(overrides(data_root, out))))
    z = torch.randn(2, model.cfg.latent_channels, 4, model.cfg.latent_height,
                    model.cfg.latent_width)
    conds = torch.rand(2, 3, 4, model.condition_config.action_dim)
    t, null = torch.full((2,), 0.5), torch.ones(2, dtype=torch.bool)

    def loss(c: torch.Tensor, drop: torch.Tensor | None) -> float:
        return diffusion_loss(model, z, c, t, torch.Generator().manual_seed(0), null=drop).item()

    assert loss(conds, null) == loss(torch.zeros_like(conds), null)  # commands ignored
    assert loss(conds, None) != loss(torch.zeros_like(conds), None)
    run_stage(make_cfg(overrides(data_root, out, "stage=consistency", "run.steps=2",
                                 "consistency.guidance=2")))  # the guided teacher distilled
    run_stage(make_cfg(overrides(data_root, out, "stage=export", "export.guidance=2.5")))
    world = load_world(out / "world")
    assert world.config.guidance == 2.5 and world.session(1).guidance == 2.5
    with pytest.raises(ValueError, match="cond_dropout"):
        make_cfg(overrides(data_root, out, "diffusion.cond_dropout=1")).validate()


def test_guided_velocity_is_the_classifier_free_mix() -> None:
    """consistency.guidance: the teacher's velocity is v_null + w (v_cond - v_null)."""
    from training.stages.consistency import guided_velocity

    class Linear(torch.nn.Module):
        def forward(self, x, prev, conds, t, null=None):
            scale = torch.ones(x.shape[0]) if null is None else (~null).float()
            return x + prev + scale.view(-1, 1, 1, 1, 1) * conds.mean() * 10

    x, prev = torch.randn(2, 3, 2, 2, 2), torch.randn(2, 3, 2, 2, 2)
    conds, t = torch.rand(2, 2, 4, 4), torch.ones(2)
    model = Linear()
    v_cond, v_null = model(x, prev, conds, t), x + prev
    torch.testing.assert_close(guided_velocity(model, x, prev, conds, t, 1.0), v_cond)
    torch.testing.assert_close(guided_velocity(model, x, prev, conds, t, 3.0),
                               v_null + 3.0 * (v_cond - v_null))


def test_turned_view_is_trained_exported_and_loaded(pipeline: dict, data_root: Path,
                                                    tmp_path: Path) -> None:
    """world.view_warp_fov: the generator sees its last frame turned by Doom's commanded yaw
    (turn axis and degrees from envs.actions), in training and in the exported world."""
    from aapt_world.world import load_world
    from envs.actions import CommandScale

    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents")
    warp = "world.view_warp_fov=90"
    run_stage(make_cfg(overrides(data_root, out, "stage=diffusion", "run.steps=2", warp)))
    run_stage(make_cfg(overrides(data_root, out, "stage=export", "export.source=diffusion",
                                 warp)))
    world = load_world(out / "world-diffusion")
    cond = world.generator.condition_config
    assert (cond.warp_fov_deg, cond.turn_channel, cond.turn_deg) == (90, 2, CommandScale().turn)
    session = world.session(1)
    session.reset(torch.from_numpy(world.start_frames[:1].copy()))
    frames = session.step(torch.tensor([[0.0, 0.0, 1.0, 0.0]]).repeat(4, 1)[None])
    assert frames.shape[:2] == (1, 4)
    with pytest.raises(ValueError, match="view_warp_fov"):
        build_world_model(make_cfg(overrides(data_root, out, warp, "world.action_dim=3")))


def test_momentum_world_continues_a_plain_stage_1_and_streams_the_velocity(
        pipeline: dict, data_root: Path, tmp_path: Path) -> None:
    """world.momentum (+ world.slide_view_px): stage 1 continues a generator trained without
    it (the velocity enters through zero weights), the heads and the decoder train on its
    latents, and the exported world's session integrates the velocity from the commands."""
    from aapt_world.momentum import DOOM_FRICTION, CommandMomentum
    from aapt_world.world import load_world

    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents")
    plain = pipeline["out"] / "diffusion" / "model.safetensors"
    momentum, slide = "world.momentum=true", "world.slide_view_px=-1.2"
    run_stage(make_cfg(overrides(data_root, out, "stage=diffusion", "run.steps=2",
                                 f"run.init_from={plain}", momentum, slide)))
    generator = out / "diffusion" / "model.safetensors"
    for stage in ("heads", "decoder"):
        run_stage(make_cfg(overrides(data_root, out, f"stage={stage}", "run.steps=1",
                                     f"{stage}.generated=1.0", f"{stage}.generator={generator}",
                                     momentum, slide)))
    run_stage(make_cfg(overrides(data_root, out, "stage=export", "export.source=diffusion",
                                 momentum, slide)))
    world = load_world(out / "world-diffusion")
    assert world.generator.momentum == CommandMomentum((0, 1), DOOM_FRICTION)
    cond = world.generator.condition_config
    assert (cond.slide_channel, cond.slide_frac) == (1, -1.2 / world.config.vae.width)
    session = world.session(1)
    session.reset(torch.from_numpy(world.start_frames[:1].copy()))
    session.step(torch.tensor([[1.0, -1.0, 0.0, 0.0]]).repeat(4, 1)[None])
    expected = (1 - DOOM_FRICTION**4) * torch.tensor([1.0, -1.0])
    torch.testing.assert_close(session.momentum[0], expected)
    with pytest.raises(ValueError, match="world.momentum"):
        build_world_model(make_cfg(overrides(data_root, out, momentum, "world.action_dim=3")))
    with pytest.raises(ValueError, match="slide_view_px needs world.momentum"):
        build_world_model(make_cfg(overrides(data_root, out, slide)))
