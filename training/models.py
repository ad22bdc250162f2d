"""Model builders every training stage shares (from the run config)."""

from __future__ import annotations

from aapt_world.conditions import ConditionConfig
from aapt_world.world_model import WorldModel
from training.config import TrainConfig


def build_world_model(cfg: TrainConfig) -> WorldModel:
    """The generator (condition encoder + DiT) of ``cfg``'s model and world."""
    dit = cfg.model.dit
    condition = ConditionConfig(kind=cfg.world.condition, cond_dim=dit.cond_dim,
                                hidden_dim=cfg.model.cond_hidden, action_dim=cfg.world.action_dim)
    return WorldModel(dit, condition)
