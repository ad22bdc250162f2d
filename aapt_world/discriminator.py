"""AAPT's discriminator: the block-causal backbone with one logit per latent frame.

The backbone is a :class:`WorldModel` (initialised from stage 1). Where the generator sees
``[noise | previous frame | condition]`` the discriminator sees ``[judged frame x_{k+1}, noised
to the discriminator's t | previous frame x_k | condition c_{k+1}]``: frames in place of the
noise channels, conditions aligned with the frames they produced. Because attention is
block-causal, the hidden states of frame j depend only on frames <= j, so logit j judges the
prefix up to j.

Heads (APT): per chosen block, learnable query tokens cross-attend to the visual tokens of each
frame; the query outputs of all chosen blocks are concatenated -> LayerNorm -> Linear -> logit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .world_model import WorldModel


class QueryHead(nn.Module):
    """Learnable queries cross-attending to one frame's tokens: (B, T, S, d) -> (B, T, q * d)."""

    def __init__(self, dim: int, heads: int, queries: int) -> None:
        super().__init__()
        self.heads = heads
        self.queries = nn.Parameter(torch.randn(queries, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, hidden: Tensor) -> Tensor:
        b, t, s, d = hidden.shape
        h, hd = self.heads, d // self.heads
        k, v = self.kv(self.norm(hidden)).view(b * t, s, 2, h, hd).permute(2, 0, 3, 1, 4)
        q = self.q(self.queries).view(1, -1, h, hd).transpose(1, 2).expand(b * t, -1, -1, -1)
        o = F.scaled_dot_product_attention(q, k, v)  # (B*T, h, queries, hd)
        o = self.out(o.transpose(1, 2).reshape(b * t, -1, d))
        return o.reshape(b, t, -1)


class Discriminator(nn.Module):
    def __init__(self, backbone: WorldModel, layers: Sequence[int], queries: int = 4) -> None:
        super().__init__()
        self.backbone = backbone
        self.layers = list(layers)
        cfg = backbone.cfg
        self.heads = nn.ModuleList(QueryHead(cfg.dim, cfg.heads, queries) for _ in self.layers)
        width = len(self.layers) * queries * cfg.dim
        self.norm = nn.LayerNorm(width)
        self.logit = nn.Linear(width, 1)

    def forward(self, frames: Tensor, frame_conds: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """frames (B, C, K+1, h, w): x_0 .. x_K; frame_conds (B, K, 4, A); t (B,) in [0, 1];
        noise like frames[:, :, 1:]. Returns logits (B, K): logit k judges x_1 .. x_{k+1}."""
        judged, prev = frames[:, :, 1:], frames[:, :, :-1]
        tt = t.view(-1, 1, 1, 1, 1)
        noisy = (1 - tt) * judged + tt * noise  # the same flow-matching noising as stage 1
        _, hidden = self.backbone(noisy, prev, frame_conds, t, return_hidden=self.layers)
        features = torch.cat([head(h) for head, h in zip(self.heads, hidden)], dim=-1)
        return self.logit(self.norm(features)).squeeze(-1)
