"""The neural world as Gymnasium envs: single env, natively batched vector env, SB3 adapter."""

from __future__ import annotations

import shutil
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs  # noqa: F401  (registers the ids)
from aapt_world.checkpoint import CheckpointError
from aapt_world.world import START_FRAMES, WEIGHTS
from envs.actions import action_to_command
from envs.neural import NeuralWorldEnv
from envs.sb3 import NeuralWorldSB3VecEnv
from envs.vector import NeuralWorldVectorEnv

SHAPE = (48, 64, 3)  # the tiny world of conftest.py
ACTIONS = [1, 5, 8, 3, 0, 10]


def forced_heads_world(make_world, reward: float, logit: float):
    """A tiny world whose heads always give ``reward`` and termination ``logit``."""
    world = make_world()
    with torch.no_grad():
        world.heads.out[-1].weight.zero_()
        world.heads.out[-1].bias.copy_(torch.tensor([reward, logit]))
    return world


def rollout(env: NeuralWorldEnv, seed: int, actions=ACTIONS) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    frames = [obs[None]]
    for a in actions:
        obs, _, _, _, info = env.step(a)
        assert np.array_equal(obs, info["frames"][-1])
        frames.append(info["frames"])
    return np.concatenate(frames)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env(tiny_world_dir) -> NeuralWorldEnv:
    return NeuralWorldEnv(tiny_world_dir)


# ------------------------------------------------------------------------- single env
def test_gymnasium_check_env_is_deterministic(tiny_world_dir, monkeypatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # check_env also makes render_mode="human"
    env = gym.make("aapt/NeuralDoom-v0", world=tiny_world_dir)
    assert env.spec.nondeterministic is False and env.spec.max_episode_steps == 525
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "not equal although similar" etc. would fail here
        check_env(env.unwrapped)
    env.close()


def test_sb3_check_env(env) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env, warn=True)


def test_spaces_info_and_same_encoding_as_real_env(env) -> None:
    assert env.observation_space == gym.spaces.Box(0, 255, SHAPE, np.uint8)
    assert env.action_space == gym.spaces.Discrete(11)
    obs, info = env.reset(seed=0)
    assert obs.shape == SHAPE and obs.dtype == np.uint8
    assert info["frames"].shape == (4, *SHAPE) and 0 <= info["start_index"] < 3
    obs, reward, terminated, truncated, info = env.step(7)
    assert info["frames"].shape == (4, *SHAPE) and info["frames"].dtype == np.uint8
    assert np.array_equal(obs, info["frames"][-1])
    assert np.array_equal(info["command"], action_to_command(7, "discrete"))
    assert isinstance(reward, float) and terminated is False and truncated is False
    assert len({f.tobytes() for f in info["frames"]}) > 1  # the 4 frames differ


def test_seeding(env) -> None:
    a, b, c = rollout(env, 3), rollout(env, 3), rollout(env, 4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a[1:], c[1:])
    # same seed, same start frame, different noise than another seed with that start frame
    obs, info = env.reset(seed=3, options={"start_index": 0})
    assert info["start_index"] == 0


def test_start_from_an_image(env) -> None:
    image = np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)
    obs, info = env.reset(seed=0, options={"frame": image})
    assert info["start_index"] == -1 and obs.shape == SHAPE
    other, _ = env.reset(seed=0, options={"frame": 255 - image})
    assert not np.array_equal(obs, other)
    env.reset(seed=0, options={"frame": image})
    assert env.step(1)[0].shape == SHAPE


def test_heads_give_reward_and_termination(tiny_world_factory) -> None:
    env = NeuralWorldEnv(forced_heads_world(tiny_world_factory, reward=2.5, logit=10.0))
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(1)
    assert reward == pytest.approx(2.5) and terminated is True and truncated is False
    assert info["termination_logit"] == pytest.approx(10.0)
    with pytest.raises(RuntimeError, match="reset"):  # as the real env on a finished episode
        env.step(1)
    env.reset(seed=1)
    assert env.step(1)[2] is True

    env = NeuralWorldEnv(tiny_world_factory(heads=False))
    env.reset(seed=0)
    for _ in range(3):
        _, reward, terminated, _, _ = env.step(2)
        assert reward == 0.0 and terminated is False


@pytest.mark.parametrize("action, match", [
    (1.5, r"Discrete\(11\)"), (np.array([1, 2]), r"Discrete\(11\)"), (11, r"Discrete\(11\)"),
    (-1, r"Discrete\(11\)"), ("forward", r"Discrete\(11\)"), (np.nan, r"Discrete\(11\)"),
])
def test_bad_discrete_actions(env, action, match) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)
    assert env.step(1)[0].shape == SHAPE  # still usable


def test_bad_continuous_actions(tiny_world_factory) -> None:
    env = NeuralWorldEnv(tiny_world_factory(action_type="continuous"))
    assert env.action_space == gym.spaces.Box(-1, 1, (4,), np.float32)
    env.reset(seed=0)
    for bad in (np.zeros(3, np.float32), np.array([0, 0, np.nan, 0], np.float32),
                np.array([0, 2.0, 0, 0], np.float32), np.zeros((1, 4), np.float32), 1):
        with pytest.raises(ValueError, match=r"Box\(-1\.0, 1\.0, \(4,\), float32\)"):
            env.step(bad)
        assert env.step(np.array([1, 0, -0.5, 0], np.float32))[0].shape == SHAPE


@pytest.mark.parametrize("options, match", [
    ({"frame": np.zeros((32, 32, 3), np.uint8)}, r"\(48, 64, 3\)"),
    ({"frame": np.zeros(SHAPE, np.float32)}, r"uint8"),
    ({"frame": np.zeros(SHAPE[:2], np.uint8)}, r"\(48, 64, 3\)"),
    ({"frame": np.zeros((1, *SHAPE), np.uint8)}, r"\(48, 64, 3\)"),
    ({"frame": [[0]]}, r"numpy uint8 array"),
    ({"start_index": 3}, r"\[0, 2\]"),
    ({"frames": np.zeros(SHAPE, np.uint8)}, r"unknown reset options"),
])
def test_bad_start_images(env, options, match) -> None:
    env.reset(seed=0)
    before = env.step(1)[0]
    snap = env.snapshot()
    with pytest.raises(ValueError, match=match):
        env.reset(seed=1, options=options)
    after = env.step(2)[0]  # the failed reset changed nothing: the episode goes on
    env.restore(snap)
    assert np.array_equal(after, env.step(2)[0]) and before.shape == SHAPE


def test_missing_or_corrupt_world(tiny_world_dir, tmp_path, monkeypatch) -> None:
    with pytest.raises(CheckpointError, match="no world at"):
        NeuralWorldEnv(tmp_path / "nope")
    bad = tmp_path / "corrupt"
    shutil.copytree(tiny_world_dir, bad)
    (bad / WEIGHTS).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=WEIGHTS):
        NeuralWorldEnv(bad)
    shutil.copytree(tiny_world_dir, tmp_path / "no_frames")
    (tmp_path / "no_frames" / START_FRAMES).unlink()
    with pytest.raises(CheckpointError, match=START_FRAMES):
        gym.make("aapt/NeuralDoom-v0", world=tmp_path / "no_frames")
    monkeypatch.setattr("envs.neural.DEFAULT_WORLD", tmp_path / "worlds" / "doom")
    with pytest.raises(FileNotFoundError, match=r"no default neural world.*world=<path"):
        gym.make("aapt/NeuralDoom-v0")


def test_snapshot_restore(env) -> None:
    env.reset(seed=5)
    env.step(1)
    snap = env.snapshot()
    first = [env.step(a)[0] for a in (5, 6, 7)]
    next_reset = env.reset()[0]
    assert np.array_equal(env.restore(snap), snap.last_frame)
    assert all(np.array_equal(f, env.step(a)[0]) for f, a in zip(first, (5, 6, 7)))
    assert np.array_equal(next_reset, env.reset()[0])  # np_random came back too


def test_human_render(tiny_world_dir, monkeypatch) -> None:
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="display"):
        NeuralWorldEnv(tiny_world_dir, render_mode="human")
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    env = NeuralWorldEnv(tiny_world_dir, render_mode="human")
    env.metadata["render_fps"] = env.world.config.fps = 1000  # do not sleep in tests
    env.reset(seed=0)
    env.step(1)
    assert env.render() is None
    env.close()


# ------------------------------------------------------------------------- vector env
def test_make_vec_gives_the_native_batched_env(tiny_world_dir) -> None:
    venv = gym.make_vec("aapt/NeuralDoom-v0", num_envs=2, world=tiny_world_dir)
    assert isinstance(venv, NeuralWorldVectorEnv) and venv.max_episode_steps == 525
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert venv.observation_space.shape == (2, *SHAPE) and venv.action_space.shape == (2,)
    obs, _ = venv.reset(seed=0)
    assert obs in venv.observation_space
    obs, *_ = venv.step(venv.action_space.sample())
    assert obs in venv.observation_space


def test_bf16_world_steps_close_to_fp32(tiny_world_dir) -> None:
    """dtype="bf16" runs every module in bf16 (the fast path on AMX CPUs) and stays close to
    the fp32 world on the same seed and actions; a bad dtype names the choices."""
    frames = {}
    for dtype in ("fp32", "bf16"):
        venv = NeuralWorldVectorEnv(tiny_world_dir, num_envs=2, dtype=dtype)
        assert {p.dtype for p in venv.world.generator.parameters()} == {
            torch.float32 if dtype == "fp32" else torch.bfloat16}
        obs, _ = venv.reset(seed=3)
        steps = [obs]
        for a in ACTIONS[:3]:
            obs, *_ = venv.step(np.array([a, a]))
            assert obs.dtype == np.uint8 and obs.shape == (2, *SHAPE)
            steps.append(obs)
        frames[dtype] = np.stack(steps).astype(np.float64)
    diff = np.abs(frames["bf16"] - frames["fp32"])
    spread = np.abs(frames["fp32"] - frames["fp32"].mean()).mean()
    assert 0 < diff.mean() < 0.25 * spread  # bf16 really ran, and it is the same world
    with pytest.raises(ValueError, match=r"dtype must be one of \('fp32', 'bf16'\), got 'fp16'"):
        NeuralWorldEnv(tiny_world_dir, dtype="fp16")


def test_one_batched_forward_per_step(tiny_world_dir, monkeypatch) -> None:
    venv = NeuralWorldVectorEnv(tiny_world_dir, num_envs=4, max_episode_steps=2)
    calls = {"session": 0, "generator": 0}
    session_step, generator_step = venv.session.step, venv.world.generator.dit.step

    def count_session(conds):
        calls["session"] += 1
        assert conds.shape[0] == 4
        return session_step(conds)

    def count_generator(noise, *args, **kwargs):  # one DiT forward over the new frame, all envs
        calls["generator"] += 1
        assert noise.shape[0] == 4
        return generator_step(noise, *args, **kwargs)

    monkeypatch.setattr(venv.session, "step", count_session)
    monkeypatch.setattr(venv.world.generator.dit, "step", count_generator)
    venv.reset(seed=0)
    for _ in range(5):  # includes two same-step autoresets
        venv.step(np.array([1, 2, 3, 4]))
    assert calls == {"session": 5, "generator": 5}


def test_same_step_autoreset_matches_sync_vector_env(tiny_world_dir) -> None:
    """Against gymnasium's own SyncVectorEnv of single envs in SAME_STEP mode: identical
    observations, terminations, truncations and info structure (frames bit for bit)."""
    venv = NeuralWorldVectorEnv(tiny_world_dir, num_envs=3, max_episode_steps=2)
    sync = SyncVectorEnv([lambda: TimeLimit(NeuralWorldEnv(tiny_world_dir), 2)] * 3,
                         autoreset_mode=AutoresetMode.SAME_STEP)
    mask = np.array([True, False, False])  # stagger: env 0 ends one step after the others
    actions = np.array([1, 5, 8])
    for e in (venv, sync):
        e.reset(seed=7)
        e.step(actions)
        e.reset(options={"reset_mask": mask.copy()})
    out, ref = venv.step(actions), sync.step(actions)
    obs, rewards, terminated, truncated, infos = out
    assert np.array_equal(obs, ref[0])
    np.testing.assert_allclose(rewards, ref[1], atol=1e-6)
    assert np.array_equal(terminated, ref[2]) and truncated.tolist() == [False, True, True]
    assert np.array_equal(truncated, ref[3])
    assert sorted(infos) == sorted(ref[4]) and sorted(infos["final_info"]) == sorted(
        ref[4]["final_info"])
    assert infos["_final_obs"].tolist() == [False, True, True] and infos["final_obs"][0] is None
    for i in (1, 2):
        assert np.array_equal(infos["final_obs"][i], ref[4]["final_obs"][i])
        assert np.array_equal(infos["final_obs"][i], infos["final_info"]["frames"][i][-1])
        assert not infos["_command"][i] and infos["_start_index"][i]
        assert np.array_equal(obs[i], infos["frames"][i][0])  # the new episode's start frame
    for key in ("frames", "_frames", "command", "_command", "start_index", "_start_index"):
        assert np.array_equal(infos[key], ref[4][key]), key
    assert venv.episode_steps.tolist() == [2 - 1, 0, 0]


def test_autoreset_on_termination(tiny_world_factory) -> None:
    venv = NeuralWorldVectorEnv(forced_heads_world(tiny_world_factory, 1.0, 5.0), num_envs=2)
    venv.reset(seed=0)
    for _ in range(2):
        obs, rewards, terminated, truncated, infos = venv.step(np.array([1, 1]))
        assert terminated.all() and not truncated.any() and rewards == pytest.approx([1, 1])
        assert infos["_final_obs"].all() and venv.episode_steps.tolist() == [0, 0]


def test_sampled_termination_is_the_heads_hazard(tiny_world_factory) -> None:
    """termination=sample: deaths drawn with probability sigmoid(logit) from the env's rng
    (seeded, the same in the single and the vector env); threshold never fires at logit < 0."""
    p = 0.25
    world = forced_heads_world(tiny_world_factory, 0.0, float(np.log(p / (1 - p))))
    world.config.termination = "sample"

    def ends(env: NeuralWorldEnv, seed: int, steps: int = 80) -> list[bool]:
        env.reset(seed=seed)
        out = []
        for _ in range(steps):
            out.append(env.step(1)[2])
            if out[-1]:
                env.reset()
        return out

    env = NeuralWorldEnv(world)
    first = ends(env, seed=3)
    assert 0.12 < np.mean(first) < 0.4 and first == ends(env, seed=3)
    venv = NeuralWorldVectorEnv(world, num_envs=4)
    venv.reset(seed=5)
    dead = np.array([venv.step(np.ones(4, dtype=int))[2] for _ in range(40)])
    assert 0.12 < dead.mean() < 0.4 and len({tuple(c) for c in dead.T}) > 1  # own rng per env
    world.config.termination = "threshold"
    assert not any(ends(NeuralWorldEnv(world), seed=3, steps=20))


def test_per_env_reset_leaves_other_streams_untouched(tiny_world_dir) -> None:
    actions = np.array([[1, 5, 8], [6, 0, 2], [3, 3, 9], [10, 4, 1]])

    def run(reset_env_1: bool) -> list[np.ndarray]:
        venv = NeuralWorldVectorEnv(tiny_world_dir, num_envs=3)
        frames = [venv.reset(seed=11)[0]]
        for t, a in enumerate(actions):
            if t == 2 and reset_env_1:
                venv.reset(options={"reset_mask": np.array([False, True, False])})
            frames.append(venv.step(a)[4]["frames"])
        return frames

    plain, reset = run(False), run(True)
    for t in range(len(plain)):
        assert np.array_equal(plain[t][[0, 2]], reset[t][[0, 2]])  # bit for bit
    assert not np.array_equal(plain[3][1], reset[3][1])


def test_vector_bad_inputs_keep_it_usable(tiny_world_dir) -> None:
    venv = NeuralWorldVectorEnv(tiny_world_dir, num_envs=2)
    venv.reset(seed=0)
    for bad, match in ((np.array([1, 2, 3]), r"shape \(2,\)"), (np.array([1, 11]), "env 1"),
                       (np.array([0.5, 1.0]), r"Discrete\(11\)")):
        with pytest.raises(ValueError, match=match):
            venv.step(bad)
    with pytest.raises(ValueError, match=r"\(2, 48, 64, 3\)"):
        venv.reset(options={"frames": np.zeros((3, *SHAPE), np.uint8)})
    with pytest.raises(ValueError, match="reset_mask"):
        venv.reset(options={"reset_mask": np.array([1, 0])})
    assert venv.step(np.array([1, 2]))[0].shape == (2, *SHAPE)


# ------------------------------------------------------------------------- SB3
def test_sb3_adapter_and_ppo(tiny_world_dir) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecTransposeImage

    venv = NeuralWorldSB3VecEnv.from_world(tiny_world_dir, num_envs=4, max_episode_steps=8)
    venv.seed(0)
    obs = venv.reset()
    assert obs.shape == (4, *SHAPE) and obs.dtype == np.uint8
    for _ in range(8):
        obs, rewards, dones, infos = venv.step(np.array([1, 2, 3, 4]))
        assert rewards.dtype == np.float32 and len(infos) == 4
        assert infos[0]["frames"].shape == (4, *SHAPE)
    assert dones.all()  # max_episode_steps = 8
    for info in infos:
        assert info["terminal_observation"].shape == SHAPE
        assert info["TimeLimit.truncated"] is True and info["episode"]["l"] == 8
    # default CnnPolicy (NatureCNN) takes 48x64 frames; SB3 transposes channels itself
    model = PPO("CnnPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0,
                policy_kwargs={"features_extractor_kwargs": {"features_dim": 64}})
    assert isinstance(model.env, VecTransposeImage)
    model.learn(256)
    assert model.num_timesteps >= 256
