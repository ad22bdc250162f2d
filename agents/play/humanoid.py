"""Drive a neural humanoid (a pose world) with the keyboard: ``aapt-world play --world DIR``.

The keys pick what the person does — ``1``-``9``: idle, walk, run, turn, walk_turn, squat,
wave, reach, jump (``envs.motions``), ``+`` / ``-``: faster / slower, ``M``: the other side
(mirrored turn, wave, reach) — and ``envs.motions.PerformerPolicy`` turns that into a pose
per step, cross-faded, which ``envs.neural_humanoid.NeuralHumanoidEnv`` turns into 4
generated frames. Left: the generated video; right: the commanded skeleton (the 2D keypoints
the world is conditioned on) under a HUD (motion, speed, step, display fps). ``R`` resets,
``P`` pauses, ``Esc`` / ``Q`` quits. Headless and scriptable like the Doom viewer:
``HumanoidViewer.run(max_steps, scripted_events=[(tick, event), ...])``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402  (pygame-ce)

from aapt_world.cli_options import add_threads, apply_threads, command_parser  # noqa: E402
from aapt_world.constants import HUMANOID_FPS  # noqa: E402
from envs.humanoid import HUMANOID_SCENES, KEYPOINT_NAMES  # noqa: E402
from envs.motions import PRIMITIVES, PerformerPolicy  # noqa: E402
from envs.neural_humanoid import NeuralHumanoidEnv  # noqa: E402

# the stick figure drawn from the 16 keypoints (envs.humanoid.KEYPOINT_NAMES)
BONES = (("head", "torso"), ("torso", "lwaist"), ("lwaist", "pelvis"),
         ("pelvis", "right_thigh"), ("right_thigh", "right_shin"), ("right_shin", "right_foot"),
         ("pelvis", "left_thigh"), ("left_thigh", "left_shin"), ("left_shin", "left_foot"),
         ("torso", "right_upper_arm"), ("right_upper_arm", "right_lower_arm"),
         ("right_lower_arm", "right_hand"), ("torso", "left_upper_arm"),
         ("left_upper_arm", "left_lower_arm"), ("left_lower_arm", "left_hand"))
PRIMITIVE_KEYS = {getattr(pygame, f"K_{i + 1}"): name for i, name in enumerate(PRIMITIVES)}
SPEED_RANGE, SPEED_STEP = (0.25, 2.5), 0.25
BONE_COLOUR, JOINT_COLOUR, TEXT_COLOUR = (90, 200, 255), (255, 210, 90), (230, 230, 230)


@dataclass
class HumanoidViewerConfig:
    world: str
    scene: str = "fixed"  # the camera the world was trained with: fixed | orbit
    scale: int = 4
    fps: float | None = None  # display pace in video frames/s (None: 30; 0: unpaced)
    seed: int = 0
    headless: bool = False

    def validate(self) -> None:
        if self.scene not in HUMANOID_SCENES:
            raise ValueError(f"scene must be one of {sorted(HUMANOID_SCENES)}, got "
                             f"{self.scene!r}")
        if self.scale < 1:
            raise ValueError(f"scale must be >= 1, got {self.scale}")


class HumanoidViewer:
    def __init__(self, config: HumanoidViewerConfig) -> None:
        config.validate()
        self.config = config
        if config.headless:
            os.environ["SDL_VIDEODRIVER"] = "dummy"
        self.env = NeuralHumanoidEnv(config.world, scene=config.scene)
        self.fps = config.fps if config.fps is not None else float(HUMANOID_FPS)
        pygame.init()
        h, w, _ = self.env.observation_space.shape
        self.size = (w * config.scale, h * config.scale)
        self.screen = pygame.display.set_mode((2 * self.size[0], self.size[1]))
        pygame.display.set_caption("aapt-world: neural humanoid")
        self.font = pygame.font.Font(None, 20)
        self.bone_index = [(KEYPOINT_NAMES.index(a), KEYPOINT_NAMES.index(b)) for a, b in BONES]
        self.performer = PerformerPolicy()
        self.primitive, self.speed, self.side = "idle", 1.0, 1.0
        self.paused, self.running, self.steps = False, True, 0
        self._display_fps = 0.0
        self.reset()

    # -- world ---------------------------------------------------------------------------
    def reset(self) -> None:
        _, info = self.env.reset(seed=self.config.seed)
        self.performer.reset(np.random.default_rng(self.config.seed))
        self._request()
        self.frames, self.keypoints, self.shown = info["frames"], info["keypoints_2d"], 0

    def _request(self) -> None:
        self.performer.request(self.primitive, self.speed, side=self.side)

    def step(self) -> None:
        _, _, _, _, info = self.env.step(self.performer.act())
        self.frames, self.keypoints, self.shown = info["frames"], info["keypoints_2d"], 0
        self.steps += 1

    # -- input ---------------------------------------------------------------------------
    def handle_event(self, event: pygame.event.Event) -> None:
        if event.type == pygame.QUIT:
            self.running = False
        elif event.type == pygame.KEYDOWN:
            self.key_down(event.key)

    def key_down(self, key: int) -> None:
        if key in (pygame.K_ESCAPE, pygame.K_q):
            self.running = False
        elif key in PRIMITIVE_KEYS:
            self.primitive = PRIMITIVE_KEYS[key]
            self._request()
        elif key in (pygame.K_PLUS, pygame.K_EQUALS, pygame.K_KP_PLUS, pygame.K_MINUS,
                     pygame.K_KP_MINUS):
            delta = -SPEED_STEP if key in (pygame.K_MINUS, pygame.K_KP_MINUS) else SPEED_STEP
            self.speed = float(np.clip(self.speed + delta, *SPEED_RANGE))
            self._request()
        elif key == pygame.K_m:
            self.side = -self.side
            self._request()
        elif key == pygame.K_r:
            self.reset()
        elif key == pygame.K_p:
            self.paused = not self.paused

    # -- display -------------------------------------------------------------------------
    def tick(self) -> None:
        """One display frame: input, a world step when this step's 4 frames are shown, draw."""
        for event in pygame.event.get():
            self.handle_event(event)
        if not self.running:
            return
        if not self.paused and self.shown >= len(self.frames):
            self.step()
        index = min(self.shown, len(self.frames) - 1)
        self.draw(self.frames[index], self.keypoints[index])
        if not self.paused:
            self.shown += 1

    def draw(self, frame: np.ndarray, keypoints: np.ndarray) -> None:
        s = self.config.scale
        image = pygame.surfarray.make_surface(np.ascontiguousarray(frame.swapaxes(0, 1)))
        self.screen.blit(pygame.transform.scale(image, self.size), (0, 0))
        panel = pygame.Rect(self.size[0], 0, *self.size)
        self.screen.fill((20, 20, 28), panel)
        points = [(panel.x + float(c) * s, float(r) * s) for c, r in keypoints]
        for a, b in self.bone_index:
            pygame.draw.line(self.screen, BONE_COLOUR, points[a], points[b], max(1, s // 2))
        for p in points:
            pygame.draw.circle(self.screen, JOINT_COLOUR, p, max(2, s // 2))
        side = "" if self.side > 0 else " (mirrored)"
        for i, text in enumerate((f"{self.primitive}{side}  x{self.speed:.2f}",
                                  f"step {self.steps}  {self._display_fps:.0f} fps",
                                  "1-9 motion  +/- speed  M side  R reset  P pause")):
            self.screen.blit(self.font.render(text, True, TEXT_COLOUR),
                             (panel.x + 6, 6 + 18 * i))
        pygame.display.flip()

    def run(self, max_steps: int | None = None,
            scripted_events: Sequence[tuple[int, pygame.event.Event]] = ()) -> int:
        """Show frames until quit (or ``max_steps`` world steps); returns the steps taken."""
        events, tick, last = sorted(scripted_events, key=lambda e: e[0]), 0, time.perf_counter()
        while self.running and (max_steps is None or self.steps < max_steps):
            while events and events[0][0] <= tick:
                pygame.event.post(events.pop(0)[1])
            self.tick()
            tick += 1
            now = time.perf_counter()
            if self.fps:
                time.sleep(max(0.0, 1.0 / self.fps - (now - last)))
                now = time.perf_counter()
            self._display_fps = 0.9 * self._display_fps + 0.1 / max(now - last, 1e-6)
            last = now
        return self.steps

    def close(self) -> None:
        self.env.close()
        pygame.quit()


def main(argv: Sequence[str] | None = None) -> None:
    parser = command_parser("aapt-world play (a pose world)", __doc__)
    parser.add_argument("--world", required=True, help="a pose world's directory")
    parser.add_argument("--scene", default="fixed", choices=sorted(HUMANOID_SCENES))
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--headless", action="store_true")
    parser.add_argument("--steps", type=int, default=None, help="quit after this many steps")
    add_threads(parser)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    config = HumanoidViewerConfig(world=str(Path(args.world)), scene=args.scene,
                                  scale=args.scale, fps=args.fps, seed=args.seed,
                                  headless=args.headless)
    try:
        viewer = HumanoidViewer(config)
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        raise SystemExit(f"aapt-world play: {err}") from None
    steps = viewer.run(max_steps=args.steps)
    viewer.close()
    print(f"played {steps} steps")
