"""``aapt-world agent collect``: the real game played by a trained agent, recorded as a dataset
(World Models' loop), replayable, resumable, with clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agents.agent_data import AgentCollectConfig, collect_agent_episodes
from agents.ppo import AgentTrainConfig, FrameStack, load_model, train
from envs.actions import action_to_command
from training.collect import CollectConfig, collect
from training.dataset import read_manifest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def real_agent(tmp_path_factory):
    """A 64-step PPO agent of the real TakeCover game (48x64 frames, 2 stacked, dodge actions)."""
    out = tmp_path_factory.mktemp("agent") / "run"
    train(AgentTrainConfig(world="real:take_cover", out=str(out), num_envs=2, steps=64,
                           n_steps=32, batch_size=32, n_epochs=1, frame_stack=2, progress=False))
    return out / "model.zip"


def test_recorded_commands_are_what_the_agent_chose_on_the_recorded_frames(real_agent,
                                                                           tmp_path) -> None:
    root = tmp_path / "data"
    summary = collect_agent_episodes(AgentCollectConfig(model=str(real_agent), root=str(root),
                                                        episodes=2, max_steps=6), progress=False)
    assert summary["scenario"] == "take_cover" and summary["total_episodes"] == 2
    manifest = read_manifest(root)
    assert manifest["width"] == 64 and manifest["height"] == 48
    model = load_model(real_agent, device="cpu")
    for entry in manifest["episodes"]:
        assert entry["policy"] == "agent"
        episode = root / "episodes" / entry["id"]
        frames, actions = np.load(episode / "frames.npy"), np.load(episode / "actions.npy")
        stack = FrameStack(2)
        for step, command in enumerate(actions):  # the policy saw the last frame of each step
            action, _ = model.predict(stack(frames[4 * step]), deterministic=True)
            np.testing.assert_array_equal(command, action_to_command(int(action), "dodge"))
    assert json.loads((root / "agent.json").read_text())["epsilon"] == 0.0


def test_collection_resumes_and_refuses_another_player(real_agent, tmp_path) -> None:
    root = tmp_path / "data"
    cfg = AgentCollectConfig(model=str(real_agent), root=str(root), episodes=2, max_steps=3)
    collect_agent_episodes(cfg, progress=False)
    cfg.episodes = 3
    assert collect_agent_episodes(cfg, progress=False)["recorded_episodes"] == 1
    with pytest.raises(ValueError, match="was recorded by"):
        collect_agent_episodes(AgentCollectConfig(model=str(real_agent), root=str(root),
                                                  episodes=3, max_steps=3, epsilon=0.5),
                               progress=False)
    with pytest.raises(ValueError, match="epsilon"):
        AgentCollectConfig(model=str(real_agent), root=str(root), epsilon=1.5).validate()
    with pytest.raises(FileNotFoundError, match="no file"):
        AgentCollectConfig(model=str(tmp_path / "none.zip"), root=str(root)).validate()


def test_players_built_by_the_caller_need_one_worker(tmp_path) -> None:
    cfg = CollectConfig(root=str(tmp_path / "d"), scenario="take_cover", maps=["MAP01"],
                        policies=["mine"], num_episodes=2, steps_per_episode=2, workers=2)
    with pytest.raises(ValueError, match="workers=1"):
        collect(cfg, progress=False, players={"mine": object})
    with pytest.raises(ValueError, match="unknown doom policies"):
        collect(cfg, progress=False)


def test_random_actions_follow_the_episode_seed(real_agent, tmp_path) -> None:
    """--epsilon draws from the episode's own RNG: the same seed records the same games."""
    runs = []
    for name in ("a", "b"):
        root = tmp_path / name
        collect_agent_episodes(AgentCollectConfig(model=str(real_agent), root=str(root),
                                                  episodes=2, max_steps=8, epsilon=1.0),
                               progress=False)
        runs.append(np.load(root / "episodes" / "ep_000000" / "actions.npy"))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert len({tuple(row) for row in runs[0]}) > 1  # random actions, not the argmax
