"""Benchmark: training throughput of every stage on this machine (fp32, random init, no data).

    aapt-world bench train [--model small] [--threads 2] [--stages vae diffusion ...]
                           [--steps 3] [--warmup 1] [--json out.json]

Per stage, after ``--warmup`` untimed steps, the median wall time of ``--steps`` optimizer steps
of the SAME loss and update functions the stages train with (imported from
``training.stages.*``), on random frames / latents at the chosen model size (default ``small``:
128x96 video, 16x12x16 latents). Throughput is video frames/s for the VAE and latent frames/s
(one latent frame = 4 video frames) for the DiT stages; the adversarial stage counts generated
frames of one student-forced segment (rollout + one D and one G update). No dataset and no
trained model are needed: the speed does not depend on the weights' values.

On a shared machine, timings with 2 threads collapse when another job runs: use ``--threads 1``
for numbers that mean something there.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from aapt_world.cli_options import add_threads, apply_threads, command_parser
from aapt_world.discriminator import Discriminator
from aapt_world.report import print_report
from training.config import TrainConfig
from training.losses import euler_schedule, reconstruction_loss, shift_timesteps
from training.models import build_world_model
from training.stages.adversarial import segment_update, student_rollout
from training.stages.consistency import consistency_loss
from training.stages.diffusion import diffusion_loss
from training.stages.heads import build_heads, heads_losses
from training.stages.vae import VAEPair
from training.trainer import adamw, seed_everything, warmup_lr

STAGES = ("vae", "diffusion", "consistency", "adversarial", "heads")
# Per stage: (batch size, clip length in latent steps K). VAE clips are 4K + 1 video frames.
DEFAULT_SHAPES = {"vae": (2, 4), "diffusion": (4, 8), "consistency": (4, 8),
                  "adversarial": (2, 8), "heads": (8, 8)}


def bench_config(model: str) -> TrainConfig:
    """The shipped hydra config of ``model`` (tiny | small | base), composed like the CLI."""
    from hydra import compose, initialize_config_module
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    with initialize_config_module("training.configs", version_base="1.3"):
        cfg = OmegaConf.to_object(compose("train", overrides=[f"model={model}"]))
    assert isinstance(cfg, TrainConfig)
    return cfg


def _optimizer_step(opt: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                    loss: torch.Tensor, clip: float | None) -> None:
    """What every stage's train_step does after its loss."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def _latents(cfg: TrainConfig, batch: int, steps: int, g: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    d = cfg.model.dit
    z = torch.randn(batch, d.latent_channels, steps + 1, d.latent_height, d.latent_width,
                    generator=g)
    conds = torch.rand(batch, steps, 4, cfg.world.action_dim, generator=g) * 2 - 1
    return z, conds


StepFn = Callable[[int], None]
Built = tuple[StepFn, list[torch.nn.Parameter]]


def _vae_step(cfg: TrainConfig, batch: int, steps: int, g: torch.Generator) -> Built:
    pair = VAEPair(cfg)
    params = list(pair.parameters())
    opt = adamw(cfg, params)
    v = cfg.model.vae
    video = torch.rand(batch, 3, 4 * steps + 1, v.height, v.width, generator=g) * 2 - 1

    def step(i: int) -> None:
        warmup_lr(opt, cfg.optim, i)
        recon, light_recon, posterior = pair(video)
        loss = (reconstruction_loss(cfg, recon, video)["total"]
                + reconstruction_loss(cfg, light_recon, video)["total"]
                + cfg.vae.kl_weight * posterior.kl())
        _optimizer_step(opt, params, loss, cfg.optim.grad_clip)

    return step, params


def _diffusion_step(cfg: TrainConfig, batch: int, steps: int, g: torch.Generator) -> Built:
    z, conds = _latents(cfg, batch, steps, g)
    model = build_world_model(cfg)
    params = list(model.parameters())
    opt = adamw(cfg, params)

    def step(i: int) -> None:
        warmup_lr(opt, cfg.optim, i)
        t = shift_timesteps(torch.rand(batch, generator=g), cfg.diffusion.timestep_shift)
        _optimizer_step(opt, params, diffusion_loss(model, z, conds, t), cfg.optim.grad_clip)

    return step, params


def _consistency_step(cfg: TrainConfig, batch: int, steps: int, g: torch.Generator) -> Built:
    z, conds = _latents(cfg, batch, steps, g)
    teacher = build_world_model(cfg).eval().requires_grad_(False)
    model = build_world_model(cfg)
    params = list(model.parameters())
    opt = adamw(cfg, params)
    c = cfg.consistency
    schedule = euler_schedule(c.teacher_steps, c.timestep_shift)

    def step(i: int) -> None:
        warmup_lr(opt, cfg.optim, i)
        n = torch.randint(0, c.teacher_steps, (batch,), generator=g)
        loss = consistency_loss(model, teacher, z, conds, n, schedule, c.loss)
        _optimizer_step(opt, params, loss, cfg.optim.grad_clip)

    return step, params


def _adversarial_step(cfg: TrainConfig, batch: int, steps: int, g: torch.Generator) -> Built:
    z, conds = _latents(cfg, batch, steps, g)
    a = cfg.adversarial
    model = build_world_model(cfg)
    disc = Discriminator(build_world_model(cfg), a.disc_layers, a.disc_queries)
    params = list(model.parameters())
    betas = (0.0, a.rmsprop_alpha)
    g_opt = torch.optim.Adam(params, lr=a.g_lr, betas=betas)
    d_opt = torch.optim.Adam(disc.parameters(), lr=a.d_lr, betas=betas)
    rng = np.random.default_rng(0)

    def step(i: int) -> None:
        noise = torch.randn(z[:, :, 1:].shape, generator=g)
        frames, _ = student_rollout(model, z[:, :, 0], conds, noise)
        fake = torch.cat([z[:, :, :1], frames], dim=2)
        segment_update(cfg, model, disc, g_opt, d_opt, i, z, conds, fake, conds, rng)

    return step, params


def _heads_step(cfg: TrainConfig, batch: int, steps: int, g: torch.Generator) -> Built:
    z, conds = _latents(cfg, batch, steps, g)
    model = build_heads(cfg)
    params = list(model.parameters())
    opt = adamw(cfg, params)
    rewards = torch.randn(batch, steps, generator=g)
    terminated = (torch.rand(batch, steps, generator=g) < 0.05).float()

    def step(i: int) -> None:
        warmup_lr(opt, cfg.optim, i)
        loss = heads_losses(cfg, model, z, conds, rewards, terminated)["loss"]
        _optimizer_step(opt, params, loss, None)

    return step, params


STEP_BUILDERS = {"vae": _vae_step, "diffusion": _diffusion_step,
                 "consistency": _consistency_step, "adversarial": _adversarial_step,
                 "heads": _heads_step}


def make_step(stage: str, cfg: TrainConfig, batch: int, steps: int
              ) -> tuple[StepFn, int, str, int]:
    """-> (step function, units per step, unit, trainable parameters) of one stage."""
    if stage not in STEP_BUILDERS:
        raise ValueError(f"unknown stage {stage!r}: choose from {STAGES}")
    step, params = STEP_BUILDERS[stage](cfg, batch, steps, torch.Generator().manual_seed(0))
    units, unit = ((batch * (4 * steps + 1), "video_frames") if stage == "vae"
                   else (batch * steps, "latent_frames"))
    return step, units, unit, sum(p.numel() for p in params)


def time_stage(stage: str, cfg: TrainConfig, batch: int, steps: int, timed: int,
               warmup: int) -> dict[str, Any]:
    seed_everything(0)  # also flushes denormals, as training does
    step, units, unit, n_params = make_step(stage, cfg, batch, steps)
    for i in range(warmup):
        step(i)
    times = []
    for i in range(warmup, warmup + timed):
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"stage": stage, "batch": batch,
            "clip": f"{4 * steps + 1} frames" if stage == "vae" else f"{steps} latents",
            "params_m": n_params / 1e6, "step_s": median, "min_step_s": min(times),
            "unit": unit, "per_s": units / median}


def run(model: str = "small", stages: list[str] | None = None, threads: int = 2,
        timed: int = 3, warmup: int = 1, shapes: dict[str, tuple[int, int]] | None = None,
        json_path: str | None = None) -> dict[str, Any]:
    if threads:  # 0: keep the current count (apply_threads)
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    cfg = bench_config(model)
    shapes = {**DEFAULT_SHAPES, **(shapes or {})}
    rows = [time_stage(s, cfg, *shapes[s], timed, warmup) for s in (stages or STAGES)]
    v = cfg.model.vae
    return print_report(
        f"training throughput per stage (model={model}, {v.width}x{v.height}, fp32, "
        f"{threads} thread{'s' if threads > 1 else ''}, median of {timed} steps after "
        f"{warmup} warm-up)", rows, json_path=json_path)


def main(argv: list[str] | None = None) -> None:
    parser = command_parser("aapt-world bench train", "training step time of every stage")
    parser.add_argument("--model", default="small", help="model config: tiny | small | base")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES,
                        help="stages to time")
    add_threads(parser, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed optimizer steps per stage")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=None, help="batch size for every stage")
    parser.add_argument("--clip-steps", type=int, default=None,
                        help="latent steps K per clip for every stage (VAE: 4K + 1 frames)")
    parser.add_argument("--json", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    shapes = {s: (args.batch or b, args.clip_steps or k) for s, (b, k) in DEFAULT_SHAPES.items()}
    run(args.model, args.stages, args.threads, args.steps, args.warmup, shapes, args.json)


if __name__ == "__main__":
    main()
