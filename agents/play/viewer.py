"""Play a neural world with the keyboard: the pygame-ce viewer behind ``aapt-world play``.

A ``Viewer`` opens a world through ``envs.neural.NeuralWorldEnv`` and shows every video frame
of every latent step at the world's frame rate (35 fps: one step every 4 frames), scaled up
with nearest neighbour, under a HUD (display fps, step latency, step, reward, return). With
``side_by_side`` the real ViZDoom world (``envs.doom.DoomEnv``, same action type and resolution)
runs the same actions to the right, and both reset together (the neural world starts from the
real world's reset frame).

Held keys add up to one command ``[forward, strafe, turn, look]`` per step (W + right arrow =
forward and turn right). A continuous world gets the command as is; a discrete world (its action
type is set by the world, not by the viewer) gets the nearest of its 11 actions.

Headless and scriptable: ``Viewer.run(max_steps, scripted_events=[(tick, event), ...])`` posts
the events before the given display frame (tick) and quits after ``max_steps`` steps; with
``headless=True`` SDL's dummy video driver is used. This module imports pygame-ce at import
time; the CLI imports it lazily, so nothing else in the package pulls pygame in.
"""

from __future__ import annotations

import argparse
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402  (pygame-ce; after silencing its banner)

from aapt_world.cli_options import add_threads, apply_threads, command_parser
from aapt_world.constants import DEFAULT_MAP
from aapt_world.video import write_mp4  # noqa: E402
from aapt_world.world import World  # noqa: E402
from envs import DEFAULT_WORLD  # noqa: E402
from envs.actions import DISCRETE_ACTION_NAMES, nearest_discrete_action  # noqa: E402
from envs.doom import DoomConfig, DoomEnv  # noqa: E402
from envs.neural import NeuralWorldEnv, has_display  # noqa: E402

# (key, command axis, sign): forward, strafe (right +), turn (right +), look (down +).
MOVE_KEYS: tuple[tuple[int, int, float], ...] = (
    (pygame.K_w, 0, 1.0), (pygame.K_s, 0, -1.0),
    (pygame.K_d, 1, 1.0), (pygame.K_a, 1, -1.0),
    (pygame.K_RIGHT, 2, 1.0), (pygame.K_LEFT, 2, -1.0),
    (pygame.K_DOWN, 3, 1.0), (pygame.K_UP, 3, -1.0),
)
HELP: tuple[tuple[str, str], ...] = (
    ("W / S", "forward / back"),
    ("A / D", "strafe left / right"),
    ("<- / ->, mouse x", "turn"),
    ("up / down", "look up / down"),
    ("P", "pause"),
    ("R", "reset"),
    ("F5 / F9", "snapshot / restore"),
    ("V", "record mp4 on / off"),
    ("F12", "screenshot"),
    ("H", "this help"),
    ("Esc / Q", "quit"),
)
_WHITE, _YELLOW, _RED = (255, 255, 255), (255, 220, 90), (255, 80, 80)
_MESSAGE_SECONDS = 2.0


@dataclass
class ViewerConfig:
    """What to open and how to show it (``aapt-world play --help`` lists the same options).

    world: a ``World``, a world directory, or None for the shipped default world.
    fps: display pace in video frames per second; None = the world's fps, 0 = unpaced.
    record: record from the start to this mp4 (V toggles recording at any time).
    screenshot: save the window to this PNG at exit (F12 saves one at any time).
    out_dir: where V and F12 write when no path is given.
    mouse_sensitivity: turn command per pixel of mouse x motion (summed over a step).
    """

    world: World | str | os.PathLike | None = None
    scale: int = 4
    fps: float | None = None
    side_by_side: bool = False
    doom_map: str = DEFAULT_MAP
    seed: int = 0
    device: str | None = None
    record: Path | None = None
    screenshot: Path | None = None
    out_dir: Path = Path("outputs/play")
    headless: bool = False
    hud: bool = True
    mouse_sensitivity: float = 0.02
    grab_mouse: bool = False

    def validate(self) -> None:
        if not isinstance(self.scale, int) or self.scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {self.scale!r}")
        if self.fps is not None and self.fps < 0:
            raise ValueError(f"fps must be >= 0 (0 = unpaced), got {self.fps}")


# ----------------------------------------------------------------------------- controls
def keys_to_command(held: Iterable[int], mouse_dx: float = 0.0,
                    mouse_sensitivity: float = 0.02) -> np.ndarray:
    """Held keys (and mouse x motion) -> one command ``[forward, strafe, turn, look]`` in
    [-1, 1]; opposite keys cancel, different axes combine."""
    held = set(held)
    command = np.zeros(4, dtype=np.float32)
    for key, axis, sign in MOVE_KEYS:
        if key in held:
            command[axis] += sign
    command[2] += mouse_dx * mouse_sensitivity
    return np.clip(command, -1.0, 1.0)


def command_to_action(command: np.ndarray, action_type: str) -> np.ndarray | int:
    """The env action for a command: itself (continuous) or the nearest discrete action (ties
    go to the lower index, so W + D is "forward" and W + right arrow "forward_turn_right")."""
    if action_type == "continuous":
        return np.asarray(command, dtype=np.float32)
    if action_type == "discrete":
        return nearest_discrete_action(command)
    raise ValueError(f"unknown action type {action_type!r}")


# ------------------------------------------------------------------------------- viewer
class Recorder:
    """Streams frames to an mp4 (``write_mp4`` in a background thread) as they are shown, so
    a long recording is not held in memory (as long as the encoder keeps up)."""

    def __init__(self, path: Path, fps: float, scale: int) -> None:
        self.path, self.frames = path, 0
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write, args=(fps, scale), daemon=True)
        self._thread.start()

    def _write(self, fps: float, scale: int) -> None:
        try:
            write_mp4(self.path, self._frames(), fps=fps, scale=scale)
        except BaseException as err:  # re-raised by close()
            self._error = err

    def _frames(self) -> Iterator[np.ndarray]:
        while (frame := self._queue.get()) is not None:
            yield frame

    def add(self, frame: np.ndarray) -> None:
        self._queue.put(frame)
        self.frames += 1

    def close(self) -> Path:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"recording {self.path} failed: {self._error}") from self._error
        return self.path


@dataclass
class EpisodeStats:
    episode: int = 0
    steps: int = 0  # steps of this episode (a restore rewinds it)
    reward: float = 0.0
    ret: float = 0.0
    real_ret: float = 0.0


@dataclass
class ViewerSnapshot:
    env: Any  # envs.neural.NeuralEnvSnapshot
    real: Any  # the real env's snapshot, or None when it cannot take one
    frame: np.ndarray
    pending: list[np.ndarray]
    stats: EpisodeStats
    episode_over: bool


class Viewer:
    """The neural world in a pygame-ce window: keyboard in, frames + HUD out.

    ``tick()`` is one display frame: handle events, show the next video frame (stepping the
    env when the current step's 4 frames are used up), draw, pace. ``run()`` loops ``tick``.
    """

    def __init__(self, config: ViewerConfig) -> None:
        config.validate()
        self.config = config
        if config.headless:
            os.environ["SDL_VIDEODRIVER"] = "dummy"
        else:
            _check_display()
        self._open_worlds()
        self._open_window()
        self._init_state()
        self.reset(seed=config.seed)
        if config.record is not None:
            self.start_recording(Path(config.record))

    def _open_worlds(self) -> None:
        """The neural world and, side by side, the real game at the same frame size."""
        config = self.config
        self.env = NeuralWorldEnv(config.world, device=config.device)
        self.action_type: str = self.env.action_type
        height, width, _ = self.env.observation_space.shape
        self.real: Any = None  # envs.doom.DoomEnv with side_by_side
        if config.side_by_side:
            try:
                self.real = DoomEnv(DoomConfig(doom_map=config.doom_map, width=width,
                                               height=height, action_type=self.action_type))
            except BaseException:
                self.env.close()
                raise
        panels = 2 if self.real is not None else 1
        self.composite_size = (width * panels, height)  # (W, H) of the game frames
        self.window_size = (self.composite_size[0] * config.scale, height * config.scale)
        self.world_fps = float(self.env.unwrapped.world.config.fps)
        self.fps = self.world_fps if config.fps is None else float(config.fps)

    def _open_window(self) -> None:
        pygame.display.init()
        pygame.font.init()
        try:
            self.screen = pygame.display.set_mode(self.window_size)
        except pygame.error as err:
            self.env.close()
            if self.real is not None:
                self.real.close()
            raise RuntimeError(f"could not open a window ({err}): use --headless") from err
        both = self.real is not None
        pygame.display.set_caption("aapt-world play" + (": neural | real" if both else ""))
        if self.config.grab_mouse:
            pygame.mouse.set_visible(False)
            pygame.event.set_grab(True)
        self._native = pygame.Surface(self.composite_size)
        self._font = pygame.font.Font(None, max(14, self.window_size[1] // 14))
        self.clock = pygame.time.Clock()

    def _init_state(self) -> None:
        """Loop, HUD and input state of a fresh session."""
        self.running = True
        self.paused = False
        self.show_help = False
        self.stats = EpisodeStats()
        self.frame = np.zeros((self.composite_size[1], self.composite_size[0], 3), np.uint8)
        self.pending: deque[np.ndarray] = deque()
        self.total_steps = 0
        self.ticks = 0
        self.saved: list[Path] = []  # files written (recordings, screenshots)
        self.last_action: np.ndarray | int | None = None
        self.step_ms = 0.0
        self.real_ms = 0.0
        self._held: set[int] = set()
        self._mouse_dx = 0.0
        self._hold = False  # show self.frame once more before advancing (after reset/restore)
        self._episode_over = False
        self._snap: ViewerSnapshot | None = None
        self._recorder: Recorder | None = None
        self._message = ("", 0.0)
        self._closed = False

    # -- loop -----------------------------------------------------------------------------

    def run(self, max_steps: int | None = None,
            scripted_events: Sequence[tuple[int, pygame.event.Event]] | None = None) -> int:
        """Tick until quit (or ``max_steps`` steps were taken and shown); posts each scripted
        ``(tick, event)`` just before that tick (tick 0 shows the reset frame; step k is taken
        at tick 1 + 4 (k - 1) while nothing pauses). A paused viewer takes no steps, so a
        scripted run must unpause. Closes the viewer; returns the steps taken."""
        script: dict[int, list[pygame.event.Event]] = {}
        for index, event in scripted_events or ():
            script.setdefault(int(index), []).append(event)
        try:
            while self.running:
                if max_steps is not None and self.total_steps >= max_steps and not self.pending:
                    break
                for event in script.pop(self.ticks, ()):
                    pygame.event.post(event)
                self.tick()
        finally:
            self.close()
        return self.total_steps

    def tick(self) -> bool:
        """One display frame; returns whether the viewer is still running."""
        for event in pygame.event.get():
            self.handle_event(event)
            if not self.running:
                return False
        if not self.paused and not self._hold:
            self._advance()
        self._hold = False
        self._draw()
        self.ticks += 1
        self.clock.tick(self.fps)
        return self.running

    def handle_event(self, event: pygame.event.Event) -> None:
        if event.type == pygame.QUIT:
            self.running = False
        elif event.type == pygame.KEYDOWN:
            self._key_down(event.key)
        elif event.type == pygame.KEYUP:
            self._held.discard(event.key)
        elif event.type == pygame.MOUSEMOTION:
            self._mouse_dx += float(event.rel[0])
        elif event.type == pygame.WINDOWFOCUSLOST:
            self._held.clear()  # a key released in another window never sends KEYUP here

    def _key_down(self, key: int) -> None:
        actions = {
            pygame.K_ESCAPE: self.quit, pygame.K_q: self.quit, pygame.K_p: self.toggle_pause,
            pygame.K_r: self.reset, pygame.K_F5: self.snapshot, pygame.K_F9: self.restore,
            pygame.K_v: self.toggle_recording, pygame.K_h: self.toggle_help,
            pygame.K_F12: self.screenshot,
        }
        if key in actions:
            actions[key]()
        else:
            self._held.add(key)

    # -- world ------------------------------------------------------------------------------

    def command(self) -> np.ndarray:
        """The command the held keys (and mouse motion so far) give for the next step."""
        return keys_to_command(self._held, self._mouse_dx, self.config.mouse_sensitivity)

    def reset(self, seed: int | None = None) -> None:
        """Reset the neural world (and the real one, whose reset frame it then starts from)."""
        options = None
        if self.real is not None:
            real_obs, _ = self.real.reset(seed=seed)
            options = {"frame": real_obs}
        obs, _ = self.env.reset(seed=seed, options=options)
        panels = [obs] if self.real is None else [obs, real_obs]
        self.stats = EpisodeStats(episode=self.stats.episode + 1)
        self._episode_over = False
        self.pending.clear()
        self._show_new(np.concatenate(panels, axis=1))
        self._hold = True

    def _advance(self) -> None:
        if not self.pending:
            if self._episode_over:
                self.reset()
                self._say("episode over: new episode")
                return
            self._step()
        self._show_new(self.pending.popleft())

    def _step(self) -> None:
        command = self.command()
        self._mouse_dx = 0.0
        action = command_to_action(command, self.action_type)
        start = time.perf_counter()
        _, reward, terminated, truncated, info = self.env.step(action)
        self.step_ms = (time.perf_counter() - start) * 1e3
        frames = info["frames"]
        if self.real is not None:
            start = time.perf_counter()
            _, real_reward, real_term, real_trunc, real_info = self.real.step(action)
            self.real_ms = (time.perf_counter() - start) * 1e3
            frames = np.concatenate([frames, real_info["frames"]], axis=2)
            self.stats.real_ret += real_reward
            terminated, truncated = terminated or real_term, truncated or real_trunc
        self.last_action = action
        self.total_steps += 1
        self.stats.steps += 1
        self.stats.reward = reward
        self.stats.ret += reward
        self._episode_over = bool(terminated or truncated)  # reset after its frames are shown
        self.pending.extend(frames)

    def _show_new(self, frame: np.ndarray) -> None:
        self.frame = frame
        if self._recorder is not None:
            self._recorder.add(frame)

    def snapshot(self) -> None:
        real = None
        if self.real is not None and hasattr(self.real, "snapshot"):
            real = self.real.snapshot()
        self._snap = ViewerSnapshot(self.env.snapshot(), real, self.frame, list(self.pending),
                                    replace(self.stats), self._episode_over)
        note = "" if self.real is None or real is not None else " (neural only)"
        self._say(f"snapshot at step {self.stats.steps}{note}")

    def restore(self) -> None:
        """Back to the last snapshot: the frame on screen then is on screen again."""
        snap = self._snap
        if snap is None:
            self._say("no snapshot yet: F5 takes one")
            return
        self.env.restore(snap.env)
        if snap.real is not None:
            self.real.restore(snap.real)
        self.pending = deque(snap.pending)
        self.stats = replace(snap.stats)
        self._episode_over = snap.episode_over
        self._show_new(snap.frame)
        self._hold = True
        note = "" if self.real is None or snap.real is not None else " (real world not restored)"
        self._say(f"restored step {self.stats.steps}{note}")

    # -- toggles and files ------------------------------------------------------------------

    def quit(self) -> None:
        self.running = False

    def toggle_pause(self) -> None:
        self.paused = not self.paused

    def toggle_help(self) -> None:
        self.show_help = not self.show_help

    def toggle_recording(self) -> None:
        if self._recorder is None:
            self.start_recording()
        else:
            self.stop_recording()

    @property
    def recording(self) -> bool:
        return self._recorder is not None

    def start_recording(self, path: Path | None = None) -> None:
        """Record every newly shown frame (starting with the one on screen) to an mp4 at the
        world's fps, scaled like the window (the HUD is not recorded)."""
        if self._recorder is not None:
            self.stop_recording()
        path = Path(path) if path is not None else self._new_path("recording", ".mp4")
        self._recorder = Recorder(path, self.world_fps, self.config.scale)
        self._recorder.add(self.frame)
        self._say(f"recording -> {path}")

    def stop_recording(self) -> Path | None:
        if self._recorder is None:
            return None
        recorder, self._recorder = self._recorder, None
        path = recorder.close()
        self.saved.append(path)
        self._say(f"saved {path} ({recorder.frames} frames)")
        return path

    def screenshot(self, path: Path | None = None) -> Path:
        """Save the window as shown (HUD included unless ``hud=False``) to a PNG."""
        path = Path(path) if path is not None else self._new_path("screenshot", ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        pygame.image.save(self.screen, str(path))
        self.saved.append(path)
        self._say(f"saved {path}")
        return path

    def close(self) -> None:
        """Write what is pending (recording, exit screenshot), close the envs and the window."""
        if self._closed:
            return
        self._closed = True
        self.running = False
        try:
            if self.config.screenshot is not None:
                self.screenshot(Path(self.config.screenshot))
            self.stop_recording()
        finally:
            self.env.close()
            if self.real is not None:
                self.real.close()
            pygame.display.quit()

    def _new_path(self, kind: str, suffix: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(self.config.out_dir) / f"{kind}-{stamp}{suffix}"
        n = 1
        taken = set(self.saved) | ({self._recorder.path} if self._recorder else set())
        while path.exists() or path in taken:
            n += 1
            path = Path(self.config.out_dir) / f"{kind}-{stamp}-{n}{suffix}"
        return path

    # -- drawing ----------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        self._message = (text, time.monotonic() + _MESSAGE_SECONDS)

    def _draw(self) -> None:
        pygame.surfarray.blit_array(self._native, self.frame.swapaxes(0, 1))
        pygame.transform.scale(self._native, self.window_size, self.screen)  # nearest neighbour
        if self.config.hud:
            self._draw_hud()
        if self.show_help:
            self._draw_help()
        pygame.display.flip()

    def hud_lines(self) -> list[tuple[str, tuple[int, int, int]]]:
        """The HUD's text lines (and colours), top to bottom."""
        s = self.stats
        timing = getattr(getattr(self.env, "session", None), "timing", None)
        latency = f"step {self.step_ms:5.1f} ms"
        if timing is not None and self.total_steps:
            latency += f" (gen {timing.generator * 1e3:.1f} + dec {timing.decoder * 1e3:.1f})"
        if self.real is not None:
            latency += f" | real {self.real_ms:.1f} ms"
        returns = f"reward {s.reward:+.3f}  return {s.ret:+.3f}"
        if self.real is not None:
            returns += f" | real return {s.real_ret:+.2f}"
        lines = [(f"{self.clock.get_fps():4.1f} fps  step {s.steps}  episode {s.episode}",
                  _WHITE), (latency, _WHITE), (returns, _WHITE), (self._action_text(), _WHITE)]
        status = " ".join(x for x, on in (("PAUSED", self.paused), ("REC", self.recording)) if on)
        if status:
            lines.append((status, _RED))
        text, until = self._message
        if text and time.monotonic() < until:
            lines.append((text, _YELLOW))
        return lines

    def _action_text(self) -> str:
        if self.last_action is None:
            return "action -"
        if self.action_type == "discrete":
            return f"action {DISCRETE_ACTION_NAMES[int(self.last_action)]}"
        f, st, t, lk = (float(v) for v in self.last_action)
        return f"fwd {f:+.1f} strafe {st:+.1f} turn {t:+.2f} look {lk:+.1f}"

    def _blit_rows(self, rows: Sequence[Sequence[tuple[str, tuple[int, int, int]]]],
                   topleft: tuple[int, int] | None = None, alpha: int = 140) -> None:
        """Text in rows and left-aligned columns on a translucent black panel (centred in the
        window when ``topleft`` is None)."""
        cells = [[self._font.render(text, True, color) for text, color in row] for row in rows]
        if not cells:
            return
        pad, gap = 3, 10
        widths = [max(row[c].get_width() for row in cells if c < len(row))
                  for c in range(max(len(row) for row in cells))]
        line = self._font.get_linesize()
        panel = pygame.Surface((sum(widths) + gap * (len(widths) - 1) + 2 * pad,
                                line * len(cells) + 2 * pad), pygame.SRCALPHA)
        panel.fill((0, 0, 0, alpha))
        if topleft is None:
            topleft = (max(0, (self.window_size[0] - panel.get_width()) // 2),
                       max(0, (self.window_size[1] - panel.get_height()) // 2))
        self.screen.blit(panel, topleft)
        y = topleft[1] + pad
        for row in cells:
            x = topleft[0] + pad
            for surface, width in zip(row, widths):
                self.screen.blit(surface, (x, y))
                x += width + gap
            y += line

    def _draw_hud(self) -> None:
        self._blit_rows([[line] for line in self.hud_lines()], (0, 0))
        hint = self._font.render("H: help", True, _WHITE)
        self.screen.blit(hint, (self.window_size[0] - hint.get_width() - 4,
                                self.window_size[1] - hint.get_height() - 2))
        if self.real is not None:
            half = self.window_size[0] // 2
            for label, x in (("neural", 4), ("real", half + 4)):
                text = self._font.render(label, True, _YELLOW)
                self.screen.blit(text, (x, self.window_size[1] - text.get_height() - 2))

    def _draw_help(self) -> None:
        rows = [[(k, _YELLOW), (v, _WHITE)] for k, v in HELP]
        if self.action_type == "discrete":
            rows.append([("discrete world:", _YELLOW), ("keys snap to the nearest action",
                                                        _WHITE)])
        self._blit_rows(rows, alpha=210)


def _check_display() -> None:
    if not has_display():
        raise RuntimeError("no display (DISPLAY / WAYLAND_DISPLAY unset): pass --headless to "
                           "run without a window (SDL dummy driver)")


# --------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> tuple[ViewerConfig, argparse.Namespace]:
    """``aapt-world play`` options -> (viewer config, the rest: ``steps``, ``threads``)."""
    parser = command_parser(
        "aapt-world play",
        "Play a neural world: W/S forward/back, A/D strafe, arrows (or mouse x) turn and look, "
        "P pause, R reset, F5/F9 snapshot/restore, V record, F12 screenshot, H help, Esc/Q quit.")
    parser.add_argument("--world", default=None,
                        help="world directory (None: the shipped default world)")
    parser.add_argument("--scale", type=int, default=4, help="window scale (nearest neighbour)")
    parser.add_argument("--fps", type=float, default=None,
                        help="display pace in video frames/s (None: the world's; 0: unpaced)")
    parser.add_argument("--side-by-side", action="store_true",
                        help="also run the real ViZDoom world with the same actions")
    parser.add_argument("--map", dest="doom_map", default=DEFAULT_MAP,
                        help="Freedoom2 map of the real world (--side-by-side)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world (and real game)")
    parser.add_argument("--device", default=None, help="torch device of the world (None: cpu)")
    parser.add_argument("--record", type=Path, default=None, help="record to this mp4 from the "
                        "start (V toggles recording)")
    parser.add_argument("--screenshot", type=Path, default=None,
                        help="save the window to this PNG at exit (F12: any time)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/play"),
                        help="where V and F12 write")
    parser.add_argument("--headless", action="store_true", help="no window (SDL dummy driver)")
    parser.add_argument("--no-hud", dest="hud", action="store_false",
                        help="hide the heads-up display (command, fps, step)")
    parser.add_argument("--grab-mouse", action="store_true",
                        help="lock the pointer to the window (mouse x turns)")
    parser.add_argument("--mouse-sensitivity", type=float, default=0.02,
                        help="turn command per pixel of mouse x motion")
    rest = parser.add_argument_group("run")
    rest.add_argument("--steps", type=int, default=None, help="quit after this many steps")
    add_threads(rest)
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 0:
        parser.error(f"--steps must be >= 0, got {args.steps}")
    others = ("steps", "threads")
    config = ViewerConfig(**{k: v for k, v in vars(args).items() if k not in others})
    return config, argparse.Namespace(**{k: getattr(args, k) for k in others})


def main(argv: Sequence[str] | None = None) -> None:
    world = argparse.ArgumentParser(add_help=False)
    world.add_argument("--world", default=None)
    peek, _ = world.parse_known_args(argv)
    if peek.world is not None and Path(peek.world).is_dir():
        from aapt_world.world import peek_config

        if peek_config(peek.world).condition.kind == "pose":  # driven by poses, not keys
            from agents.play.humanoid import main as play_humanoid

            play_humanoid(argv)
            return
    config, args = parse_args(argv)
    if config.world is None:
        if not DEFAULT_WORLD.is_dir():
            raise SystemExit(f"aapt-world play: no default world at {DEFAULT_WORLD} (the repo "
                             f"ships it there: is the checkout complete?): pass --world DIR, a "
                             f"world directory (e.g. from `aapt-world train stage=export`)")
    apply_threads(args.threads)
    try:
        viewer = Viewer(config)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        raise SystemExit(f"aapt-world play: {err}") from None
    steps = viewer.run(max_steps=args.steps)
    for path in viewer.saved:
        print(f"wrote {path}")
    print(f"played {steps} steps")
