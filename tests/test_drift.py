"""Drift evaluation: metrics on synthetic data, and ``aapt-world drift`` on the tiny world."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from aapt_world import metrics as M

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _video(seed: int = 0, t: int = 3, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_psnr_identical_capped_and_known_value():
    v = _video()
    assert np.all(M.psnr(v, v) == M.PSNR_CAP)
    a = np.full((2, 8, 8, 3), 100, np.uint8)
    b = a + np.uint8(10)  # MSE 100 -> 10 log10(255^2 / 100)
    np.testing.assert_allclose(M.psnr(a, b), 10 * math.log10(255 ** 2 / 100))


def test_masked_psnr_counts_only_the_masked_pixels():
    a = np.full((2, 8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[:, :4] += np.uint8(10)  # the top half differs by 10: MSE 100 there, 0 below
    top = np.zeros((2, 8, 8), dtype=bool)
    top[:, :4] = True
    np.testing.assert_allclose(M.masked_psnr(a, b, top), 10 * math.log10(255 ** 2 / 100))
    assert np.all(M.masked_psnr(a, b, ~top) == M.PSNR_CAP)
    np.testing.assert_allclose(M.masked_psnr(a, b, np.ones_like(top)), M.psnr(a, b))
    top[1] = False  # an empty mask is NaN, not a division warning or a cap
    assert np.isnan(M.masked_psnr(a, b, top)[1])
    with pytest.raises(ValueError, match="mask must be"):
        M.masked_psnr(a, b, top[:, :4])


def test_ssim_identical_is_one_and_noise_lower():
    v = _video()
    np.testing.assert_allclose(M.ssim(v, v), 1.0, atol=1e-9)
    assert np.all(M.ssim(v, _video(1)) < 0.2)
    with pytest.raises(ValueError):
        M.ssim(v, v[:, :8])


def _texture_pan(step_px: int, n: int = 5, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (48, 400, 3), dtype=np.uint8), (5, 5), 1)
    # turning right moves the view window right over the panorama: content slides left
    return np.stack([tex[:, 150 + step_px * i:150 + step_px * i + w] for i in range(n)])


def test_phase_correlation_yaw_sign_and_magnitude():
    expected = M._shift_to_deg(4, 64, 90.0)  # ~7.1 deg for a 4 px shift at 64 px / 90 deg
    right, left = M.yaw_changes(_texture_pan(4)), M.yaw_changes(_texture_pan(-4))
    assert np.all(right > 0) and np.all(left < 0)
    np.testing.assert_allclose(right, expected, rtol=0.15)
    np.testing.assert_allclose(left, -expected, rtol=0.15)
    assert M.step_yaw(_texture_pan(4, n=9)).shape == (2,)
    af = M.action_following(np.array([5.0, -3.0, 1.0, 0.2]), np.array([1.0, -0.5, -0.4, 0.1]))
    assert af["n_turn_steps"] == 3 and af["sign_accuracy"] == pytest.approx(2 / 3)
    # poses: ViZDoom yaw decreases turning right (and wraps at 360)
    poses = np.zeros((5, 5), np.float32)
    poses[:, 3] = [10, 5, 0, 355, 350]
    np.testing.assert_allclose(M.pose_yaw_steps(poses), [20.0])


def test_frame_stats_of_known_colours():
    red = np.zeros((1, 8, 8, 3), np.uint8)
    red[..., 0] = 255
    grey = np.full((1, 8, 8, 3), 128, np.uint8)
    assert M.brightness(red)[0] == pytest.approx(85.0)
    assert M.saturation(red)[0] == pytest.approx(255.0)
    assert M.saturation(grey)[0] == pytest.approx(0.0)
    assert M.hf_energy(grey)[0] == pytest.approx(0.0)
    assert M.hf_energy(_video(t=1))[0] > 50


def test_flicker_and_range_fraction_and_buckets():
    const = np.repeat(_video(t=1), 6, axis=0)
    assert np.all(M.flicker(const) == 0)
    noisy = _video(t=6)
    assert M.flicker_ratio(noisy, noisy) == pytest.approx(1.0)
    assert M.flicker_ratio(const, noisy) == 0.0
    real = np.arange(101, dtype=float)  # 5-95 % range = [5, 95]
    assert M.fraction_in_range(np.array([0, 5, 50, 95, 100.0]), real) == pytest.approx(0.6)
    assert M.bucket_means(np.arange(20.0), 10) == [i * 2 + 0.5 for i in range(10)]
    assert len(M.bucket_means(np.arange(3.0), 10)) == 3
    assert list(M.late_window(np.arange(100), 0.1)) == list(range(90, 100))


def test_drift_cli_on_tiny_world(tiny_world_dir, tmp_path):
    import dataclasses

    from aapt_world.world import load_world, save_world
    from agents.cli import main
    from agents.evaluation.drift import family_commands

    out = tmp_path / "drift"
    # an N-step "diffusion baseline": the same world sampled with 3 Euler steps per frame
    base = load_world(tiny_world_dir)
    base.config = dataclasses.replace(base.config, sample_steps=3, timestep_shift=2.0)
    save_world(tmp_path / "diffusion", base)
    main(["drift", "--world", str(tiny_world_dir), "--steps", "8", "--families", "spin,walk",
          "--out", str(out), "--video", "--map", "MAP01",
          "--compare", f"diffusion={tmp_path / 'diffusion'}"])
    report = json.loads((out / "report.json").read_text())
    for res in report["families"].values():
        assert [g["nfe"] for g in res["generators"].values()] == [1, 3]
        one, three = res["generators"]["neural"], res["generators"]["diffusion"]
        assert one["psnr_buckets"] != three["psnr_buckets"]  # 3 NFE sample other frames
        assert three["latency_ms_p50"] > 0 and three["rtf"] > 0
    assert set(report["families"]) == {"spin", "walk"}
    assert (report["width"], report["height"]) == (64, 48)
    for family, res in report["families"].items():
        # the real DoomEnv applied exactly the family's commands, and so did the neural world
        np.testing.assert_allclose(res["commands"], family_commands(family, 8), atol=1e-6)
        assert res["frames"] == 32
        ev = res["generators"]["neural"]
        assert ev["frames"] == 32 and len(ev["psnr_buckets"]) == 10
        assert all(0 < v <= M.PSNR_CAP for v in ev["psnr_buckets"])
        assert ev["fps"] > 0
        assert set(ev["stats"]) == {"brightness", "saturation", "hf_energy"}
    # the real game turned the way the spin commanded (pose yaw), right then left
    real_pose = report["families"]["spin"]["generators"]["neural"]["action_following"]["real_pose"]
    assert real_pose["sign_accuracy"] == 1.0
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# Drift evaluation") and "| spin | diffusion | 3 |" in markdown
    for png in ["psnr.png", "stats_spin.png", "stats_walk.png"]:
        assert (out / png).stat().st_size > 1000
    from aapt_world.video import read_mp4

    video = read_mp4(out / "side_by_side_spin.mp4")
    assert len(video) == 33 and video.shape[2] == 2 * video.shape[1] * 64 // 48


def test_demo_main_job_on_tiny_world(tiny_world_dir, tmp_path, capsys):
    """`aapt-world demo`: explorer rollout in the real game, the neural world driven with the
    same commands, side-by-side mp4 and a printed summary."""
    from agents.cli import main

    out = tmp_path / "demo"
    main(["demo", "--world", str(tiny_world_dir), "--steps", "6", "--out", str(out),
          "--map", "MAP01"])
    text = capsys.readouterr().out
    for key in ("== aapt-world demo ==", "speed:", "real-time factor", "latency p50", "PSNR",
                "late-window", "yaw sign accuracy", "side_by_side_explorer_6.mp4"):
        assert key in text, key
    report = json.loads((out / "report.json").read_text())
    assert list(report["families"]) == ["explorer_6"]
    assert report["families"]["explorer_6"]["frames"] == 24
    from aapt_world.video import read_mp4

    assert len(read_mp4(out / "side_by_side_explorer_6.mp4")) == 25


def test_demo_without_world_names_the_path(tmp_path):
    from aapt_world.checkpoint import CheckpointError
    from agents.cli import main

    with pytest.raises(CheckpointError, match="no world at"):
        main(["demo", "--world", str(tmp_path / "missing"), "--steps", "2"])


def test_drift_card_writes_metrics_into_the_model_card(tiny_world_dir, tmp_path):
    import shutil

    import torch

    from aapt_world.world import load_world
    from agents.cli import main

    world_dir = tmp_path / "world"
    shutil.copytree(tiny_world_dir, world_dir)
    before = load_world(world_dir).generator.state_dict()
    main(["drift", "--world", str(world_dir), "--steps", "4", "--families", "spin",
          "--out", str(tmp_path / "drift"), "--map", "MAP01", "--card"])
    main(["drift", "--world", str(world_dir), "--steps", "3", "--families", "walk",
          "--out", str(tmp_path / "drift2"), "--map", "MAP01", "--card"])  # merges, keeps spin
    world = load_world(world_dir)
    assert world.card["metrics"]["drift"]["walk"]["frames"] == 12
    spin = world.card["metrics"]["drift"]["spin"]
    assert spin["frames"] == 16 and spin["fps"] > 0 and 0 < spin["psnr_last"] <= M.PSNR_CAP
    assert world.card["name"] == "tiny test world"  # the rest of the card is kept
    assert "## metrics" in (world_dir / "MODEL_CARD.md").read_text()
    for key, value in world.generator.state_dict().items():
        assert torch.equal(value, before[key])
