"""PPO agents trained inside a neural world and evaluated in the real one (and in the world).

    aapt-world agent train --world runs/doom/world --num-envs 8 --steps 20000 --out runs/ppo
    aapt-world agent train --world runs/doom/world --steps 40000 --out runs/ppo --resume
    aapt-world agent eval --model runs/ppo/model.zip --env real --episodes 5 --video ppo.mp4
    aapt-world agent eval --policy explorer --env both --world runs/doom/world
    aapt-world agent train --world real:take_cover --steps 50000 --out runs/ppo_real  # baseline
    aapt-world agent eval --model runs/ppo_real/model.zip --scenario take_cover --episodes 100

Training: stable-baselines3 ``PPO("CnnPolicy")`` on ``envs.sb3.NeuralWorldSB3VecEnv``, i.e. the
natively batched neural world (one generator forward per step for all envs). The SB3 model is
saved atomically (temporary file + ``os.replace``) to ``<out>/model.zip`` every
``checkpoint_every`` timesteps (at the start of a rollout, right after a policy update, so the
saved weights and timestep count belong together) and at the end. ``--resume`` loads it and
continues with its timestep count up to ``--steps`` in total (optimizer state and PPO
hyperparameters come from the checkpoint, ``--num-envs`` may change; the rollout buffer and the
envs' streams start afresh, so a resumed run is not bit-identical to an uninterrupted one).
SB3 logs to ``<out>/progress.csv`` (rows logged after the last checkpoint are dropped on
resume, then appended to; ``time/iterations`` restarts at 1 in each run); a tqdm bar shows
progress (SB3's own ``progress_bar=True`` needs ``rich``, which is not a dependency).
``<out>/agent.json`` records the world and the frame size the policy was trained on.

Observation preprocessing is the same in both worlds: the policy sees the newest frame (with
``--frame-stack N`` the newest N side by side on the channel axis, oldest first: a single frame
shows where a fireball is, not where it is going), channels-last uint8 (H, W, 3) at the
world's resolution (the real env renders at 320x240 and
area-resizes to that size, exactly as the training data was recorded); SB3 transposes to
channels-first for the CNN (``VecTransposeImage`` in training, ``maybe_transpose`` in
``predict``). SB3's NatureCNN needs frames of at least 36x36 (8x8/4, 4x4/2, 3x3/1 convs; the tiny
48x64 world gives a 2x4 map); smaller frames get ``SmallCNN`` (3x3 convs, stride 2, padded).

Evaluation runs whole episodes (capped at ``max_steps``) of a trained model or a scripted policy
(``envs.scripted``: continuous commands, mapped to the nearest discrete action in discrete
worlds) in the real ViZDoom env (``envs.doom.DoomEnv`` at the world's resolution and action type;
scenario and map from the world's card when it names them, else ``--scenario``/``--map``) and/or
the neural world, and reports mean/std return and episode length per world.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import CSVOutputFormat, Logger
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecNormalize
from torch import nn

from aapt_world.checkpoint import CheckpointError, atomic_replace, trim_csv_log
from aapt_world.cli_options import add_dtype, add_threads, apply_threads, command_parser
from aapt_world.constants import DEFAULT_MAP, DOOM_EPISODE_STEPS, DOOM_FPS
from aapt_world.devices import resolve_device
from aapt_world.report import print_report
from aapt_world.video import write_mp4
from agents.evaluation.fireballs import fireball_pixels, fireball_stats
from envs import DEFAULT_WORLD
from envs.actions import discrete_action_type, nearest_discrete_action, scenario_action_type
from envs.doom import DoomConfig, DoomEnv
from envs.neural import NeuralWorldEnv, resolve_world
from envs.sb3 import NeuralWorldSB3VecEnv, real_doom_vec_env
from envs.scripted import POLICIES, make_policy
from envs.vae_view import WorldVAEView

MODEL_FILE = "model.zip"
META_FILE = "agent.json"
LOG_FILE = "progress.csv"
NATURE_CNN_MIN_SIZE = 36  # smallest H and W NatureCNN's conv stack accepts
ENV_KINDS = ("real", "neural", "both")
REAL_PREFIX = "real:"  # agent train --world real:take_cover: PPO in the real game
SCRIPTED = tuple(POLICIES)


# ------------------------------------------------------------------------------ policy network
class SmallCNN(BaseFeaturesExtractor):
    """A CNN for frames below NatureCNN's 36x36: three padded 3x3 convs (two of stride 2)."""

    def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 256) -> None:
        super().__init__(observation_space, features_dim)
        channels = observation_space.shape[0]
        self.cnn = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1, padding=1), nn.ReLU(),
            nn.Flatten())
        with torch.no_grad():
            n_flat = self.cnn(torch.zeros(1, *observation_space.shape)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.linear(self.cnn(observations))


def policy_kwargs_for(frame_shape: tuple[int, ...]) -> dict[str, Any]:
    """CnnPolicy kwargs for channels-last frames (H, W, C): NatureCNN (SB3's default) when it
    fits, ``SmallCNN`` below 36x36."""
    height, width = frame_shape[:2]
    if min(height, width) >= NATURE_CNN_MIN_SIZE:
        return {}
    return {"features_extractor_class": SmallCNN, "features_extractor_kwargs": {}}


# ------------------------------------------------------------------------------------ training
@dataclass
class AgentTrainConfig:
    """``aapt-world agent train`` (argparse flags use dashes: ``--num-envs``)."""

    world: str  # a world directory: PPO in the dream; or "real:<scenario>": in the real game
    out: str = "runs/ppo"
    num_envs: int = 8
    steps: int = 20_000  # total environment steps (summed over envs), resumed runs included
    max_episode_steps: int = DOOM_EPISODE_STEPS  # per-env truncation (aapt/Doom-v0's limit)
    n_steps: int = 128  # steps per env per rollout
    batch_size: int = 256
    n_epochs: int = 4
    learning_rate: float = 2.5e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.1
    ent_coef: float = 0.01
    target_kl: float | None = None  # stop a rollout's epochs once the policy moved this far
    # (KL); None = off. One large update can collapse the policy onto one action for good
    frame_stack: int = 1  # the policy sees the newest N frames (SB3's VecFrameStack)
    # PPO learns on rewards divided by a running std of the discounted return (SB3's
    # VecNormalize; logged episode returns stay raw): TakeCover's 4 tics a step make returns of
    # hundreds, whose value loss swamps the policy's share of the CNN. Restarts on --resume
    normalize_reward: bool = False
    checkpoint_every: int = 5_000  # timesteps between checkpoints
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda[:i]: world and policy
    dtype: str = "fp32"  # the dream's precision: fp32 | bf16 (~2x the env steps/s on AMX CPUs)
    resume: bool = False
    progress: bool = True
    width: int = 64  # real-game frames (a world's training size: the dream's is its own)
    height: int = 48

    @property
    def real_scenario(self) -> str | None:
        return self.world[len(REAL_PREFIX):] if self.world.startswith(REAL_PREFIX) else None

    def validate(self) -> None:
        if self.real_scenario is not None:
            DoomConfig(scenario=self.real_scenario, width=self.width,
                       height=self.height).validate()
        positive = ("num_envs", "steps", "max_episode_steps", "n_steps", "batch_size", "n_epochs",
                    "frame_stack", "checkpoint_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got "
                                 f"{getattr(self, name)}")
        if self.target_kl is not None and not self.target_kl > 0:
            raise ValueError(f"--target-kl must be > 0 (or left out), got {self.target_kl}")
        if self.n_steps * self.num_envs < 2:
            raise ValueError("--n-steps x --num-envs must be >= 2 (PPO normalises advantages)")
        if self.batch_size > self.n_steps * self.num_envs:
            raise ValueError(f"--batch-size {self.batch_size} exceeds the rollout size "
                             f"--n-steps x --num-envs = {self.n_steps * self.num_envs}")


def train(cfg: AgentTrainConfig) -> dict[str, Any]:
    """Train (or resume) PPO in the neural world; returns a summary (no printing)."""
    cfg.validate()
    out = Path(cfg.out)
    model_path = out / MODEL_FILE
    if cfg.resume and not model_path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {model_path} (train without "
                                f"--resume first, or point --out at the run)")
    if not cfg.resume and model_path.exists():
        raise FileExistsError(f"{model_path} exists: pass --resume to continue that run or "
                              f"choose another --out")
    device = resolve_device(cfg.device)
    venv = policy_venv(cfg, _train_venv(cfg, device))
    try:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.resume:
            model = _load_for_training(model_path, venv, device)
            trim_csv_log(out / LOG_FILE, "time/total_timesteps", model.num_timesteps)
        else:
            model = _new_model(cfg, venv, device)
            _write_meta(out, cfg, venv)
        logger = Logger(str(out), [_CSVLog(str(out / LOG_FILE), append=cfg.resume)])
        model.set_logger(logger)
        start_steps, start_time = model.num_timesteps, time.perf_counter()
        remaining = cfg.steps - model.num_timesteps
        try:
            if remaining > 0:
                callbacks = [_CheckpointCallback(model_path, cfg.checkpoint_every),
                             _ProgressCallback(cfg.progress)]
                model.learn(remaining, callback=callbacks, reset_num_timesteps=False)
                save_model(model, model_path)
        finally:
            logger.close()
        seconds = time.perf_counter() - start_time
    finally:
        venv.close()
    done = model.num_timesteps - start_steps
    return {"model": str(model_path), "num_timesteps": int(model.num_timesteps),
            "resumed_from": int(start_steps) if cfg.resume else None,
            "steps_this_run": int(done), "seconds": round(seconds, 2),
            "steps_per_second": round(done / seconds, 1) if done else 0.0,
            "log": str(out / LOG_FILE)}


def policy_venv(cfg: AgentTrainConfig, venv: VecEnv) -> VecEnv:
    """The envs as PPO sees them: frames stacked (--frame-stack), rewards normalised
    (--normalize-reward; observations untouched)."""
    if cfg.frame_stack > 1:
        venv = VecFrameStack(venv, cfg.frame_stack, channels_order="last")
    if cfg.normalize_reward:
        venv = VecNormalize(venv, norm_obs=False, norm_reward=True, gamma=cfg.gamma)
    return venv


def _train_venv(cfg: AgentTrainConfig, device: str) -> Any:
    """The envs PPO trains in: the batched neural world, or the real game for baselines."""
    if cfg.real_scenario is not None:
        scenario = cfg.real_scenario
        action_type = scenario_action_type(scenario, "discrete")
        return real_doom_vec_env(DoomConfig(scenario=scenario, width=cfg.width,
                                            height=cfg.height, action_type=action_type),
                                 cfg.num_envs, cfg.max_episode_steps, cfg.seed)
    try:
        venv = NeuralWorldSB3VecEnv.from_world(cfg.world, num_envs=cfg.num_envs,
                                               max_episode_steps=cfg.max_episode_steps,
                                               device=device, dtype=cfg.dtype)
    except CheckpointError as err:
        raise CheckpointError(f"--world: {err}") from err
    if venv.venv.world.heads is None:
        warnings.warn(f"the world {cfg.world} has NO reward/termination heads: every reward is "
                      "0 and episodes only end by truncation, so PPO learns nothing here (it "
                      "only exercises the machinery). Train the heads (`aapt-world train "
                      "stage=heads`) and re-export for a world an agent can learn in.",
                      NoRewardHeadWarning, stacklevel=3)
    return venv


def _new_model(cfg: AgentTrainConfig, venv: Any, device: str) -> PPO:
    return PPO("CnnPolicy", venv, n_steps=cfg.n_steps, batch_size=cfg.batch_size,
               n_epochs=cfg.n_epochs, learning_rate=cfg.learning_rate, gamma=cfg.gamma,
               gae_lambda=cfg.gae_lambda, clip_range=cfg.clip_range, ent_coef=cfg.ent_coef,
               target_kl=cfg.target_kl,
               policy_kwargs=policy_kwargs_for(venv.observation_space.shape),
               seed=cfg.seed, device=device, verbose=0)


def _load_for_training(path: Path, venv: Any, device: str) -> PPO:
    try:
        return PPO.load(path, env=venv, device=device)
    except ValueError as err:  # SB3: observation/action spaces differ
        raise ValueError(f"{path} does not fit this world: {err}") from err


def save_model(model: PPO, path: Path) -> None:
    """``model.save`` to memory, then write atomically (temporary file + ``os.replace``)."""
    buffer = io.BytesIO()
    model.save(buffer)
    atomic_replace(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def _write_meta(out: Path, cfg: AgentTrainConfig, venv: Any) -> None:
    real = cfg.real_scenario is not None
    meta = {"world": cfg.world if real else str(Path(cfg.world).resolve()),
            "frame_shape": list(venv.observation_space.shape),
            "action_type": _space_action_type(venv.action_space), "config": asdict(cfg)}
    atomic_replace(out / META_FILE, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))


class _CSVLog(CSVOutputFormat):
    """SB3's CSV writer; ``append=True`` continues an existing file (same columns) on resume."""

    def __init__(self, filename: str, append: bool = False) -> None:
        if not (append and os.path.isfile(filename) and os.path.getsize(filename) > 0):
            super().__init__(filename)
            return
        self.file = open(filename, "r+")  # closed by Logger.close
        self.keys = self.file.readline().rstrip("\n").split(",")
        self.file.seek(0, os.SEEK_END)
        self.separator, self.quotechar = ",", '"'


class _CheckpointCallback(BaseCallback):
    """Save every ``every`` timesteps, at rollout start (just after an update)."""

    def __init__(self, path: Path, every: int) -> None:
        super().__init__()
        self.path, self.every = path, every
        self._last = 0

    def _on_training_start(self) -> None:
        self._last = self.num_timesteps

    def _on_rollout_start(self) -> None:
        if self.num_timesteps - self._last >= self.every:
            save_model(self.model, self.path)
            self._last = self.num_timesteps

    def _on_step(self) -> bool:
        return True


class _ProgressCallback(BaseCallback):
    """A tqdm bar over total timesteps (starting at the resumed count)."""

    def __init__(self, enabled: bool) -> None:
        super().__init__()
        self.enabled = enabled
        self.bar: Any = None

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=self.model._total_timesteps, initial=self.num_timesteps,
                        desc="ppo", unit="step", disable=not self.enabled)

    def _on_step(self) -> bool:
        self.bar.update(self.num_timesteps - self.bar.n)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------------- evaluation
@dataclass
class AgentEvalConfig:
    """``aapt-world agent eval``: a trained ``model`` or a scripted ``policy``, not both."""

    model: str | None = None
    policy: str | None = None  # a scripted player of envs.scripted.POLICIES
    env: str = "real"  # real | neural | both
    episodes: int = 5
    world: str | None = None  # default: the world the model was trained on (agent.json)
    max_steps: int = DOOM_EPISODE_STEPS
    scenario: str | None = None  # real env; default: the world card's, else freedoom2
    doom_map: str | None = None  # default: the world card's, else MAP01
    width: int | None = None  # real env frame size without a world or model; default 128x96
    height: int | None = None
    seed: int = 0
    deterministic: bool = True
    video: str | None = None
    device: str = "auto"
    dtype: str = "fp32"  # the neural world's precision: fp32 | bf16
    # the real game's frames through the world's encoder and decoder before the policy sees
    # them (envs.vae_view): a dream-trained policy then meets the blur it was trained on
    through_vae: bool = False

    def validate(self) -> None:
        if (self.model is None) == (self.policy is None):
            raise ValueError("pass exactly one of --model PATH (a trained agent) or --policy "
                             f"{{{','.join(SCRIPTED)}}} (a scripted baseline)")
        if self.policy is not None and self.policy not in SCRIPTED:
            raise ValueError(f"--policy must be one of {SCRIPTED}, got {self.policy!r}")
        if self.env not in ENV_KINDS:
            raise ValueError(f"--env must be one of {ENV_KINDS}, got {self.env!r}")
        if self.episodes < 1 or self.max_steps < 1:
            raise ValueError(f"--episodes and --max-steps must be >= 1, got {self.episodes} "
                             f"and {self.max_steps}")
        if self.model is not None and not Path(self.model).is_file():
            raise FileNotFoundError(f"--model: no file {self.model} (expected the SB3 zip "
                                    f"written by `aapt-world agent train`, e.g. runs/ppo/"
                                    f"{MODEL_FILE})")
        if self.world is not None and not Path(self.world).is_dir():
            raise FileNotFoundError(f"--world: no world directory at {self.world}")


class Actor(Protocol):
    def reset(self, seed: int) -> None: ...

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> Any: ...


class FrameStack:
    """The newest ``n`` frames side by side on the channel axis, oldest first, zeros before an
    episode's first frame: what SB3's ``VecFrameStack(channels_order="last")`` hands the policy
    in training, rebuilt for the one env of an evaluation."""

    def __init__(self, n: int) -> None:
        self.n, self.stacked = n, None

    def reset(self) -> None:
        self.stacked = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.stacked is None:
            self.stacked = np.zeros((*frame.shape[:-1], frame.shape[-1] * self.n), frame.dtype)
        self.stacked = np.concatenate([self.stacked[..., frame.shape[-1]:], frame], axis=-1)
        return self.stacked


class ModelActor:
    """A trained SB3 model acting on channels-last uint8 frames (its last ``frame_stack``)."""

    def __init__(self, model: PPO, deterministic: bool = True, frame_stack: int = 1) -> None:
        self.model, self.deterministic = model, deterministic
        self.stack = FrameStack(frame_stack)

    def reset(self, seed: int) -> None:
        self.stack.reset()

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> Any:
        action, _ = self.model.predict(self.stack(obs), deterministic=self.deterministic)
        return action


class ScriptedActor:
    """A scripted policy (continuous commands) in a world of either action type."""

    def __init__(self, name: str, action_type: str) -> None:
        self.policy, self.action_type = make_policy(name), action_type

    def reset(self, seed: int) -> None:
        self.policy.reset(np.random.default_rng(seed))

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> Any:
        command = self.policy.act(obs, info)
        if self.action_type == "continuous":
            return command
        return nearest_discrete_action(command, self.action_type)


class NoRewardHeadWarning(UserWarning):
    """PPO in a world whose rewards are all 0: nothing to learn."""

@dataclass
class EpisodeResult:
    ret: float
    length: int
    terminated: bool
    frames: list[np.ndarray] = field(default_factory=list)  # only when recorded
    fireballs: list[int] = field(default_factory=list)  # fireball pixels per observation
    actions: list[Any] = field(default_factory=list)  # what the actor chose, step by step


def run_episode(env: gym.Env, actor: Actor, seed: int, max_steps: int,
                record: bool = False) -> EpisodeResult:
    """One episode, ended by the env or after ``max_steps`` steps."""
    obs, info = env.reset(seed=seed)
    actor.reset(seed)
    result = EpisodeResult(0.0, 0, False, [obs[None]] if record else [])
    for _ in range(max_steps):
        action = actor.act(obs, info)
        result.actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        result.ret += float(reward)
        result.length += 1
        result.fireballs.append(fireball_pixels(obs))
        if record:
            result.frames.append(info["frames"])
        if terminated or truncated:
            result.terminated = bool(terminated)
            break
    return result


def load_model(path: str | os.PathLike, device: str = "auto") -> PPO:
    try:
        return PPO.load(Path(path), device=resolve_device(device))
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path} is not a readable SB3 model ({err})") from err


def trained_in(model_path: str | None) -> str | None:
    """Where a model was trained (its agent.json): a world directory or "real:<scenario>"."""
    if model_path is None:
        return None
    meta = Path(model_path).parent / META_FILE
    return json.loads(meta.read_text()).get("world") if meta.is_file() else None


def model_world(model_path: str | None) -> str | None:
    world = trained_in(model_path)
    return world if world and Path(world).is_dir() else None


def model_scenario(model_path: str | None) -> str | None:
    """The scenario of a model trained in the real game (``--world real:<scenario>``)."""
    world = trained_in(model_path)
    return world[len(REAL_PREFIX):] if world and world.startswith(REAL_PREFIX) else None


def model_spec(model: PPO) -> tuple[tuple[int, int, int], str]:
    """(channels-last shape of ONE frame, action type) the model expects."""
    height, width, _ = _model_input(model)
    return (height, width, 3), _space_action_type(model.action_space)


def _model_input(model: PPO) -> tuple[int, int, int]:
    """The model's channels-last input (H, W, 3 x frames stacked); SB3 keeps the channels-first
    space of its transposed training env."""
    shape = tuple(model.observation_space.shape)
    return (shape[1], shape[2], shape[0]) if shape[0] < min(shape[1:]) else shape


def model_frame_stack(model: PPO) -> int:
    """How many frames the model sees at once (``--frame-stack`` in training)."""
    return _model_input(model)[2] // 3


def _space_action_type(space: gym.spaces.Space) -> str:
    return (discrete_action_type(int(space.n)) if isinstance(space, gym.spaces.Discrete)
            else "continuous")


def evaluate(cfg: AgentEvalConfig) -> dict[str, Any]:
    """Evaluate in the chosen world(s); returns ``{"rows": [...], "videos": [...]}``."""
    cfg.validate()
    device = resolve_device(cfg.device)
    world_path = cfg.world or model_world(cfg.model)
    if cfg.env in ("neural", "both") and world_path is None:
        raise ValueError("--env neural needs --world PATH (a world directory)")
    world = (resolve_world(world_path, device, dtype=cfg.dtype) if world_path is not None
             else None)
    if cfg.through_vae and (world is None or cfg.env == "neural"):
        raise ValueError("--through-vae shows the REAL game through a world's VAE: it needs "
                         "--env real or both and a world (--world, or the model's)")
    model = load_model(cfg.model, device) if cfg.model is not None else None
    frame_shape, action_type = _eval_spec(cfg, world, model)
    actor: Actor = (ModelActor(model, cfg.deterministic, model_frame_stack(model))
                    if model is not None
                    else ScriptedActor(cfg.policy, action_type))
    name = f"ppo:{cfg.model}" if model is not None else f"scripted:{cfg.policy}"
    rows, videos = [], []
    for kind in (("real", "neural") if cfg.env == "both" else (cfg.env,)):
        env, label = _make_eval_env(kind, cfg, world, frame_shape, action_type)
        try:
            row, frames = _evaluate_in(env, actor, cfg)
        finally:
            env.close()
        rows.append({"world": label, "policy": name, **row})
        if cfg.video:
            videos.append(_write_video(cfg.video, kind, cfg.env == "both", frames))
    return {"rows": rows, "videos": videos, "frame_shape": list(frame_shape),
            "action_type": action_type}


def _eval_spec(cfg: AgentEvalConfig, world: Any, model: PPO | None
               ) -> tuple[tuple[int, int, int], str]:
    """The frame shape and action type both worlds use: the world's, checked against the
    model's; else the model's; else --width/--height (default 128x96), continuous."""
    if world is not None:
        spec = (world.frame_shape, world.config.action_type)
        if model is not None and model_spec(model) != spec:
            raise ValueError(f"--model {cfg.model} expects frames {model_spec(model)[0]} and "
                             f"{model_spec(model)[1]} actions, but --world {cfg.world} has "
                             f"{spec[0]} and {spec[1]} actions")
        return spec
    if model is not None:
        return model_spec(model)
    # a scenario with its own action set (TakeCover) is played with it, the rest with commands
    action_type = scenario_action_type(cfg.scenario or "freedoom2", "continuous")
    return (cfg.height or 96, cfg.width or 128, 3), action_type


def _make_eval_env(kind: str, cfg: AgentEvalConfig, world: Any, frame_shape: tuple[int, ...],
                   action_type: str) -> tuple[gym.Env, str]:
    if kind == "neural":
        return NeuralWorldEnv(world), "neural"

    card_scenario, card_map = world.source_game() if world is not None else (None, None)
    scenario = cfg.scenario or card_scenario or model_scenario(cfg.model) or "freedoom2"
    doom_map = cfg.doom_map or card_map or DEFAULT_MAP
    height, width = frame_shape[:2]
    env: gym.Env = DoomEnv(DoomConfig(scenario=scenario, doom_map=doom_map, width=width,
                                      height=height, action_type=action_type))
    label = f"real:{scenario}" + (f"/{doom_map}" if scenario == "freedoom2" else "")
    if cfg.through_vae:
        env, label = WorldVAEView(env, world), f"{label} (through the world's VAE)"
    return env, label


def action_shares(space: gym.spaces.Space, actions: list[Any]) -> dict[str, list[float]]:
    """How often each discrete action was chosen: a policy collapsed onto one action shows
    here (empty for continuous spaces)."""
    if not isinstance(space, gym.spaces.Discrete) or not actions:
        return {}
    counts = np.bincount(np.asarray(actions, dtype=np.int64).ravel() - space.start,
                         minlength=int(space.n))
    return {"action_shares": (counts / counts.sum()).round(4).tolist()}


def _evaluate_in(env: gym.Env, actor: Actor, cfg: AgentEvalConfig
                 ) -> tuple[dict[str, Any], list[np.ndarray]]:
    results, start = [], time.perf_counter()
    for episode in range(cfg.episodes):
        results.append(run_episode(env, actor, cfg.seed + episode, cfg.max_steps,
                                   record=bool(cfg.video) and episode == 0))
    seconds = time.perf_counter() - start
    returns = np.array([r.ret for r in results])
    lengths = np.array([r.length for r in results])
    row = {"episodes": len(results), "return_mean": float(returns.mean()),
           "return_std": float(returns.std()), "length_mean": float(lengths.mean()),
           "length_std": float(lengths.std()),
           "terminated": int(sum(r.terminated for r in results)),
           "steps_per_s": float(lengths.sum() / seconds),
           # TakeCover: does this world show the fireballs (agents/evaluation/fireballs.py)?
           **fireball_stats([n for r in results for n in r.fireballs],
                            int(np.prod(env.observation_space.shape[:2]))),
           **action_shares(env.action_space, [a for r in results for a in r.actions])}
    return row, results[0].frames


def _write_video(path: str, kind: str, suffixed: bool, frames: list[np.ndarray],
                 fps: float = DOOM_FPS) -> str:
    out = Path(path)
    if suffixed:
        out = out.with_name(f"{out.stem}_{kind}{out.suffix or '.mp4'}")
    width = frames[0].shape[-2]
    write_mp4(out, np.concatenate(frames), fps=fps, scale=max(1, 256 // width))
    return str(out)


# ----------------------------------------------------------------------------------------- CLI
def _train_parser() -> argparse.ArgumentParser:
    d = AgentTrainConfig(world="")
    p = command_parser("aapt-world agent train", "PPO (stable-baselines3 CnnPolicy) inside a "
                       "neural world, batched; checkpoints to OUT/model.zip")

    p.add_argument("--world", default=str(DEFAULT_WORLD),
                   help="world directory (default: the shipped world; or from aapt-world train "
                        "stage=export), or real:<scenario> (e.g. real:take_cover) to train in "
                        "the real game (the baseline)")
    p.add_argument("--width", type=int, default=d.width, help="real-game frame width")
    p.add_argument("--height", type=int, default=d.height, help="real-game frame height")
    p.add_argument("--out", default=d.out, help="run directory (model.zip, log, agent.json)")
    p.add_argument("--num-envs", type=int, default=d.num_envs,
                   help="parallel streams of the batched neural env")
    p.add_argument("--steps", type=int, default=d.steps, help="total timesteps, resumed included")
    p.add_argument("--max-episode-steps", type=int, default=d.max_episode_steps,
                   help="truncate dream episodes after this many steps")
    p.add_argument("--n-steps", type=int, default=d.n_steps, help="rollout steps per env")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="PPO minibatch size")
    p.add_argument("--n-epochs", type=int, default=d.n_epochs, help="PPO epochs per rollout")
    p.add_argument("--lr", dest="learning_rate", type=float, default=d.learning_rate,
                   help="Adam learning rate")
    p.add_argument("--gamma", type=float, default=d.gamma, help="discount factor")
    p.add_argument("--ent-coef", type=float, default=d.ent_coef, help="entropy bonus weight")
    p.add_argument("--target-kl", type=float, default=d.target_kl,
                   help="stop a rollout's PPO epochs early past this KL (default: off)")
    p.add_argument("--normalize-reward", action="store_true",
                   help="learn on rewards scaled by the running return's std (VecNormalize)")
    p.add_argument("--frame-stack", type=int, default=d.frame_stack,
                   help="the policy sees the newest N frames (motion, not just position)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="timesteps between checkpoints")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of PPO and the env")
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda (world and policy)")
    add_dtype(p, d.dtype)
    p.add_argument("--resume", action="store_true", help="continue OUT/model.zip")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    add_threads(p)
    return p


def _eval_parser() -> argparse.ArgumentParser:
    d = AgentEvalConfig()
    p = command_parser("aapt-world agent eval", "evaluate a trained model or a scripted policy "
                       "in the real ViZDoom world and/or the neural world")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="SB3 zip from `aapt-world agent train`")
    who.add_argument("--policy", choices=SCRIPTED, help="scripted baseline")
    p.add_argument("--env", choices=ENV_KINDS, default=d.env, help="where to evaluate")
    p.add_argument("--episodes", type=int, default=d.episodes, help="episodes per env")
    p.add_argument("--world", help="world directory (None: the model's, from agent.json)")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="steps per episode at most")
    p.add_argument("--scenario", help="real env scenario (None: the world card's, else "
                                      "freedoom2)")
    p.add_argument("--map", dest="doom_map", help="real env Freedoom2 map (None: the world "
                                                   "card's map, else MAP01)")
    p.add_argument("--width", type=int, help="real env frame width without world or model")
    p.add_argument("--height", type=int, help="real env frame height without world or model")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the first episode")
    p.add_argument("--stochastic", dest="deterministic", action="store_false",
                   help="sample the model's actions instead of taking the most likely")
    p.add_argument("--video", help="mp4 of the first episode (NAME_real/_neural with --env "
                                   "both)")
    p.add_argument("--through-vae", action="store_true",
                   help="the real game's frames through the world's encoder and decoder before "
                        "the policy sees them (what a dream-trained policy was trained on)")
    p.add_argument("--device", default=d.device, help="auto | cpu | cuda")
    add_dtype(p, d.dtype)
    p.add_argument("--json", dest="json_path", help="also write the report JSON here")
    add_threads(p)
    return p


def main(argv: list[str]) -> dict[str, Any]:
    """``aapt-world agent train|eval ...``; errors in the inputs exit with their message."""
    if not argv or argv[0] not in ("train", "eval"):
        raise SystemExit("usage: aapt-world agent {train,eval,collect} [options] (-h for options)")
    try:
        if argv[0] == "train":
            parser = _train_parser()
            args = vars(parser.parse_args(argv[1:]))
            apply_threads(args.pop("threads"))
            summary = train(AgentTrainConfig(**args))
            print(json.dumps(summary))
            return summary
        parser = _eval_parser()
        args = vars(parser.parse_args(argv[1:]))
        apply_threads(args.pop("threads"))
        json_path = args.pop("json_path")
        result = evaluate(AgentEvalConfig(**args))
        extra = {k: v for k, v in result.items() if k != "rows"}
        return print_report("agent eval", result["rows"], extra, json_path=json_path)
    except (FileNotFoundError, FileExistsError, ValueError, CheckpointError) as err:
        raise SystemExit(f"aapt-world agent {argv[0]}: error: {err}") from None


__all__ = ["AgentEvalConfig", "AgentTrainConfig", "SmallCNN", "evaluate",
           "main", "policy_kwargs_for", "save_model", "train"]
