"""Benchmark: training throughput of every stage on this machine (random init, no data).

    aapt-world bench train [--model small] [--threads 2] [--stages vae diffusion ...]
                           [--steps 3] [--warmup 1] [--precision fp32 bf16] [--json out.json]

Per stage, after ``--warmup`` untimed steps, the median wall time of ``--steps`` calls of the
stage's own ``train_step``, built by its ``build()`` exactly as ``aapt-world train`` builds it
(``--precision`` / ``--compile``: each ``run.precision`` / ``run.compile`` in turn, side by
side in one run; the warm-up steps pay the compile)
(models, optimizers, losses, batching), on random clips at the chosen model size (default ``small``:
128x96 video, 16x12x16 latents). Throughput is video frames/s for the VAE and latent frames/s
(one latent frame = 4 video frames) for the DiT stages; the adversarial stage counts generated
frames of one student-forced segment (rollout + one D and one G update). No dataset and no
trained model are needed: the speed does not depend on the weights' values. The decoder stage
counts video frames like the VAE (its encoder is frozen).

On a shared machine, timings with 2 threads collapse when another job runs: use ``--threads 1``
for numbers that mean something there.
"""

from __future__ import annotations

import copy
import importlib
import statistics
import time
from typing import Any

import numpy as np
import torch

from aapt_world.cli_options import add_threads, apply_threads, command_parser
from aapt_world.report import print_report
from training.config import PRECISIONS, TrainConfig
from training.dataset import Clip
from training.latents import LatentClip
from training.train import STAGE_MODULES
from training.trainer import Dist, StageParts, seed_everything

STAGES = ("vae", "decoder", "diffusion", "consistency", "adversarial", "heads")
# Per stage: (batch size, clip length in latent steps K). VAE clips are 4K + 1 video frames.
DEFAULT_SHAPES = {"vae": (2, 4), "decoder": (2, 4), "diffusion": (4, 8), "consistency": (4, 8),
                  "adversarial": (2, 8), "heads": (8, 8)}
TERMINATION_RATE = 0.05  # of the random clips' steps
CONCRETE_PRECISIONS = tuple(p for p in PRECISIONS if p != "auto")


def bench_config(model: str) -> TrainConfig:
    """The shipped hydra config of ``model`` (tiny | small | base), composed like the CLI."""
    from training.train import compose_config

    return compose_config([f"model={model}"])


class RandomClips:
    """Stands in for a stage's dataset: ``sample(rng)`` -> random clips of the right shapes
    (video frames for the VAE stages, normalised latents for the DiT stages and the heads)."""

    def __init__(self, cfg: TrainConfig, latent: bool) -> None:
        self.cfg, self.latent = cfg, latent

    def sample(self, rng: np.random.Generator) -> Clip | LatentClip:
        k, v, d = self.cfg.data.clip_steps, self.cfg.model.vae, self.cfg.model.dit
        actions = rng.uniform(-1, 1, (k, self.cfg.world.action_dim)).astype(np.float32)
        rewards = rng.standard_normal(k).astype(np.float32)
        terminated = rng.random(k) < TERMINATION_RATE
        if self.latent:
            z = rng.standard_normal((k + 1, d.latent_channels, d.latent_height, d.latent_width))
            return LatentClip(z.astype(np.float32), actions, rewards, terminated)
        frames = rng.integers(0, 256, (4 * k + 1, v.height, v.width, 3), dtype=np.uint8)
        poses = np.zeros((4 * k + 1, 0), np.float32)
        return Clip(frames, poses, actions, rewards, terminated, "random", 0)


def build_stage(stage: str, cfg: TrainConfig, batch: int, steps: int) -> StageParts:
    """The stage exactly as ``aapt-world train`` builds it, on random clips and weights."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: choose from {STAGES}")
    cfg = copy.deepcopy(cfg)
    cfg.run.batch_size, cfg.data.clip_steps = batch, steps
    cfg.adversarial.rollout_steps, cfg.adversarial.segments = steps, 1
    clips = RandomClips(cfg, latent=stage not in ("vae", "decoder"))
    module = importlib.import_module(STAGE_MODULES[stage])
    return module.build(cfg, Dist(), torch.device("cpu"), (clips, clips), pretrained=False)


def time_stage(stage: str, cfg: TrainConfig, batch: int, steps: int, timed: int,
               warmup: int) -> dict[str, Any]:
    seed_everything(0)  # also flushes denormals, as training does
    parts = build_stage(stage, cfg, batch, steps)
    for i in range(warmup):
        parts.train_step(i)
    times = []
    for i in range(warmup, warmup + timed):
        start = time.perf_counter()
        parts.train_step(i)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    video = parts.unit == "video_frames"
    return {"stage": stage, "batch": batch,
            "clip": f"{4 * steps + 1} frames" if video else f"{steps} latents",
            "params_m": sum(p.numel() for p in parts.trainable) / 1e6, "step_s": median,
            "min_step_s": min(times), "unit": parts.unit,
            "per_s": parts.units_per_step / median}


def run(model: str = "small", stages: list[str] | None = None, threads: int = 2,
        timed: int = 3, warmup: int = 1, shapes: dict[str, tuple[int, int]] | None = None,
        json_path: str | None = None, precisions: tuple[str, ...] = ("fp32",),
        compile_modes: tuple[bool, ...] = (False,)) -> dict[str, Any]:
    if threads:  # 0: keep the current count (apply_threads)
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    cfg = bench_config(model)
    shapes = {**DEFAULT_SHAPES, **(shapes or {})}
    rows = []
    for compiled in compile_modes:  # the warm-up steps pay the compile
        for precision in precisions:
            cfg.run.precision, cfg.run.compile = precision, compiled
            rows += [{"precision": precision, "compile": compiled,
                      **time_stage(s, cfg, *shapes[s], timed, warmup)}
                     for s in (stages or STAGES)]
    v = cfg.model.vae
    return print_report(
        f"training throughput per stage (model={model}, {v.width}x{v.height}, "
        f"{'/'.join(precisions)}, "
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
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=CONCRETE_PRECISIONS,
                        help="run.precision values to time side by side (bf16: AMX CPUs)")
    parser.add_argument("--compile", choices=("off", "on", "both"), default="off",
                        help="run.compile (torch.compile of the stage 1/2 forward); both: side "
                             "by side")
    parser.add_argument("--json", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]
    apply_threads(args.threads)
    shapes = {s: (args.batch or b, args.clip_steps or k) for s, (b, k) in DEFAULT_SHAPES.items()}
    run(args.model, args.stages, args.threads, args.steps, args.warmup, shapes, args.json,
        tuple(args.precision), modes)


if __name__ == "__main__":
    main()
