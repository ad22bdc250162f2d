"""Procedural human motion for the humanoid world: primitives and a performer that chains them.

No motion-capture data can be downloaded here, so motion is written down: each primitive maps
its own time ``t`` (s) to a ``Motion`` sample — the 17 joint angles (``envs.humanoid`` order),
root height, tilt, forward speed and turn rate. ``PerformerPolicy`` plays a random chain of
primitives (random speed, amplitude and length), cross-fades between them so nothing jumps,
integrates the root's speed and turn into a path over the floor, and emits the pose of
``envs.humanoid`` for each env step: a scripted person for data collection and evaluation.

Joint sign conventions of gymnasium's humanoid (from its axes, checked on renders):
``*_hip_y`` < 0 swings the thigh forward, ``*_knee`` < 0 bends the knee, ``abdomen_y`` < 0
bends the torso forward. The arms' axes are mirrored between sides, so ``arms`` writes a
right-arm posture ``(shoulder1, shoulder2, elbow)`` and mirrors it (left shoulders negated):
``(1, 0, -1.5)`` hangs the arm straight down, ``shoulder2`` then swings it forward (> 0, 1 =
horizontal) or back (< 0); ``(-1, 0, -1.5)`` holds it out to the side, ``(-1, 1, -1.5)`` raises
it overhead; the elbow straightens toward -1.5 and bends toward 0.8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from aapt_world.constants import FRAMES_PER_STEP, HUMANOID_FPS
from envs.humanoid import STAND_HEIGHT

JOINTS = ("abdomen_z", "abdomen_y", "abdomen_x", "right_hip_x", "right_hip_z", "right_hip_y",
          "right_knee", "left_hip_x", "left_hip_z", "left_hip_y", "left_knee",
          "right_shoulder1", "right_shoulder2", "right_elbow", "left_shoulder1",
          "left_shoulder2", "left_elbow")
J = {name: i for i, name in enumerate(JOINTS)}
TAU = 2 * np.pi


@dataclass
class Motion:
    """One instant of a motion: what the performer blends and integrates."""

    joints: np.ndarray  # (17,) rad
    height: float = STAND_HEIGHT  # root height (m)
    pitch: float = 0.0  # root tilt (rad)
    roll: float = 0.0
    speed: float = 0.0  # forward speed along the heading (m/s)
    turn_rate: float = 0.0  # yaw rate (rad/s), counter-clockwise

    def blend(self, other: Motion, w: float) -> Motion:
        """(1 - w) self + w other, field by field."""
        return Motion(*((1 - w) * getattr(self, f.name) + w * getattr(other, f.name)
                        for f in fields(Motion)))


def _joints(**angles: float) -> np.ndarray:
    out = np.zeros(len(JOINTS))
    for name, value in angles.items():
        out[J[name]] = value
    return out


def arm(side: str, shoulder1: float, shoulder2: float, elbow: float) -> np.ndarray:
    """One arm's joints from a RIGHT-arm posture, mirrored for the left arm."""
    m = 1.0 if side == "right" else -1.0
    return _joints(**{f"{side}_shoulder1": m * shoulder1, f"{side}_shoulder2": m * shoulder2,
                      f"{side}_elbow": elbow})


def arms(shoulder1: float, shoulder2: float, elbow: float) -> np.ndarray:
    """Both arms in the same (mirrored) posture."""
    return arm("right", shoulder1, shoulder2, elbow) + arm("left", shoulder1, shoulder2, elbow)


ARMS_DOWN = arms(1.0, 0.0, -1.3)  # hanging, elbows a little bent


def gait(t: float, cadence: float, stride: float, knee: float, swing: float, lean: float,
         elbow: float = -1.3) -> np.ndarray:
    """A walking / running leg and arm cycle: legs in antiphase, each arm swinging forward
    with the opposite leg."""
    phase = TAU * cadence * t
    s_r, s_l = np.sin(phase), np.sin(phase + np.pi)
    return (arm("right", 1.0, -swing * s_r, elbow) + arm("left", 1.0, -swing * s_l, elbow)
            + _joints(right_hip_y=-stride * s_r - 0.1, left_hip_y=-stride * s_l - 0.1,
                      # the knee bends while the leg swings forward, straight in stance
                      right_knee=-knee * max(0.0, np.cos(phase - 0.6)) - 0.1,
                      left_knee=-knee * max(0.0, np.cos(phase + np.pi - 0.6)) - 0.1,
                      abdomen_y=-lean, abdomen_z=0.1 * stride * s_r))


# -- primitives: (t, speed factor, amplitude factor, side +-1) -> Motion -----------------------

def idle(t: float, speed: float, amp: float, side: float) -> Motion:
    sway = np.sin(TAU * 0.25 * speed * t)
    return Motion(ARMS_DOWN + _joints(abdomen_x=0.06 * amp * sway,
                                      abdomen_z=0.05 * amp * np.sin(TAU * 0.13 * t)),
                  roll=0.02 * amp * sway)


def walk(t: float, speed: float, amp: float, side: float) -> Motion:
    cadence = 0.9 * speed
    return Motion(gait(t, cadence, 0.45 * amp, 0.9 * amp, 0.4 * amp, 0.05),
                  height=STAND_HEIGHT - 0.04 * abs(np.sin(TAU * cadence * t)),
                  speed=1.3 * speed * amp)


def run(t: float, speed: float, amp: float, side: float) -> Motion:
    cadence = 1.4 * speed
    return Motion(gait(t, cadence, 0.7 * amp, 1.6 * amp, 0.8 * amp, 0.25, elbow=0.0),
                  height=STAND_HEIGHT - 0.08 + 0.06 * abs(np.sin(TAU * cadence * t)),
                  pitch=0.12, speed=3.2 * speed * amp)


def turn(t: float, speed: float, amp: float, side: float) -> Motion:
    """Turning on the spot with small steps."""
    m = walk(t, speed, 0.4 * amp, side)
    return Motion(m.joints, m.height, speed=0.1, turn_rate=side * 1.2 * speed)


def walk_turn(t: float, speed: float, amp: float, side: float) -> Motion:
    m = walk(t, speed, amp, side)
    return Motion(m.joints, m.height, speed=m.speed, turn_rate=side * 0.5 * speed)


def squat(t: float, speed: float, amp: float, side: float) -> Motion:
    """Down and up (period 2.5 s at speed 1), arms forward for balance."""
    depth = amp * 0.5 * (1 - np.cos(TAU * 0.4 * speed * t))
    return Motion(arms(1.0, 1.1 * depth, -1.3 - 0.2 * depth) + _joints(
        right_hip_y=-1.3 * depth, left_hip_y=-1.3 * depth, right_knee=-2.0 * depth,
        left_knee=-2.0 * depth, abdomen_y=-0.3 * depth),
        height=STAND_HEIGHT - 0.45 * depth, pitch=0.25 * depth)


def wave(t: float, speed: float, amp: float, side: float) -> Motion:
    """One arm raised overhead, the forearm waving; the other hanging."""
    up, down = ("right", "left") if side > 0 else ("left", "right")
    swing = np.sin(TAU * 1.5 * speed * t)
    return Motion(arm(up, -1.0, 1.0, -0.5 + 0.7 * amp * swing) + arm(down, 1.0, 0.0, -1.3)
                  + _joints(abdomen_x=-0.08 * side), roll=0.02 * side)


def reach(t: float, speed: float, amp: float, side: float) -> Motion:
    """Both arms forward and up, bending and twisting at the waist, and back."""
    e = amp * 0.5 * (1 - np.cos(TAU * 0.35 * speed * t))
    return Motion(arms(1.0 - 0.8 * e, 1.2 * e, -1.4)
                  + _joints(abdomen_y=-0.7 * e, abdomen_z=0.4 * side * e), pitch=0.2 * e)


def jump(t: float, speed: float, amp: float, side: float) -> Motion:
    """Crouch with the arms back, take off swinging them up, fly a parabola, land on bent legs,
    stand up; every 1.6 s at speed 1. Height and tuck are continuous across the phases."""
    u = (t * speed) % 1.6
    low, lift = STAND_HEIGHT - 0.3, 0.0  # the crouch, and the touch-down on bent legs
    if u < 0.4:  # crouch
        c = np.sin(np.pi / 2 * u / 0.4)
        height, tuck = STAND_HEIGHT - 0.3 * c, c
    elif u < 0.9:  # flight, 0.5 s, apex 0.35 m x amp above the crouch
        f = (u - 0.4) / 0.5
        height, tuck, lift = low + 1.4 * amp * f * (1 - f), 1 - 0.4 * np.sin(np.pi * f), \
            np.sin(np.pi * f)
    else:  # land and rise
        r = (u - 0.9) / 0.7
        height, tuck = STAND_HEIGHT - 0.3 * np.cos(np.pi / 2 * r), np.cos(np.pi / 2 * r)
    return Motion(arms(1.0 - 0.6 * lift, 1.0 * lift - 0.6 * tuck * (1 - lift), -1.3)
                  + _joints(right_hip_y=-1.0 * tuck, left_hip_y=-1.0 * tuck,
                            right_knee=-1.6 * tuck, left_knee=-1.6 * tuck),
                  height=float(height), pitch=0.1 * tuck)


PRIMITIVES: dict[str, Callable[[float, float, float, float], Motion]] = {
    "idle": idle, "walk": walk, "run": run, "turn": turn, "walk_turn": walk_turn,
    "squat": squat, "wave": wave, "reach": reach, "jump": jump}


@dataclass(frozen=True)
class Take:
    """One primitive as the performer plays it: from ``start`` (performer time, s) for
    ``length`` s, at its drawn speed, amplitude and side."""

    name: str
    start: float
    length: float
    speed: float
    amplitude: float
    side: float

    def at(self, t: float) -> Motion:
        return PRIMITIVES[self.name](t - self.start, self.speed, self.amplitude, self.side)


@dataclass
class PerformerConfig:
    # how often each primitive is chosen next (PRIMITIVES order)
    weights: tuple[float, ...] = (0.10, 0.22, 0.10, 0.10, 0.14, 0.08, 0.10, 0.08, 0.08)
    duration_s: tuple[float, float] = (2.0, 5.0)  # length of one primitive
    speed: tuple[float, float] = (0.7, 1.3)  # factors drawn per primitive
    amplitude: tuple[float, float] = (0.7, 1.2)
    blend_s: float = 0.5  # cross-fade between primitives
    arena_m: float = 8.0  # turn back toward the centre when the root goes farther
    fps: int = HUMANOID_FPS

    def __post_init__(self) -> None:
        if len(self.weights) != len(PRIMITIVES):
            raise ValueError(f"weights needs one entry per primitive {list(PRIMITIVES)}, got "
                             f"{len(self.weights)}")


class PerformerPolicy:
    """A scripted person: a random chain of motion primitives, cross-faded, with a root path.

    ``act`` returns the pose at the end of the next env step (``FRAMES_PER_STEP`` frames at
    ``fps``). It reads nothing from the observation, so it drives the real and the neural
    humanoid alike; ``script(steps)`` gives a whole performance at once."""

    def __init__(self, config: PerformerConfig | None = None) -> None:
        self.config = config or PerformerConfig()
        self.reset(np.random.default_rng(0))

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._xy, self._yaw, self._t = np.zeros(2), 0.0, 0.0
        self._current = self._draw()
        self._previous: Take | None = None  # the take being faded out, if any

    def _draw(self) -> Take:
        c, rng = self.config, self._rng
        w = np.asarray(c.weights, float)
        name = list(PRIMITIVES)[rng.choice(len(w), p=w / w.sum())]
        return Take(name, self._t, float(rng.uniform(*c.duration_s)),
                    float(rng.uniform(*c.speed)), float(rng.uniform(*c.amplitude)),
                    float(rng.choice([-1.0, 1.0])))

    def motion(self) -> Motion:
        """The blended motion at the performer's current time."""
        m = self._current.at(self._t)
        if self._previous is not None:
            w = (self._t - self._current.start) / self.config.blend_s
            if w < 1:
                return self._previous.at(self._t).blend(m, 0.5 - 0.5 * np.cos(np.pi * w))
            self._previous = None
        return m

    def request(self, name: str, speed: float = 1.0, amplitude: float = 1.0,
                side: float = 1.0, length: float = np.inf) -> None:
        """Switch to primitive ``name`` now (cross-faded), played for ``length`` s (default:
        until the next request): a person at the keyboard choosing the motion."""
        if name not in PRIMITIVES:
            raise ValueError(f"unknown primitive {name!r}: expected one of {list(PRIMITIVES)}")
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self._previous = self._current
        self._current = Take(name, self._t, float(length), float(speed), float(amplitude),
                             float(side))

    def _advance(self, dt: float) -> Motion:
        if self._t - self._current.start >= self._current.length:
            self._previous, self._current = self._current, self._draw()
        m = self.motion()
        turn = m.turn_rate
        if np.linalg.norm(self._xy) > self.config.arena_m and m.speed > 0:  # head home
            home = np.arctan2(-self._xy[1], -self._xy[0])
            turn += 1.5 * ((home - self._yaw + np.pi) % TAU - np.pi)
        self._yaw = (self._yaw + turn * dt + np.pi) % TAU - np.pi
        self._xy += m.speed * dt * np.array([np.cos(self._yaw), np.sin(self._yaw)])
        self._t += dt
        return m

    def pose(self, m: Motion) -> np.ndarray:
        root = [self._xy[0], self._xy[1], m.height, self._yaw, m.pitch, m.roll]
        return np.concatenate([root, m.joints]).astype(np.float32)

    def act(self, obs: np.ndarray | None = None, info: dict[str, Any] | None = None
            ) -> np.ndarray:
        dt = 1.0 / self.config.fps
        for _ in range(FRAMES_PER_STEP):
            m = self._advance(dt)
        return self.pose(m)

    def script(self, steps: int) -> np.ndarray:
        """(steps, POSE_DIM) poses of a whole performance (from the current state)."""
        return np.stack([self.act() for _ in range(steps)])

    @property
    def primitive(self) -> str:
        return self._current.name


HUMANOID_POLICIES = {"performer": PerformerPolicy}
