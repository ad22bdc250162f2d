"""Stage 1, diffusion adaptation: a block-causal flow-matching model trained with teacher forcing.

Per clip of K steps (latents x_0 .. x_K): position k gets ``[x_{k+1} noised to t | x_k clean
(recycled, ground truth) | c_{k+1}]`` and predicts ``v = eps - x_{k+1}``; all K positions train
in parallel under the block-causal mask; ONE shifted t per clip. AdamW with weight decay.

The paper adapts a pretrained bidirectional video diffusion model. None exists offline for a
world this small, so this stage trains from scratch — the honest substitute.
"""

from __future__ import annotations

import numpy as np
import torch

from aapt_world.transformer import adapt_latent_channels
from aapt_world.world_model import add_zero_floor_anchor, add_zero_momentum, add_zero_pose_maps
from training.batches import LatentData, latent_batch, latent_datasets
from training.config import TrainConfig
from training.losses import add_noise, flow_matching_loss, psnr_of_mse, shift_timesteps
from training.models import build_world_model
from training.pixel_loss import pixel_loss_fn
from training.trainer import (
    Dist,
    StageParts,
    adamw,
    autocast,
    eval_mode,
    maybe_compile,
    optimizer_step,
    step_rng,
    train_parts,
    warmup_lr,
    wrap_distributed,
)

STAGE_DIR = "diffusion"
EVAL_UNROLL_PASSES = 3  # validation's own-context loss: frames 1-3 exact 1-NFE rollouts


def noise_context(prev: torch.Tensor, max_level: float, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Context-noise augmentation of the recycled frames (B, C, T, h, w): each frame is moved
    toward noise, ``(1 - s) x + s n`` with s ~ U(0, max_level) per frame. -> (noised, s (B, T)),
    or (prev, None) when off."""
    if max_level <= 0:
        return prev, None
    b, _, nt = prev.shape[:3]
    s = torch.rand(b, nt, generator=generator, device=prev.device) * max_level
    n = torch.randn(prev.shape, generator=generator, device=prev.device, dtype=prev.dtype)
    return add_noise(prev, n, s.to(prev.dtype)), s


@torch.no_grad()
def self_forced_context(model: torch.nn.Module, z: torch.Tensor, frame_conds: torch.Tensor,
                        passes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The recycled frames (B, C, K, h, w) as the model itself would make them: the real first
    frame, then its one-step (t = 1) predictions. Each pass predicts every frame in parallel from
    the previous pass's frames, so after n passes frames 1..n are exact autoregressive rollouts
    and later ones carry n steps of the model's own error (1 pass = one-step errors only)."""
    first, prev = z[:, :, :1], z[:, :, :-1]
    t = torch.ones(z.shape[0], device=z.device, dtype=z.dtype)
    for _ in range(passes):
        eps = torch.randn(prev.shape, generator=generator, device=z.device, dtype=z.dtype)
        predicted = eps - model(eps, prev, frame_conds, t)  # x0 = x_t - t v at t = 1
        prev = torch.cat([first, predicted[:, :, :-1]], dim=2)
    return prev


def diffusion_loss(model: torch.nn.Module, z: torch.Tensor, frame_conds: torch.Tensor,
                   t: torch.Tensor, generator: torch.Generator | None = None,
                   context_noise: float = 0.0, prev: torch.Tensor | None = None,
                   null: torch.Tensor | None = None) -> torch.Tensor:
    """Flow-matching loss of a clip batch at per-clip timesteps ``t`` (B,), with the recycled
    frames noised up to ``context_noise`` (0 = clean, the paper's stage 1). ``prev`` replaces the
    real recycled frames ``z[:, :, :-1]`` (teacher forcing) e.g. by :func:`self_forced_context`;
    ``null`` (B,) bool: clips trained without their conditions (classifier-free guidance)."""
    return flow_matching_loss(*velocity(model, z, frame_conds, t, generator, context_noise, prev,
                                        null))


def velocity(model: torch.nn.Module, z: torch.Tensor, frame_conds: torch.Tensor,
             t: torch.Tensor, generator: torch.Generator | None = None,
             context_noise: float = 0.0, prev: torch.Tensor | None = None,
             null: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's velocity on a clip batch, as :func:`diffusion_loss` takes it -> (v, x0, eps):
    the clean estimate is ``add_noise(x0, eps, t) - t v``."""
    x0 = z[:, :, 1:]
    prev = z[:, :, :-1] if prev is None else prev
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    prev, level = noise_context(prev, context_noise, generator)
    v = model(add_noise(x0, eps, t), prev, frame_conds, t, context_level=level, null=null)
    return v, x0, eps


def clean_estimate(v: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor,
                   t: torch.Tensor) -> torch.Tensor:
    """x_t - t v: the model's x0 (at t = 1 exactly what a 1-Euler-step world generates)."""
    return add_noise(x0, eps, t) - t.view(-1, 1, 1, 1, 1) * v


def build(cfg: TrainConfig, ranks: Dist, device: torch.device, data: LatentData | None = None,
          pretrained: bool = True) -> StageParts:
    model = build_world_model(cfg).to(device)  # random; resume / run.init_from load weights
    train, val = data or latent_datasets(cfg)
    ddp = wrap_distributed(model, ranks, fsdp=cfg.run.fsdp)  # before the optimizer: FSDP2
    forward = maybe_compile(ddp, cfg.run.compile)  # the loss's call: one shape every step
    opt = adamw(cfg, model.parameters())                    # swaps in sharded parameters
    d = cfg.diffusion
    shift = d.timestep_shift
    pixel = (pixel_loss_fn(cfg, device, d.pixel_steps, pretrained) if d.pixel_weight > 0
             else None)

    def train_step(step: int) -> dict[str, torch.Tensor]:
        warmup_lr(opt, cfg.optim, step)
        rng = step_rng(cfg, ranks, step)
        batch = latent_batch(train, rng, cfg.run.batch_size, device)
        z, conds = batch.latents, batch.conds
        t = shift_timesteps(torch.from_numpy(rng.random(z.shape[0])).float().to(device), shift)
        own = torch.from_numpy(rng.random(z.shape[0]) < d.self_forcing).to(device)
        null = (torch.from_numpy(rng.random(z.shape[0]) < d.cond_dropout).to(device)
                if d.cond_dropout > 0 else None)  # the unconditional model, for guidance
        with autocast(device, cfg.run.precision):
            prev = None
            if own.any():  # exposure bias: these clips recycle the model's own predictions
                prev = z[:, :, :-1].clone()
                prev[own] = self_forced_context(model, z[own], conds[own], d.self_forcing_passes)
            v, x0, eps = velocity(forward, z, conds, t, context_noise=d.context_noise, prev=prev,
                                  null=null)
            loss = flow_matching_loss(v, x0, eps)
            metrics = {}
            if pixel is not None:
                pixel_mse = pixel(clean_estimate(v, x0, eps, t), x0)
                loss = loss + d.pixel_weight * pixel_mse
                metrics["pixel_mse"] = pixel_mse.detach()
        grad_norm = optimizer_step(opt, loss, model.parameters(), cfg.optim.grad_clip)
        return {"loss": loss.detach(), "grad_norm": grad_norm, **metrics}

    def evaluate() -> dict[str, float]:
        """Validation loss at fixed timesteps (fixed clips and noise: comparable across runs)."""
        rng, gen = np.random.default_rng(777), torch.Generator(device).manual_seed(777)
        out = {}
        with eval_mode(model):
            for t_value in (0.25, 0.5, 0.75, 1.0):
                losses = []
                for _ in range(cfg.data.val_batches):
                    batch = latent_batch(val, rng, cfg.run.batch_size, device)
                    z, conds = batch.latents, batch.conds
                    t = torch.full((z.shape[0],), t_value, device=device)
                    losses.append(diffusion_loss(model, z, conds, t, gen).item())
                out[f"loss_t{t_value:g}"] = float(np.mean(losses))
            # the one-step loss from the model's own recycled frames: the exposure-bias gap
            losses = []
            for _ in range(cfg.data.val_batches):
                batch = latent_batch(val, rng, cfg.run.batch_size, device)
                z, conds = batch.latents, batch.conds
                prev = self_forced_context(model, z, conds, EVAL_UNROLL_PASSES, gen)
                t = torch.ones(z.shape[0], device=device)
                losses.append(diffusion_loss(model, z, conds, t, gen, prev=prev).item())
            out["loss_t1_own"] = float(np.mean(losses))
            if pixel is not None:  # the 1-NFE frame against the decoded real latent
                mse = []
                for _ in range(cfg.data.val_batches):
                    batch = latent_batch(val, rng, cfg.run.batch_size, device)
                    z, conds = batch.latents, batch.conds
                    t = torch.ones(z.shape[0], device=device)
                    v, x0, eps = velocity(model, z, conds, t, gen)
                    mse.append(pixel(clean_estimate(v, x0, eps, t), x0, gen).item())
                out["pixel_psnr_t1"] = float(psnr_of_mse(float(np.mean(mse))))
        return out

    return StageParts({"model": model}, {"opt": opt}, train_step, evaluate,
                      units_per_step=cfg.run.batch_size * cfg.data.clip_steps,
                      unit="latent_frames", trainable=list(model.parameters()),
                      adapt_init=lambda tensors: add_zero_floor_anchor(add_zero_momentum(
                          add_zero_pose_maps(adapt_latent_channels(
                              tensors, cfg.model.dit.latent_channels,
                              cfg.model.dit.patch_size), model), model), model),
                      ema_module="model")


def run(cfg: TrainConfig, ranks: Dist, device: torch.device) -> dict[str, float]:
    return train_parts(cfg, STAGE_DIR, build(cfg, ranks, device), ranks)
