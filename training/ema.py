"""An exponential moving average of a module's weights (``run.ema_decay``).

Stage 3 is a GAN: its generator moves every step, and one checkpoint of it ranks differently on
the ladder than the next. The average of the last ~1 / (1 - decay) steps' weights is the usual
remedy (StyleGAN, EDM, and the diffusion models they descend from export it); export ships it
when the stage kept one (``export.ema``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

EMA_SUFFIX = "_ema"  # a stage's module "generator" is averaged as "generator_ema"


class WeightEMA:
    """shadow <- d * shadow + (1 - d) * live after every optimizer step; d warms up as
    min(decay, (1 + n) / (10 + n)) over the first updates n, so a fresh average is not
    dominated by the weights it started from. Buffers are copied, not averaged."""

    def __init__(self, live: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"run.ema_decay must be in (0, 1), got {decay}")
        self.live, self.decay = live, decay
        self.shadow = copy.deepcopy(live).requires_grad_(False).eval()
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        shadow = list(self.shadow.parameters())
        torch._foreach_lerp_(shadow, [p.detach().to(s.dtype) for p, s in
                                      zip(self.live.parameters(), shadow, strict=True)], 1.0 - d)
        for s, b in zip(self.shadow.buffers(), self.live.buffers(), strict=True):
            s.copy_(b)

    @torch.no_grad()
    def restart(self) -> None:
        """Start the average again from the live weights (a stage without a saved average)."""
        self.shadow.load_state_dict(self.live.state_dict())
        self.updates = 0

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.shadow.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
