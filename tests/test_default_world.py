"""The shipped default world (worlds/doom): present, small, fp16, documented, and loadable with
no arguments by gym.make, the vector env and the main job's code path."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from aapt_world.checkpoint import load_weights
from aapt_world.world import CARD, WEIGHTS, load_world
from envs import DEFAULT_WORLD

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_shipped_world_is_small_fp16_and_has_a_card() -> None:
    files = [p for p in DEFAULT_WORLD.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 30 * 2**20
    assert all(p.stat().st_size <= 15_000_000 for p in files)  # shards of at most 15 MB
    tensors, meta = load_weights(DEFAULT_WORLD / WEIGHTS)
    floats = {v.dtype for v in tensors.values() if v.is_floating_point()}
    assert floats <= {torch.float16, torch.bfloat16}, floats
    card = meta["card"]
    for key in ("data", "training", "compute"):
        assert card.get(key), f"model card lacks {key!r}"
    assert set(card["training"]) >= {"vae", "diffusion", "consistency", "adversarial"}
    assert card["generator_stage"] == "adversarial"
    text = (DEFAULT_WORLD / CARD).read_text()
    assert "## training" in text and "## compute" in text


def test_gym_make_without_arguments_runs_the_shipped_world() -> None:
    env = gym.make("aapt/NeuralDoom-v0")
    world = load_world(DEFAULT_WORLD)
    h, w, _ = world.frame_shape
    obs, info = env.reset(seed=0)
    assert obs.shape == (h, w, 3) and obs.dtype == np.uint8
    frames = [env.step(env.action_space.sample())[0] for _ in range(3)]
    assert all(f.shape == (h, w, 3) for f in frames)
    assert not np.array_equal(frames[0], frames[-1])  # the world moves
    env.close()
    check_env(gym.make("aapt/NeuralDoom-v0").unwrapped, skip_render_check=True)


def test_vector_env_defaults_to_the_shipped_world() -> None:
    venv = gym.make_vec("aapt/NeuralDoom-v0", num_envs=2)
    obs, _ = venv.reset(seed=0)
    assert obs.shape[0] == 2
    venv.step(np.array([1, 2]))
    venv.close()


def test_shipped_world_records_checksums_of_every_file(tmp_path) -> None:
    """The shipped world's index holds the SHA-256 of each shard and of the start frames; a
    changed start frame is caught (the shards' bytes were never rewritten to add them)."""
    import shutil

    from aapt_world.checkpoint import CheckpointError, recorded_checksums

    sums = recorded_checksums(DEFAULT_WORLD / WEIGHTS)
    shards = {p.name for p in DEFAULT_WORLD.glob("world-*-of-*.safetensors")}
    assert shards and set(sums) == shards | {"start_frames.npy"}
    copy = tmp_path / "doom"
    shutil.copytree(DEFAULT_WORLD, copy)
    frames = np.load(copy / "start_frames.npy")
    np.save(copy / "start_frames.npy", frames[::-1].copy())
    with pytest.raises(CheckpointError, match="corrupt start frames"):
        load_world(copy)
