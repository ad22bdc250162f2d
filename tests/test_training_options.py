"""Training options on the tiny run (see training_run.py): weights from elsewhere
(``run.init_from``, a world, a wider latent), the decoder and heads on the generator's own
latents, the benchmark's stages, extra stage-3 updates, re-encoded and mirrored latents, the
weight average, classifier-free guidance, the turned view and momentum.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from training_run import fresh_run_dir, make_cfg, overrides, randomize

from aapt_world.checkpoint import load_weights
from aapt_world.vae import CausalVideoVAE
from training.config import TrainConfig
from training.dataset import DatasetError
from training.latents import LatentClipDataset
from training.models import build_world_model
from training.stages.diffusion import diffusion_loss
from training.train import run_stage
from training.trainer import Dist, read_log

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def test_vae_stage_with_the_temporal_term_logs_and_changes_the_encoder(
        data_root: Path, tmp_path: Path) -> None:
    """``vae.temporal_weight``: the VAE stage adds the latents' change ratio to its loss (logged
    as latent_change) and the term alone moves the encoder."""
    runs = {}
    for weight in (0.0, 50.0):
        out = tmp_path / f"w{weight:g}"
        run_stage(make_cfg(overrides(data_root, out, "stage=vae", "run.steps=2",
                                     f"vae.temporal_weight={weight}")))
        runs[weight] = out
    rows = read_log(runs[50.0] / "vae" / "log.csv")
    assert len(rows) == 2 and all(0 <= r["latent_change"] < 10 for r in rows)
    assert "latent_change" not in read_log(runs[0.0] / "vae" / "log.csv")[0]
    with_term, _ = load_weights(runs[50.0] / "vae" / "model.safetensors")
    without, _ = load_weights(runs[0.0] / "vae" / "model.safetensors")
    assert any(not torch.equal(with_term[k], without[k]) for k in with_term
               if k.startswith("vae.encoder"))
    with pytest.raises(ValueError, match="vae.temporal_weight"):
        make_cfg(overrides(data_root, tmp_path / "bad", "stage=vae",
                           "vae.temporal_weight=-1")).validate()


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


@pytest.mark.parametrize(("sampler", "euler_steps", "guidance"),
                         [((), 1, 1.0), (("heads.sample_steps=2", "heads.guidance=3"), 2, 3.0)],
                         ids=["1nfe", "2nfe_guided"])
def test_heads_can_learn_on_the_generators_free_rollouts(pipeline: dict, data_root: Path,
                                                         tmp_path: Path, monkeypatch,
                                                         sampler: tuple[str, ...],
                                                         euler_steps: int,
                                                         guidance: float) -> None:
    """heads.rollout_steps: generated clips are the generator's free rollout from the real
    first latent (the dream as the env runs it, with its sampler: heads.sample_steps,
    heads.guidance), and only each clip's last step is learned."""
    import training.stages.heads as heads_stage

    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents", "adversarial")
    generator = out / "adversarial" / "model.safetensors"
    calls, losses = [], []
    real_rollout, real_losses = heads_stage.student_rollout, heads_stage.heads_losses

    def rollout(gen, start, conds, noise, **kw):
        calls.append((conds.shape[1], len(kw["timesteps"]) - 1, kw["guidance"]))
        return real_rollout(gen, start, conds, noise, **kw)

    def spy_losses(cfg, heads, z, conds, rewards, terminated):
        losses.append((z.shape[2], conds.shape[1], terminated.shape[1]))
        return real_losses(cfg, heads, z, conds, rewards, terminated)

    monkeypatch.setattr(heads_stage, "student_rollout", rollout)
    monkeypatch.setattr(heads_stage, "heads_losses", spy_losses)
    extra = ("stage=heads", "run.steps=2", "heads.generated=1.0", f"heads.generator={generator}",
             "heads.rollout_steps=3", "data.clip_steps=3")
    cfg = make_cfg(overrides(data_root, out, *extra, *sampler))
    run_stage(cfg)
    evals = len(read_log(out / "heads" / "val_log.csv"))
    # one 3-step rollout per training batch, and per validation batch of each evaluation
    assert evals >= 1
    assert calls == [(3, euler_steps, guidance)] * (2 + evals * cfg.data.val_batches)
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
    with pytest.raises(ValueError, match="need heads.rollout_steps > 0"):
        make_cfg(overrides(data_root, out, "stage=heads", "heads.guidance=3")).validate()


def test_bank_plan_weights_give_uniform_clips_back() -> None:
    """heads.bank_deaths: half the bank ends in a death, yet the weighted bank has the uniform
    clips' death rate and total weight."""
    from types import SimpleNamespace

    from training.stages.heads import bank_plan

    class Clips:
        def __len__(self) -> int:
            return 1000

        clips = SimpleNamespace(ending_indices=lambda name: np.arange(7), root="tiny")

    idx, w = bank_plan(Clips(), 40000, 0.5, np.random.default_rng(0))
    death = idx < 7
    assert abs(death.mean() - 0.5) < 0.01
    assert np.mean(w) == pytest.approx(1.0, abs=0.02)
    assert np.mean(w * death) == pytest.approx(0.007, rel=0.05)
    Clips.clips = SimpleNamespace(ending_indices=lambda name: np.arange(0), root="tiny")
    with pytest.raises(ValueError, match="no clip of tiny ends in a death"):
        bank_plan(Clips(), 10, 0.5, np.random.default_rng(0))


def test_heads_bank_is_dreamed_once_and_redreamed_when_its_recipe_changes(
        pipeline: dict, data_root: Path, tmp_path: Path, monkeypatch) -> None:
    import training.stages.heads as heads_stage
    from training.dataset import ClipDataset

    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents", "adversarial")
    monkeypatch.setattr(ClipDataset, "ending_indices", lambda self, name: np.array([0, 5]))
    calls = []
    real_rollout = heads_stage.student_rollout
    monkeypatch.setattr(heads_stage, "student_rollout",
                        lambda *a, **kw: calls.append(1) or real_rollout(*a, **kw))
    extra = ["stage=heads", "run.steps=2", "heads.generated=1.0", "heads.rollout_steps=3",
             f"heads.generator={out / 'adversarial' / 'model.safetensors'}", "data.clip_steps=3",
             "heads.bank_clips=6", "heads.bank_val_clips=2", "heads.max_pos_weight=1"]
    run_stage(make_cfg(overrides(data_root, out, *extra)))
    dreamed = len(calls)
    assert dreamed == 3 + 1  # 6 + 2 clips, 2 a batch; training and validation use the banks
    bank, meta = load_weights(out / "heads" / "bank_train.safetensors")
    assert bank["latents"].shape[0] == 6 and bank["latents"].shape[2] == 2
    assert bank["terminated"].shape == (6, 1) and meta["recipe"]["guidance"] == 1.0
    # 3 of 6 drawn among the (pretended) death clips: weight rate / (0.5 + 0.5 rate) each
    assert int((bank["weights"] < 1).sum()) >= 3
    run_stage(make_cfg(overrides(data_root, out, *extra, "run.steps=4")))  # resumes
    assert len(calls) == dreamed  # the saved banks were reused
    run_stage(make_cfg(overrides(data_root, out, *extra, "run.steps=6", "heads.guidance=2")))
    assert len(calls) == 2 * dreamed  # another sampler: dreamed again
    with pytest.raises(ValueError, match="heads.bank_clips > 0 needs"):
        make_cfg(overrides(data_root, out, *extra, "heads.bank_deaths=1")).validate()


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


def test_mirrored_clips_are_the_flipped_episode_with_strafe_and_turn_negated(
        pipeline: dict, data_root: Path, tmp_path: Path) -> None:
    """data.mirror: stage=latents also encodes each episode flipped left-right (keeping the
    normalisation); training clips then come from either version at random, a flipped one with
    its strafe / turn commands and their velocity negated; a run without the mirror images, or
    a pose world, is told what is wrong."""
    from aapt_world.momentum import CommandMomentum
    from training.latents import encode_episode, latent_paths, mirror_frames, mirrored_columns
    from training.trainer import load_stage_weights

    out = fresh_run_dir(pipeline, tmp_path, "vae", "latents")
    stats = (out / "latents" / "stats.json").read_text()
    momentum = CommandMomentum((0, 1))
    with pytest.raises(DatasetError, match=r"mirror\.npy.*data\.mirror=true"):
        LatentClipDataset(out / "latents", data_root, 3, mirror=True, momentum=momentum)
    cfg = make_cfg(overrides(data_root, out, "stage=latents", "data.mirror=true"))
    run_stage(cfg)
    assert (out / "latents" / "stats.json").read_text() == stats
    mirrored = LatentClipDataset(out / "latents", data_root, 3, mirror=True, momentum=momentum)
    plain = LatentClipDataset(out / "latents", data_root, 3, momentum=momentum)
    episode = mirrored.clips.episodes[0]
    vae = CausalVideoVAE(cfg.model.vae).eval()
    load_stage_weights(cfg, "vae", {"vae": vae})
    stream, first = encode_episode(vae, mirror_frames(episode.arrays["frames"]),
                                   torch.device("cpu"))
    stream_path, first_path = latent_paths(out / "latents", episode.id, mirror=True)
    np.testing.assert_array_equal(np.load(stream_path), stream)
    np.testing.assert_array_equal(np.load(first_path), first)
    assert not np.allclose(np.load(latent_paths(out / "latents", episode.id)[0]), stream)

    cols = mirrored_columns(list(mirrored.clips.manifest["action_names"]))
    assert list(cols) == [1, 2]  # Doom's strafe and turn
    sign = np.ones(4, np.float32)
    sign[cols] = -1
    rng, seen = np.random.default_rng(0), set()
    for _ in range(24):
        clip = mirrored.sample(rng)
        matches = [(flipped, ep, s) for ep in plain.clips.episodes for flipped in (False, True)
                   for s in range(ep.num_steps - 2)
                   if np.array_equal(clip.latents[1:], ((mirrored.mirror_stream if flipped
                                                         else mirrored.stream)[ep.id]
                                     [s + 1:s + 4].astype(np.float32) - plain.mean) / plain.std)]
        assert len(matches) == 1
        flipped, ep, s = matches[0]
        seen.add(flipped)
        real = plain.clips.episodes.index(ep)
        recorded = np.array(plain.clips.episodes[real].arrays["actions"][s:s + 3])
        velocity = plain.clips.clip_momentum(ep, s)
        np.testing.assert_array_equal(clip.actions, recorded * sign if flipped else recorded)
        np.testing.assert_array_equal(clip.momentum,
                                      velocity * [1, -1] if flipped else velocity)
    assert seen == {False, True}
    with pytest.raises(DatasetError, match="left and right joints"):
        LatentClipDataset(out / "latents", data_root, 3, keypoints=True, mirror=True)
    with pytest.raises(DatasetError, match="action_names"):
        mirrored_columns(["forward", "look"])


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


def test_pixel_term_judges_the_one_step_frame_through_the_decoder(data_root: Path,
                                                                 tmp_path: Path) -> None:
    """diffusion.pixel_weight: a mid-clip latent decodes alone exactly as inside its clip (the
    stateless decoder), the stage trains with the term and logs its PSNR at t = 1, and a
    decoder with temporal state is refused."""
    from aapt_world.vae import LightDecoder
    from training.pixel_loss import decode_steps

    out, stateless = tmp_path / "run", "model.vae.temporal_kernel=1"  # tiny's default is 3
    for stage in ("vae", "latents"):
        run_stage(make_cfg(overrides(data_root, out, f"stage={stage}", "run.steps=2", stateless)))
    cfg = make_cfg(overrides(data_root, out, stateless))
    light = randomize(LightDecoder(cfg.model.vae)).eval()
    z = torch.randn(2, cfg.model.vae.latent_channels, 3, 6, 8)
    with torch.no_grad():
        clip = light.decode(z)  # (B, 3, 1 + 4 x 2, H, W)
        alone = decode_steps(light, z[:, :, 2])
    torch.testing.assert_close(alone, clip[:, :, 5:9], atol=1e-5, rtol=1e-5)

    run_stage(make_cfg(overrides(data_root, out, "stage=diffusion", "run.steps=3",
                                 "run.eval_every=3", "diffusion.pixel_weight=10",
                                 "diffusion.pixel_steps=2", stateless)))
    from training.pixel_loss import pixel_loss_fn
    from training.stages.diffusion import clean_estimate, velocity

    pixel = pixel_loss_fn(cfg, torch.device("cpu"), positions=2)
    model = randomize(build_world_model(cfg))
    zn = torch.randn(2, cfg.model.dit.latent_channels, 4, 6, 8)
    conds, t = torch.rand(2, 3, 4, model.condition_config.action_dim), torch.ones(2)
    v, x0, eps = velocity(model, zn, conds, t)
    assert pixel(x0, x0) == 0  # the real latent decodes to its own target
    pixel(clean_estimate(v, x0, eps, t), x0).backward()  # the term alone reaches the generator
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    train_rows = read_log(out / "diffusion" / "log.csv")
    assert all(float(r["pixel_mse"]) > 0 for r in train_rows)
    val = read_log(out / "diffusion" / "val_log.csv")[-1]
    assert 0 < float(val["pixel_psnr_t1"]) < 60
    with pytest.raises(ValueError, match="temporal_kernel=1"):
        pixel_loss_fn(make_cfg(overrides(data_root, out)), torch.device("cpu"), 2)  # kernel 3
    with pytest.raises(ValueError, match="pixel_weight"):
        make_cfg(overrides(data_root, out, "diffusion.pixel_weight=-1")).validate()

    # stage 3's anchor: the same term on the student rollout against the real continuation
    for stage in ("consistency", "adversarial"):
        run_stage(make_cfg(overrides(data_root, out, f"stage={stage}", "run.steps=2",
                                     "adversarial.pixel_weight=5", "adversarial.pixel_steps=0",
                                     stateless)))
    rows = read_log(out / "adversarial" / "log.csv")
    assert rows and all(float(r["pixel_mse"]) > 0 for r in rows)
    with pytest.raises(ValueError, match="adversarial.pixel_steps"):
        make_cfg(overrides(data_root, out, "adversarial.pixel_steps=-1")).validate()
