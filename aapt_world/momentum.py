"""The player's momentum as a condition: a velocity integrated from the command history.

Doom's player keeps moving after a command ends: each tic the command's thrust ``g u`` is
added to the velocity and friction multiplies it by ``d`` = 0.90625 (``v <- d (v + g u)``).
On TakeCover's recorded poses this recurrence explains 96.5 % of the per-tic sideways
displacement, while the step's own strafe command correlates only 0.67 with it: a generator
that sees only the 4 commands of a latent frame must guess the rest, and regresses to a
fraction of the real motion.

Divided by the steady speed ``g d / (1 - d)`` the velocity becomes ``w <- d w + (1 - d) u``:
an exponential average of the command, one per video frame (= one tic), in [-1, 1] and free of
the thrust gain. :class:`CommandMomentum` computes it for chosen command channels; the
session keeps ``w`` per stream between steps, datasets integrate it from the episode start, and
the generator reads it as extra condition channels after the command's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from .constants import FRAMES_PER_STEP

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)

DOOM_FRICTION = 0xE800 / 0x10000  # 0.90625: Doom's ORIG_FRICTION per tic (p_user.c / p_mobj.c)


@dataclass(frozen=True)
class CommandMomentum:
    """Normalised velocity of command ``channels`` under friction ``decay`` per video frame."""

    channels: tuple[int, ...]
    decay: float = DOOM_FRICTION

    def __post_init__(self) -> None:
        if not self.channels or min(self.channels) < 0:
            raise ValueError(f"momentum needs command channels >= 0, got {self.channels}")
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"momentum decay must be in (0, 1), got {self.decay}")

    @property
    def width(self) -> int:
        return len(self.channels)

    def integrate(self, frame_conds: Tensor, start: Tensor) -> tuple[Tensor, Tensor]:
        """Per-frame commands (B, T, 4, A) and the velocity before them (B, M) -> the velocity
        after each video frame (B, T, 4, M) and after the last one (B, M)."""
        if frame_conds.dim() != 4 or frame_conds.shape[-1] <= max(self.channels):
            raise ValueError(f"momentum needs per-frame commands (B, T, 4, A) with A > "
                             f"{max(self.channels)}, got {tuple(frame_conds.shape)}")
        b, t, f, _ = frame_conds.shape
        if start.shape != (b, self.width):
            raise ValueError(f"momentum start must be ({b}, {self.width}), got "
                             f"{tuple(start.shape)}")
        u = frame_conds[..., list(self.channels)].float().reshape(b, t * f, self.width)
        velocity, end = self._run(u, start.float())
        return velocity.view(b, t, f, self.width).to(frame_conds.dtype), end

    def augment(self, frame_conds: Tensor, start: Tensor) -> tuple[Tensor, Tensor]:
        """The commands with their velocity appended: (B, T, 4, A + M), and the end velocity."""
        velocity, end = self.integrate(frame_conds, start)
        return torch.cat([frame_conds, velocity], -1), end

    def episode(self, step_commands: np.ndarray) -> np.ndarray:
        """A whole recorded episode from rest: per-step commands (S, A), each held for its
        video frames -> the velocity after each frame (S, 4, M), float32 (in numpy: thousands
        of tics, where torch's per-op cost would dominate)."""
        u = np.repeat(np.asarray(step_commands, dtype=np.float64)[:, list(self.channels)],
                      FRAMES_PER_STEP, axis=0)
        velocity, _ = self._run(u[None], np.zeros((1, self.width)))
        return velocity[0].reshape(-1, FRAMES_PER_STEP, self.width).astype(np.float32)

    def _run(self, u: ArrayT, w: ArrayT) -> tuple[ArrayT, ArrayT]:
        """The recurrence, one tic at a time (numpy or torch alike): commands (B, N, M) from
        velocity ``w`` (B, M) -> the velocity after each tic (B, N, M) and after the last."""
        out = u * 0
        for i in range(u.shape[1]):
            w = self.decay * w + (1.0 - self.decay) * u[:, i]
            out[:, i] = w
        return out, w
