"""Assemble a shippable world (``aapt_world.world``) from a training run's stage checkpoints.

    aapt-world train stage=export run.out_dir=runs/doom   # -> runs/doom/world
    aapt-world train stage=export export.source=diffusion  # -> runs/doom/world-diffusion,
                                                           #    sampled with N Euler steps

Takes the VAE encoder and the light (or full) decoder from the ``vae`` stage, the latent
normalisation from ``latents/stats.json``, the generator from the latest finished stage among
adversarial > consistency > diffusion (or ``export.source``; its weight average when the stage
kept one and ``export.ema``), the heads if trained, and start frames from the first frames of
the validation episodes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from aapt_world.checkpoint import weights_exist
from aapt_world.heads import HeadsConfig
from aapt_world.world import WorldConfig, build_world, save_world
from training.config import TrainConfig
from training.dataset import ClipDataset
from training.latents import read_stats
from training.models import condition_config, sampling_shift
from training.trainer import (
    LOG,
    VAL_LOG,
    WEIGHTS,
    Dist,
    load_stage_generator,
    load_stage_weights,
    read_log,
    stage_dir,
)

GENERATOR_STAGES = (("adversarial", "generator"), ("consistency", "model"), ("diffusion", "model"))


def _source(cfg: TrainConfig) -> tuple[str, str]:
    """(stage, module prefix) of the generator to export."""
    wanted = [(s, n) for s, n in GENERATOR_STAGES if cfg.export.source in ("auto", s)]
    source = next(((s, n) for s, n in wanted if weights_exist(stage_dir(cfg, s) / WEIGHTS)), None)
    if source is None:
        which = "stage=diffusion (and later stages)" if cfg.export.source == "auto" else \
            f"stage={cfg.export.source}"
        raise FileNotFoundError(f"no generator checkpoint for export.source="
                                f"{cfg.export.source} under {cfg.run.out_dir}: train {which} first")
    return source


def run(cfg: TrainConfig, ranks: Dist, device: torch.device) -> dict[str, float]:
    if not ranks.is_main:
        return {}
    ex = cfg.export
    light_decoder = ex.light_decoder  # also picks which decoder is loaded below
    source = _source(cfg)
    sample_steps = ex.sample_steps or (cfg.diffusion.sample_steps if source[0] == "diffusion"
                                       else 1)
    heads_trained = weights_exist(stage_dir(cfg, "heads") / WEIGHTS)
    val = ClipDataset(cfg.data.root, 1, split="val")
    config = WorldConfig(
        vae=dataclasses.replace(cfg.model.vae, light_decoder=light_decoder),
        dit=cfg.model.dit,
        condition=condition_config(cfg),
        heads=HeadsConfig(latent_channels=cfg.model.vae.latent_channels,
                          action_dim=cfg.world.action_dim) if heads_trained else None,
        action_type=cfg.world.action_type, fps=val.manifest.get("fps", cfg.world.fps),
        sample_steps=sample_steps,
        timestep_shift=sampling_shift(cfg, sample_steps),
        context_noise=ex.context_noise, termination=ex.termination, temperature=ex.temperature,
        guidance=ex.guidance,
        action_space=val.manifest["action_space"] if cfg.world.action_type == "game" else None)
    starts = np.stack([ep.arrays["frames"][0] for ep in val.episodes][:ex.start_frames])
    world = build_world(config, starts)
    # the VAE: encoder from the vae stage, decoder = the light (or full) decoder
    load_stage_weights(cfg, "vae", {"vae.encoder": world.vae.encoder,
                                    "light_decoder" if light_decoder else "vae.decoder":
                                    world.vae.decoder})
    if light_decoder and weights_exist(stage_dir(cfg, "decoder") / WEIGHTS):
        load_stage_weights(cfg, "decoder", {"light_decoder": world.vae.decoder})  # sharpened
    stats = read_stats(stage_dir(cfg, "latents"))
    world.vae.latent_shift.copy_(torch.tensor(stats["mean"]))
    world.vae.latent_scale.copy_(1.0 / torch.tensor(stats["std"]))
    averaged = load_stage_generator(cfg, source[0], source[1], world.generator, ex.ema)
    if heads_trained:
        load_stage_weights(cfg, "heads", {"heads": world.heads})
    world.card = {"name": f"{cfg.world.name} world ({cfg.model.name})",
                  "description": f"generator from stage {source[0]!r} of run {cfg.run.out_dir}, "
                                 f"{sample_steps} NFE per latent frame",
                  "generator_stage": source[0],
                  "generator_weights": "weight average (run.ema_decay)" if averaged else "live",
                  "data": {"root": cfg.data.root, "scenario": val.manifest.get("scenario"),
                           "map": val.episodes[0].entry.get("map"),
                           "maps": sorted({str(e.get("map")) for e in val.manifest["episodes"]}),
                           "episodes": val.manifest["num_episodes"]},
                  "training": {stage: summary for stage in
                               ("vae", "decoder", "diffusion", "consistency", "adversarial",
                                "heads")
                               if (summary := _stage_summary(cfg, stage)) is not None},
                  "compute": _compute(device, cfg.run.threads)}
    out = ex.out or stage_dir(cfg, "world" if ex.source == "auto" else f"world-{ex.source}")
    save_world(out, world)
    return {"generator_stage": float(GENERATOR_STAGES.index(source))}


def _stage_summary(cfg: TrainConfig, stage: str, max_gap_s: float = 600.0) -> dict | None:
    """Steps, wall time (sum of gaps between log rows, pauses between sessions left out), the
    last training log row and the last validation row of a stage."""
    rows = read_log(stage_dir(cfg, stage) / LOG)
    if not rows:
        return None
    gaps = [b["time"] - a["time"] for a, b in zip(rows, rows[1:])]
    wall = sum(g for g in gaps if g < max_gap_s)
    val = read_log(stage_dir(cfg, stage) / VAL_LOG)
    drop = ("time",)
    return {"steps": int(rows[-1]["step"]), "wall_minutes": round(wall / 60, 1),
            "last": {k: round(v, 4) for k, v in rows[-1].items() if k not in drop},
            "val": {k: round(v, 4) for k, v in val[-1].items() if k not in drop} if val else None}


def _compute(device: torch.device, threads: int) -> dict[str, str | int]:
    import platform

    if device.type == "cuda":
        return {"device": torch.cuda.get_device_name(device)}
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"device": f"CPU: {cpu}", "threads": threads or torch.get_num_threads()}

