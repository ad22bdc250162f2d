"""Doom actions and their encoding into per-frame conditions.

Every Doom action (discrete index or continuous vector) is first mapped to one canonical
*camera command* ``[forward, strafe, turn, look]`` in [-1, 1]: forward/backward speed,
right/left strafe speed, turn right/left rate, look up/down rate. The real ViZDoom env turns the
command into delta buttons; the dataset stores commands; the neural world conditions on
commands. One mapping, shared by all three, so an action means the same thing everywhere.

A latent frame spans ``FRAMES_PER_STEP`` video frames (ViZDoom tics). The command is held for
the whole step, so its per-frame condition is the command repeated per frame; recorded
datasets from other games may give per-frame commands that vary within a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from aapt_world.constants import FRAMES_PER_STEP

COMMAND_DIM = 4
COMMAND_NAMES = ("forward", "strafe", "turn", "look")


@dataclass(frozen=True)
class CommandScale:
    """Full-scale (|command| = 1) values of each command axis, in ViZDoom delta-button units.

    forward/strafe: MOVE_*_DELTA speed (50 is Doom's running speed; 25 a brisk walk).
    turn: degrees of yaw per tic (positive turns right, i.e. clockwise seen from above).
    look: degrees of pitch per tic (positive looks down; Doom clamps pitch to about +-32 deg).
    """

    forward: float = 25.0
    strafe: float = 25.0
    turn: float = 6.0
    look: float = 2.0

    def as_array(self) -> np.ndarray:
        return np.array([self.forward, self.strafe, self.turn, self.look], dtype=np.float32)


# Discrete action set: the moves a keyboard player makes, each a fixed command.
DISCRETE_ACTIONS: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("noop", (0.0, 0.0, 0.0, 0.0)),
    ("forward", (1.0, 0.0, 0.0, 0.0)),
    ("backward", (-1.0, 0.0, 0.0, 0.0)),
    ("strafe_left", (0.0, -1.0, 0.0, 0.0)),
    ("strafe_right", (0.0, 1.0, 0.0, 0.0)),
    ("turn_left", (0.0, 0.0, -1.0, 0.0)),
    ("turn_right", (0.0, 0.0, 1.0, 0.0)),
    ("forward_turn_left", (1.0, 0.0, -1.0, 0.0)),
    ("forward_turn_right", (1.0, 0.0, 1.0, 0.0)),
    ("look_up", (0.0, 0.0, 0.0, -1.0)),
    ("look_down", (0.0, 0.0, 0.0, 1.0)),
)
DISCRETE_ACTION_NAMES = tuple(name for name, _ in DISCRETE_ACTIONS)
_DISCRETE_COMMANDS = np.array([cmd for _, cmd in DISCRETE_ACTIONS], dtype=np.float32)

# TakeCover's own action set (ViZDoom's take_cover.cfg: MOVE_LEFT, MOVE_RIGHT), as commands:
# only strafing, so an agent cannot turn away from the monsters the scenario is about.
DODGE_ACTION_NAMES = ("noop", "strafe_left", "strafe_right")
# Discrete action types -> their commands (index i of the space = row i).
_DISCRETE_SETS = {
    "discrete": _DISCRETE_COMMANDS,
    "dodge": _DISCRETE_COMMANDS[[DISCRETE_ACTION_NAMES.index(n) for n in DODGE_ACTION_NAMES]],
}
ACTION_TYPES = ("discrete", "continuous", "dodge")
# Scenarios played with their own action set rather than the camera commands
SCENARIO_ACTION_TYPES = {"take_cover": "dodge"}


def scenario_action_type(scenario: str, default: str) -> str:
    """The action type a ViZDoom scenario is played with: its own set, else ``default``."""
    return SCENARIO_ACTION_TYPES.get(scenario, default)


def make_action_space(action_type: str) -> spaces.Space:
    """The Gymnasium action space of a Doom world (real or neural)."""
    if action_type in _DISCRETE_SETS:
        return spaces.Discrete(len(_DISCRETE_SETS[action_type]))
    if action_type == "continuous":
        return spaces.Box(-1.0, 1.0, shape=(COMMAND_DIM,), dtype=np.float32)
    raise ValueError(f"action_type must be one of {ACTION_TYPES}, got {action_type!r}")


def action_to_command(action: object, action_type: str) -> np.ndarray:
    """Validate an action of the given type and return its command, float32 of shape (4,).

    Raises ValueError naming the expected space when the action is malformed, so that a bad
    action never reaches the game engine or the model.
    """
    if action_type in _DISCRETE_SETS:
        commands = _DISCRETE_SETS[action_type]
        arr = np.asarray(action)
        if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(
                f"expected a {action_type} action: an integer in [0, {len(commands) - 1}] "
                f"(Discrete({len(commands)})), got {action!r}"
            )
        index = int(arr)
        if not 0 <= index < len(commands):
            raise ValueError(
                f"{action_type} action {index} out of range: expected Discrete({len(commands)})"
            )
        return commands[index].copy()
    if action_type == "continuous":
        arr = np.asarray(action)
        if arr.shape != (COMMAND_DIM,) or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(
                f"expected a continuous action of shape ({COMMAND_DIM},) "
                f"{COMMAND_NAMES} in [-1, 1] (Box(-1, 1, (4,), float32)), got {action!r}"
            )
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"continuous action contains NaN or inf: {arr}")
        if np.any(np.abs(arr) > 1.0 + 1e-6):
            raise ValueError(f"continuous action out of range [-1, 1]: {arr}")
        return np.clip(arr, -1.0, 1.0)
    raise ValueError(f"action_type must be one of {ACTION_TYPES}, got {action_type!r}")


def nearest_discrete_action(command: np.ndarray, action_type: str = "discrete") -> int:
    """The action of a discrete action type (``discrete`` or ``dodge``) whose command is
    closest (L2) to ``command`` (ties go to the lower index, so forward + strafe is "forward")."""
    commands = _DISCRETE_SETS[action_type]
    distances = np.linalg.norm(commands - np.asarray(command, np.float32), axis=1)
    return int(np.argmin(distances))


def discrete_action_type(n: int) -> str:
    """The discrete action type with ``n`` actions (an SB3 model's Discrete(n) space)."""
    for name, commands in _DISCRETE_SETS.items():
        if len(commands) == n:
            return name
    raise ValueError(f"no Doom action type has Discrete({n}): expected one of "
                     f"{ {k: len(v) for k, v in _DISCRETE_SETS.items()} }")


def command_to_buttons(command: np.ndarray, scale: CommandScale = CommandScale()) -> list[float]:
    """Command -> values of ViZDoom's [MOVE_FORWARD_BACKWARD_DELTA, MOVE_LEFT_RIGHT_DELTA,
    TURN_LEFT_RIGHT_DELTA, LOOK_UP_DOWN_DELTA] buttons."""
    return [float(v) for v in np.asarray(command, dtype=np.float32) * scale.as_array()]


def command_to_frame_conditions(command: np.ndarray) -> np.ndarray:
    """The per-video-frame condition of one step: the command held for its FRAMES_PER_STEP
    frames, (FRAMES_PER_STEP, A) float32 (A = COMMAND_DIM for Doom, any width for a game)."""
    command = np.asarray(command, dtype=np.float32).reshape(-1)
    return np.tile(command, (FRAMES_PER_STEP, 1))
