"""Scripted Doom policies that move like a player, for data collection and long rollouts.

A human exploring a level walks with momentum, sweeps the view, turns away from walls, spins,
stops to look around and strafes; uniform random button mashing does none of that and gives a
world model a poor picture of how the camera moves. ``ExplorerPolicy`` switches between such
behaviours with a small state machine. All policies emit continuous commands
``[forward, strafe, turn, look]`` in [-1, 1] (see ``envs.actions``) and read the camera poses the
real env reports in ``info["poses"]`` (only to notice being stuck against a wall).

TakeCover players (``random_dodge``, ``dodger``, ``wall_hugger``) only strafe, as that
scenario's own action set (noop / left / right) allows, and see only the frame, so they play
the neural world too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Policy(Protocol):
    def reset(self, rng: np.random.Generator) -> None: ...

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray: ...


@dataclass
class ExplorerConfig:
    walk_steps: tuple[int, int] = (8, 40)  # how long each behaviour lasts, in steps
    spin_steps: tuple[int, int] = (6, 24)
    pause_steps: tuple[int, int] = (2, 8)
    strafe_steps: tuple[int, int] = (4, 16)
    look_steps: tuple[int, int] = (4, 12)
    # probabilities of the next behaviour after one ends (walk, spin, pause, strafe, look)
    behaviour_probs: tuple[float, float, float, float, float] = (0.5, 0.12, 0.1, 0.18, 0.1)
    turn_smoothness: float = 0.8  # AR(1) coefficient of the turn rate: momentum in the sweep
    turn_noise: float = 0.35
    stuck_speed: float = 1.5  # map units per tic below which a forward walk counts as blocked
    stuck_patience: int = 2  # blocked walk steps in a row before escaping
    escape_steps: tuple[int, int] = (4, 10)  # a hard turn of ~90-200 degrees away from a wall
    strafe_sweep: float = 1.0  # how much of the view sweep a strafe carries (forward 0.3x and
    # turn 0.2x of it); 0 = pure sideways steps, as a keyboard player makes
    full_speed: float = 0.0  # chance that a behaviour runs at full speed (a held key)


_BEHAVIOURS = ("walk", "spin", "pause", "strafe", "look")


class ExplorerPolicy:
    """Momentum random walk with spins, pauses, strafing, look-around and wall escapes."""

    def __init__(self, config: ExplorerConfig | None = None) -> None:
        self.config = config or ExplorerConfig()
        self._rng = np.random.default_rng(0)
        self._mode = "walk"
        self._steps_left = 0
        self._turn = 0.0
        self._direction = 1.0
        self._stuck = 0

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._turn = 0.0
        self._stuck = 0
        self._start("walk")

    def _start(self, mode: str) -> None:
        c, r = self.config, self._rng
        lengths = {
            "walk": c.walk_steps, "spin": c.spin_steps, "pause": c.pause_steps,
            "strafe": c.strafe_steps, "look": c.look_steps, "escape": c.escape_steps,
        }[mode]
        self._mode = mode
        self._steps_left = int(r.integers(lengths[0], lengths[1] + 1))
        self._direction = float(r.choice([-1.0, 1.0]))
        self._speed = float(r.uniform(0.5, 1.0))
        if c.full_speed > 0 and r.random() < c.full_speed:  # no draw at 0: old plans replay
            self._speed = 1.0

    def _is_stuck(self, info: dict[str, Any]) -> bool:
        poses = info.get("poses")
        if poses is None or len(poses) < 2:
            return False
        per_tic = np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1).mean()
        return bool(per_tic < self.config.stuck_speed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        c, r = self.config, self._rng
        if self._mode == "walk" and self._is_stuck(info):
            self._stuck += 1
            if self._stuck >= self.config.stuck_patience:  # blocked: turn away from the wall
                self._stuck = 0
                self._start("escape")
        else:
            self._stuck = 0
        if self._steps_left <= 0:
            self._start(_BEHAVIOURS[r.choice(len(_BEHAVIOURS), p=np.array(c.behaviour_probs))])
        self._steps_left -= 1

        self._turn = c.turn_smoothness * self._turn + c.turn_noise * float(r.normal())
        self._turn = float(np.clip(self._turn, -1.0, 1.0))
        # Pitch drifts back to level on its own unless the policy is looking around.
        pitch = float(info["poses"][-1, 4]) if "poses" in info else 0.0
        level = float(np.clip(pitch / 8.0, -1.0, 1.0))
        command = np.zeros(4, dtype=np.float32)
        if self._mode == "walk":
            command[:] = (self._speed, 0.0, 0.6 * self._turn, -0.3 * level)
        elif self._mode == "spin":
            command[:] = (0.0, 0.0, self._direction * self._speed, -0.3 * level)
        elif self._mode == "pause":
            command[:] = (0.0, 0.0, 0.0, 0.0)
        elif self._mode == "strafe":
            sweep = c.strafe_sweep * self._turn
            command[:] = (0.3 * sweep, self._direction * self._speed, 0.2 * sweep, 0.0)
        elif self._mode == "look":
            command[:] = (0.0, 0.0, 0.3 * self._turn, self._direction * 0.6)
        elif self._mode == "escape":
            command[:] = (0.0, 0.0, self._direction, -0.3 * level)
        return np.clip(command, -1.0, 1.0)


class RandomCommandPolicy:
    """Uniform random commands, held for a random number of steps (a "random player")."""

    def __init__(self, hold_steps: tuple[int, int] = (1, 6)) -> None:
        self.hold_steps = hold_steps
        self._rng = np.random.default_rng(0)
        self._command = np.zeros(4, dtype=np.float32)
        self._left = 0

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._left = 0

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        if self._left <= 0:
            self._command = self._rng.uniform(-1, 1, size=4).astype(np.float32)
            self._command[3] *= 0.3  # large pitch swings are rare in play
            self._left = int(self._rng.integers(self.hold_steps[0], self.hold_steps[1] + 1))
        self._left -= 1
        return self._command.copy()


STRAFE_LEFT = np.array([0.0, -1.0, 0.0, 0.0], dtype=np.float32)
STRAFE_RIGHT = np.array([0.0, 1.0, 0.0, 0.0], dtype=np.float32)
NOOP = np.zeros(4, dtype=np.float32)


class RandomDodgePolicy:
    """TakeCover's random player: noop / left / right uniformly, each held 1-``max_hold`` steps
    (held, so it wanders across the room instead of jittering in place)."""

    def __init__(self, max_hold: int = 4) -> None:
        self.max_hold = max_hold
        self._rng = np.random.default_rng(0)
        self._command, self._left = NOOP, 0

    def reset(self, rng: np.random.Generator) -> None:
        self._rng, self._left = rng, 0

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        if self._left <= 0:
            self._command = (NOOP, STRAFE_LEFT, STRAFE_RIGHT)[int(self._rng.integers(3))]
            self._left = int(self._rng.integers(1, self.max_hold + 1))
        self._left -= 1
        return self._command.copy()


@dataclass
class DodgerConfig:
    span: int = 12  # strafe steps either side of the start (the room's centre) before turning
    reverse: float = 0.0  # chance per step of turning early (0: measured best, see README)


class DodgerPolicy:
    """A heuristic TakeCover player: never stands still (fireballs are aimed at where the player
    IS), patrols across the room and turns back before the wall traps it. It counts its own
    strafes, so it needs no pose and plays the neural world too. Measured against reacting to
    the fireballs seen in the frame (colour blobs): keeping moving survived longer (see the
    README's TakeCover table)."""

    def __init__(self, config: DodgerConfig | None = None) -> None:
        self.config = config or DodgerConfig()
        self._rng = np.random.default_rng(0)
        self._offset, self._direction = 0, 1  # own strafe steps right of the start; heading

    def reset(self, rng: np.random.Generator) -> None:
        self._rng, self._offset = rng, 0
        self._direction = 1 if rng.random() < 0.5 else -1

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        c = self.config
        if self._rng.random() < c.reverse:
            self._direction = -self._direction
        if abs(self._offset) >= c.span:  # the wall is near: head back
            self._direction = -1 if self._offset > 0 else 1
        self._offset += self._direction
        return (STRAFE_RIGHT if self._direction > 0 else STRAFE_LEFT).copy()


class WallHuggerPolicy:
    """A TakeCover player that strafes one way (picked per episode) every step: in the game it
    reaches the side wall within a few seconds and stays pinned there. It asks a dream whether a
    wall stops a strafe, which a dream-trained agent that keeps strafing one way relies on."""

    def __init__(self) -> None:
        self._command = STRAFE_LEFT

    def reset(self, rng: np.random.Generator) -> None:
        self._command = STRAFE_LEFT if rng.random() < 0.5 else STRAFE_RIGHT

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        return self._command.copy()


def lingerer_config() -> ExplorerConfig:
    """The explorer as a person at the keyboard also plays: long still stretches (8-64 steps;
    the explorer's pauses of 2-8 never fill the 8-step attention window with no-ops), and walks
    that keep pushing into a wall for a while. What the no-op hold, loop closure and wall-bump
    rungs of the ladder ask a world to have seen."""
    return ExplorerConfig(pause_steps=(8, 64), behaviour_probs=(0.35, 0.12, 0.3, 0.13, 0.1),
                          stuck_patience=12)


class LingererPolicy(ExplorerPolicy):
    def __init__(self) -> None:
        super().__init__(lingerer_config())


def strafer_config() -> ExplorerConfig:
    """The explorer as a keyboard player who strafes: pure sideways steps of 8-32 steps, half of
    them at full speed, often until a wall stops them. The ladder's strafe family (full-speed
    strafes of 20 steps, pinned at MAP01's wall from step 6) is its worst bucket in most
    ladders, while pure full-speed strafes are 0.65 % of the explorer / lingerer mix's steps."""
    return ExplorerConfig(strafe_steps=(8, 32), behaviour_probs=(0.3, 0.1, 0.1, 0.4, 0.1),
                          strafe_sweep=0.0, full_speed=0.5)


class StraferPolicy(ExplorerPolicy):
    def __init__(self) -> None:
        super().__init__(strafer_config())


POLICIES = {"explorer": ExplorerPolicy, "lingerer": LingererPolicy, "random": RandomCommandPolicy,
            "strafer": StraferPolicy, "random_dodge": RandomDodgePolicy, "dodger": DodgerPolicy,
            "wall_hugger": WallHuggerPolicy}


def make_policy(name: str) -> Policy:
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}: expected one of {sorted(POLICIES)}")
    return POLICIES[name]()
