"""Benchmark: the neural world as an RL environment on this machine.

    aapt-world bench env [--batch 1 8 32] [--steps 30] [--ppo-envs 8] [--ppo-steps 256]

Reports, for a world at the sizes of a training model config (``--model``: ``small`` = the
default Doom world, 128x96, dim-256 depth-8 DiT; ``dream`` = the TakeCover size, 64x48) with
the light decoder and reward/termination heads, built with ``build_world`` — RANDOM weights:
latency does not depend on weight values, and the termination head's bias is set so no episode
ends while timing:

- single env (``envs.neural.NeuralWorldEnv``): ``step`` latency p50 / p95 (action encoding,
  1 generator forward, streaming decode, heads, numpy conversion);
- natively batched env (``envs.vector.NeuralWorldVectorEnv``) at 1, 8 and 32 envs: step
  latency and throughput in video frames/s (4 frames per env step) and env steps/s, and on CPU
  the FLOPs of a step and the share of this machine's measured matmul peak they run at;
- each of these per inference precision (``--dtype fp32 bf16``: side by side in one run);
- PPO (``PPO("CnnPolicy")`` on the SB3 adapter ``envs.sb3.NeuralWorldSB3VecEnv``): environment
  steps per second of a short ``learn`` including policy inference and updates, and the share
  of wall time spent inside the neural world.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from aapt_world.cli_options import add_threads, apply_threads, command_parser
from aapt_world.conditions import ConditionConfig
from aapt_world.constants import FRAMES_PER_STEP
from aapt_world.devices import DTYPES, resolve_dtype
from aapt_world.heads import HeadsConfig
from aapt_world.report import print_report
from aapt_world.transformer import count_parameters
from aapt_world.world import World, WorldConfig, build_world
from envs.neural import NeuralWorldEnv
from envs.sb3 import NeuralWorldSB3VecEnv
from envs.vector import NeuralWorldVectorEnv
from training.bench_train import bench_config


def random_world(model: str = "small", seed: int = 0, num_start_frames: int = 4) -> World:
    """A world at the sizes of a training model config (``training/configs/model/<model>``:
    ``small`` = the default Doom world, ``dream`` = the 64x48 TakeCover size), random weights."""
    torch.manual_seed(seed)
    m = bench_config(model).model
    vae = replace(m.vae, light_decoder=True)  # the inference decoder a world ships with
    config = WorldConfig(
        vae=vae, dit=m.dit,
        condition=ConditionConfig(kind="action", action_dim=4, cond_dim=m.dit.cond_dim,
                                  hidden_dim=m.cond_hidden),
        heads=HeadsConfig(latent_channels=vae.latent_channels, action_dim=4))
    starts = np.random.default_rng(seed).integers(
        0, 256, (num_start_frames, vae.height, vae.width, 3), dtype=np.uint8)
    world = build_world(config, starts, card={"name": f"benchmark world ({model}, random "
                                                      "weights)"})
    with torch.no_grad():  # random heads would end episodes at random: keep them going
        world.heads.out[-1].bias[1] = -1e4
    return world


def _ms(times: list[float]) -> tuple[float, float]:
    arr = 1e3 * np.asarray(times)
    return float(np.median(arr)), float(np.percentile(arr, 95))


def time_single_env(world: World, steps: int, warmup: int = 5) -> dict:
    env = NeuralWorldEnv(world)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    times = []
    for i in range(warmup + steps):
        action = int(rng.integers(env.action_space.n))
        start = time.perf_counter()
        env.step(action)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    p50, p95 = _ms(times)
    return {"env": "NeuralWorldEnv", "num_envs": 1, "step_p50_ms": p50, "step_p95_ms": p95,
            "env_steps_per_s": 1e3 / p50, "video_fps": FRAMES_PER_STEP * 1e3 / p50}


def time_vector_env(world: World, num_envs: int, steps: int, warmup: int = 3,
                    peak_gflops: float | None = None) -> dict:
    """Step latency and throughput of the batched env; with ``peak_gflops`` also the FLOPs of
    one step (torch's FlopCounterMode: matmuls, convolutions, attention) and the share of the
    machine's measured matmul peak they run at."""
    venv = NeuralWorldVectorEnv(world, num_envs=num_envs)
    venv.reset(seed=0)
    venv.action_space.seed(0)
    times = []
    for i in range(warmup + steps):
        actions = venv.action_space.sample()
        start = time.perf_counter()
        venv.step(actions)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    p50, p95 = _ms(times)
    total = float(np.sum(times))
    row = {"env": "NeuralWorldVectorEnv", "num_envs": num_envs, "step_p50_ms": p50,
           "step_p95_ms": p95, "env_steps_per_s": num_envs * len(times) / total,
           "video_fps": num_envs * FRAMES_PER_STEP * len(times) / total}
    if peak_gflops:
        with FlopCounterMode(display=False) as counter:
            venv.step(venv.action_space.sample())
        row["gflop_per_step"] = counter.get_total_flops() / 1e9
        row["share_of_matmul_peak"] = row["gflop_per_step"] / (p50 / 1e3) / peak_gflops
    return row


def matmul_peak_gflops(dtype: torch.dtype, size: int = 1024, repeats: int = 20) -> float:
    """This machine's square-matmul throughput in ``dtype`` at the current thread count, GFLOP/s
    (best of ``repeats``): the ceiling the env's share is measured against."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up (oneDNN/AMX kernel selection)
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_ppo(world: World, num_envs: int, timesteps: int, n_steps: int,
             device: str = "cpu") -> dict:
    from stable_baselines3 import PPO

    venv = NeuralWorldSB3VecEnv.from_world(world, num_envs=num_envs)
    in_world = [0.0]
    step_wait = venv.step_wait

    def timed_step_wait():
        start = time.perf_counter()
        out = step_wait()
        in_world[0] += time.perf_counter() - start
        return out

    venv.step_wait = timed_step_wait
    model = PPO("CnnPolicy", venv, n_steps=n_steps, batch_size=min(64, n_steps * num_envs),
                n_epochs=1, seed=0, device=device)
    start = time.perf_counter()
    model.learn(timesteps)
    seconds = time.perf_counter() - start
    return {"env": "PPO(CnnPolicy) on NeuralWorldSB3VecEnv", "num_envs": num_envs,
            "env_steps_per_s": model.num_timesteps / seconds,
            "video_fps": FRAMES_PER_STEP * model.num_timesteps / seconds,
            "ppo_timesteps": model.num_timesteps, "ppo_n_steps": n_steps,
            "ppo_seconds": seconds, "share_in_world": in_world[0] / seconds}


def run(batches: list[int], steps: int, ppo_envs: int, ppo_steps: int, ppo_n_steps: int,
        threads: int, json_path: str | None, device: str = "cpu", model: str = "small",
        dtypes: tuple[str, ...] = ("fp32",)) -> dict:
    if threads:  # 0: keep the current count (apply_threads)
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    world = random_world(model)
    rows, peaks = [], {}
    for dtype in dtypes:  # side by side in one run: the machine is shared and noisy
        world.to(device, dtype)
        peak = matmul_peak_gflops(resolve_dtype(dtype)) if device == "cpu" else None
        peaks[dtype] = peak
        part = [time_single_env(world, steps)]
        part += [time_vector_env(world, n, max(5, steps if n <= 8 else steps // 3),
                                 peak_gflops=peak) for n in batches]
        if ppo_steps > 0:
            part.append(time_ppo(world, ppo_envs, ppo_steps, ppo_n_steps, device))
        rows += [{"dtype": dtype, **row} for row in part]
    cfg = world.config
    extra = {
        "weights": "random (latency does not depend on weight values); termination head "
                   "biased so that no episode ends while timing",
        "resolution": f"{cfg.vae.width}x{cfg.vae.height}", "threads": threads,
        "device": device, "matmul_peak_gflops": peaks,
        "generator": f"{model}: dim {cfg.dit.dim}, depth {cfg.dit.depth}, patch "
                     f"{cfg.dit.patch_size}, window {cfg.dit.window}", "decoder": "light",
        "generator_params": count_parameters(world.generator),
        "heads_params": count_parameters(world.heads),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    return print_report(f"neural world env ({cfg.vae.width}x{cfg.vae.height}, {model}, random "
                        f"weights, {device}, {threads} threads)", rows, extra, json_path)


def main(argv: list[str] | None = None) -> None:
    parser = command_parser("aapt-world bench env", "neural env throughput, batched and PPO")
    parser.add_argument("--model", default="small",
                        help="world size: a training model config (small, dream, tiny)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32],
                        help="num_envs of the batched env")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement "
                        "(a third of it for more than 8 envs)")
    parser.add_argument("--ppo-envs", type=int, default=8, help="num_envs of the PPO run")
    parser.add_argument("--ppo-steps", type=int, default=256, help="PPO timesteps (0: skip)")
    parser.add_argument("--ppo-n-steps", type=int, default=16, help="PPO rollout length")
    add_threads(parser, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (world and PPO policy)")
    parser.add_argument("--dtype", nargs="+", choices=tuple(DTYPES), default=["fp32"],
                        help="inference precisions to time side by side (bf16: AMX CPUs)")
    parser.add_argument("--json", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    run(args.batch, args.steps, args.ppo_envs, args.ppo_steps, args.ppo_n_steps, args.threads,
        args.json, args.device, args.model, tuple(args.dtype))


if __name__ == "__main__":
    main()
