"""Benchmark: the streaming loop (generator step + VAE decode) on this machine.

    aapt-world bench stream [--batch 1 8] [--steps 200] [--rss-frames 100 1440 10000]

Reports, at the default model size and resolution, per latent step (4 video frames):
generator / decoder / total latency p50 and p95, video fps and real-time factor against Doom's
35 fps, the KV cache's speedup over recomputing the whole window each step (same run), model
FLOPs per step against the machine's measured fp32 matmul peak, and peak RSS after 100, 1440 and
10,000 video frames. Weights are random: latency does not depend on their values.
"""

from __future__ import annotations

import resource
import time

import numpy as np
import torch

from aapt_world.cli_options import add_threads, apply_threads, command_parser
from aapt_world.conditions import ConditionConfig
from aapt_world.constants import DOOM_FPS, FRAMES_PER_STEP
from aapt_world.report import print_report
from aapt_world.session import StreamingSession
from aapt_world.transformer import count_parameters, dit_config, step_flops
from aapt_world.vae import CausalVideoVAE, VAEConfig
from aapt_world.world_model import WorldModel


def measure_matmul_peak(size: int = 1024, repeats: int = 20) -> float:
    """Best-of fp32 GFLOP/s of a square matmul: the machine's practical peak."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(preset: str, light_decoder: bool, width: int, height: int
          ) -> tuple[WorldModel, CausalVideoVAE]:
    torch.manual_seed(0)
    dit_cfg = dit_config(preset, latent_height=height // 8, latent_width=width // 8)
    generator = WorldModel(dit_cfg, ConditionConfig(kind="action", action_dim=4,
                                                    cond_dim=dit_cfg.cond_dim)).eval()
    vae = CausalVideoVAE(VAEConfig(height=height, width=width,
                                   light_decoder=light_decoder)).eval()
    return generator, vae


def time_session(session: StreamingSession, steps: int, warmup: int = 10) -> dict[str, np.ndarray]:
    b = session.batch_size
    h, w = session.vae.cfg.height, session.vae.cfg.width
    session.reset(torch.randint(0, 256, (b, h, w, 3), dtype=torch.uint8))
    conds = torch.rand(b, FRAMES_PER_STEP, 4) * 2 - 1
    gen, dec = [], []
    for i in range(warmup + steps):
        session.step(conds)
        if i >= warmup:
            gen.append(session.timing.generator)
            dec.append(session.timing.decoder)
    return {"generator": np.array(gen), "decoder": np.array(dec)}


@torch.inference_mode()
def time_recompute(generator: WorldModel, batch: int, steps: int) -> np.ndarray:
    """Per-step latency without a KV cache: re-run the parallel forward over sink + window."""
    cfg = generator.cfg
    frames = cfg.window + 2  # sink, window past frames, the new one
    shape = (batch, cfg.latent_channels, frames, cfg.latent_height, cfg.latent_width)
    noisy, prev = torch.randn(shape), torch.randn(shape)
    cond = torch.rand(batch, frames, FRAMES_PER_STEP, 4) * 2 - 1
    times = []
    for i in range(steps + 3):
        start = time.perf_counter()
        generator(noisy, prev, cond, torch.ones(batch))
        if i >= 3:
            times.append(time.perf_counter() - start)
    return np.array(times)


def rss_after_frames(session: StreamingSession, checkpoints: list[int]) -> dict[str, float]:
    b = session.batch_size
    h, w = session.vae.cfg.height, session.vae.cfg.width
    session.reset(torch.randint(0, 256, (b, h, w, 3), dtype=torch.uint8))
    conds = torch.rand(b, FRAMES_PER_STEP, 4) * 2 - 1
    out, frames = {}, 1
    for target in sorted(checkpoints):
        while frames < target:
            session.step(conds)
            frames += FRAMES_PER_STEP
        out[f"rss_mb_after_{target}_frames"] = peak_rss_mb()
    return out


def run(batches: list[int], steps: int, rss_frames: list[int], preset: str, width: int,
        height: int, threads: int, json_path: str | None) -> dict:
    if threads:  # 0: keep the current count (apply_threads)
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    peak = measure_matmul_peak()
    generator, vae = build(preset, light_decoder=True, width=width, height=height)
    _, full_vae = build(preset, light_decoder=False, width=width, height=height)
    flops = step_flops(generator.cfg)
    rows = []
    for batch in batches:
        for decoder_name, model in (("light", vae), ("full", full_vae)):
            session = StreamingSession(generator, model, batch_size=batch)
            t = time_session(session, steps)
            total = t["generator"] + t["decoder"]
            p50 = float(np.median(total))
            rows.append({
                "batch": batch, "decoder": decoder_name,
                "gen_p50_ms": 1e3 * float(np.median(t["generator"])),
                "gen_p95_ms": 1e3 * float(np.percentile(t["generator"], 95)),
                "dec_p50_ms": 1e3 * float(np.median(t["decoder"])),
                "dec_p95_ms": 1e3 * float(np.percentile(t["decoder"], 95)),
                "total_p50_ms": 1e3 * p50,
                "total_p95_ms": 1e3 * float(np.percentile(total, 95)),
                "video_fps": batch * FRAMES_PER_STEP / p50,
                "realtime_factor_per_stream": FRAMES_PER_STEP / p50 / DOOM_FPS,
                "gen_gflops_per_s": batch * flops / float(np.median(t["generator"])) / 1e9,
            })
    recompute = time_recompute(generator, 1, max(10, steps // 4))
    cached = next(r for r in rows if r["batch"] == 1)["gen_p50_ms"] / 1e3
    session = StreamingSession(generator, vae, batch_size=1)
    extra = {
        "preset": preset, "resolution": f"{width}x{height}", "threads": threads,
        "generator_params": count_parameters(generator),
        "vae_encoder_params": count_parameters(vae.encoder),
        "vae_decoder_params": {"light": count_parameters(vae.decoder),
                               "full": count_parameters(full_vae.decoder)},
        "generator_flops_per_step": flops,
        "matmul_peak_gflops": peak,
        "generator_fraction_of_peak_b1": flops / cached / 1e9 / peak,
        "recompute_window_p50_ms": 1e3 * float(np.median(recompute)),
        "kv_cache_speedup": float(np.median(recompute)) / cached,
        "kv_cache_mb_b1": session.generator.init_cache(1).nbytes / 2**20,
        **rss_after_frames(session, rss_frames),
    }
    return print_report(f"streaming loop ({preset} generator, {width}x{height}, "
                        f"{threads} threads, fp32)", rows, extra, json_path)


def main(argv: list[str] | None = None) -> None:
    parser = command_parser("aapt-world bench stream",
                            "streaming session speed and memory (random weights)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8],
                        help="stream batch sizes to time")
    parser.add_argument("--steps", type=int, default=200, help="timed latent steps")
    parser.add_argument("--rss-frames", type=int, nargs="+", default=[100, 1440, 10000],
                        help="video frames after which resident memory is read")
    parser.add_argument("--preset", default="small", help="DiT preset: tiny | small | base")
    parser.add_argument("--width", type=int, default=128, help="video width")
    parser.add_argument("--height", type=int, default=96, help="video height")
    add_threads(parser, default=2)
    parser.add_argument("--json", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    run(args.batch, args.steps, args.rss_frames, args.preset, args.width, args.height,
        args.threads, args.json)


if __name__ == "__main__":
    main()
