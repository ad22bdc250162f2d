"""The generator of a world: condition encoder + block-causal DiT, one module.

It takes per-VIDEO-frame conditions (B, T, 4, A) — exactly what envs and datasets produce — and
folds them into one condition per latent frame before the DiT. Training stages, the streaming
session and checkpoints all handle this one module.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .conditions import ConditionConfig, build_condition_encoder
from .kv_cache import KVCache
from .transformer import BlockCausalDiT, DiTConfig


class WorldModel(nn.Module):
    def __init__(self, dit: DiTConfig, condition: ConditionConfig) -> None:
        super().__init__()
        if condition.cond_dim != dit.cond_dim:
            raise ValueError(f"condition.cond_dim {condition.cond_dim} != dit.cond_dim "
                             f"{dit.cond_dim}")
        self.dit_config, self.condition_config = dit, condition
        self.cond = build_condition_encoder(condition)
        self.dit = BlockCausalDiT(dit)

    @property
    def cfg(self) -> DiTConfig:
        return self.dit.cfg

    def forward(self, noisy: Tensor, prev: Tensor, frame_conds: Tensor, t: Tensor | float,
                return_hidden: Sequence[int] | None = None) -> Tensor | tuple[Tensor, list]:
        """Whole clip: latents (B, C, T, h, w), frame_conds (B, T, 4, ...) -> v (B, C, T, h, w)."""
        return self.dit(noisy, prev, self.cond(frame_conds), t, return_hidden=return_hidden)

    def step(self, noisy: Tensor, prev: Tensor, frame_conds: Tensor, t: Tensor | float,
             cache: KVCache, return_hidden: Sequence[int] | None = None
             ) -> Tensor | tuple[Tensor, list]:
        """One latent frame: (B, C, h, w) latents, frame_conds (B, 4, ...) -> v (B, C, h, w)."""
        cond = self.cond(frame_conds.unsqueeze(1))[:, 0]
        return self.dit.step(noisy, prev, cond, t, cache, return_hidden=return_hidden)

    def generate_step(self, noise: Tensor, prev: Tensor, frame_conds: Tensor, cache: KVCache
                      ) -> Tensor:
        """The 1-NFE generator step used by inference AND student-forcing training:
        ``x_{k+1} = eps - v(eps, x_k, c_{k+1}; t = 1)`` (flow matching's one step from t=1 to 0)."""
        return noise - self.step(noise, prev, frame_conds, 1.0, cache)

    def init_cache(self, batch_size: int, latent_size: tuple[int, int] | None = None) -> KVCache:
        return self.dit.init_cache(batch_size, latent_size=latent_size)
