"""envs.vae_view.WorldVAEView: the real game's frames as the world's own VAE streams them."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import TINY_H, TINY_W

from agents.evaluation.ladder import decode_latents, encode_latents
from agents.ppo import AgentEvalConfig, evaluate
from envs.vae_view import WorldVAEView

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FramesEnv(gym.Env):
    """Random frames, 4 a step in ``info["frames"]`` as DoomEnv gives them; ends after 3."""

    def __init__(self, frames: np.ndarray, give_frames: bool = True) -> None:
        self.observation_space = gym.spaces.Box(0, 255, frames.shape[1:], np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.video, self.give_frames, self.t = frames, give_frames, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.t = 0
        first = self.video[:1]
        return first[0], ({"frames": np.repeat(first, 4, axis=0)} if self.give_frames else {})

    def step(self, action: Any):
        self.t += 1
        group = self.video[1 + 4 * (self.t - 1): 1 + 4 * self.t]
        return group[-1], 1.0, self.t == 3, False, {"frames": group}


def test_view_is_the_worlds_streaming_encode_and_decode(tiny_world_factory) -> None:
    world = tiny_world_factory()
    video = np.random.default_rng(0).integers(0, 256, (13, TINY_H, TINY_W, 3), dtype=np.uint8)
    env = WorldVAEView(FramesEnv(video), world)
    seen = [env.reset(seed=0)[0][None]]
    infos = []
    for _ in range(3):
        obs, reward, terminated, _, info = env.step(0)
        seen.append(info["frames"])
        infos.append(info)
        assert np.array_equal(obs, info["frames"][-1]) and reward == 1.0
    assert terminated
    assert np.array_equal(infos[0]["real_frames"], video[1:5])  # the real frames stay in info
    # the same frames through the ladder's clip encoder and streaming decoder
    expected = decode_latents(world, encode_latents(world, video, "cpu"))
    got = np.concatenate(seen)
    assert got.shape == expected.shape == video.shape
    assert np.array_equal(got, expected)
    assert not np.array_equal(got, video)  # the VAE changed them: the view is not the input
    # a second episode restarts the encoder's and decoder's streams
    assert np.array_equal(env.reset(seed=0)[0], expected[0])


def test_view_refuses_frames_the_world_cannot_take(tiny_world_factory) -> None:
    world = tiny_world_factory()
    wrong = np.zeros((5, TINY_H * 2, TINY_W, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="the world's VAE takes"):
        WorldVAEView(FramesEnv(wrong), world)
    right = np.zeros((5, TINY_H, TINY_W, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"needs info\['frames'\]"):
        WorldVAEView(FramesEnv(right, give_frames=False), world).reset()
    with pytest.raises(RuntimeError, match="reset"):
        WorldVAEView(FramesEnv(right), world).step(0)


def test_eval_through_vae_needs_the_real_game_and_a_world(tiny_world_dir) -> None:
    with pytest.raises(ValueError, match="--through-vae"):
        evaluate(AgentEvalConfig(policy="random", env="neural", world=str(tiny_world_dir),
                                 through_vae=True, episodes=1))
    with pytest.raises(ValueError, match="--through-vae"):
        evaluate(AgentEvalConfig(policy="random", env="real", through_vae=True, episodes=1))


def test_eval_through_vae_plays_the_real_game(tiny_world_dir) -> None:
    torch.manual_seed(0)
    result = evaluate(AgentEvalConfig(policy="random", env="real", world=str(tiny_world_dir),
                                      through_vae=True, episodes=1, max_steps=3))
    row = result["rows"][0]
    assert row["world"].endswith("(through the world's VAE)") and row["length_mean"] == 3
