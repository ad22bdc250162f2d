"""Stage 3, adversarial post-training (AAPT) with student forcing and long-video training.

Generator: the stage-2 model at 1 NFE. Discriminator: the stage-1 backbone + per-frame query
heads (``aapt_world.discriminator``). Per optimizer step:

1. Student forcing: from a REAL first latent, the generator rolls out ``rollout_steps`` latent
   frames with the KV cache exactly as at inference (``WorldModel.generate_step``); the recycled
   previous frame is detached, gradients flow through the KV cache.
2. D update(s): relativistic ``softplus(D(fake) - D(real))`` + approximated R1/R2
   ``lambda ||D(x) - D(x + sigma n)||^2`` on real and fake; t_D ~ U(0, 1) per pair;
   ``d_steps`` of them per G update (a small D at a small batch learns slowly: Self-Forcing's
   critic takes 5).
3. G update: ``softplus(D(real) - D(fake))``, plus ``recon_weight`` times the latent MSE
   between the rollout and the real continuation when ``real`` is one (the first segment),
   and ``pixel_weight`` times the same pair's pixel MSE through the frozen light decoder.
4. Long-video training (``segments`` > 1): the rollout continues segment after segment beyond
   the real clip length with the DETACHED cache of the previous segment; D judges each segment
   with ``segment_overlap`` frames of the previous one in front; backprop after each segment.
   Conditions (and the real sample D compares with) come from a fresh real clip per segment.

``student_forcing=False`` is the paper's failing ablation: a teacher-forced adversarial
generator (each frame from the REAL previous frame, all in parallel).
Both optimizers are Adam(beta1=0, beta2=alpha): RMSProp-like, no weight decay.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aapt_world.discriminator import Discriminator
from aapt_world.kv_cache import KVCache
from aapt_world.world_model import WorldModel, student_rollout, teacher_forced
from training.batches import LatentData, latent_batch, latent_datasets
from training.config import TrainConfig
from training.losses import approx_gradient_penalty, relativistic_d_loss, relativistic_g_loss
from training.models import build_world_model
from training.pixel_loss import PixelLoss, pixel_loss_fn
from training.trainer import (
    Dist,
    StageParts,
    autocast,
    eval_mode,
    gaussian,
    load_generator_weights,
    load_stage_generator,
    optimizer_step,
    step_rng,
    train_parts,
    warmup_lr,
)

STAGE_DIR = "adversarial"
PERTURB_SEED_OFFSET = 7919  # R1/R2 perturbation seed = D-noise seed + this


def context_eps(rng: np.random.Generator, like: torch.Tensor, level: float
                ) -> torch.Tensor | None:
    """The context noise of a student rollout (None when the recycled frames stay clean)."""
    return gaussian(rng, like) if level > 0 else None


def d_logits(disc: Discriminator, frames: torch.Tensor, conds: torch.Tensor, t: torch.Tensor,
             gen: torch.Generator | None = None) -> torch.Tensor:
    noise = torch.randn(frames[:, :, 1:].shape, generator=gen, device=frames.device)
    return disc(frames, conds, t, noise)


def penalty(disc: Discriminator, frames: torch.Tensor, conds: torch.Tensor, t: torch.Tensor,
            sigma: float, logits: torch.Tensor, seed: int) -> torch.Tensor:
    """Approximated R1 (real) / R2 (fake): same t and D-noise, frames perturbed by sigma n."""
    gen = torch.Generator(frames.device).manual_seed(seed)
    # the perturbation has its own seeded stream (resumable; not the global RNG)
    perturb = torch.Generator(frames.device).manual_seed(seed + PERTURB_SEED_OFFSET)
    perturbed = frames + sigma * torch.randn(frames.shape, generator=perturb,
                                             device=frames.device)
    return approx_gradient_penalty(logits, d_logits(disc, perturbed, conds, t, gen))


def d_update(cfg: TrainConfig, disc: Discriminator, d_opt: torch.optim.Optimizer, step: int,
             real: torch.Tensor, real_conds: torch.Tensor, fake: torch.Tensor,
             fake_conds: torch.Tensor, t: torch.Tensor, seed: int
             ) -> dict[str, torch.Tensor]:
    """One D update on a (real, fake) pair at D-timestep ``t`` (shared by the pair)."""
    a, device = cfg.adversarial, real.device
    warmup_lr(d_opt, cfg.optim, step, a.d_lr)
    with autocast(device, cfg.run.precision):
        # real and fake get their own D-noise; R1 / R2 reuse exactly the noise of the logits
        # they perturb, so only the sigma perturbation of the frames differs
        d_real = d_logits(disc, real, real_conds, t, torch.Generator(device).manual_seed(seed))
        d_fake = d_logits(disc, fake, fake_conds, t,
                          torch.Generator(device).manual_seed(seed + 1))
        r1 = penalty(disc, real, real_conds, t, a.r1_sigma, d_real, seed)
        r2 = penalty(disc, fake, fake_conds, t, a.r1_sigma, d_fake, seed + 1)
        d_loss = relativistic_d_loss(d_real, d_fake) + a.r1_weight * (r1 + r2)
    optimizer_step(d_opt, d_loss, disc.parameters(), cfg.optim.grad_clip)
    return {"d_real": d_real.detach(), "d_fake": d_fake.detach(), "d_loss": d_loss.detach(),
            "r1": r1.detach(), "r2": r2.detach()}


def segment_update(cfg: TrainConfig, generator: WorldModel, disc: Discriminator,
                   g_opt: torch.optim.Optimizer, d_opt: torch.optim.Optimizer, step: int,
                   real: torch.Tensor, real_conds: torch.Tensor, fake: torch.Tensor,
                   fake_conds: torch.Tensor, rng: np.random.Generator,
                   paired: bool = False, pixel: PixelLoss | None = None) -> dict[str, float]:
    """``adversarial.d_steps`` D updates, then one G update, on a (real, fake) pair of latent
    sequences (B, C, K+1, h, w). Each D update draws its own D-timestep and noise; G's update
    uses the last ones. ``fake`` still carries the generator's graph (student rollout); D's
    updates detach it. ``paired``: ``real`` is the continuation ``fake`` imitates (same start,
    same commands), so the reconstruction terms apply (``pixel``: the pixel one, when on)."""
    a, device = cfg.adversarial, real.device
    for _ in range(a.d_steps):
        t = torch.from_numpy(rng.random(real.shape[0])).float().to(device)  # shared by the pair
        seed = int(rng.integers(2**31))
        d = d_update(cfg, disc, d_opt, step, real, real_conds, fake.detach(), fake_conds, t,
                     seed)

    warmup_lr(g_opt, cfg.optim, step, a.g_lr)
    disc.requires_grad_(False)  # G's loss must not touch D's gradients
    with autocast(device, cfg.run.precision):
        gen = torch.Generator(device).manual_seed(seed + 2)
        g_loss = relativistic_g_loss(d_logits(disc, real, real_conds, t, gen).detach(),
                                     d_logits(disc, fake, fake_conds, t, gen))
    recon = (fake[:, :, 1:].float() - real[:, :, 1:].float()).square().mean()
    total = g_loss + a.recon_weight * recon if paired and a.recon_weight > 0 else g_loss
    pixel_metrics = {}
    if paired and pixel is not None:
        steps_gen = torch.Generator(device).manual_seed(seed + 3)  # which steps are decoded
        with autocast(device, cfg.run.precision):
            pixel_mse = pixel(fake[:, :, 1:], real[:, :, 1:], steps_gen)
        total = total + a.pixel_weight * pixel_mse
        pixel_metrics["pixel_mse"] = pixel_mse.item()
    g_norm = optimizer_step(g_opt, total, generator.parameters(), cfg.optim.grad_clip)
    disc.requires_grad_(True)
    # Collapse watch: a D whose logits no longer vary across inputs (std -> 0) gives G nothing.
    return {"d_loss": d["d_loss"].item(), "g_loss": g_loss.item(), "r1": d["r1"].item(),
            "r2": d["r2"].item(), "g_grad_norm": g_norm.item(), "recon_mse": recon.item(),
            "d_real_minus_fake": (d["d_real"] - d["d_fake"]).mean().item(),
            "d_real_std": d["d_real"].float().std().item(),
            "d_fake_std": d["d_fake"].float().std().item(), **pixel_metrics}


def load_pretrained(cfg: TrainConfig, generator: WorldModel, backbone: WorldModel) -> None:
    """G from stage 2 (or, with run.init_from, from there: the trainer loads it); D's backbone
    from stage 1 (or adversarial.disc_init)."""
    if not cfg.run.init_from:
        load_stage_generator(cfg, "consistency", "model", generator)  # its average, if kept
    if cfg.adversarial.disc_init:
        load_generator_weights(Path(cfg.adversarial.disc_init), backbone)
    else:
        load_stage_generator(cfg, "diffusion", "model", backbone)


def build(cfg: TrainConfig, ranks: Dist, device: torch.device, data: LatentData | None = None,
          pretrained: bool = True) -> StageParts:
    if ranks.world_size > 1:
        raise NotImplementedError("stage 3 runs in one process per world for now: its "
                                  "rollouts step a KV cache, which DDP's hooks do not support")
    a = cfg.adversarial
    generator = build_world_model(cfg).to(device)
    backbone = build_world_model(cfg).to(device)
    if pretrained:
        load_pretrained(cfg, generator, backbone)
    disc = Discriminator(backbone, a.disc_layers, a.disc_queries).to(device)
    pixel = (pixel_loss_fn(cfg, device, a.pixel_steps, pretrained)
             if a.pixel_weight > 0 else None)
    betas = (0.0, a.rmsprop_alpha)
    g_opt = torch.optim.Adam(generator.parameters(), lr=a.g_lr, betas=betas)
    d_opt = torch.optim.Adam(disc.parameters(), lr=a.d_lr, betas=betas)
    # after the weights: a missing earlier stage is reported before missing data
    train, val = data or latent_datasets(cfg)
    k = a.rollout_steps

    def real_clip(rng: np.random.Generator, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = latent_batch(train, rng, cfg.run.batch_size, device)
        z, conds = batch.latents, batch.conds
        return z[:, :, :steps + 1], conds[:, :steps]

    overlap = a.segment_overlap if a.segments > 1 else 0  # clip length: TrainConfig.validate

    def rollout(rng: np.random.Generator, start: torch.Tensor, conds: torch.Tensor,
                noise: torch.Tensor, cache: KVCache | None = None
                ) -> tuple[torch.Tensor, KVCache]:
        eps = context_eps(rng, noise, a.context_noise)
        return student_rollout(generator, start, conds, noise, cache, a.context_noise, eps)

    def train_step(step: int) -> dict[str, float]:
        rng = step_rng(cfg, ranks, step)
        real, conds = real_clip(rng, k)
        noise = gaussian(rng, real[:, :, 1:])
        if not a.student_forcing:  # the ablation: teacher-forced, all frames in parallel
            fake = torch.cat([real[:, :, :1], teacher_forced(generator, real, conds, noise)],
                             dim=2)
            return segment_update(cfg, generator, disc, g_opt, d_opt, step, real, conds, fake,
                                  conds, rng, paired=True, pixel=pixel)
        frames, cache = rollout(rng, real[:, :, 0], conds, noise)
        metrics = segment_update(cfg, generator, disc, g_opt, d_opt, step, real, conds,
                                 torch.cat([real[:, :, :1], frames], 2), conds, rng,
                                 paired=True, pixel=pixel)
        for seg in range(1, a.segments):  # long-video training beyond the real clip length
            cache.detach_()  # reuse the previous segment's cache, cut its graph
            tail, tail_conds = frames[:, :, -(overlap + 1):].detach(), conds[:, k - overlap:]
            real, real_conds = real_clip(rng, k + overlap)  # fresh conditions + real sample
            conds = real_conds[:, overlap:]
            frames, cache = rollout(rng, tail[:, :, -1], conds,
                                    gaussian(rng, real[:, :, overlap + 1:]), cache)
            fake = torch.cat([tail, frames], dim=2)
            fake_conds = torch.cat([tail_conds, conds], dim=1)
            seg_metrics = segment_update(cfg, generator, disc, g_opt, d_opt, step, real,
                                         real_conds, fake, fake_conds, rng)
            metrics.update({f"{key}_seg{seg}": v for key, v in seg_metrics.items()
                            if key in ("d_loss", "g_loss")})
        return metrics

    def evaluate() -> dict[str, float]:
        """Student-forced rollout error vs the real continuation (teacher is the data)."""
        rng = np.random.default_rng(777)
        errors = []
        with eval_mode(generator):
            for _ in range(cfg.data.val_batches):
                batch = latent_batch(val, rng, cfg.run.batch_size, device)
                z, conds = batch.latents, batch.conds
                z, conds = z[:, :, :k + 1], conds[:, :k]
                frames, _ = rollout(rng, z[:, :, 0], conds, gaussian(rng, z[:, :, 1:]))
                errors.append((frames - z[:, :, 1:]).square().mean().item())
        return {"rollout_mse": float(np.mean(errors))}

    return StageParts({"generator": generator, "discriminator": disc}, {"g": g_opt, "d": d_opt},
                      train_step, evaluate,
                      units_per_step=cfg.run.batch_size * k * a.segments,
                      unit="latent_frames", trainable=list(generator.parameters()),
                      ema_module="generator")


def run(cfg: TrainConfig, ranks: Dist, device: torch.device) -> dict[str, float]:
    return train_parts(cfg, STAGE_DIR, build(cfg, ranks, device), ranks)
