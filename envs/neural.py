"""The neural Doom world as a Gymnasium env: the real env's API, the frames of a learned model.

``NeuralWorldEnv`` mirrors ``envs.doom.DoomEnv`` (same action spaces, same action -> command
encoding from ``envs.actions``, same observation and ``info`` layout) but every ``step`` is one
latent frame of a shipped world (``aapt_world.world.World``):

1. the action is validated and mapped to its command (``action_to_command``) and per-frame
   conditions (``command_to_frame_conditions``), exactly as the real env, the dataset and
   training do;
2. ``StreamingSession.step`` runs ONE generator forward (1 NFE, KV cache) and streams the new
   latent through the causal VAE decoder into 4 video frames;
3. reward and termination come from the world's learned heads
   (``heads(prev_latent, new_latent, frame_conds)``; terminated when the logit is > 0), or 0 and
   never when the world has no heads.

Observation: the newest frame, uint8 (H, W, 3). ``info`` of ``step``: ``frames`` uint8
(4, H, W, 3) (the step's 4 video frames), ``command`` float32 (4,), ``termination_logit``.
``info`` of ``reset``: ``frames`` uint8 (1, H, W, 3), ``start_index`` (which of the world's start
frames was used; -1 for ``options={"frame": image}``).

``reset(seed=)`` seeds everything (start frame choice and the session's noise) from
``self.np_random``, so the same seed and actions give identical frames. ``snapshot()`` /
``restore()`` save and return to a world state exactly.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from aapt_world.constants import DOOM_FPS
from aapt_world.session import NonFiniteError, SessionSnapshot
from aapt_world.world import World, load_world
from envs import DEFAULT_WORLD
from envs.actions import (
    COMMAND_DIM,
    FRAMES_PER_STEP,
    action_to_command,
    command_to_frame_conditions,
    make_action_space,
)
from envs.game_actions import ActionEncoding

RESET_OPTIONS = ("frame", "start_index")
SEED_HIGH = 2**31 - 1


# ------------------------------------------------------------------ shared with envs.vector
def resolve_world(world: World | str | os.PathLike | None,
                  device: str | torch.device | None = None, check: bool = True,
                  dtype: str | torch.dtype | None = None) -> World:
    """A ``World``, or a path to a world directory (loaded with ``load_world``), or ``None`` for
    the default world shipped in the repo (``worlds/doom``), on ``device`` in ``dtype`` ("fp32"
    | "bf16"; a given World is moved in place); ``check``: that this module's envs can drive it
    (step commands)."""
    if world is None:
        if not DEFAULT_WORLD.is_dir():
            raise FileNotFoundError(
                f"no default neural world at {DEFAULT_WORLD} (the repo ships it there: is the "
                f"checkout complete?): pass world=<path to a world directory>, e.g. "
                f"gym.make('aapt/NeuralDoom-v0', world='runs/doom/world') after "
                f"`aapt-world train stage=export`")
        world = DEFAULT_WORLD
    if isinstance(world, (str, os.PathLike)):
        world = load_world(Path(world), device=device or "cpu", dtype=dtype or "fp32")
    elif not isinstance(world, World):
        raise TypeError(f"world must be a World or a path to a world directory, got "
                        f"{type(world).__name__}")
    elif device is not None or dtype is not None:
        world.to(device, dtype)
    if check:
        check_world(world)
    return world


def check_world(world: World) -> None:
    cond, cfg = world.config.condition, world.config
    width = WorldActions.of(world).command_dim
    if cond.kind != "action" or cond.action_dim != width or cond.num_actions:
        raise ValueError(
            f"this env drives worlds conditioned on step commands (condition kind 'action', "
            f"action_dim {width} for action type {cfg.action_type!r}); the world has kind "
            f"{cond.kind!r}, action_dim {cond.action_dim}, num_actions {cond.num_actions}")
    if cfg.frames_per_step != FRAMES_PER_STEP:
        raise ValueError(f"world has {cfg.frames_per_step} frames per step; this env expects "
                         f"{FRAMES_PER_STEP}")
    frames = world.start_frames
    if frames.ndim != 4 or frames.dtype != np.uint8 or frames.shape[1:] != world.frame_shape \
            or len(frames) == 0:
        raise ValueError(f"world.start_frames must be uint8 (N >= 1, {world.frame_shape}), got "
                         f"{frames.dtype} {frames.shape}")


def check_start_frame(frame: Any, shape: tuple[int, int, int], what: str = "options['frame']"
                      ) -> np.ndarray:
    """A user-supplied start image: uint8 numpy array of exactly ``shape`` (H, W, 3)."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{what} must be a numpy uint8 array of shape {shape} (the "
                         f"observation space), got {type(frame).__name__}")
    if frame.ndim != len(shape) or frame.shape != shape or frame.dtype != np.uint8:
        raise ValueError(f"{what} must be a uint8 array of shape {shape} (the observation "
                         f"space Box(0, 255, {shape}, uint8)), got {frame.dtype} "
                         f"{frame.shape}")
    return np.ascontiguousarray(frame)


def evaluate_heads(world: World, prev: torch.Tensor, new: torch.Tensor, conds: torch.Tensor
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Reward (B,) and termination logit (B,), float64 of a step; zeros and -inf
    (never terminates) when the world has no heads."""
    batch = prev.shape[0]
    if world.heads is None:
        return np.zeros(batch, dtype=np.float64), np.full(batch, -np.inf, dtype=np.float64)
    with torch.inference_mode():
        reward, logit = world.heads(prev, new, conds.to(prev.dtype))
    reward, logit = (t.float().cpu().numpy().astype(np.float64) for t in (reward, logit))
    if not (np.isfinite(reward).all() and np.isfinite(logit).all()):
        raise NonFiniteError("the reward/termination heads returned NaN or inf: the world's "
                             "heads weights are damaged or diverged")
    return reward, logit


def episode_ends(world: World, logits: np.ndarray, rngs: list[np.random.Generator]
                 ) -> np.ndarray:
    """Which envs the step ended (B,) bool, by the world's rule: ``threshold`` (logit > 0) or
    ``sample``: a death drawn with probability sigmoid(logit) from each env's own rng, so a
    calibrated head gives the real game's hazard (a threshold at 0.5 never fires when the
    head is unsure, as it is for most of the steps before a death)."""
    if world.config.termination == "threshold":
        return logits > 0
    probs = 0.5 * (1.0 + np.tanh(0.5 * logits))  # sigmoid, no overflow at large |logit|
    return np.array([rng.random() < p for rng, p in zip(rngs, probs, strict=True)], dtype=bool)


@dataclass(frozen=True)
class WorldActions:
    """A world's Gymnasium action space and the map from its actions to step commands: Doom's
    (``envs.actions``) or a recorded game's own (``envs.game_actions``)."""

    space: spaces.Space
    encode: Callable[[Any], np.ndarray]
    command_dim: int

    @staticmethod
    def of(world: World) -> WorldActions:
        config = world.config
        if config.action_type == "pose":
            raise ValueError("a pose world is driven by body poses, not step commands: use "
                             "envs.neural_humanoid.NeuralHumanoidEnv")
        if config.action_type == "game":
            encoding = ActionEncoding.from_json(config.action_space)
            return WorldActions(encoding.space(), encoding.encode, encoding.command_dim)
        return WorldActions(make_action_space(config.action_type),
                            partial(action_to_command, action_type=config.action_type),
                            COMMAND_DIM)

    def command(self, action: Any) -> np.ndarray:
        """The action's command; a bad action's error always names the expected space."""
        try:
            return self.encode(action)
        except ValueError as err:
            message = str(err)
            if str(self.space) not in message:
                message += f" (action_space: {self.space})"
            raise ValueError(message) from None


# ------------------------------------------------------------------------------ the env
@dataclass
class NeuralEnvSnapshot:
    """Everything needed to return a ``NeuralWorldEnv`` to a state (see ``restore``)."""

    session: SessionSnapshot
    last_frame: np.ndarray
    terminated: bool
    episode_steps: int
    rng_state: dict[str, Any]


class NeuralWorldEnv(gym.Env):
    """A neural world behind the real Doom env's API (see the module docstring).

    Args:
        world: a ``World``, a path to a world directory, or None for the default world.
        render_mode: ``"rgb_array"`` (``render()`` returns the newest frame) or ``"human"``
            (a pygame-ce window showing every video frame at the world's fps; needs a display,
            or ``SDL_VIDEODRIVER=dummy`` to run headless).
        device: where the models run (default: cpu for a path, the world's device for a World).
        window_scale: human mode window size as a multiple of the frame size.
        dtype: "fp32" or "bf16" (~2x faster on CPUs with AMX); default: fp32 for a path,
            the world's own for a World.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": DOOM_FPS // FRAMES_PER_STEP}

    def __init__(self, world: World | str | os.PathLike | None = None,
                 render_mode: str | None = None, device: str | torch.device | None = None,
                 window_scale: int = 4, dtype: str | torch.dtype | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, "
                             f"got {render_mode!r}")
        if render_mode == "human":
            _check_display()
        self.world = resolve_world(world, device, dtype=dtype)
        self.render_mode = render_mode
        self.action_type = self.world.config.action_type
        self.actions = WorldActions.of(self.world)
        self.action_space = self.actions.space
        self.observation_space = spaces.Box(0, 255, shape=self.world.frame_shape, dtype=np.uint8)
        self.metadata = {**self.metadata, "render_fps": self.world.config.fps // FRAMES_PER_STEP}
        self.session = self.world.session(1)
        self._device = self.world.device
        self._last_frame = np.zeros(self.world.frame_shape, dtype=np.uint8)
        self._terminated = False
        self._started = False
        self.episode_steps = 0
        self._window: _Window | None = None
        self._window_scale = window_scale

    # -- Gymnasium API -------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        # Validate everything before touching any state: a bad reset leaves the env as it was.
        frame, start_index = None, None
        if options:
            unknown = set(options) - set(RESET_OPTIONS)
            if unknown:
                raise ValueError(f"unknown reset options {sorted(unknown)}: expected any of "
                                 f"{RESET_OPTIONS}")
            if "frame" in options and "start_index" in options:
                raise ValueError("pass options['frame'] or options['start_index'], not both")
            if "frame" in options:
                frame = check_start_frame(options["frame"], self.world.frame_shape)
            if "start_index" in options:
                start_index = check_start_index(options["start_index"],
                                                 len(self.world.start_frames))
        super().reset(seed=seed)
        noise_seed = int(self.np_random.integers(0, SEED_HIGH))
        if frame is None:
            if start_index is None:
                start_index = int(self.np_random.integers(len(self.world.start_frames)))
            frame = self.world.start_frames[start_index]
        else:
            start_index = -1
        decoded = self.session.reset(torch.from_numpy(frame[None].copy()), seeds=[noise_seed])
        self._last_frame = decoded[0].cpu().numpy()
        self._terminated, self._started, self.episode_steps = False, True, 0
        # 4 slots like step() (and the real DoomEnv's reset), all holding the start frame
        info = {"frames": np.repeat(self._last_frame[None], FRAMES_PER_STEP, axis=0),
                "start_index": start_index}
        if self.render_mode == "human":
            self._show(self._last_frame[None])
        return self._last_frame.copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        command = self.actions.command(action)
        if not self._started:
            raise RuntimeError("step() called before reset(): call reset() first")
        if self._terminated:
            raise RuntimeError("step() called on a finished episode: call reset() first")
        conds = torch.from_numpy(command_to_frame_conditions(command))[None].to(self._device)
        prev = self.session.prev.clone()
        frames = self.session.step(conds)[0].cpu().numpy()  # (4, H, W, 3)
        reward, logit = evaluate_heads(self.world, prev, self.session.prev, conds)
        self._last_frame = frames[-1]
        self._terminated = bool(episode_ends(self.world, logit, [self.np_random])[0])
        self.episode_steps += 1
        info = {"frames": frames, "command": command, "termination_logit": float(logit[0])}
        if self.render_mode == "human":
            self._show(frames)
        return frames[-1].copy(), float(reward[0]), self._terminated, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self._last_frame.copy()
        if self.render_mode == "human":
            self._show(self._last_frame[None])
        return None

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None

    # -- world state ----------------------------------------------------------------------

    def snapshot(self) -> NeuralEnvSnapshot:
        """The whole world state (KV cache, latents, decoder state, noise RNG, episode fields,
        ``np_random``): ``restore`` continues bit for bit from here."""
        if not self._started:
            raise RuntimeError("nothing to snapshot: reset() the env first")
        return NeuralEnvSnapshot(self.session.snapshot(), self._last_frame.copy(),
                                 self._terminated, self.episode_steps,
                                 copy.deepcopy(self.np_random.bit_generator.state))

    def restore(self, snap: NeuralEnvSnapshot) -> np.ndarray:
        """Return to ``snap`` (taken from this env or one over the same world); returns the
        observation at that point. A ``TimeLimit`` wrapper's step count is not part of it."""
        if not isinstance(snap, NeuralEnvSnapshot):
            raise TypeError(f"expected a NeuralEnvSnapshot, got {type(snap).__name__}")
        if not self._started:  # the session allocates its buffers on its first reset
            self.session.reset(torch.from_numpy(self.world.start_frames[:1].copy()))
        self.session.restore(snap.session)
        self._last_frame = snap.last_frame.copy()
        self._terminated, self.episode_steps = snap.terminated, snap.episode_steps
        self.np_random.bit_generator.state = copy.deepcopy(snap.rng_state)
        self._started = True
        return self._last_frame.copy()

    # -- human rendering ------------------------------------------------------------------

    def _show(self, frames: np.ndarray) -> None:
        if self._window is None:
            self._window = _Window(self.world.frame_shape, self._window_scale,
                                   self.world.config.fps)
        self._window.show(frames)


def check_start_index(index: Any, n: int) -> int:
    arr = np.asarray(index)
    if arr.shape != () or not np.issubdtype(arr.dtype, np.integer) or not 0 <= int(arr) < n:
        raise ValueError(f"options['start_index'] must be an integer in [0, {n - 1}] (the "
                         f"world's {n} start frames), got {index!r}")
    return int(arr)


def has_display() -> bool:
    """Can pygame open a window here? (on Linux: a DISPLAY / WAYLAND_DISPLAY, or an explicit
    SDL_VIDEODRIVER such as "dummy")"""
    return not sys.platform.startswith("linux") or bool(
        os.environ.get("SDL_VIDEODRIVER") or os.environ.get("DISPLAY")
        or os.environ.get("WAYLAND_DISPLAY"))


def _check_display() -> None:
    if not has_display():
        raise RuntimeError("render_mode='human' needs a display (no DISPLAY or WAYLAND_DISPLAY "
                           "is set): use render_mode='rgb_array', or set SDL_VIDEODRIVER=dummy "
                           "to run the window headless")


class _Window:
    """A pygame-ce window showing frames at the world's fps (pygame imported lazily)."""

    def __init__(self, frame_shape: tuple[int, int, int], scale: int, fps: int) -> None:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            import pygame
        except ImportError as err:  # pragma: no cover - pygame-ce is a dependency
            raise RuntimeError("render_mode='human' needs pygame-ce (pip install pygame-ce)"
                               ) from err
        self.pygame = pygame
        h, w, _ = frame_shape
        self.size = (w * scale, h * scale)
        try:
            pygame.display.init()
            self.screen = pygame.display.set_mode(self.size)
        except pygame.error as err:
            raise RuntimeError(f"render_mode='human' could not open a window ({err}): use "
                               f"render_mode='rgb_array' or SDL_VIDEODRIVER=dummy") from err
        pygame.display.set_caption("aapt-world: neural Doom")
        self.clock = pygame.time.Clock()
        self.fps = fps
        self.closed = False

    def show(self, frames: np.ndarray) -> None:
        """Show frames one by one at the world's fps; a no-op once the user closed it."""
        pygame = self.pygame
        if self.closed:
            return
        for event in pygame.event.get():
            if event.type == pygame.QUIT:
                self.close()
                return
        for frame in frames:
            surface = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
            self.screen.blit(pygame.transform.scale(surface, self.size), (0, 0))
            pygame.display.flip()
            self.clock.tick(self.fps)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pygame.display.quit()


def make_neural_world(world: World | str | os.PathLike | None = None,
                      **kwargs: Any) -> NeuralWorldEnv:
    """``aapt/NeuralWorld-v0``: like ``aapt/NeuralDoom-v0`` but ``world`` is required (there is
    no default world of an arbitrary game)."""
    if world is None:
        raise ValueError("aapt/NeuralWorld-v0 needs world=<path to a world directory>, e.g. "
                         "gym.make('aapt/NeuralWorld-v0', world='runs/mygame/world')")
    return NeuralWorldEnv(world, **kwargs)
