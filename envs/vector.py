"""A natively batched neural world: ``num_envs`` streams, ONE generator forward per step.

``NeuralWorldVectorEnv`` is a ``gymnasium.vector.VectorEnv`` (gymnasium 1.x) over one
``StreamingSession`` of batch ``num_envs``: every ``step`` validates the batch of actions, maps
each to its per-frame conditions (``envs.actions``, the same encoding as the real env), and runs
one batched ``session.step`` (generator + decoder) and one batched call of the reward /
termination heads for all envs.

Autoreset is ``AutoresetMode.SAME_STEP`` (``metadata["autoreset_mode"]``), with exactly the
conventions of gymnasium's ``SyncVectorEnv`` in that mode: when env ``i`` terminates (heads) or
truncates (``max_episode_steps``, counted per env), ``rewards[i]`` / ``terminations[i]`` /
``truncations[i]`` are those of the final step, ``infos["final_obs"]`` (object array, ``None``
for other envs) and ``infos["final_info"]`` (a batched info dict with ``_key`` masks) hold its
final observation and step info, ``infos["_final_obs"]`` / ``infos["_final_info"]`` mark which
envs ended, and the returned observation ``obs[i]`` is already the first of its next episode.
The reset info of such an env replaces its step info in ``infos`` (as in ``SyncVectorEnv``):
``infos["frames"][i]`` is its start frame repeated over the 4 frame slots, ``infos["command"]``
is masked out (``infos["_command"][i]`` False) and ``infos["start_index"]`` is set.
A reset restarts only that stream (``session.reset(frames, items=[i], seeds=[...])``): the KV
cache, latent and decoder state of the other envs are untouched.

Seeding follows ``SyncVectorEnv`` of ``NeuralWorldEnv``: ``reset(seed=s)`` gives env ``i`` its
own generator seeded with ``s + i`` (or a list of seeds), from which its start frames and noise
seeds are drawn in the same order as the single env, so env ``i`` of a vector env behaves like a
``NeuralWorldEnv`` reset with seed ``s + i`` (up to float rounding of the batched forward).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from aapt_world.constants import DOOM_FPS
from aapt_world.session import SessionSnapshot
from aapt_world.world import World
from envs.actions import FRAMES_PER_STEP, command_to_frame_conditions
from envs.neural import (
    RESET_OPTIONS,
    SEED_HIGH,
    WorldActions,
    check_start_frame,
    check_start_index,
    episode_ends,
    evaluate_heads,
    resolve_world,
)

VECTOR_RESET_OPTIONS = ("frames", "reset_mask", *RESET_OPTIONS)


@dataclass
class NeuralVectorSnapshot:
    session: SessionSnapshot
    obs: np.ndarray
    episode_steps: np.ndarray
    rng_states: list[dict[str, Any] | None]


class NeuralWorldVectorEnv(VectorEnv):
    """``num_envs`` neural world streams advanced by one batched forward per step.

    Args:
        world: a ``World``, a path to a world directory, or None for the default world.
        num_envs: number of streams.
        max_episode_steps: per-env truncation after this many steps (None: never).
        render_mode: None or ``"rgb_array"`` (``render()`` returns each env's newest frame).
        device: where the models run (default: cpu for a path, the world's device for a World).
        dtype: "fp32" or "bf16" (~2x faster on CPUs with AMX); default: fp32 for a path,
            the world's own for a World.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": DOOM_FPS // FRAMES_PER_STEP,
                "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, world: World | str | os.PathLike | None = None, num_envs: int = 1,
                 max_episode_steps: int | None = None, render_mode: str | None = None,
                 device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None) -> None:
        check_vector_args(num_envs, max_episode_steps, render_mode,
                          self.metadata["render_modes"])
        self.world = resolve_world(world, device, dtype=dtype)
        self.action_type = self.world.config.action_type
        self.actions = WorldActions.of(self.world)
        setup_streams(self, self.world, int(num_envs), self.actions.space, max_episode_steps,
                      render_mode)
        self.metadata = {**self.metadata,
                         "render_fps": self.world.config.fps // FRAMES_PER_STEP}
        self._device = self.world.device

    # -- Gymnasium vector API ---------------------------------------------------------------

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all envs, or those in ``options["reset_mask"]`` (bool (num_envs,)).

        ``seed``: None, an int (env i gets seed + i) or a list with one seed (or None) per env.
        ``options``: ``frames`` uint8 (num_envs, H, W, 3) start images (rows of masked-out envs
        are ignored), or ``frame`` one image for all, or ``start_index`` (int) for all.
        """
        options = dict(options or {})
        unknown = set(options) - set(VECTOR_RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}: expected any of "
                             f"{VECTOR_RESET_OPTIONS}")
        mask = reset_mask(options.pop("reset_mask", None), self.num_envs)
        seeds = seed_list(seed, self.num_envs)
        frames, start_index = self._start_options(options)
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            super().reset(seed=int(seed))
        for i in np.flatnonzero(mask):
            if seeds[i] is not None:
                self._rngs[i] = seeding.np_random(seeds[i])[0]
        items = np.flatnonzero(mask)
        obs, infos = self._reset_items(items, frames, start_index)
        self._obs[items] = obs
        return self._obs.copy(), infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        commands = self._commands(actions)  # validates everything before any state changes
        if not self._started.all():
            raise RuntimeError(f"reset() every env before step(): envs "
                               f"{np.flatnonzero(~self._started).tolist()} never were")
        conds = torch.from_numpy(
            np.stack([command_to_frame_conditions(c) for c in commands])).to(self._device)
        prev = self.session.prev.clone()
        frames = self.session.step(conds).cpu().numpy()  # ONE batched forward: (B, 4, H, W, 3)
        rewards, logits = evaluate_heads(self.world, prev, self.session.prev, conds)
        self.episode_steps += 1
        terminations = episode_ends(self.world, logits, self._rngs)
        truncations = (self.episode_steps >= self.max_episode_steps
                       if self.max_episode_steps is not None
                       else np.zeros(self.num_envs, dtype=bool))
        obs = np.ascontiguousarray(frames[:, -1])
        ones = np.ones(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {"frames": frames, "_frames": ones,
                                 "command": commands, "_command": ones.copy(),
                                 "termination_logit": logits, "_termination_logit": ones.copy()}
        done = np.flatnonzero(terminations | truncations)
        if len(done):
            add_final_infos(infos, obs, done, ("frames", "command", "termination_logit"))
            reset_obs, reset_info = self._reset_items(done, None, None)
            obs[done] = reset_obs
            # the reset info replaces the ended envs' step info (SyncVectorEnv, SAME_STEP)
            infos["frames"][done] = reset_info["frames"][done]  # start frame, broadcast over 4
            for key in ("command", "termination_logit"):
                infos[key][done] = 0
                infos[f"_{key}"][done] = False
            infos["start_index"] = reset_info["start_index"]
            infos["_start_index"] = reset_info["_start_index"]
            for key in ("command", "termination_logit"):  # no env has them: drop, as Sync does
                if not infos[f"_{key}"].any():
                    del infos[key], infos[f"_{key}"]
        self._obs = obs
        return (obs.copy(), rewards, terminations, np.asarray(truncations, dtype=bool), infos)

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode == "rgb_array":
            return tuple(frame.copy() for frame in self._obs)
        return None

    # -- world state ------------------------------------------------------------------------

    def snapshot(self) -> NeuralVectorSnapshot:
        """All streams' state (session, observations, episode counters, per-env RNGs)."""
        if not self._started.all():
            raise RuntimeError("nothing to snapshot: reset() every env first")
        return NeuralVectorSnapshot(
            self.session.snapshot(), self._obs.copy(), self.episode_steps.copy(),
            [None if g is None else copy.deepcopy(g.bit_generator.state) for g in self._rngs])

    def restore(self, snap: NeuralVectorSnapshot) -> np.ndarray:
        if not isinstance(snap, NeuralVectorSnapshot):
            raise TypeError(f"expected a NeuralVectorSnapshot, got {type(snap).__name__}")
        if self.session.cache is None:  # allocate the session's buffers once
            self.session.reset(torch.from_numpy(
                np.repeat(self.world.start_frames[:1], self.num_envs, axis=0)))
        self.session.restore(snap.session)
        self._obs = snap.obs.copy()
        self.episode_steps = snap.episode_steps.copy()
        for i, state in enumerate(snap.rng_states):
            if state is None:
                self._rngs[i] = None
            else:
                g = self._rngs[i] or np.random.Generator(np.random.PCG64())
                g.bit_generator.state = copy.deepcopy(state)
                self._rngs[i] = g
        self._started[:] = True
        return self._obs.copy()

    # -- helpers ----------------------------------------------------------------------------

    def _reset_items(self, items: np.ndarray, frames: np.ndarray | None,
                     start_index: int | None) -> tuple[np.ndarray, dict[str, Any]]:
        """Restart streams ``items`` in one session.reset; draws from each env's own RNG in the
        order NeuralWorldEnv.reset does (noise seed, then start frame)."""
        images, noise_seeds, indices = [], [], np.full(self.num_envs, 0, dtype=np.int64)
        for i in items:
            if self._rngs[i] is None:
                self._rngs[i] = seeding.np_random()[0]
            rng = self._rngs[i]
            noise_seeds.append(int(rng.integers(0, SEED_HIGH)))
            if frames is not None:
                images.append(frames[i])
                indices[i] = -1
            else:
                index = start_index if start_index is not None else int(
                    rng.integers(len(self.world.start_frames)))
                images.append(self.world.start_frames[index])
                indices[i] = index
        decoded = self.session.reset(torch.from_numpy(np.stack(images)),
                                     items=torch.as_tensor(items, dtype=torch.long),
                                     seeds=noise_seeds).cpu().numpy()
        self._started[items] = True
        self.episode_steps[items] = 0
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[items] = True
        start = np.zeros((self.num_envs, 1, *self.world.frame_shape), dtype=np.uint8)
        start[items, 0] = decoded
        return decoded, {"frames": start, "_frames": mask, "start_index": indices,
                         "_start_index": mask.copy()}

    def _commands(self, actions: Any) -> np.ndarray:
        arr = np.asarray(actions)
        shape = self.action_space.shape
        if arr.shape != shape:
            raise ValueError(f"expected a batch of actions of shape {shape} from "
                             f"{self.action_space} (one {self.single_action_space} action per "
                             f"env), got shape {arr.shape}")
        commands = np.empty((self.num_envs, self.actions.command_dim), dtype=np.float32)
        for i in range(self.num_envs):
            try:
                commands[i] = self.actions.command(arr[i])
            except ValueError as err:
                raise ValueError(f"env {i}: {err}") from None
        return commands

    def _start_options(self, options: dict[str, Any]) -> tuple[np.ndarray | None, int | None]:
        given = [k for k in ("frames", "frame", "start_index") if k in options]
        if len(given) > 1:
            raise ValueError(f"pass at most one of options 'frames', 'frame', 'start_index', "
                             f"got {given}")
        shape = self.world.frame_shape
        if "frames" in options:
            return check_start_frame(options["frames"], (self.num_envs, *shape),
                                     "options['frames']"), None
        if "frame" in options:
            frame = check_start_frame(options["frame"], shape)
            return np.repeat(frame[None], self.num_envs, axis=0), None
        if "start_index" in options:
            return None, check_start_index(options["start_index"],
                                            len(self.world.start_frames))
        return None, None


def check_vector_args(num_envs: int, max_episode_steps: int | None, render_mode: str | None,
                      render_modes: Sequence[str]) -> None:
    """The constructor arguments every neural vector env shares, checked before any loading."""
    if int(num_envs) < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if max_episode_steps is not None and int(max_episode_steps) < 1:
        raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
    if render_mode is not None and render_mode not in render_modes:
        raise ValueError(f"render_mode must be one of {list(render_modes)}, got {render_mode!r}")


def setup_streams(env: VectorEnv, world: World, num_envs: int, single_action_space: spaces.Space,
                  max_episode_steps: int | None, render_mode: str | None) -> None:
    """The state every neural vector env keeps: batched spaces, one streaming session of
    ``num_envs`` streams, per-env rngs, the newest observations and episode lengths."""
    env.num_envs = num_envs
    env.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
    env.render_mode = render_mode
    env.single_action_space = single_action_space
    env.single_observation_space = spaces.Box(0, 255, shape=world.frame_shape, dtype=np.uint8)
    env.action_space = batch_space(single_action_space, num_envs)
    env.observation_space = batch_space(env.single_observation_space, num_envs)
    env.session = world.session(num_envs)
    env._rngs = [None] * num_envs
    env._obs = np.zeros((num_envs, *world.frame_shape), dtype=np.uint8)
    env._started = np.zeros(num_envs, dtype=bool)
    env.episode_steps = np.zeros(num_envs, dtype=np.int64)


def reset_mask(mask: Any, num_envs: int) -> np.ndarray:
    """``options["reset_mask"]`` checked: a bool (num_envs,) array with a True (None: all)."""
    if mask is None:
        return np.ones(num_envs, dtype=bool)
    if not isinstance(mask, np.ndarray) or mask.shape != (num_envs,) \
            or mask.dtype != np.bool_ or not mask.any():
        raise ValueError(f"options['reset_mask'] must be a numpy bool array of shape "
                         f"({num_envs},) with at least one True, got {mask!r}")
    return mask.copy()


def seed_list(seed: Any, num_envs: int) -> list[int | None]:
    """A vector reset's ``seed``: None, an int (env i gets seed + i) or one seed per env."""
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed) + i for i in range(num_envs)]
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"seed must be None, an int or a list of {num_envs} seeds, "
                         f"got {seed!r}")
    return seeds


def add_final_infos(infos: dict[str, Any], obs: np.ndarray, done: np.ndarray,
                    keys: tuple[str, ...]) -> None:
    """SyncVectorEnv's SAME_STEP record of the envs ``done`` ended this step, into ``infos``:
    ``final_obs`` (object array, None elsewhere), ``final_info`` (the step's ``keys``, masked)
    and their ``_`` masks. Call before the ended envs are reset."""
    num_envs = len(obs)
    ended = np.zeros(num_envs, dtype=bool)
    ended[done] = True
    final_obs = np.full(num_envs, None, dtype=object)
    for i in done:
        final_obs[i] = obs[i].copy()
    final_info: dict[str, Any] = {}
    for key in keys:
        value = np.zeros_like(infos[key])
        value[done] = infos[key][done]
        final_info[key], final_info[f"_{key}"] = value, ended.copy()
    infos.update(final_obs=final_obs, _final_obs=ended.copy(), final_info=final_info,
                 _final_info=ended.copy())


def make_neural_world_vector(world: World | str | os.PathLike | None = None,
                             **kwargs: Any) -> NeuralWorldVectorEnv:
    """``gym.make_vec("aapt/NeuralWorld-v0", num_envs=N, world=DIR)``; ``world`` required."""
    if world is None:
        raise ValueError("aapt/NeuralWorld-v0 needs world=<path to a world directory>")
    return NeuralWorldVectorEnv(world, **kwargs)
