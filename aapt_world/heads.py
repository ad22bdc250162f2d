"""Reward and termination heads: what a neural world needs besides frames to be an RL env.

Per latent step k, from the previous latent x_k, the new latent x_{k+1} and the step's
per-frame conditions, predict the step's reward and the logit of "the episode terminated".
Small on purpose: they run every env step next to the generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class HeadsConfig:
    latent_channels: int = 16
    action_dim: int = 4
    frames_per_latent: int = 4
    hidden: int = 64


class RewardTerminationHeads(nn.Module):
    def __init__(self, cfg: HeadsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, h = cfg.latent_channels, cfg.hidden
        self.latent_net = nn.Sequential(
            nn.Conv2d(2 * c, h, 3, padding=1), nn.SiLU(),
            nn.Conv2d(h, h, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.out = nn.Sequential(
            nn.Linear(h + cfg.frames_per_latent * cfg.action_dim, h), nn.SiLU(),
            nn.Linear(h, 2),
        )

    def forward(self, prev: Tensor, new: Tensor, frame_conds: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, h, w) latents and (B, 4, A) conditions -> reward (B,), termination logit (B,)."""
        features = self.latent_net(torch.cat([prev, new], dim=1))
        out = self.out(torch.cat([features, frame_conds.flatten(1).to(features.dtype)], dim=1))
        return out[:, 0], out[:, 1]
