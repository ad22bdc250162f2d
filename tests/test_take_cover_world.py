"""The shipped TakeCover dream (worlds/take_cover, issue 12): small, fp16, its deaths from the
learned head, and loadable with no arguments by gym.make and the vector env."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers the ids)
from aapt_world.checkpoint import load_weights
from aapt_world.world import WEIGHTS, load_world
from envs import DEFAULT_TAKE_COVER_WORLD

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_take_cover_world_is_small_fp16_with_learned_termination() -> None:
    files = [p for p in DEFAULT_TAKE_COVER_WORLD.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 15 * 2**20
    tensors, meta = load_weights(DEFAULT_TAKE_COVER_WORLD / WEIGHTS)
    assert {v.dtype for v in tensors.values() if v.is_floating_point()} <= {torch.float16}
    world = load_world(DEFAULT_TAKE_COVER_WORLD)
    assert world.heads is not None and world.config.termination == "sample"
    assert world.config.action_type == "dodge" and meta["card"]["heads"]["from"]


def test_gym_make_runs_the_take_cover_dream() -> None:
    env = gym.make("aapt/NeuralDoomTakeCover-v0")
    assert env.action_space == gym.spaces.Discrete(3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (96, 128, 3) and obs.dtype == np.uint8
    _, reward, terminated, truncated, _ = env.step(1)
    assert np.isfinite(reward) and isinstance(terminated, bool) and not truncated
    env.close()
    venv = gym.make_vec("aapt/NeuralDoomTakeCover-v0", num_envs=2)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (2, 96, 128, 3)
    venv.step(np.array([0, 2]))
    venv.close()
