"""PPO agents: training in the batched neural world (checkpoints, resume), evaluation in the real
ViZDoom world and the neural world, scripted baselines, input errors, the CLI."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import agents.ppo as ppo
from aapt_world.checkpoint import trim_csv_log
from aapt_world.video import read_mp4
from agents.ppo import (
    AgentEvalConfig,
    AgentTrainConfig,
    SmallCNN,
    evaluate,
    policy_kwargs_for,
    train,
)
from envs.actions import nearest_discrete_action as nearest_discrete

ROOT = Path(__file__).parents[1]
SHAPE = (48, 64, 3)  # the tiny world of conftest.py


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_train_config(world: Path, out: Path, steps: int = 128, **kw) -> AgentTrainConfig:
    """2 envs x 32 steps per rollout: a 64-step rollout, one epoch of 2 minibatches."""
    return AgentTrainConfig(world=str(world), out=str(out), num_envs=2, steps=steps,
                            max_episode_steps=50, n_steps=32, batch_size=32, n_epochs=1,
                            checkpoint_every=64, device="cpu", progress=False, **kw)


def logged_timesteps(out: Path) -> list[int]:
    with open(out / "progress.csv", newline="") as f:
        return [int(float(row["time/total_timesteps"])) for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained_run(tiny_world_dir, tmp_path_factory):
    """A 192-step PPO run (3 rollouts); records the timestep count of every checkpoint written."""
    out = tmp_path_factory.mktemp("ppo") / "run"
    saves: list[int] = []
    original = ppo.save_model

    def recording_save(model, path):
        saves.append(model.num_timesteps)
        original(model, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ppo, "save_model", recording_save)
        summary = train(tiny_train_config(tiny_world_dir, out, steps=192))
    return out, summary, saves


# ------------------------------------------------------------------------------- networks
def test_nature_cnn_for_world_frames_small_cnn_below_36() -> None:
    assert policy_kwargs_for(SHAPE) == {}  # 48x64: NatureCNN's conv stack leaves a 2x4 map
    kwargs = policy_kwargs_for((16, 24, 3))
    assert kwargs["features_extractor_class"] is SmallCNN
    net = SmallCNN(spaces.Box(0, 255, (3, 16, 24), np.uint8))
    assert net(torch.zeros(2, 3, 16, 24)).shape == (2, 256)


# ------------------------------------------------------------------------------- training
def test_train_writes_checkpoints_log_and_meta(trained_run) -> None:
    out, summary, saves = trained_run
    assert summary["num_timesteps"] == 192 and summary["resumed_from"] is None
    assert saves == [64, 128, 192]  # at each interval (right after an update) and at the end
    assert sorted(os.listdir(out)) == ["agent.json", "model.zip", "progress.csv"]  # no temps
    assert logged_timesteps(out) == [64, 128, 192]
    model = ppo.load_model(out / "model.zip", "cpu")
    assert model.num_timesteps == 192
    assert model.observation_space.shape == (3, 48, 64)  # SB3 transposed channels-last frames


def test_resume_continues_timestep_count(trained_run, tiny_world_dir, tmp_path) -> None:
    out, world = tmp_path / "run", tiny_world_dir
    shutil.copytree(trained_run[0], out)
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_train_config(world, out, steps=320))
    summary = train(tiny_train_config(world, out, steps=320, resume=True))
    assert summary["resumed_from"] == 192 and summary["num_timesteps"] == 320
    assert ppo.load_model(out / "model.zip", "cpu").num_timesteps == 320
    assert logged_timesteps(out) == [64, 128, 192, 256, 320]
    with pytest.raises(FileNotFoundError, match="model.zip"):
        train(tiny_train_config(world, tmp_path / "empty", resume=True))


def test_resume_drops_log_rows_after_the_checkpoint(tmp_path) -> None:
    path = tmp_path / "progress.csv"
    path.write_text("time/fps,time/total_timesteps\n10,64\n10,128\n10,192\n")
    trim_csv_log(path, "time/total_timesteps", 128)
    assert path.read_text() == "time/fps,time/total_timesteps\n10,64\n10,128\n"


# ----------------------------------------------------------------------------- evaluation
def test_eval_model_in_real_and_neural_world(trained_run, tiny_world_dir, tmp_path,
                                             monkeypatch) -> None:
    seen: list[tuple[int, ...]] = []
    act = ppo.ModelActor.act
    monkeypatch.setattr(ppo.ModelActor, "act",
                        lambda self, obs, info: (seen.append(obs.shape), act(self, obs, info))[1])
    result = evaluate(AgentEvalConfig(model=str(trained_run[0] / "model.zip"), env="both",
                                      world=str(tiny_world_dir), episodes=1, max_steps=20,
                                      video=str(tmp_path / "ppo.mp4")))
    real, neural = result["rows"]
    assert real["world"] == "real:freedoom2/MAP01" and neural["world"] == "neural"
    assert real["length_mean"] == 20 and neural["length_mean"] == 20  # capped by max_steps
    assert set(seen) == {SHAPE}  # the same frames in both worlds
    for path in result["videos"]:
        assert read_mp4(path).shape[0] == 1 + 4 * 20
    assert sorted(Path(p).name for p in result["videos"]) == ["ppo_neural.mp4", "ppo_real.mp4"]


def test_eval_finds_the_world_of_the_model(trained_run) -> None:
    result = evaluate(AgentEvalConfig(model=str(trained_run[0] / "model.zip"), env="neural",
                                      episodes=1, max_steps=3))
    assert result["rows"][0]["length_mean"] == 3 and result["frame_shape"] == list(SHAPE)


def test_scripted_policy_eval_in_both_worlds(tiny_world_dir) -> None:
    result = evaluate(AgentEvalConfig(policy="explorer", env="both", world=str(tiny_world_dir),
                                      episodes=2, max_steps=5))
    assert [r["episodes"] for r in result["rows"]] == [2, 2]
    assert all(r["policy"] == "scripted:explorer" for r in result["rows"])
    # scripted commands map to the nearest discrete action in discrete worlds
    assert nearest_discrete(np.array([0.8, 0.0, 0.2, 0.0])) == 1  # forward
    assert nearest_discrete(np.array([0.0, 0.0, -0.9, 0.1])) == 5  # turn_left
    assert nearest_discrete(np.array([0.2, 0.9, 0.3, 0.0]), "dodge") == 2  # strafe_right


def test_take_cover_is_scored_in_tics_with_its_own_actions() -> None:
    """The real TakeCover env: Discrete(3) (noop / left / right), the return is the tics
    survived (living reward 1 per tic, 4 per step), the heuristic dodger outlives standing
    still over the same seeds."""
    result = evaluate(AgentEvalConfig(policy="dodger", scenario="take_cover", episodes=3,
                                      width=64, height=48))
    row = result["rows"][0]
    assert result["action_type"] == "dodge" and row["world"] == "real:take_cover"
    assert row["return_mean"] == pytest.approx(4 * row["length_mean"], abs=4)
    shares = row["action_shares"]  # the dodger never stands still, and strafes both ways
    assert len(shares) == 3 and sum(shares) == pytest.approx(1, abs=1e-3)
    assert shares[0] == 0 and min(shares[1:]) > 0
    env = gym.make("aapt/DoomTakeCover-v0", width=64, height=48)
    try:
        assert env.action_space == spaces.Discrete(3)
        lengths = []
        for seed in range(3):
            env.reset(seed=seed)
            terminated = truncated = False
            steps = 0
            while not (terminated or truncated):
                _, _, terminated, truncated, _ = env.step(0)
                steps += 1
            lengths.append(steps)
    finally:
        env.close()
    assert np.mean(lengths) < row["length_mean"]  # standing still dies sooner
    # the real game throws fireballs the detector sees (22-42 % of recorded frames)
    assert 0.05 < row["fireball_steps"] <= 1 and row["fireball_area"] > 0


def test_fireball_detector_counts_bright_yellow_only() -> None:
    from agents.evaluation.fireballs import MIN_PIXELS, fireball_pixels, fireball_stats

    frame = np.full((48, 64, 3), 90, np.uint8)  # grey floor
    frame[10:20, 10:20] = (150, 110, 70)  # a brown wall
    frame[30:33, 40:44] = (250, 230, 120)  # a fireball, 12 pixels
    frame[0:2, 0:2] = (255, 255, 255)  # white is not a fireball
    assert fireball_pixels(frame) == 12
    stats = fireball_stats([0, 12, MIN_PIXELS - 1, 40], 48 * 64)
    assert stats["fireball_steps"] == 0.5
    assert stats["fireball_area"] == pytest.approx(np.mean([0, 12, 2, 40]) / (48 * 64))
    with pytest.raises(ValueError, match=r"expected one \(H, W, 3\) frame"):
        fireball_pixels(frame[None])


def test_vae_recall_counts_fireballs_through_the_round_trip(tmp_path) -> None:
    """A VAE that returns its input keeps every fireball; one that returns grey keeps none."""
    from agents.evaluation.fireballs import vae_recall

    frames = np.full((13, 48, 64, 3), 90, np.uint8)
    frames[2:, 5:7, 5:7] = (250, 230, 120)  # a small, far fireball (4 px) from frame 2 on
    frames[8:, 20:25, 30:40] = (250, 230, 120)  # and a close one (50 px) from frame 8
    (tmp_path / "ep_000000").mkdir()
    np.save(tmp_path / "ep_000000" / "frames.npy", frames)

    class Posterior:
        def __init__(self, video):
            self.video = video

        def mode(self):
            return self.video

    class Identity:
        def encode(self, video):
            return Posterior(video)

        def decode(self, z):
            return z

    class Grey(Identity):
        def decode(self, z):
            return torch.zeros_like(z) - 0.3

    kept = vae_recall(Identity(), [tmp_path / "ep_000000"])
    assert kept["frames"] == 13 and kept["recall"] == 1.0 and kept["recall_small"] == 1.0
    assert kept["real_frames_with_fireball"] == pytest.approx(11 / 13)
    assert kept["area_ratio"] == pytest.approx(1.0)
    lost = vae_recall(Grey(), [tmp_path / "ep_000000"])
    assert lost["recall"] == 0.0 and lost["recon_frames_with_fireball"] == 0.0


# ---------------------------------------------------------------------------- bad input
def test_bad_inputs_name_the_file_or_option(trained_run, tmp_path, capsys) -> None:
    model = str(trained_run[0] / "model.zip")
    with pytest.raises(SystemExit, match="--model: no file .*missing.zip"):
        ppo.main(["eval", "--model", str(tmp_path / "missing.zip")])
    with pytest.raises(SystemExit, match="--world: no world directory at .*nowhere"):
        ppo.main(["eval", "--model", model, "--world", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit, match="--world: no world at .*nowhere"):
        ppo.main(["train", "--world", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(SystemExit, match="bad.zip is not a readable SB3 model"):
        ppo.main(["eval", "--model", str(tmp_path / "bad.zip")])
    with pytest.raises(SystemExit) as exc:
        ppo.main(["eval", "--model", model, "--env", "rael"])
    assert exc.value.code == 2
    assert "argument --env: invalid choice: 'rael'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--env must be one of"):
        AgentEvalConfig(policy="random", env="rael").validate()
    with pytest.raises(ValueError, match="exactly one of --model"):
        AgentEvalConfig().validate()
    with pytest.raises(SystemExit, match="--env neural needs --world"):
        ppo.main(["eval", "--policy", "random", "--env", "neural"])
    with pytest.raises(ValueError, match="--batch-size 512 exceeds"):
        AgentTrainConfig(world="w", num_envs=2, n_steps=8, batch_size=512).validate()


# ------------------------------------------------------------------------------------ CLI
def test_cli_agent_train_exits_0(tiny_world_dir, tmp_path) -> None:
    out = tmp_path / "cli_run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "agents.cli", "agent", "train", "--world",
         str(tiny_world_dir), "--out", str(out), "--num-envs", "2", "--steps", "32",
         "--n-steps", "16", "--batch-size", "16", "--n-epochs", "1", "--device", "cpu",
         "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.zip").is_file() and '"num_timesteps": 32' in proc.stdout


def test_ppo_in_a_world_without_reward_head_warns(tiny_world_factory, tmp_path) -> None:
    from aapt_world.world import save_world

    save_world(tmp_path / "no_heads", tiny_world_factory(heads=False))
    with pytest.warns(ppo.NoRewardHeadWarning, match="NO reward/termination heads"):
        train(tiny_train_config(tmp_path / "no_heads", tmp_path / "run", steps=64))


def test_bench_env_builds_the_world_of_a_model_config() -> None:
    """``bench env --model``: the timed world has the training config's sizes."""
    from agents.bench_env import random_world, run

    world = random_world("tiny")
    assert world.frame_shape == (48, 64, 3) and world.config.dit.window == 3
    result = run([2], steps=2, ppo_envs=2, ppo_steps=0, ppo_n_steps=2, threads=1,
                 json_path=None, model="tiny", dtypes=("fp32", "bf16"))
    rows = result["rows"]
    assert [(r["dtype"], r["num_envs"]) for r in rows] == [("fp32", 1), ("fp32", 2),
                                                            ("bf16", 1), ("bf16", 2)]
    assert all(r["env_steps_per_s"] > 0 for r in rows)
    for row in (rows[1], rows[3]):  # the batched rows: FLOPs counted, a share of the peak
        assert row["gflop_per_step"] > 0 and 0 < row["share_of_matmul_peak"] < 2


def test_ppo_trains_in_the_real_game_for_the_baseline(tmp_path) -> None:
    """``agent train --world real:take_cover``: the same PPO in the real game (TakeCover's own
    actions, the dream's frame size); the saved agent evaluates there with the dodge actions."""
    out = tmp_path / "real"
    summary = train(AgentTrainConfig(world="real:take_cover", out=str(out), num_envs=2,
                                     steps=64, n_steps=32, batch_size=32, n_epochs=1,
                                     progress=False))
    assert summary["num_timesteps"] >= 64
    meta = json.loads((out / "agent.json").read_text())
    assert meta["world"] == "real:take_cover" and meta["action_type"] == "dodge"
    result = evaluate(AgentEvalConfig(model=str(out / "model.zip"), episodes=1, max_steps=10))
    assert result["action_type"] == "dodge" and result["frame_shape"] == [48, 64, 3]
    assert result["rows"][0]["world"] == "real:take_cover"  # the scenario it was trained in
    with pytest.raises(ValueError, match="unknown scenario"):
        AgentTrainConfig(world="real:nowhere").validate()


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_sigterm_closes_the_real_games(tmp_path) -> None:
    """``timeout`` stops a run with SIGTERM: the CLI must close its ViZDoom games on the way out
    rather than leave them running (they did, before ``exit_on_sigterm``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log = tmp_path / "stderr.txt"  # a file, not a pipe: orphaned games would hold a pipe open
    games: list[int] = []
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "agent", "train", "--world", "real:take_cover",
             "--out", str(tmp_path / "run"), "--num-envs", "2", "--steps", "1000000",
             "--threads", "1", "--no-progress"], cwd=tmp_path, env=env,
            stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while len(games) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            games = _children(proc.pid)
        assert len(games) >= 2, f"the games never started ({games}): {log.read_text()}"
        time.sleep(2)  # into the training loop
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()
        time.sleep(1)
        alive = [pid for pid in games if Path(f"/proc/{pid}").exists()]
        assert not alive, f"ViZDoom processes {alive} outlived the run"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in games:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)


def test_frame_stack_feeds_evaluation_what_training_fed_the_policy(tiny_world_dir,
                                                                   tmp_path) -> None:
    """--frame-stack N: PPO trains on SB3's VecFrameStack; evaluation rebuilds the same stacks
    (oldest first, zeros before the first frame, fresh each episode) for its one env."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    frames = np.random.default_rng(0).integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)

    class Replay(gym.Env):
        observation_space = spaces.Box(0, 255, (4, 6, 3), np.uint8)
        action_space = spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            self.t = 0
            return frames[0], {}

        def step(self, action):
            self.t += 1
            return frames[self.t], 0.0, False, self.t == len(frames) - 1, {}

    venv = VecFrameStack(DummyVecEnv([Replay]), 3, channels_order="last")
    stack = ppo.FrameStack(3)
    for _ in range(2):  # a second episode starts from zeros again
        stack.reset()
        expected = np.concatenate([np.zeros_like(frames[0])] * 2 + [frames[0]], axis=-1)
        np.testing.assert_array_equal(stack(frames[0]), expected)
        np.testing.assert_array_equal(venv.reset()[0], expected)
        for t in range(1, len(frames) - 1):
            np.testing.assert_array_equal(venv.step(np.array([0]))[0][0], stack(frames[t]))
    out = tmp_path / "stacked"
    train(tiny_train_config(tiny_world_dir, out, steps=64, frame_stack=3))
    model = ppo.load_model(out / "model.zip", "cpu")
    assert ppo.model_frame_stack(model) == 3 and ppo.model_spec(model)[0] == SHAPE
    result = evaluate(AgentEvalConfig(model=str(out / "model.zip"), env="neural", episodes=2,
                                      max_steps=6, device="cpu"))
    assert result["frame_shape"] == list(SHAPE) and result["rows"][0]["length_mean"] > 0


def test_target_kl_stops_a_rollouts_epochs_early(tiny_world_dir, tmp_path) -> None:
    """--target-kl: once the policy has moved that far, PPO stops the rollout's epochs (SB3
    counts the epochs it ran in train/n_updates): 4 epochs without it, 1 with a tiny one."""
    updates = {}
    for target in (None, 1e-9):
        out = tmp_path / f"kl{target}"
        cfg = tiny_train_config(tiny_world_dir, out, steps=192, target_kl=target)
        cfg.n_epochs = 4
        train(cfg)
        with open(out / "progress.csv", newline="") as f:
            updates[target] = [int(float(r["train/n_updates"])) for r in csv.DictReader(f)
                               if r.get("train/n_updates")]  # the log lags one rollout
        assert ppo.load_model(out / "model.zip", "cpu").target_kl == target
    assert updates[None] == [4, 8] and updates[1e-9] == [1, 2]
    with pytest.raises(ValueError, match="--target-kl must be > 0"):
        AgentTrainConfig(world=str(tiny_world_dir), target_kl=0.0).validate()


def test_normalize_reward_scales_rewards_not_frames(tiny_world_dir, tmp_path) -> None:
    """--normalize-reward: PPO sees rewards over the running return's std (a TakeCover step's
    4 tics no longer make returns of hundreds), the frames untouched; training runs with it."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    class Steady(gym.Env):
        observation_space = spaces.Box(0, 255, (4, 6, 3), np.uint8)
        action_space = spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            return np.full((4, 6, 3), 7, np.uint8), {}

        def step(self, action):
            return np.full((4, 6, 3), 7, np.uint8), 4.0, False, False, {}

    cfg = AgentTrainConfig(world=str(tiny_world_dir), frame_stack=2, normalize_reward=True)
    venv = ppo.policy_venv(cfg, DummyVecEnv([Steady]))
    obs = venv.reset()
    for _ in range(50):
        obs, reward, _, _ = venv.step(np.array([0]))
    assert obs.shape == (1, 4, 6, 6) and (obs == 7).all()  # stacked, not normalised
    assert 0 < reward[0] < 1  # 4 / std of a return that has grown towards 4 / (1 - gamma)
    train(tiny_train_config(tiny_world_dir, tmp_path / "norm", steps=64, normalize_reward=True))
    assert (tmp_path / "norm" / "model.zip").is_file()


def test_fireball_recall_reads_a_vae_stage_checkpoint(tmp_path) -> None:
    """--vae F --model M: the encoder and light decoder of a VAE stage, as a world ships them."""
    import dataclasses
    import json

    from aapt_world.checkpoint import CheckpointError, save_weights
    from aapt_world.vae import CausalVideoVAE
    from agents.evaluation.fireballs import main, stage_vae
    from training.train import compose_config

    torch.manual_seed(0)
    cfg = compose_config(["model=tiny"]).model.vae
    vae = CausalVideoVAE(dataclasses.replace(cfg, light_decoder=True))
    tensors = {**{f"vae.encoder.{k}": v for k, v in vae.encoder.state_dict().items()},
               **{f"light_decoder.{k}": v for k, v in vae.decoder.state_dict().items()}}
    save_weights(tmp_path / "vae.safetensors", tensors, {"stage": "vae"})
    loaded = stage_vae(str(tmp_path / "vae.safetensors"), "tiny")
    assert torch.equal(loaded.encoder.state_dict()[next(iter(vae.encoder.state_dict()))],
                       next(iter(vae.encoder.state_dict().values())))
    episode = tmp_path / "data" / "episodes" / "ep_000000"
    episode.mkdir(parents=True)
    np.save(episode / "frames.npy", np.full((9, cfg.height, cfg.width, 3), 90, np.uint8))
    main(["--vae", str(tmp_path / "vae.safetensors"), "--model", "tiny", "--root",
          str(tmp_path / "data"), "--json", str(tmp_path / "r.json")])
    row = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    assert row["frames"] == 9 and row["real_frames_with_fireball"] == 0.0
    small = tmp_path / "small" / "episodes" / "ep_000000"
    small.mkdir(parents=True)
    np.save(small / "frames.npy", np.full((9, 32, 32, 3), 90, np.uint8))
    with pytest.raises(SystemExit, match="not the VAE's"):
        main(["--vae", str(tmp_path / "vae.safetensors"), "--model", "tiny", "--root",
              str(tmp_path / "small")])
    with pytest.raises(CheckpointError, match="vae.safetensors"):  # trained as another model
        main(["--vae", str(tmp_path / "vae.safetensors"), "--model", "small", "--root",
              str(tmp_path / "data")])


def test_action_response_compares_world_and_real_game(tiny_world_dir):
    """aapt-world action-response: one row per action in each world, the real game's turns
    move the view in opposite directions, and the ratio is the world's spread over the real."""
    from agents.cli import COMMANDS
    from agents.evaluation.action_response import main, response_ratio

    assert "action-response" in COMMANDS
    out = main(["--world", str(tiny_world_dir), "--steps", "2", "--starts", "2",
                "--threads", "1"])
    rows = out["rows"]
    real = [r for r in rows if r["world"] == "real"]
    assert {r["world"] for r in rows} == {"neural", "real"} and len(real) == len(rows) // 2
    assert all(np.isfinite(r["shift_mean"]) for r in rows)
    assert np.ptp([r["shift_mean"] for r in real]) > 0.5  # the real game turns or strafes
    neural = [r for r in rows if r["world"] == "neural"]
    assert out["response_ratio"] == pytest.approx(response_ratio(neural, real))
    assert all(r["brightness"] > 0 for r in real)  # the game's frames are not black
    for name in ("brightness", "saturation", "hf_energy"):
        assert 0.0 <= out[f"in_range_{name}"] <= 1.0
    fake = [{"shift_mean": 0.0}, {"shift_mean": 1.0}]
    assert response_ratio(fake, [{"shift_mean": -1.0}, {"shift_mean": 1.0}]) == 0.5
