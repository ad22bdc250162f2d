"""The GPU recipe, dry-run on the CPU with the tiny model: every stage runs from a fresh data
collection to an exported world, so the one-command recipe cannot rot between GPU sessions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_recipe_dry_run_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "PY": sys.executable, "DEVICE": "cpu", "MODEL": "tiny",
           "SCALE": "0.01", "EPISODES": "8", "STEPS_PER_EPISODE": "24", "WORKERS": "1",
           "THREADS": "1", "DATA": str(tmp_path / "data"), "RUN": str(tmp_path / "run"),
           "OUT_WORLD": str(tmp_path / "world")}
    done = subprocess.run(["bash", "training/recipes/doom_gpu.sh"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "doom_gpu: world at" in done.stdout
    from aapt_world.world import load_world

    world = load_world(tmp_path / "world")
    assert world.frame_shape == (48, 64, 3)
    for stage in ("vae", "decoder", "diffusion", "consistency", "adversarial"):
        assert (tmp_path / "run" / stage / "log.csv").exists(), stage


@pytest.mark.slow
def test_take_cover_recipe_dry_run_on_cpu(tmp_path: Path) -> None:
    """The TakeCover recipe end to end with the tiny model: real take_cover data with deaths,
    every stage plus the heads, a world that keeps TakeCover's own actions."""
    env = {**os.environ, "PY": sys.executable, "MODEL": "tiny", "SCALE": "0.005",
           "EPISODES": "8", "WORKERS": "1", "THREADS": "1", "DATA": str(tmp_path / "data"),
           "RUN": str(tmp_path / "run"), "OUT_WORLD": str(tmp_path / "world")}
    done = subprocess.run(["bash", "training/recipes/take_cover_cpu.sh"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    from aapt_world.world import load_world
    from training.dataset import ClipDataset

    world = load_world(tmp_path / "world")
    assert world.frame_shape == (48, 64, 3) and world.config.action_type == "dodge"
    assert world.source_game()[0] == "take_cover" and world.heads is not None
    assert world.config.termination == "sample"  # deaths drawn from the calibrated head
    episodes = ClipDataset(tmp_path / "data", 1, split="all").episodes
    assert any(ep.arrays["terminated"][-1] for ep in episodes)  # players die in TakeCover


@pytest.mark.slow
def test_humanoid_recipe_dry_run_on_cpu(tmp_path: Path) -> None:
    """The humanoid recipe end to end with the tiny model: performer data, every stage with
    per-frame keypoint conditions, a pose world the neural humanoid env drives, the probe."""
    env = {**os.environ, "PY": sys.executable, "MODEL": "tiny", "WIDTH": "64", "HEIGHT": "48",
           "SCALE": "0.005", "EPISODES": "4", "STEPS": "14", "WORKERS": "1", "THREADS": "1",
           "DATA": str(tmp_path / "data"), "RUN": str(tmp_path / "run"),
           "OUT_WORLD": str(tmp_path / "world"), "MUJOCO_GL": "osmesa", "FOLLOW_STEPS": "3",
           "PERFORMANCES": "1", "LONG_MINUTES": "0.2"}
    done = subprocess.run(["bash", "training/recipes/humanoid_cpu.sh"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    import numpy as np

    from envs.neural_humanoid import NeuralHumanoidEnv

    env = NeuralHumanoidEnv(tmp_path / "world")
    assert env.world.config.condition.kind == "pose" and env.world.config.action_type == "pose"
    env.reset(seed=0)
    assert env.step(env.action_space.sample())[4]["frames"].shape == (4, 48, 64, 3)
    assert np.isfinite(env.world.generator.cond.scale.numpy()).all()
    assert (tmp_path / "run" / "pose_probe.safetensors").exists()
    import json

    report = json.loads((tmp_path / "run" / "pose_following" / "report.json").read_text())
    short, long = report["performances"].values()  # 3 steps, and 0.2 min = 90 steps
    assert short["frames"] == 12 and long["frames"] == 360
    for perf in (short, long):
        assert all(np.isfinite(v) for v in perf["keypoint_px"].values())
        assert perf["psnr"]["neural"] > 0 and set(perf["targets"]) == {"keypoints", "psnr"}
        # the VAE ceiling: real frames through the world's own encoder and streaming decoder
        assert np.isfinite(perf["psnr"]["vae"]) and perf["psnr"]["vae"] > 0
        # one step from the real previous latent: what the world makes without its own drift
        assert np.isfinite(perf["psnr"]["teacher_forced"])
        # where the frame is lost: inside the body's box and outside it, every column
        for region in ("psnr_body", "psnr_background"):
            assert set(perf[region]) == {"neural", "frozen", "vae", "teacher_forced"}
            assert all(np.isfinite(v) and v > 0 for v in perf[region].values())
        assert 0 < perf["body_fraction"] < 1
    assert report["speed"]["video_fps"] > 0
    assert (tmp_path / "run" / "pose_following" / "strip.png").exists()
    from agents.evaluation.demo import main as demo  # a pose world: the pose demo, whose
    with pytest.raises(ValueError, match=r"the probe reads 128x96 frames, the world draws "
                                         r"64x48"):  # default probe is the shipped 128x96 one
        demo(["--world", str(tmp_path / "world"), "--steps", "2", "--out", str(tmp_path / "d")])
