"""Assemble a shippable world (``aapt_world.world``) from a training run's stage checkpoints.

    aapt-world train stage=export run.out_dir=runs/doom   # -> runs/doom/world

Takes the VAE encoder and the light (or full) decoder from the ``vae`` stage, the latent
normalisation from ``latents/stats.json``, the generator from the latest finished stage among
adversarial > consistency > diffusion, the heads if trained, and start frames from the first
frames of the validation episodes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from aapt_world.conditions import ConditionConfig
from aapt_world.heads import HeadsConfig
from aapt_world.world import WorldConfig, build_world, save_world
from training.config import TrainConfig
from training.dataset import ClipDataset
from training.latents import read_stats
from training.trainer import WEIGHTS, Dist, load_stage_weights, stage_dir

GENERATOR_STAGES = (("adversarial", "generator"), ("consistency", "model"), ("diffusion", "model"))


def run(cfg: TrainConfig, ranks: Dist, device: torch.device, light_decoder: bool = True,
        num_start_frames: int = 16) -> dict[str, float]:
    if not ranks.is_main:
        return {}
    source = next(((stage, name) for stage, name in GENERATOR_STAGES
                   if (stage_dir(cfg, stage) / WEIGHTS).exists()), None)
    if source is None:
        raise FileNotFoundError(f"no generator checkpoint under {cfg.run.out_dir}: train "
                                f"stage=diffusion (and later stages) first")
    heads_trained = (stage_dir(cfg, "heads") / WEIGHTS).exists()
    config = WorldConfig(
        vae=dataclasses.replace(cfg.model.vae, light_decoder=light_decoder),
        dit=cfg.model.dit,
        condition=ConditionConfig(kind=cfg.world.condition, cond_dim=cfg.model.dit.cond_dim,
                                  hidden_dim=cfg.model.cond_hidden,
                                  action_dim=cfg.world.action_dim),
        heads=HeadsConfig(latent_channels=cfg.model.vae.latent_channels,
                          action_dim=cfg.world.action_dim) if heads_trained else None,
        action_type=cfg.world.action_type, fps=cfg.world.fps)
    val = ClipDataset(cfg.data.root, 1, split="val")
    starts = np.stack([ep.arrays["frames"][0] for ep in val.episodes][:num_start_frames])
    world = build_world(config, starts)
    # the VAE: encoder from the vae stage, decoder = the light (or full) decoder
    load_stage_weights(cfg, "vae", {"vae.encoder": world.vae.encoder,
                                    "light_decoder" if light_decoder else "vae.decoder":
                                    world.vae.decoder})
    stats = read_stats(stage_dir(cfg, "latents"))
    world.vae.latent_shift.copy_(torch.tensor(stats["mean"]))
    world.vae.latent_scale.copy_(1.0 / torch.tensor(stats["std"]))
    load_stage_weights(cfg, source[0], {source[1]: world.generator})
    if heads_trained:
        load_stage_weights(cfg, "heads", {"heads": world.heads})
    world.card = {"name": f"{cfg.world.name} world ({cfg.model.name})",
                  "description": f"generator from stage {source[0]!r} of run {cfg.run.out_dir}",
                  "data": {"root": cfg.data.root, "scenario": val.manifest.get("scenario"),
                           "map": val.episodes[0].entry.get("map"),
                           "maps": sorted({str(e.get("map")) for e in val.manifest["episodes"]}),
                           "episodes": val.manifest["num_episodes"]},
                  "training": {stage: _last_log_row(cfg, stage) for stage in
                               ("vae", "diffusion", "consistency", "adversarial", "heads")}}
    out = stage_dir(cfg, "world")
    save_world(out, world)
    return {"generator_stage": float(GENERATOR_STAGES.index(source))}


def _last_log_row(cfg: TrainConfig, stage: str) -> dict | None:
    path = stage_dir(cfg, stage) / "log.csv"
    if not path.exists():
        return None
    header, *rows = path.read_text().strip().splitlines()
    return dict(zip(header.split(","), rows[-1].split(","))) if rows else None

