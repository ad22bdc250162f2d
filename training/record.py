"""Record ANY Gymnasium env with ``rgb_array`` rendering into the dataset format: the first step
of "train a world on your own game".

    aapt-world record --env MountainCar-v0 --root data/mountaincar --episodes 32 --steps 100
    aapt-world record --env Pendulum-v1 --root data/pendulum --policy mypkg.players:expert

One dataset step is one latent frame: the step's action is held for ``FRAMES_PER_STEP`` env
steps (action repeat), each rendered and resized to ``width`` x ``height``; rewards are summed
and the step is "terminated" if the game ended inside it. Actions are stored as the command
vectors of ``envs.game_actions.ActionEncoding`` (one-hot for Discrete, [-1, 1] for Box), whose
JSON lands in the manifest so training and the neural env use the same space. An episode ends
when the game terminates or truncates, or after ``steps`` steps.

Like ``aapt-world collect``, the plan is fixed (episode i: seed ``seed + i``; one in
``val_every`` validates): re-running records only missing episodes, a crash loses at most the
episode in flight, and a re-run with other settings is refused.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
from tqdm import tqdm

from aapt_world.cli_options import command_parser
from envs.game_actions import ActionEncoding
from training.dataset import (
    FRAMES_PER_STEP,
    DatasetError,
    Episode,
    check_dataset_meta,
    check_episodes_match,
    completed_episode_ids,
    remove_stale_temporaries,
    validation_episodes,
    write_episode,
    write_manifest,
)

Policy = Callable[[np.ndarray, dict[str, Any]], Any]  # (observation, info) -> action
DEFAULT_FPS = 30  # when the env's metadata has no render_fps


@dataclass
class RecordConfig:
    env: str  # a registered Gymnasium id
    root: str
    episodes: int = 16
    steps: int = 100  # steps per episode at most (each FRAMES_PER_STEP env steps)
    width: int = 64
    height: int = 48
    policy: str = "random"  # "random" (seeded action_space.sample) or "module:callable"
    seed: int = 0
    val_every: int = 8
    env_kwargs: dict[str, Any] | None = None

    def validate(self) -> None:
        checks = [
            (self.episodes >= 2, f"episodes must be >= 2 (one goes to validation), got "
                                 f"{self.episodes}"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.width % 8 == 0 and self.height % 8 == 0 and self.width > 0 and self.height > 0,
             f"width and height must be positive multiples of 8 (the VAE downsamples 8x), got "
             f"{self.width}x{self.height}"),
            (self.val_every >= 2, f"val_every must be >= 2, got {self.val_every}"),
            (self.policy == "random" or ":" in self.policy,
             f"policy must be 'random' or 'module:callable', got {self.policy!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def make_env(cfg: RecordConfig) -> gym.Env:
    try:
        env = gym.make(cfg.env, render_mode="rgb_array", **(cfg.env_kwargs or {}))
    except gym.error.Error as err:
        raise ValueError(f"cannot make env {cfg.env!r} with render_mode='rgb_array': {err}") \
            from err
    if "rgb_array" not in env.metadata.get("render_modes", []):
        env.close()
        raise ValueError(f"env {cfg.env!r} does not render rgb_array frames "
                         f"(render_modes {env.metadata.get('render_modes')})")
    return env


def load_policy(spec: str, env: gym.Env, seed: int) -> Policy:
    """``random``: the action space sampled with its own seed; else ``module:callable``, a
    callable taking (observation, info) and returning an action."""
    if spec == "random":
        env.action_space.seed(seed)
        return lambda obs, info: env.action_space.sample()
    module_name, _, attr = spec.partition(":")
    try:
        policy = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"policy {spec!r}: cannot import {attr!r} from {module_name!r} "
                         f"({err})") from err
    if not callable(policy):
        raise ValueError(f"policy {spec!r} is not callable")
    return policy


def render(env: gym.Env, width: int, height: int) -> np.ndarray:
    frame = env.render()
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"render() must return an (H, W, 3) array, got "
                         f"{getattr(frame, 'shape', type(frame))}")
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    if frame.shape[:2] != (height, width):
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    return frame


def record_episode(env: gym.Env, policy: Policy, encoding: ActionEncoding, cfg: RecordConfig,
                   seed: int) -> tuple[dict[str, np.ndarray], bool]:
    """One episode as ``Episode`` arrays, and whether it ended by truncation."""
    obs, info = env.reset(seed=seed)
    frames = [render(env, cfg.width, cfg.height)]
    actions, rewards, terminated = [], [], []
    truncated = False
    for _ in range(cfg.steps):
        action = policy(obs, info)
        command = encoding.encode(action)
        reward, ended = 0.0, False
        for _ in range(FRAMES_PER_STEP):  # the action is held over the step's frames
            if not ended:
                obs, r, term, trunc, info = env.step(action)
                reward += float(r)
                ended, truncated = term or trunc, trunc and not term
                frames.append(render(env, cfg.width, cfg.height))
            else:  # the game ended inside the step: its last frame stays on screen
                frames.append(frames[-1])
        actions.append(command)
        rewards.append(reward)
        terminated.append(ended and not truncated)
        if ended:
            break
    arrays = {"frames": np.stack(frames), "poses": np.zeros((len(frames), 0), np.float32),
              "actions": np.stack(actions).astype(np.float32),
              "rewards": np.asarray(rewards, dtype=np.float32),
              "terminated": np.asarray(terminated, dtype=bool)}
    return arrays, truncated


def dataset_meta(cfg: RecordConfig, env: gym.Env, encoding: ActionEncoding) -> dict[str, Any]:
    return {"world": cfg.env, "source": "gymnasium", "plan_version": 3, "width": cfg.width,
            "height": cfg.height, "frames_per_step": FRAMES_PER_STEP,
            "fps": int(env.metadata.get("render_fps") or DEFAULT_FPS),
            "action_space": encoding.to_json(), "action_dim": encoding.command_dim,
            "pose_names": []}


def record(cfg: RecordConfig, progress: bool = True) -> dict[str, Any]:
    """Record every planned episode not yet on disk; returns a summary."""
    cfg.validate()
    root = Path(cfg.root)
    env = make_env(cfg)
    try:
        encoding = ActionEncoding.from_space(env.action_space)
        meta = dataset_meta(cfg, env, encoding)
        check_dataset_meta(root, meta)
        val = validation_episodes(cfg.episodes, cfg.val_every)
        plans = {f"ep_{i:06d}": {"seed": cfg.seed + i, "policy": cfg.policy,
                                 "split": "val" if i in val else "train"}
                 for i in range(cfg.episodes)}
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(root)
        write_manifest(root, meta)
        check_episodes_match(root, plans, cfg.steps)
        todo = [(episode_id, plan) for episode_id, plan in plans.items()
                if episode_id not in completed_episode_ids(root)]
        start, frames = time.perf_counter(), 0
        for episode_id, plan in tqdm(todo, desc="episodes", unit="ep", disable=not progress):
            policy = load_policy(cfg.policy, env, plan["seed"])
            arrays, truncated = record_episode(env, policy, encoding, cfg, plan["seed"])
            write_episode(root, Episode(**arrays, meta={"id": episode_id, **plan,
                                                        "truncated": truncated}))
            write_manifest(root, meta)
            frames += len(arrays["frames"])
    finally:
        env.close()
    manifest = write_manifest(root, meta)
    seconds = time.perf_counter() - start
    return {"root": str(root), "recorded_episodes": len(todo), "recorded_frames": frames,
            "seconds": round(seconds, 1), "total_episodes": manifest["num_episodes"],
            "action_space": str(encoding.space()), "action_dim": encoding.command_dim,
            "fps": meta["fps"]}


def train_hint(summary: dict[str, Any]) -> str:
    return (f"next: aapt-world train world=game model=tiny data.root={summary['root']} "
            f"world.action_dim={summary['action_dim']} world.fps={summary['fps']} stage=vae "
            f"(then latents, diffusion, consistency, adversarial, export; see README)")


def add_dataset_options(parser: argparse.ArgumentParser, width: int, height: int,
                        val_every: int) -> None:
    """The options every game recorder shares: frame size and the validation split."""
    parser.add_argument("--width", type=int, default=width, help="frame width (multiple of 8)")
    parser.add_argument("--height", type=int, default=height,
                        help="frame height (multiple of 8)")
    parser.add_argument("--val-every", type=int, default=val_every,
                        help="one episode in this many validates")


def run_recorder(command: str, job: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a recorder; bad input exits with one line, else print the summary and what next."""
    try:
        summary = job()
    except (ValueError, DatasetError) as err:
        print(f"aapt-world {command}: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(" ".join(f"{k}={v}" for k, v in summary.items()))
    print(train_hint(summary))
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = command_parser("aapt-world record", __doc__.split("\n")[0])
    d = RecordConfig(env="", root="")
    parser.add_argument("--env", required=True, help="registered Gymnasium env id")
    parser.add_argument("--root", required=True, help="dataset directory to write (resumable)")
    parser.add_argument("--episodes", type=int, default=d.episodes, help="episodes to record")
    parser.add_argument("--steps", type=int, default=d.steps,
                        help=f"steps per episode at most ({FRAMES_PER_STEP} env steps each)")
    parser.add_argument("--policy", default=d.policy,
                        help="'random', or module:callable taking (observation, info)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of episode 0 (+i after)")
    add_dataset_options(parser, d.width, d.height, d.val_every)
    args = parser.parse_args(argv)
    return run_recorder("record", lambda: record(RecordConfig(**vars(args))))


if __name__ == "__main__":
    main()

