"""Fidelity levers: skip to the recycled frame, context-noise levels, per-group VAE latents,
teacher-forced session steps, and the fidelity ladder on the tiny world."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aapt_world import transformer, vae
from aapt_world.transformer import BlockCausalDiT, dit_config
from aapt_world.vae import CausalVideoVAE, VAEConfig, adapt_temporal_kernel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return model.eval()


def _clip(cfg, batch: int = 2, frames: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (batch, cfg.latent_channels, frames, cfg.latent_height, cfg.latent_width)
    return {"noisy": torch.randn(shape, generator=g), "prev": torch.randn(shape, generator=g),
            "cond": torch.randn(batch, frames, cfg.cond_dim, generator=g),
            "t": torch.rand(batch, frames, generator=g)}


def test_prev_skip_one_step_starts_as_a_copy_of_the_previous_frame():
    """With the net's output layer at zero, x0 = x_t - t v must be the recycled frame at t = 1
    (and v the plain zero output at t = 0)."""
    torch.manual_seed(0)
    cfg = dit_config("tiny", prev_skip=True)
    model = BlockCausalDiT(cfg).eval()  # zero-initialised output layer: net output 0
    x = _clip(cfg)
    with torch.no_grad():
        v1 = model(x["noisy"], x["prev"], x["cond"], 1.0)
        v0 = model(x["noisy"], x["prev"], x["cond"], 0.0)
    torch.testing.assert_close(x["noisy"] - v1, x["prev"])
    assert not v0.any()
    plain = BlockCausalDiT(dit_config("tiny")).eval()
    with torch.no_grad():  # the skip is what makes the copy: without it v = 0, x0 = noise
        assert not plain(x["noisy"], x["prev"], x["cond"], 1.0).any()


@pytest.mark.parametrize("frames", [4, 9])  # window 3: 9 frames slide the window
def test_skip_and_context_level_cached_step_matches_parallel(frames):
    torch.manual_seed(0)
    cfg = dit_config("tiny", prev_skip=True, context_noise_buckets=5, context_noise_max=0.5)
    model = _randomised(BlockCausalDiT(cfg))
    x = _clip(cfg, frames=frames)
    level = torch.rand(2, frames) * 0.5
    with torch.no_grad():
        par = model(x["noisy"], x["prev"], x["cond"], x["t"], context_level=level)
        cache = model.init_cache(2)
        steps = torch.stack([model.step(x["noisy"][:, :, k], x["prev"][:, :, k],
                                        x["cond"][:, k], x["t"][:, k], cache,
                                        context_level=level[:, k]) for k in range(frames)], 2)
        clean = model(x["noisy"], x["prev"], x["cond"], x["t"])
    assert (steps - par).abs().max() < 1e-5
    assert (clean - par).abs().mean() > 1e-3  # the level reaches the output


def test_context_noise_buckets_nearest_and_clamped():
    model = BlockCausalDiT(dit_config("tiny", context_noise_buckets=10, context_noise_max=0.7))
    levels = torch.tensor([0.0, 0.7 / 9 * 0.49, 0.7 / 9 * 0.51, 0.35, 0.7, 5.0, -1.0])
    assert model.context_noise_bucket(levels).tolist() == [0, 0, 1, 4, 9, 9, 0]


def test_diffusion_context_noise_changes_the_input_only_when_on():
    from training.stages.diffusion import noise_context

    prev = torch.randn(2, 4, 5, 3, 3)
    same, level = noise_context(prev, 0.0)
    assert same is prev and level is None
    noised, level = noise_context(prev, 0.5, torch.Generator().manual_seed(0))
    assert level.shape == (2, 5) and float(level.min()) >= 0 and float(level.max()) <= 0.5
    assert not torch.equal(noised, prev)


def test_self_forced_context_shifts_in_the_models_own_predictions():
    """A copy model (prev_skip, zero output layer: x0 = prev) makes the recycled frames visible:
    after n passes frame k must be the real frame max(0, k - n) — frames 1..n are the model's
    exact rollout from the real first frame, later ones carry n steps of its own error."""
    from aapt_world.conditions import ConditionConfig
    from aapt_world.world_model import WorldModel
    from training.stages.diffusion import diffusion_loss, self_forced_context

    torch.manual_seed(0)
    dit = dit_config("tiny", prev_skip=True)
    model = WorldModel(dit, ConditionConfig(kind="camera", cond_dim=dit.cond_dim)).eval()
    z = torch.randn(2, dit.latent_channels, 7, dit.latent_height, dit.latent_width)
    conds = torch.randn(2, 6, 4, 5)  # camera motion per video frame
    for passes in (1, 2, 4):
        prev = self_forced_context(model, z, conds, passes)
        expected = torch.stack([z[:, :, max(0, k - passes)] for k in range(6)], dim=2)
        torch.testing.assert_close(prev, expected)
    t = torch.ones(2)
    own = diffusion_loss(model, z, conds, t, prev=self_forced_context(model, z, conds, 2))
    assert own > diffusion_loss(model, z, conds, t)  # copying older frames is further off


def _small_vae(kernel: int) -> CausalVideoVAE:
    cfg = VAEConfig(height=48, width=64, hi_channels=4, enc_channels=16, temporal_channels=16,
                    dec_channels=16, norm_groups=4, light_temporal_channels=8,
                    light_dec_channels=8, temporal_kernel=kernel)
    return CausalVideoVAE(cfg)


def test_adapt_temporal_kernel_keeps_the_newest_step():
    """A kernel-3 VAE and its kernel-1 adaptation agree exactly on a first latent (its causal
    past is zeros), and differ once a past exists (the dropped steps mattered)."""
    torch.manual_seed(0)
    k3 = _randomised(_small_vae(3))
    k1 = _small_vae(1).eval()
    k1.load_state_dict(adapt_temporal_kernel(k3.state_dict(), 1))
    video = torch.rand(1, 3, 9, 48, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(k1.encode(video[:, :, :1]).mean,
                                   k3.encode(video[:, :, :1]).mean)
        assert (k1.encode(video).mean - k3.encode(video).mean).abs().max() > 1e-4
    back = adapt_temporal_kernel(k1.state_dict(), 3)  # growing: the new past steps are zero
    w = next(v for k, v in back.items() if k.endswith("tconv.weight"))
    assert w.shape[1] == 3 * w.shape[0] and not w[:, : 2 * w.shape[0]].any()


def test_widened_vae_reconstructs_as_before_and_feeds_its_new_channels():
    """16 -> 24 latent channels: the same reconstructions (new channels enter the decoders
    through zero weights), new channels that carry the input (so the decoders get a gradient),
    and a clear error for narrowing."""
    torch.manual_seed(0)
    old = _randomised(_small_vae(1))
    wide_cfg = VAEConfig(**{**old.cfg.__dict__, "latent_channels": 24})
    wide = CausalVideoVAE(wide_cfg).eval()
    wide.load_state_dict(vae.adapt_latent_channels(old.state_dict(), 24))
    video = torch.rand(1, 3, 9, 48, 64) * 2 - 1
    with torch.no_grad():
        z_old, z_wide = old.encode(video).mode(), wide.encode(video).mode()
        torch.testing.assert_close(z_wide[:, :16], z_old)
        torch.testing.assert_close(wide.decode(z_wide), old.decode(z_old))
        assert z_wide[:, 16:].std() > 0
    with pytest.raises(ValueError, match="cannot narrow"):
        vae.adapt_latent_channels(wide.state_dict(), 16)


def test_deeper_vae_starts_as_the_old_one():
    """More residual blocks (encoder, decoder, temporal): the new blocks are the identity, so
    the deeper VAE reconstructs exactly as the old one; a missing non-block tensor still fails
    the strict load."""
    torch.manual_seed(0)
    old = _randomised(_small_vae(1))
    deep_cfg = VAEConfig(**{**old.cfg.__dict__, "enc_blocks": 2, "dec_blocks": 3,
                            "dec_temporal_blocks": 3})
    deep = CausalVideoVAE(deep_cfg).eval()
    tensors = vae.add_residual_blocks(old.state_dict(), deep.state_dict())
    deep.load_state_dict(tensors)
    video = torch.rand(1, 3, 9, 48, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(deep.decode(deep.encode(video).mode()),
                                   old.decode(old.encode(video).mode()))
    partial = {k: v for k, v in old.state_dict().items() if "conv_out" not in k}
    assert "encoder.conv_out.weight" not in vae.add_residual_blocks(partial, deep.state_dict())


def test_widened_dit_predicts_as_before_and_copies_the_new_channels():
    """The DiT adapted to a wider latent gives the old channels' velocity unchanged (whatever
    the new channels hold) and, with the skip, a copy of the previous frame on the new ones."""
    torch.manual_seed(0)
    cfg = dit_config("tiny", prev_skip=True)
    old = _randomised(BlockCausalDiT(cfg))
    wide_cfg = dit_config("tiny", prev_skip=True, latent_channels=cfg.latent_channels + 8)
    wide = BlockCausalDiT(wide_cfg).eval()
    adapted = transformer.adapt_latent_channels(  # named as in a generator checkpoint
        {f"dit.{k}": v for k, v in old.state_dict().items()}, wide_cfg.latent_channels,
        cfg.patch_size)
    wide.load_state_dict({k.removeprefix("dit."): v for k, v in adapted.items()})
    x, extra = _clip(cfg), _clip(wide_cfg, seed=1)
    c = cfg.latent_channels
    noisy = torch.cat([x["noisy"], extra["noisy"][:, c:]], 1)
    prev = torch.cat([x["prev"], extra["prev"][:, c:]], 1)
    with torch.no_grad():
        v_old = old(x["noisy"], x["prev"], x["cond"], 1.0)
        v_wide = wide(noisy, prev, x["cond"], 1.0)
    torch.testing.assert_close(v_wide[:, :c], v_old)
    torch.testing.assert_close(noisy[:, c:] - v_wide[:, c:], prev[:, c:])


def test_per_group_vae_latent_depends_on_its_own_frames_only():
    torch.manual_seed(0)
    vae = _randomised(_small_vae(1))
    video = torch.rand(1, 3, 9, 48, 64) * 2 - 1
    changed = video.clone()
    changed[:, :, 1:5] = torch.rand(1, 3, 4, 48, 64)  # group 1 only
    with torch.no_grad():
        a, b = vae.encode(video).mean, vae.encode(changed).mean
        assert torch.equal(a[:, :, 2], b[:, :, 2]) and not torch.equal(a[:, :, 1], b[:, :, 1])
        # decoding is per group too: latent 2's frames do not depend on latent 1
        z = a.clone()
        z2 = a.clone()
        z2[:, :, 1] += 1.0
        torch.testing.assert_close(vae.decode(z)[:, :, 5:], vae.decode(z2)[:, :, 5:])


def test_session_teacher_forcing_recycles_the_given_latent(tiny_world_dir):
    from aapt_world.world import load_world

    world = load_world(tiny_world_dir)
    start = torch.from_numpy(world.start_frames[:1])
    conds = torch.zeros(1, 4, 4)
    a, b = world.session(1), world.session(1)
    a.reset(start, seeds=[3])
    b.reset(start, seeds=[3])
    torch.testing.assert_close(a.step(conds), b.step(conds, recycled=b.prev.clone()))
    other = torch.randn_like(a.prev)
    assert not torch.equal(a.step(conds), b.step(conds, recycled=other))
    with pytest.raises(ValueError, match="recycled"):
        b.step(conds, recycled=other[:, :2])


def test_ladder_cli_on_tiny_world(tiny_world_dir, tmp_path):
    from agents.evaluation.ladder import main

    out = tmp_path / "ladder"
    report = main(["--world", str(tiny_world_dir), "--compare", f"again={tiny_world_dir}",
                   "--steps", "6", "--families", "walk,spin", "--clip-steps", "3",
                   "--noop-steps", "4", "--maps", "MAP01", "--out", str(out),
                   "--strip", str(tmp_path / "docs" / "strip.png")])
    saved = json.loads((out / "ladder.json").read_text())
    assert set(saved["worlds"]) == {"neural", "again"}
    w = report["worlds"]["neural"]
    assert w["teacher_forced"]["steps"] == 3 and w["noop_hold"]["steps"] == 4
    assert w["loop_closure"]["steps"] == 15
    assert set(w["rollouts"]) == {"walk", "spin"}
    assert len(w["rollouts"]["walk"]["frozen_buckets"]) == len(w["rollouts"]["walk"]
                                                              ["psnr_buckets"])
    # a random tiny world is nowhere near the real game: the ladder must say so
    assert not w["targets"]["vae_psnr >= 28"]["met"] and w["vae"]["psnr"] < 20
    assert 0 < w["vae"]["latent_copy_over_zero"] < 10
    # the same world twice gives the same numbers (seeded)
    assert report["worlds"]["again"]["teacher_forced"] == w["teacher_forced"]
    strip = (tmp_path / "docs" / "strip.png")
    import cv2

    img = cv2.imread(str(strip))
    assert img is not None and img.shape[0] >= 3 * 48  # real + two worlds
    assert "| teacher-forced 1 step PSNR |" in (out / "ladder.md").read_text()
    summary, rolls = w["rollout_summary"], w["rollouts"]
    margins = [np.mean(np.subtract(v["psnr_buckets"], v["frozen_buckets"]))
               for v in rolls.values()]
    assert summary["mean_margin_over_frozen"] == pytest.approx(float(np.mean(margins)))
    assert summary["worst_margin_over_frozen"] == min(v["margin_over_frozen_min"]
                                                      for v in rolls.values())
    assert "| rollouts: mean margin over frozen (dB) |" in (out / "ladder.md").read_text()


def test_ladder_rolls_out_from_several_maps(tiny_world_dir, tmp_path):
    """``--rollout-maps``: every family from every start map, named family@MAP; the real
    rollouts really start from each map (different first frames)."""
    from agents.evaluation.ladder import main

    out = tmp_path / "ladder"
    report = main(["--world", str(tiny_world_dir), "--steps", "3", "--families", "walk",
                   "--clip-steps", "2", "--noop-steps", "2", "--maps", "MAP01",
                   "--rollout-maps", "MAP01,MAP02", "--out", str(out)])
    rolls = report["worlds"]["neural"]["rollouts"]
    assert set(rolls) == {"walk@MAP01", "walk@MAP02"}
    assert rolls["walk@MAP01"]["frozen_buckets"] != rolls["walk@MAP02"]["frozen_buckets"]
    assert report["rollout_maps"] == ["MAP01", "MAP02"]
    assert "from MAP01, MAP02's reset frame" in (out / "ladder.md").read_text()


def test_copy_over_zero_of_a_static_latent_is_zero():
    from agents.evaluation.ladder import latent_predictability

    z = torch.randn(1, 4, 1, 3, 3).expand(1, 4, 6, 3, 3).clone()
    z[:, :, 0] = 5.0  # the first-frame latent is excluded
    assert latent_predictability(z)["copy_over_zero"] == pytest.approx(0.0, abs=1e-6)
    z[:, :, 1:] = torch.randn(1, 4, 5, 3, 3)  # independent frames: a copy is worse than zero
    assert latent_predictability(z)["copy_over_zero"] > 1.0


def test_inference_context_noise_is_seeded_and_survives_snapshots(tiny_world_dir):
    from aapt_world.world import load_world

    world = load_world(tiny_world_dir)
    world.config.context_noise = 0.3
    start = torch.from_numpy(world.start_frames[:1])
    conds = torch.zeros(1, 4, 4)
    a, clean = world.session(1), load_world(tiny_world_dir).session(1)
    assert a.context_noise == 0.3 and clean.context_noise == 0.0
    a.reset(start, seeds=[1])
    clean.reset(start, seeds=[1])
    snap = a.snapshot()
    first = a.step(conds)
    assert not torch.equal(first, clean.step(conds))  # the noised context changes the frame
    a.restore(snap)
    torch.testing.assert_close(a.step(conds), first)


@pytest.mark.parametrize("kernel", [1, 3])
def test_encode_groups_equals_step_by_step(kernel):
    torch.manual_seed(0)
    vae = _randomised(_small_vae(kernel))
    video = torch.rand(2, 3, 1 + 4 * 5, 48, 64) * 2 - 1
    with torch.no_grad():
        post, state = vae.encode_step(video[:, :, :1], vae.init_encode_state(2))
        steps = []
        st = state
        for k in range(5):
            p, st = vae.encode_step(video[:, :, 1 + 4 * k: 5 + 4 * k], st)
            steps.append(p.mean)
        a, st2 = vae.encode_groups(video[:, :, 1:9], state)
        b, _ = vae.encode_groups(video[:, :, 9:], st2)
        torch.testing.assert_close(torch.cat([a.mean, b.mean], 2), torch.cat(steps, 2),
                                   atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="first step"):
            vae.encode_groups(video[:, :, 1:9], vae.init_encode_state(2))


def test_ladder_merge_joins_reports_of_the_same_frames(tiny_world_dir, tmp_path):
    """``--merge``: two ladder.json files become one table without running a world; ladders of
    other frames are refused, naming the field that differs."""
    from agents.evaluation.ladder import main, merge_reports

    args = ["--world", str(tiny_world_dir), "--steps", "3", "--families", "walk",
            "--clip-steps", "2", "--noop-steps", "2", "--maps", "MAP01"]
    a = main(args + ["--out", str(tmp_path / "a")])
    b = main(args + ["--compare", f"again={tiny_world_dir}", "--out", str(tmp_path / "b")])
    out = tmp_path / "merged"
    merged = main(["--merge", f"first={tmp_path / 'a' / 'ladder.json'}",
                   f"second={tmp_path / 'b' / 'ladder.json'}", "--out", str(out)])
    assert list(merged["worlds"]) == ["first", "second/neural", "second/again"]
    assert merged["worlds"]["first"] == a["worlds"]["neural"]
    assert merged["worlds"]["second/again"] == b["worlds"]["again"]
    assert merged["paths"]["first"] == str(tiny_world_dir)
    text = (out / "ladder.md").read_text()
    assert "| rung | first | second/neural | second/again |" in text
    met = sum(t["met"] for t in a["worlds"]["neural"]["targets"].values())
    total = len(a["worlds"]["neural"]["targets"])
    assert f"| targets met | {met} / {total} | {met} / {total} | {met} / {total} |" in text
    summary = (out / "summary.md").read_text().splitlines()
    assert len(summary) == 2 + 3 and summary[2].startswith("| first | ")
    assert summary[2].endswith(f"| {met} / {total} |")
    picked = main(["--merge", f"first={tmp_path / 'a' / 'ladder.json'}",
                   f"again={tmp_path / 'b' / 'ladder.json'}#again", "--out", str(out)])
    assert list(picked["worlds"]) == ["first", "again"]
    with pytest.raises(ValueError, match="no world 'nope'"):
        merge_reports({"a": a}, {"a": "nope"})
    other = json.loads((tmp_path / "a" / "ladder.json").read_text())
    other["config"]["noop_steps"] = 5
    with pytest.raises(ValueError, match="noop_steps"):
        merge_reports({"a": a, "other": other})
    with pytest.raises(SystemExit):
        main(["--merge", "no-name-given", "--out", str(out)])


def test_turned_copy_baseline_moves_the_view_against_the_turn() -> None:
    """The ladder's geometry-only baseline: no turn repeats the frame; a right turn moves
    what was ahead to the left, further in each of the step's 4 frames."""
    from agents.evaluation.ladder import turned_copy

    frame = np.zeros((24, 32, 3), np.uint8)
    frame[:, 16] = 255  # a bright column just right of the centre
    still = turned_copy(frame, np.zeros(4, np.float32))
    assert still.shape == (4, 24, 32, 3) and (still == frame).all()
    right = turned_copy(frame, np.array([0, 0, 1.0, 0], np.float32))  # 6 deg per frame
    centres = [float((f[12, :, 0] * np.arange(32)).sum() / f[12, :, 0].sum()) for f in right]
    assert 16 > centres[0] > centres[1] > centres[2] > centres[3] > 8
