"""Reward and termination heads, trained on cached latents with the dataset's rewards.

Worlds without rewards or deaths (camera exploration) still train them: they learn to predict
0 and "never", which is what the env then reports.

With ``heads.bank_clips`` the heads learn on a bank of the dream's rollouts made once (the
generator's sampler can cost 2 x N passes per frame: too slow to redo for every batch). The
bank draws clips that end in a death ``heads.bank_deaths`` of the time, and importance weights
give every clip its uniform-sampling share back, so the head stays a calibrated hazard.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from aapt_world.checkpoint import CheckpointError, load_weights, save_weights, weights_exist
from aapt_world.heads import HeadsConfig, RewardTerminationHeads
from aapt_world.world_model import (
    WorldModel,
    euler_schedule,
    student_rollout,
    teacher_forced,
)
from training.batches import LatentBatch, LatentData, latent_batch, latent_datasets
from training.config import TrainConfig
from training.latents import LatentClipDataset
from training.models import frozen_generator, sampling_shift
from training.trainer import (
    Dist,
    StageParts,
    adamw,
    eval_mode,
    gaussian,
    optimizer_step,
    stage_dir,
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
                 rewards: torch.Tensor, terminated: torch.Tensor,
                 weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``weights`` (B,): per-clip importance weights (a rollout bank's), else uniform."""
    b, _, k1, h, w = z.shape
    prev = z[:, :, :-1].transpose(1, 2).flatten(0, 1)
    new = z[:, :, 1:].transpose(1, 2).flatten(0, 1)
    commands = conds[..., :cfg.world.action_dim]  # the heads read the env's commands only
    reward, logit = heads(prev, new, commands.flatten(0, 1))
    # terminations are rare: weight positives by how rare they are in this batch (up to a cap;
    # a cap of 1 keeps sigmoid(logit) a calibrated probability of death)
    pos = terminated.flatten()
    pos_weight = ((1 - pos).sum() / pos.sum().clamp_min(1)).clamp(1, cfg.heads.max_pos_weight)
    weight = torch.ones_like(pos) if weights is None else weights.to(pos).repeat_interleave(k1 - 1)
    bce = F.binary_cross_entropy_with_logits(logit, pos, pos_weight=pos_weight, reduction="none")
    parts = {"reward_mse": (weight * (reward - rewards.flatten()).square()).mean(),
             "termination_bce": (weight * bce).mean(),
             # calibration at a glance: predicted vs real deaths per step
             "death_rate_pred": (weight * torch.sigmoid(logit)).mean().detach(),
             "death_rate_real": (weight * pos).mean()}
    parts["loss"] = (cfg.heads.reward_weight * parts["reward_mse"]
                     + cfg.heads.termination_weight * parts["termination_bce"])
    return parts


@dataclass
class RolloutBank:
    """The learned (last) step of N dreamed clips, and each clip's importance weight."""

    latents: torch.Tensor  # (N, C, 2, h, w): the dream's latent before the step, and after
    conds: torch.Tensor  # (N, 1, 4, A [+ M])
    rewards: torch.Tensor  # (N, 1)
    terminated: torch.Tensor  # (N, 1)
    weights: torch.Tensor  # (N,)

    def rows(self, idx: np.ndarray | slice) -> tuple[torch.Tensor, ...]:
        return (self.latents[idx], self.conds[idx], self.rewards[idx], self.terminated[idx],
                self.weights[idx])

    def __len__(self) -> int:
        return self.latents.shape[0]


def bank_plan(dataset: LatentClipDataset, clips: int, death_share: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Which clips a bank dreams, and their weights: ``death_share`` of them drawn among the
    clips that end in a death, the rest uniform. Weight = uniform density / bank density, so
    a weighted mean over the bank estimates the mean over uniformly drawn clips."""
    deaths = dataset.clips.ending_indices("terminated")
    if len(deaths) == 0:
        raise ValueError(f"heads.bank_deaths={death_share}: no clip of "
                         f"{dataset.clips.root} ends in a death")
    n_deaths = round(death_share * clips)
    idx = np.concatenate([rng.choice(deaths, n_deaths),
                          rng.integers(len(dataset), size=clips - n_deaths)])
    rate = len(deaths) / len(dataset)  # a uniform clip's chance to end in a death
    weights = np.where(np.isin(idx, deaths), rate / (death_share + (1 - death_share) * rate),
                       1 / (1 - death_share))
    return idx, weights


def dream_bank(cfg: TrainConfig, dataset: LatentClipDataset, clips: int, path: Path,
               dream: Callable[..., torch.Tensor], device: torch.device, seed: int
               ) -> RolloutBank:
    """The bank at ``path`` if it was made with these settings, else dreamed now and saved."""
    h = cfg.heads
    recipe = {"generator": h.generator, "rollout_steps": h.rollout_steps,
              "sample_steps": h.sample_steps, "guidance": h.guidance,
              "context_noise": h.context_noise, "clips": clips, "deaths": h.bank_deaths,
              "seed": seed, "data": str(cfg.data.root)}
    if weights_exist(path):  # one file, or shards and their index
        try:
            tensors, meta = load_weights(path)
            if meta.get("recipe") == recipe:
                return RolloutBank(**{k: v.to(device) for k, v in tensors.items()})
            print(f"heads: {path} was dreamed with other settings: dreaming it again")
        except CheckpointError as err:
            print(f"heads: {err}: dreaming it again")
    rng = np.random.default_rng(seed)
    idx, weights = bank_plan(dataset, clips, h.bank_deaths, rng)
    parts = []
    for chunk in tqdm(np.array_split(idx, -(-clips // cfg.run.batch_size)),
                      desc=f"dreaming {path.stem}", unit="batch", disable=not cfg.run.progress):
        b = latent_batch(dataset, rng, len(chunk), device, indices=chunk)
        z = dream(b.latents, b.conds, rng)
        parts.append(learned_steps(cfg, z, b))
    bank = RolloutBank(*(torch.cat(p) for p in zip(*parts)),
                       weights=torch.from_numpy(weights).float().to(device))
    save_weights(path, {k: v.float() for k, v in vars(bank).items()}, {"recipe": recipe},
                 index=True)  # shards + an index with checksums, whatever the size
    return bank


def dream_clip(cfg: TrainConfig, generator: WorldModel, z: torch.Tensor, conds: torch.Tensor,
               rng: np.random.Generator) -> torch.Tensor:
    """The clip with latents 1..K as the generator predicts them: each from the real previous
    one (teacher-forced), or with ``heads.rollout_steps`` its free rollout from the real first
    latent, sampled as the world will (``heads.sample_steps``, ``heads.guidance``)."""
    h = cfg.heads
    eps, ctx = gaussian(rng, z[:, :, 1:]), gaussian(rng, z[:, :, 1:])
    with torch.no_grad():
        if h.rollout_steps:
            shift = sampling_shift(cfg, h.sample_steps)  # as the exported world samples
            pred, _ = student_rollout(generator, z[:, :, 0], conds, eps,
                                      context_noise=h.context_noise, context_eps=ctx,
                                      timesteps=euler_schedule(h.sample_steps, shift).tolist(),
                                      guidance=h.guidance)
        else:
            pred = teacher_forced(generator, z, conds, eps, h.context_noise, ctx)
    return torch.cat([z[:, :, :1], pred], dim=2)


def dream_banks(cfg: TrainConfig, data: LatentData, dream: Callable[..., torch.Tensor],
                device: torch.device) -> dict[str, RolloutBank]:
    """The train and val banks (every rank dreams the same ones: fixed seeds)."""
    sizes = {"train": cfg.heads.bank_clips, "val": cfg.heads.bank_val_clips}
    return {split: dream_bank(cfg, dataset, sizes[split],
                              stage_dir(cfg, STAGE_DIR) / f"bank_{split}.safetensors", dream,
                              device, seed=cfg.run.seed + i)
            for i, (split, dataset) in enumerate(zip(sizes, data))}


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

    def generated(z: torch.Tensor, conds: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        return dream_clip(cfg, generator, z, conds, rng)

    def dreamed(z: torch.Tensor, conds: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if generator is None or rng.random() >= cfg.heads.generated:
            return z
        return generated(z, conds, rng)

    banks = dream_banks(cfg, (train, val), generated, device) if h.bank_clips else {}

    ddp = wrap_distributed(heads, ranks, fsdp=cfg.run.fsdp)
    opt = adamw(cfg, heads.parameters())

    def train_step(step: int) -> dict[str, torch.Tensor]:
        warmup_lr(opt, cfg.optim, step)
        rng = step_rng(cfg, ranks, step)
        if banks:
            rows = banks["train"].rows(rng.integers(len(banks["train"]), size=cfg.run.batch_size))
            parts = heads_losses(cfg, ddp, *rows)
        else:
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
            runs = {"": [learned_steps(cfg, b.latents, b) for b in batches]}
            if banks:  # the val bank, weighted back to uniform clips
                bank, size = banks["val"], cfg.run.batch_size
                runs["dream_"] = [bank.rows(slice(i, i + size)) for i in range(0, len(bank), size)]
            elif generator is not None:
                runs["dream_"] = [learned_steps(cfg, generated(b.latents, b.conds, rng), b)
                                  for b in batches]
            metrics = {}
            for prefix, rows in runs.items():
                parts = [heads_losses(cfg, heads, *r) for r in rows]
                metrics |= {prefix + k: float(np.mean([p[k].item() for p in parts]))
                            for k in parts[0]}
        return metrics

    return StageParts({"heads": heads}, {"opt": opt}, train_step, evaluate,
                      units_per_step=cfg.run.batch_size * (1 if h.rollout_steps
                                                           else cfg.data.clip_steps),
                      unit="latent_frames", trainable=list(heads.parameters()))


def run(cfg: TrainConfig, ranks: Dist, device: torch.device) -> dict[str, float]:
    return train_parts(cfg, STAGE_DIR, build(cfg, ranks, device), ranks)
