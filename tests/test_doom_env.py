"""The real Doom world: Gymnasium API, seeding, frame skip, poses and ViZDoom pitfalls."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from envs.actions import DISCRETE_ACTION_NAMES, FRAMES_PER_STEP
from envs.doom import DoomConfig, DoomEnv


@pytest.fixture(scope="module")
def doom() -> DoomEnv:
    env = DoomEnv(DoomConfig())
    yield env
    env.close()


@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_check_env_passes(action_type: str) -> None:
    env = DoomEnv(DoomConfig(action_type=action_type), render_mode="rgb_array")
    try:
        check_env(env, skip_render_check=False)
    finally:
        env.close()


def test_registered_ids_make() -> None:
    env = gym.make("aapt/Doom-v0")
    obs, info = env.reset(seed=3)
    assert obs.shape == (96, 128, 3) and obs.dtype == np.uint8
    assert env.spec.max_episode_steps == 2100 // FRAMES_PER_STEP
    env.close()


def test_step_gives_four_frames_and_poses(doom: DoomEnv) -> None:
    obs, info = doom.reset(seed=0)
    assert info["frames"].shape == (4, 96, 128, 3) and info["poses"].shape == (4, 5)
    assert np.array_equal(info["frames"][0], obs) and np.array_equal(info["frames"][-1], obs)
    turn_right = DISCRETE_ACTION_NAMES.index("turn_right")
    obs, reward, terminated, truncated, info = doom.step(turn_right)
    assert info["frames"].shape == (FRAMES_PER_STEP, 96, 128, 3)
    assert info["poses"].shape == (FRAMES_PER_STEP, 5)
    np.testing.assert_array_equal(obs, info["frames"][-1])
    # Turning right decreases yaw (ViZDoom's angle grows counter-clockwise), a bit every tic.
    yaw = np.concatenate([[0.0], info["poses"][:, 3]])  # the reset pose of MAP01 has yaw 0
    dyaw = (np.diff(yaw) + 180.0) % 360.0 - 180.0
    assert np.all(dyaw < 0), dyaw
    # The frames of one step differ from each other: the camera moved every tic.
    assert all(np.abs(info["frames"][i].astype(int) - info["frames"][i + 1]).mean() > 1
               for i in range(FRAMES_PER_STEP - 1))


def test_forward_moves_along_yaw(doom: DoomEnv) -> None:
    doom.reset(seed=0)
    _, _, _, _, info = doom.step(DISCRETE_ACTION_NAMES.index("forward"))
    start, end = info["poses"][0], info["poses"][-1]
    yaw = np.deg2rad(start[3])
    displacement = end[:2] - start[:2]
    assert displacement @ np.array([np.cos(yaw), np.sin(yaw)]) > 1.0


def test_same_seed_same_actions_same_frames() -> None:
    def run(seed: int) -> np.ndarray:
        env = DoomEnv(DoomConfig(scenario="health_gathering", nomonsters=False))
        env.reset(seed=seed)
        rng = np.random.default_rng(123)
        frames = [env.step(int(rng.integers(env.action_space.n)))[4]["frames"] for _ in range(20)]
        env.close()
        return np.concatenate(frames)

    a, b = run(7), run(7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, run(8))  # the seed really reaches ViZDoom (random spawns)


def test_timeout_is_truncation_not_termination() -> None:
    env = DoomEnv(DoomConfig(scenario="health_gathering", nomonsters=False,
                             episode_timeout_tics=40))
    env.reset(seed=0)
    for step in range(100):  # noqa: B007 - the step count is checked below
        obs, reward, terminated, truncated, info = env.step(0)
        if terminated or truncated:
            break
    env.close()
    assert truncated and not terminated, (step, terminated, truncated)
    assert step == 40 // FRAMES_PER_STEP - 1
    assert obs.mean() > 5  # the terminal observation is the last real frame, never black


def test_death_is_termination_with_a_real_frame() -> None:
    env = DoomEnv(DoomConfig(scenario="take_cover", nomonsters=False))
    env.reset(seed=0)
    for _ in range(2000):
        obs, reward, terminated, truncated, info = env.step(0)
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert info["frames"].reshape(FRAMES_PER_STEP, -1).mean(axis=1).min() > 5
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.close()


@pytest.mark.parametrize("action_type,bad", [
    ("discrete", 11), ("discrete", -1), ("discrete", 1.5), ("discrete", [1, 2]),
    ("continuous", np.zeros(3)), ("continuous", np.array([0, 0, 2.0, 0])),
    ("continuous", np.array([np.nan, 0, 0, 0])), ("continuous", "forward"),
])
def test_bad_actions_get_clear_errors(action_type: str, bad: object) -> None:
    env = DoomEnv(DoomConfig(action_type=action_type))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="expected|range|NaN"):
        env.step(bad)
    env.step(env.action_space.sample())  # still usable afterwards
    env.close()


def test_bad_config_errors() -> None:
    with pytest.raises(ValueError, match="scenario"):
        DoomEnv(DoomConfig(scenario="nope"))
    with pytest.raises(ValueError, match="multiples of 8"):
        DoomEnv(DoomConfig(width=100))
    with pytest.raises(ValueError, match="action_type"):
        DoomEnv(DoomConfig(action_type="joystick"))


def test_reset_options_are_rejected_not_ignored() -> None:
    env = DoomEnv(DoomConfig())
    frame = env.reset(seed=0)[0]
    with pytest.raises(ValueError, match=r"takes no options, got \['frame'\].*NeuralDoom-v0"):
        env.reset(seed=0, options={"frame": frame})
    env.reset(seed=0, options={})  # empty options are no options
    env.close()
