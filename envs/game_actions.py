"""Actions of any Gymnasium game as the per-step command vector a neural world is conditioned on.

A world trained on your own game (``aapt-world record`` / ``aapt-world import-video``) keeps its
source env's action space. ``ActionEncoding`` is that space's description (stored in the
dataset manifest and the world config as JSON) plus one mapping, shared by the recorder, the
training data and the neural env, so an action means the same thing everywhere:

- ``Discrete(n)``: the one-hot vector of the action (n values);
- ``Box(low, high, shape)``: the flattened action rescaled to [-1, 1] per value (bounds that
  are infinite leave the value as it is).

A step holds its action for the ``FRAMES_PER_STEP`` video frames it spans (action repeat).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

KINDS = ("discrete", "box")


@dataclass(frozen=True)
class ActionEncoding:
    kind: str  # discrete | box
    n: int = 0  # discrete: number of actions
    low: tuple[float, ...] = ()  # box: flattened bounds
    high: tuple[float, ...] = ()
    shape: tuple[int, ...] = ()  # box: the action's shape

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"action encoding kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "discrete" and self.n < 1:
            raise ValueError(f"a discrete action encoding needs n >= 1, got {self.n}")
        if self.kind == "box" and not (len(self.low) == len(self.high)
                                       == int(np.prod(self.shape)) >= 1):
            raise ValueError(f"a box action encoding needs low/high of prod(shape) values, got "
                             f"shape {self.shape}, {len(self.low)} low, {len(self.high)} high")

    @staticmethod
    def from_space(space: spaces.Space) -> ActionEncoding:
        if isinstance(space, spaces.Discrete):
            if int(space.start) != 0:
                raise ValueError(f"Discrete action spaces must start at 0, got {space}")
            return ActionEncoding("discrete", n=int(space.n))
        if isinstance(space, spaces.Box):
            return ActionEncoding("box", low=tuple(float(v) for v in space.low.reshape(-1)),
                                  high=tuple(float(v) for v in space.high.reshape(-1)),
                                  shape=tuple(int(s) for s in space.shape))
        raise ValueError(f"only Discrete and Box action spaces can be recorded, got {space}")

    @staticmethod
    def from_json(data: Any) -> ActionEncoding:
        if not isinstance(data, dict):
            raise ValueError(f"an action encoding is a JSON object, got {data!r}")
        try:
            return ActionEncoding(kind=data["kind"], n=int(data.get("n", 0)),
                                  low=tuple(data.get("low", ())), high=tuple(data.get("high", ())),
                                  shape=tuple(data.get("shape", ())))
        except (KeyError, TypeError) as err:
            raise ValueError(f"bad action encoding {data!r}: {err}") from err

    def to_json(self) -> dict[str, Any]:
        if self.kind == "discrete":
            return {"kind": "discrete", "n": self.n}
        return {"kind": "box", "low": list(self.low), "high": list(self.high),
                "shape": list(self.shape)}

    def space(self) -> spaces.Space:
        if self.kind == "discrete":
            return spaces.Discrete(self.n)
        return spaces.Box(np.array(self.low, dtype=np.float32).reshape(self.shape),
                          np.array(self.high, dtype=np.float32).reshape(self.shape),
                          dtype=np.float32)

    @property
    def command_dim(self) -> int:
        return self.n if self.kind == "discrete" else len(self.low)

    def encode(self, action: Any) -> np.ndarray:
        """A valid action -> its command, float32 (command_dim,); ValueError naming the space."""
        if self.kind == "discrete":
            arr = np.asarray(action)
            if arr.shape not in ((), (1,)) or not np.issubdtype(arr.dtype, np.integer) \
                    or not 0 <= int(arr.reshape(())) < self.n:
                raise ValueError(f"expected an integer action in [0, {self.n - 1}] "
                                 f"(Discrete({self.n})), got {action!r}")
            command = np.zeros(self.n, dtype=np.float32)
            command[int(arr.reshape(()))] = 1.0
            return command
        arr = np.asarray(action)
        if arr.shape != self.shape or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"expected an action of shape {self.shape} ({self.space()}), got "
                             f"{action!r}")
        flat = arr.astype(np.float64).reshape(-1)
        low, high = np.array(self.low), np.array(self.high)
        if not np.isfinite(flat).all():
            raise ValueError(f"action contains NaN or inf: {flat}")
        tol = 1e-6 * np.maximum(1.0, np.abs(np.where(np.isfinite(high), high, 0.0)))
        if np.any(flat < low - tol) or np.any(flat > high + tol):
            raise ValueError(f"action {flat} outside {self.space()}")
        bounded = np.isfinite(low) & np.isfinite(high) & (high > low)
        mid = np.where(bounded, (low + high) / 2, 0.0)
        half = np.where(bounded, (high - low) / 2, 1.0)
        scaled = (flat - mid) / half
        return np.where(bounded, np.clip(scaled, -1.0, 1.0), scaled).astype(np.float32)
