"""Reward and termination heads, trained on cached latents with the dataset's rewards.

Worlds without rewards or deaths (camera exploration) still train them: they learn to predict
0 and "never", which is what the env then reports.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from aapt_world.heads import HeadsConfig, RewardTerminationHeads
from aapt_world.world_model import euler_schedule, student_rollout, teacher_forced
from training.batches import LatentBatch, LatentData, latent_batch, latent_datasets
from training.config import TrainConfig
from training.models import frozen_generator
from training.trainer import (
    Dist,
    StageParts,
    adamw,
    eval_mode,
    gaussian,
    optimizer_step,
    step_rng,
    train_parts,
    warmup_lr,
    wrap_distributed,
)

STAGE_DIR = "heads"


def build_heads(cfg: TrainConfig) -> RewardTerminationHeads:
    return RewardTerminationHeads(HeadsConfig(latent_channels=cfg.model.vae.latent_channels,
                                              action_dim=cfg.world.action_dim))


def heads_losses(cfg: TrainConfig, heads: torch.nn.Module, z: torch.Tensor, conds: torch.Tensor,
                 rewards: torch.Tensor, terminated: torch.Tensor) -> dict[str, torch.Tensor]:
    b, _, k1, h, w = z.shape
    prev = z[:, :, :-1].transpose(1, 2).flatten(0, 1)
    new = z[:, :, 1:].transpose(1, 2).flatten(0, 1)
    commands = conds[..., :cfg.world.action_dim]  # the heads read the env's commands only
    reward, logit = heads(prev, new, commands.flatten(0, 1))
    # terminations are rare: weight positives by how rare they are in this batch (up to a cap;
    # a cap of 1 keeps sigmoid(logit) a calibrated probability of death)
    pos = terminated.flatten()
    pos_weight = ((1 - pos).sum() / pos.sum().clamp_min(1)).clamp(1, cfg.heads.max_pos_weight)
    parts = {"reward_mse": F.mse_loss(reward, rewards.flatten()),
             "termination_bce": F.binary_cross_entropy_with_logits(logit, pos,
                                                                   pos_weight=pos_weight),
             # calibration at a glance: predicted vs real deaths per step
             "death_rate_pred": torch.sigmoid(logit).mean().detach(),
             "death_rate_real": pos.mean()}
    parts["loss"] = (cfg.heads.reward_weight * parts["reward_mse"]
                     + cfg.heads.termination_weight * parts["termination_bce"])
    return parts


def learned_steps(cfg: TrainConfig, z: torch.Tensor, b: LatentBatch
                  ) -> tuple[torch.Tensor, ...]:
    """The steps of a clip the heads learn: all, or with rollouts only each clip's last step
    (see HeadsStageConfig)."""
    if not cfg.heads.rollout_steps:
        return z, b.conds, b.rewards, b.terminated
    return z[:, :, -2:], b.conds[:, -1:], b.rewards[:, -1:], b.terminated[:, -1:]


def build(cfg: TrainConfig, ranks: Dist, device: torch.device, data: LatentData | None = None,
          pretrained: bool = True) -> StageParts:
    heads = build_heads(cfg).to(device)
    generator = (frozen_generator(cfg, cfg.heads.generator, device,
                                  "heads.generated > 0 (heads.generator=...)")
                 if cfg.heads.generated > 0 else None)
    train, val = data or latent_datasets(cfg)
    h = cfg.heads
    shift = cfg.diffusion.timestep_shift if h.sample_steps > 1 else 1.0  # as export does
    timesteps = euler_schedule(h.sample_steps, shift).tolist()

    def generated(z: torch.Tensor, conds: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The clip with latents 1..K as the generator predicts them: each from the real
        previous one (teacher-forced), or with ``heads.rollout_steps`` its free rollout from
        the real first latent."""
        eps, ctx = gaussian(rng, z[:, :, 1:]), gaussian(rng, z[:, :, 1:])
        with torch.no_grad():
            if cfg.heads.rollout_steps:
                pred, _ = student_rollout(generator, z[:, :, 0], conds, eps,
                                          context_noise=h.context_noise, context_eps=ctx,
                                          timesteps=timesteps, guidance=h.guidance)
            else:
                pred = teacher_forced(generator, z, conds, eps, cfg.heads.context_noise, ctx)
        return torch.cat([z[:, :, :1], pred], dim=2)

    def dreamed(z: torch.Tensor, conds: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if generator is None or rng.random() >= cfg.heads.generated:
            return z
        return generated(z, conds, rng)

    ddp = wrap_distributed(heads, ranks, fsdp=cfg.run.fsdp)
    opt = adamw(cfg, heads.parameters())

    def train_step(step: int) -> dict[str, torch.Tensor]:
        warmup_lr(opt, cfg.optim, step)
        rng = step_rng(cfg, ranks, step)
        b = latent_batch(train, rng, cfg.run.batch_size, device)
        z = dreamed(b.latents, b.conds, rng)
        parts = heads_losses(cfg, ddp, *learned_steps(cfg, z, b))
        optimizer_step(opt, parts["loss"], heads.parameters(), cfg.optim.grad_clip)
        return {k: v.detach() for k, v in parts.items()}

    def evaluate() -> dict[str, float]:
        """On real held-out latents, and (``dream_*``) on the generator's version of the same
        clips: the head runs on the dream, so that is where its calibration counts."""
        rng = np.random.default_rng(777)
        with eval_mode(heads):
            batches = [latent_batch(val, rng, cfg.run.batch_size, device)
                       for _ in range(cfg.data.val_batches)]
            runs = {"": [b.latents for b in batches]}
            if generator is not None:
                runs["dream_"] = [generated(b.latents, b.conds, rng) for b in batches]
            metrics = {}
            for prefix, clips in runs.items():
                parts = [heads_losses(cfg, heads, *learned_steps(cfg, z, b))
                         for z, b in zip(clips, batches)]
                metrics |= {prefix + k: float(np.mean([p[k].item() for p in parts]))
                            for k in parts[0]}
        return metrics

    return StageParts({"heads": heads}, {"opt": opt}, train_step, evaluate,
                      units_per_step=cfg.run.batch_size * (1 if cfg.heads.rollout_steps
                                                           else cfg.data.clip_steps),
                      unit="latent_frames", trainable=list(heads.parameters()))


def run(cfg: TrainConfig, ranks: Dist, device: torch.device) -> dict[str, float]:
    return train_parts(cfg, STAGE_DIR, build(cfg, ranks, device), ranks)
