"""Scripted rollouts in the real Doom world, written to mp4 (the neural world joins in later)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aapt_world.constants import DEFAULT_MAP, DOOM_FPS
from aapt_world.video import write_mp4
from envs.doom import DoomConfig, DoomEnv
from envs.scripted import make_policy
from training.collect import record_episode


@dataclass
class RolloutResult:
    frames: np.ndarray  # uint8 (1 + 4 S, H, W, 3)
    poses: np.ndarray  # float32 (1 + 4 S, 5)
    commands: np.ndarray  # float32 (S, 4)
    seconds: float


def real_rollout(steps: int, policy: str = "explorer", doom_map: str = DEFAULT_MAP, seed: int = 0,
                 width: int = 128, height: int = 96, progress: bool = True) -> RolloutResult:
    """Drive the real ViZDoom world with a scripted policy for ``steps`` steps (4 frames each)."""
    env = DoomEnv(DoomConfig(doom_map=doom_map, width=width, height=height,
                             action_type="continuous"))
    try:
        start = time.perf_counter()
        with tqdm(total=1, desc=f"real rollout {doom_map}", disable=not progress) as bar:
            arrays = record_episode(env, make_policy(policy), steps, seed)
            bar.update(1)
        seconds = time.perf_counter() - start
    finally:
        env.close()
    return RolloutResult(arrays["frames"], arrays["poses"], arrays["actions"], seconds)


def write_real_rollout(out: str | Path, steps: int, **kwargs) -> RolloutResult:
    result = real_rollout(steps, **kwargs)
    write_mp4(out, result.frames, fps=DOOM_FPS, scale=2)
    return result
