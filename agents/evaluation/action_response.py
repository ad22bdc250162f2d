"""Does a world move the view the way the real game does, action by action?

For a world with a discrete action space, every action is held for a few steps from the same
real start states, in the world and in the real game, and the horizontal view shift per video
frame is read from the frames (phase correlation, ``aapt_world.metrics.yaw_changes``; in
degrees of the camera's field of view: a strafe shifts the view too). A dream whose view
barely moves when the player strafes cannot make a fireball's hit depend on dodging: in
TakeCover the real game shifts ~0.9 per frame for a strafe and 0 for a no-op.

    aapt-world action-response --world worlds/take_cover-training/world96 --dtype bf16

Prints, per action, the mean shift and its spread over the starts in both worlds, and the
response ratio: the world's spread of mean shifts across actions over the real game's
(1 = the actions move the view as far apart as in the real game, 0 = they do not matter).
A world can buy a larger response with a worse picture (classifier-free guidance at a high
weight over-saturates), so each row also gives the mean frame statistics, and the summary the
fraction of the world's frames whose brightness / saturation / HF energy lie inside the real
frames' 5-95 % range (``in_range_*``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from aapt_world.cli_options import add_dtype, add_threads, apply_threads, command_parser
from aapt_world.constants import DEFAULT_MAP
from aapt_world.devices import resolve_device
from aapt_world.metrics import FRAME_STATS, fraction_in_range, frame_stats, yaw_changes
from aapt_world.report import print_report
from envs.doom import DoomConfig, DoomEnv
from envs.neural import NeuralWorldEnv, resolve_world


def held_action_frames(env: gym.Env, action: Any, steps: int, seed: int) -> np.ndarray:
    """The video frames (T, H, W, 3) while ``action`` is held for ``steps`` steps from
    ``env.reset(seed=seed)`` (fewer when the episode ends)."""
    env.reset(seed=seed)
    frames = []
    for _ in range(steps):
        _obs, _reward, terminated, truncated, info = env.step(action)
        frames.extend(info["frames"])
        if terminated or truncated:
            break
    return np.asarray(frames)


def view_shift(frames: np.ndarray) -> float:
    """Mean horizontal view shift per video frame (NaN for fewer than two frames)."""
    return float(np.mean(yaw_changes(frames))) if len(frames) > 1 else float("nan")


def action_response(env: gym.Env, steps: int, seeds: list[int]
                    ) -> tuple[list[dict[str, float]], dict[str, np.ndarray]]:
    """One row per action of a Discrete action space: mean and std of the view shift and the
    mean frame statistics; also every frame's statistics, pooled over actions and starts."""
    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ValueError(f"action response needs a Discrete action space, got {env.action_space}")
    rows, pooled = [], {name: [] for name in FRAME_STATS}
    for action in range(int(env.action_space.n)):
        clips = [held_action_frames(env, action, steps, s) for s in seeds]
        shifts = np.array([view_shift(clip) for clip in clips])
        stats = frame_stats(np.concatenate(clips))
        for name, values in stats.items():
            pooled[name].append(values)
        rows.append({"action": action, "shift_mean": float(np.nanmean(shifts)),
                     "shift_std": float(np.nanstd(shifts)),
                     **{name: float(values.mean()) for name, values in stats.items()}})
    return rows, {name: np.concatenate(values) for name, values in pooled.items()}


def response_ratio(world: list[dict[str, float]], real: list[dict[str, float]]) -> float:
    """Spread of the per-action mean shifts in the world over the real game's."""
    spread = [np.ptp([r["shift_mean"] for r in rows]) for rows in (world, real)]
    return float(spread[0] / spread[1]) if spread[1] > 0 else float("nan")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = command_parser("aapt-world action-response", __doc__.split("\n")[0])
    parser.add_argument("--world", required=True, help="world directory (discrete actions)")
    parser.add_argument("--steps", type=int, default=12, help="steps each action is held")
    parser.add_argument("--starts", type=int, default=6, help="start states (seeds 0..N-1)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_dtype(parser)
    add_threads(parser)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.starts < 1:
        parser.error("--steps and --starts must be >= 1")
    apply_threads(args.threads)
    world = resolve_world(args.world, resolve_device(args.device), dtype=args.dtype)
    scenario, doom_map = world.source_game()
    height, width = world.frame_shape[:2]
    real_env = DoomEnv(DoomConfig(scenario=scenario or "freedoom2",
                                  doom_map=doom_map or DEFAULT_MAP, width=width, height=height,
                                  action_type=world.config.action_type))
    seeds = list(range(args.starts))
    envs = {"neural": NeuralWorldEnv(world), "real": real_env}
    try:
        measured = {name: action_response(env, args.steps, seeds) for name, env in envs.items()}
    finally:
        for env in envs.values():
            env.close()
    rows = [{"world": name, **row} for name, (rows, _) in measured.items() for row in rows]
    (neural_rows, neural_stats), (real_rows, real_stats) = measured["neural"], measured["real"]
    ratio = response_ratio(neural_rows, real_rows)
    in_range = {f"in_range_{name}": fraction_in_range(neural_stats[name], real_stats[name])
                for name in FRAME_STATS}
    summary = {"world": args.world, "response_ratio": ratio, **in_range, "steps": args.steps,
               "starts": args.starts}
    print_report("action_response", rows, summary)
    return {"rows": rows, "response_ratio": ratio, **in_range}
