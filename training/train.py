"""Hydra entry point of every training stage (works alone or under torchrun).

    aapt-world train stage=vae model=small run.steps=3000
    torchrun --nproc_per_node=2 -m training.train stage=diffusion run.device=cpu
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import torch

from aapt_world.devices import resolve_device
from training.config import TrainConfig
from training.dataset import DatasetError, check_training_data
from training.trainer import finish_distributed, init_distributed, pick_device, seed_everything

STAGE_MODULES = {
    "vae": "training.stages.vae",
    "decoder": "training.stages.decoder",
    "latents": "training.stages.latents",
    "diffusion": "training.stages.diffusion",
    "consistency": "training.stages.consistency",
    "adversarial": "training.stages.adversarial",
    "heads": "training.stages.heads",
    "export": "training.export",
}


def check_config(cfg: TrainConfig) -> None:
    """The settings and the dataset they name fit together (ValueError / DatasetError)."""
    cfg.validate()
    check_training_data(cfg.data.root, cfg.model.vae.height, cfg.model.vae.width,
                        cfg.data.clip_steps, cfg.world.action_dim, cfg.world.action_type,
                        cfg.world.condition, cfg.world.floor_anchor)


def run_stage(cfg: TrainConfig) -> dict[str, float]:
    """Validate ``cfg`` and run its stage in this process (joining torchrun if launched so)."""
    check_config(cfg)
    ranks = init_distributed(resolve_device(cfg.run.device))
    device = pick_device(cfg.run.device, ranks)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    seed_everything(cfg.run.seed + ranks.rank)
    module = importlib.import_module(STAGE_MODULES[cfg.stage])
    metrics = module.run(cfg, ranks, device)
    finish_distributed(ranks)  # not on an error: torchrun stops the other ranks then
    return metrics


def to_config(dict_cfg: Any) -> TrainConfig:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_object(dict_cfg)
    if not isinstance(cfg, TrainConfig):
        raise TypeError("the hydra config did not build a TrainConfig")
    return cfg


def compose_config(overrides: list[str]) -> TrainConfig:
    """The config ``aapt-world train <overrides>`` would run (for benchmarks and tests)."""
    from hydra import compose, initialize_config_module
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    with initialize_config_module("training.configs", version_base="1.3"):
        return to_config(compose("train", overrides=overrides))


def main(argv: list[str] | None = None) -> None:
    import hydra
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)

    @hydra.main(version_base="1.3", config_path="configs", config_name="train")
    def _run(dict_cfg: Any) -> None:
        cfg = to_config(dict_cfg)
        try:  # bad settings or data: one line with the fix, not a traceback
            check_config(cfg)
        except (ValueError, DatasetError) as err:
            print(f"aapt-world train: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        metrics = run_stage(cfg)
        print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # A torchrun worker is done (checkpoint written, process group left): skip the
            # interpreter's teardown, where gloo threads that FSDP's meshes keep alive can
            # still abort the process ("terminate called without an active exception").
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    _run()


if __name__ == "__main__":
    main()
