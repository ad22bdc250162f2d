"""Train a world on your own game (issue 13): record any Gymnasium env (discrete or Box
actions), import gameplay videos, train the same stages, and ``gym.make`` the result with the
source env's action space."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers aapt/NeuralWorld-v0)
from aapt_world.video import write_mp4
from envs.game_actions import ActionEncoding
from training.config import TrainConfig
from training.dataset import ClipDataset, DatasetError, read_manifest
from training.import_video import ImportConfig, import_videos
from training.record import RecordConfig, record
from training.train import compose_config, run_stage

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GAMES = {"MountainCar-v0": gym.spaces.Discrete(3), "Pendulum-v1": gym.spaces.Box(-2, 2, (1,))}


def game_cfg(root: Path, out: Path, action_dim: int, *extra: str) -> TrainConfig:
    items = ["world=game", "model=tiny", f"data.root={root}", f"run.out_dir={out}",
             f"world.action_dim={action_dim}", "run.batch_size=2", "data.clip_steps=3",
             "data.val_batches=1", "run.progress=false", "run.threads=1", "run.steps=2",
             "run.eval_every=1000", "optim.warmup_steps=1", *extra]
    return compose_config(items)


@pytest.fixture(scope="module", params=list(GAMES))
def game_data(request, tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("game") / request.param
    summary = record(RecordConfig(env=request.param, root=str(root), episodes=3, steps=6,
                                  val_every=3), progress=False)
    assert summary["recorded_episodes"] == 3
    return request.param, root


def test_record_writes_the_dataset_format_with_the_games_action_space(game_data) -> None:
    env_id, root = game_data
    manifest = read_manifest(root)
    encoding = ActionEncoding.from_json(manifest["action_space"])
    assert encoding.space() == GAMES[env_id]
    assert [e["split"] for e in manifest["episodes"]] == ["train", "val", "train"]
    clip = ClipDataset(root, num_steps=3, split="val").sample(np.random.default_rng(0))
    assert clip.frames.shape == (13, 48, 64, 3) and clip.actions.shape[1] == encoding.command_dim
    if encoding.kind == "discrete":  # one-hot commands
        assert set(np.unique(clip.actions)) <= {0.0, 1.0} and (clip.actions.sum(1) == 1).all()
    else:
        assert np.abs(clip.actions).max() <= 1.0
    before = {p: p.stat().st_mtime_ns for p in (root / "episodes").rglob("*.npy")}
    again = record(RecordConfig(env=env_id, root=str(root), episodes=3, steps=6, val_every=3),
                   progress=False)
    assert again["recorded_episodes"] == 0  # resumable: nothing re-recorded
    assert before == {p: p.stat().st_mtime_ns for p in (root / "episodes").rglob("*.npy")}
    with pytest.raises(ValueError, match=r"'seed': \(0, 7\)"):
        record(RecordConfig(env=env_id, root=str(root), episodes=3, steps=6, val_every=3,
                            seed=7), progress=False)


def test_train_export_and_play_the_game_world(game_data, tmp_path) -> None:
    env_id, root = game_data
    dim = read_manifest(root)["action_dim"]
    for stage in ("vae", "latents", "diffusion", "export"):
        run_stage(game_cfg(root, tmp_path, dim, f"stage={stage}"))
    env = gym.make("aapt/NeuralWorld-v0", world=tmp_path / "world", max_episode_steps=5)
    assert env.action_space == GAMES[env_id]
    obs, _ = env.reset(seed=0)
    obs2 = env.step(env.action_space.sample())[0]
    assert obs.shape == obs2.shape == (48, 64, 3)
    with pytest.raises(ValueError, match=str(GAMES[env_id]).replace("(", r"\(")
                       .replace(")", r"\)")):
        env.step(np.full((7,), 0.5))  # wrong shape for either space
    check_env(env.unwrapped, skip_render_check=True)
    venv = gym.make_vec("aapt/NeuralWorld-v0", num_envs=2, world=tmp_path / "world")
    venv.reset(seed=0)
    assert venv.step(venv.action_space.sample())[0].shape == (2, 48, 64, 3)
    with pytest.raises(ValueError, match="needs world="):
        gym.make("aapt/NeuralWorld-v0")


def test_training_checks_the_game_settings(game_data, tmp_path) -> None:
    _, root = game_data
    dim = read_manifest(root)["action_dim"]
    with pytest.raises(DatasetError, match=rf"pass world\.action_dim={dim}"):
        run_stage(game_cfg(root, tmp_path, dim + 4, "stage=vae"))
    cfg = game_cfg(root, tmp_path, dim, "stage=vae")
    cfg.world.action_type = "discrete"  # the Doom action set on a game's data
    with pytest.raises(DatasetError, match="train it with world=game"):
        run_stage(cfg)


def test_import_video_with_per_frame_actions(tmp_path) -> None:
    rng = np.random.default_rng(0)
    videos, actions = [], []
    for k in range(2):
        frames = rng.integers(0, 256, (41, 96, 128, 3), dtype=np.uint8)
        videos.append(str(write_mp4(tmp_path / f"run{k}.mp4", frames, fps=20)))
        per_frame = np.repeat(rng.integers(0, 4, 11), 4)[:41]  # held for 4 frames each
        np.save(tmp_path / f"run{k}.npy", per_frame)
        actions.append(str(tmp_path / f"run{k}.npy"))
    cfg = ImportConfig(root=str(tmp_path / "data"), videos=videos, actions=actions,
                       action_space="discrete:4", steps=5, val_every=2)
    summary = import_videos(cfg, progress=False)
    assert summary["imported_episodes"] == 4 and summary["fps"] == 20  # 10 steps -> 2 x 5
    manifest = read_manifest(tmp_path / "data")
    assert {e["split"] for e in manifest["episodes"]} == {"train", "val"}
    clip = ClipDataset(tmp_path / "data", num_steps=5, split="train").sample(
        np.random.default_rng(0))
    assert clip.frames.shape == (21, 48, 64, 3)
    assert ((clip.actions == 0) | (clip.actions == 1)).all()  # held actions stay one-hot
    assert import_videos(cfg, progress=False)["imported_episodes"] == 0
    np.save(tmp_path / "short.npy", np.zeros(10, dtype=np.int64))
    bad = ImportConfig(root=str(tmp_path / "bad"), videos=videos[:1],
                       actions=[str(tmp_path / "short.npy")], action_space="discrete:4")
    with pytest.raises(ValueError, match="holds 10 actions for a video of 41 frames"):
        import_videos(bad, progress=False)
    with pytest.raises(ValueError, match="expected discrete:N or box"):
        import_videos(ImportConfig(root=str(tmp_path / "bad"), videos=videos,
                                   actions=actions, action_space="wheel:3"), progress=False)
    assert json.loads((tmp_path / "data" / "manifest.json").read_text())["action_dim"] == 4
