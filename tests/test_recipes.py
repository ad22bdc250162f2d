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
