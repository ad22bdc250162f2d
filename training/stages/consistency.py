"""Stage 2, consistency distillation: the stage-1 teacher into a generator usable at 1 step.

Discrete-time consistency distillation (improved consistency models, no EMA target, no CFG):
with the shifted schedule ``1 = t_0 > t_1 > ... > t_N = 0`` (N = 32), pick n per clip, noise the
clip to ``t_n``, let the frozen teacher take one Euler step to ``t_{n+1}``, and pull the
student's clean estimate ``f(x, t) = x - t v(x, t)`` at ``t_n`` toward its own (stop-gradient)
estimate at ``t_{n+1}``. ``f(x, 0) = x`` holds by construction. Teacher forcing, all positions
in parallel, one t per clip, like stage 1. At inference the student is fed t = 1 only.

The output is blurry by design: it only initialises stage 3.
"""

from __future__ import annotations

import numpy as np
import torch

from training.batches import LatentData, latent_batch, latent_datasets
from training.config import TrainConfig
from training.losses import add_noise, euler_schedule, pseudo_huber
from training.models import build_world_model
from training.trainer import (
    Dist,
    StageParts,
    adamw,
    autocast,
    eval_mode,
    load_stage_generator,
    maybe_compile,
    optimizer_step,
    step_rng,
    train_parts,
    warmup_lr,
    wrap_distributed,
)

STAGE_DIR = "consistency"


def clean_estimate(model: torch.nn.Module, x_t: torch.Tensor, prev: torch.Tensor,
                   conds: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """f(x_t, t) = x_t - t v(x_t, t): the model's estimate of x0."""
    return x_t - t.view(-1, 1, 1, 1, 1) * model(x_t, prev, conds, t)


def guided_velocity(model: torch.nn.Module, x: torch.Tensor, prev: torch.Tensor,
                    conds: torch.Tensor, t: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance of a whole clip: v_null + w (v_cond - v_null) (w = 1: v_cond),
    both in one batched call."""
    if guidance == 1.0:
        return model(x, prev, conds, t)
    b = x.shape[0]
    null = torch.arange(2 * b, device=x.device) >= b
    v_cond, v_null = model(torch.cat([x, x]), torch.cat([prev, prev]), torch.cat([conds, conds]),
                           torch.cat([t, t]), null=null).chunk(2)
    return v_null + guidance * (v_cond - v_null)


def consistency_loss(student: torch.nn.Module, teacher: torch.nn.Module, z: torch.Tensor,
                     conds: torch.Tensor, n: torch.Tensor, schedule: torch.Tensor,
                     metric: str, generator: torch.Generator | None = None,
                     guidance: float = 1.0) -> torch.Tensor:
    """The student's clean estimate at t_hi against its own at the teacher's one Euler step
    down to t_lo; ``guidance`` != 1 distills the classifier-free-guided teacher (its stage 1
    trained with ``diffusion.cond_dropout``)."""
    prev, x0 = z[:, :, :-1], z[:, :, 1:]
    t_hi, t_lo = schedule[n], schedule[n + 1]
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_hi = add_noise(x0, eps, t_hi)
    with torch.no_grad():
        v_teacher = guided_velocity(teacher, x_hi, prev, conds, t_hi, guidance)
        x_lo = x_hi + (t_lo - t_hi).view(-1, 1, 1, 1, 1) * v_teacher  # one Euler step
        target = clean_estimate(student, x_lo, prev, conds, t_lo)
    pred = clean_estimate(student, x_hi, prev, conds, t_hi)
    if metric == "l2":
        return (pred - target).square().mean()
    return pseudo_huber(pred.flatten(1), target.flatten(1))


def build(cfg: TrainConfig, ranks: Dist, device: torch.device, data: LatentData | None = None,
          pretrained: bool = True) -> StageParts:
    teacher = build_world_model(cfg).to(device).eval().requires_grad_(False)
    student = build_world_model(cfg).to(device)
    if pretrained:
        load_stage_generator(cfg, "diffusion", "model", teacher)  # its average, if kept
    student.load_state_dict(teacher.state_dict())  # resume overrides it if a run exists
    # after the weights: a missing earlier stage is reported before missing data
    train, val = data or latent_datasets(cfg)
    ddp = wrap_distributed(student, ranks, fsdp=cfg.run.fsdp)
    student_fwd, teacher_fwd = (maybe_compile(m, cfg.run.compile) for m in (ddp, teacher))
    opt = adamw(cfg, student.parameters())
    c = cfg.consistency
    schedule = euler_schedule(c.teacher_steps, c.timestep_shift, device)

    def train_step(step: int) -> dict[str, torch.Tensor]:
        warmup_lr(opt, cfg.optim, step)
        rng = step_rng(cfg, ranks, step)
        batch = latent_batch(train, rng, cfg.run.batch_size, device)
        z, conds = batch.latents, batch.conds
        n = torch.from_numpy(rng.integers(0, c.teacher_steps, z.shape[0])).to(device)
        with autocast(device, cfg.run.precision):
            loss = consistency_loss(student_fwd, teacher_fwd, z, conds, n, schedule, c.loss,
                                    guidance=c.guidance)
        grad_norm = optimizer_step(opt, loss, student.parameters(), cfg.optim.grad_clip)
        return {"loss": loss.detach(), "grad_norm": grad_norm}

    def evaluate() -> dict[str, float]:
        """One-step (t = 1) teacher-forced x0 error on validation clips."""
        rng = np.random.default_rng(777)
        gen = torch.Generator(device).manual_seed(777)
        errors = []
        with eval_mode(student):
            for _ in range(cfg.data.val_batches):
                batch = latent_batch(val, rng, cfg.run.batch_size, device)
                z, conds = batch.latents, batch.conds
                prev, x0 = z[:, :, :-1], z[:, :, 1:]
                eps = torch.randn(x0.shape, generator=gen, device=device)
                t = torch.ones(z.shape[0], device=device)
                errors.append((clean_estimate(student, eps, prev, conds, t) - x0)
                              .square().mean().item())
        return {"one_step_mse": float(np.mean(errors))}

    return StageParts({"model": student}, {"opt": opt}, train_step, evaluate,
                      units_per_step=cfg.run.batch_size * cfg.data.clip_steps,
                      unit="latent_frames", trainable=list(student.parameters()),
                      ema_module="model")


def run(cfg: TrainConfig, ranks: Dist, device: torch.device) -> dict[str, float]:
    return train_parts(cfg, STAGE_DIR, build(cfg, ranks, device), ranks)
