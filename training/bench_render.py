"""Benchmark: the real humanoid env's rendering throughput (issue 11's >= 200 frames/s target).

    aapt-world bench render [--steps 120] [--msaa 0 4] [--size 128x96 64x48]

The performer drives ``HumanoidEnv`` (pose, kinematics, OSMesa render of 4 video frames per
step, keypoint projection); each setting is measured in the same process, one after the other,
so the ratio between settings survives a noisy machine better than the absolute numbers.
"""

from __future__ import annotations

import time

import numpy as np

from aapt_world.cli_options import command_parser
from aapt_world.constants import FRAMES_PER_STEP
from aapt_world.report import print_report
from envs.humanoid import HumanoidConfig, HumanoidEnv
from envs.motions import PerformerPolicy

WARMUP_STEPS = 5  # the GL context's first frames compile shaders


def measure(config: HumanoidConfig, steps: int, seed: int = 0) -> dict:
    env = HumanoidEnv(config)
    policy = PerformerPolicy()
    policy.reset(np.random.default_rng(seed))
    env.reset(seed=seed)
    try:
        for _ in range(WARMUP_STEPS):
            env.step(policy.act())
        start = time.perf_counter()
        for _ in range(steps):
            env.step(policy.act())
        seconds = time.perf_counter() - start
    finally:
        env.close()
    frames = steps * FRAMES_PER_STEP
    return {"resolution": f"{config.width}x{config.height}", "msaa_samples": config.msaa_samples,
            "frames": frames, "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 1)}


def run(steps: int, msaa: list[int], sizes: list[str], json_path: str | None = None) -> dict:
    rows = []
    for size in sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        for samples in msaa:
            rows.append(measure(HumanoidConfig(width=width, height=height, msaa_samples=samples),
                                steps))
    return print_report("humanoid env rendering (performer, pose + OSMesa render + keypoints)",
                        rows, json_path=json_path)


def main(argv: list[str] | None = None) -> None:
    parser = command_parser("aapt-world bench render", "real humanoid env render throughput")
    parser.add_argument("--steps", type=int, default=120, help="timed steps (4 frames each)")
    parser.add_argument("--msaa", type=int, nargs="+", default=[0, 4],
                        help="multisample counts to compare (MuJoCo's own default is 4)")
    parser.add_argument("--size", nargs="+", default=["128x96"], help="frame sizes, WxH")
    parser.add_argument("--json", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    run(args.steps, args.msaa, args.size, args.json)


if __name__ == "__main__":
    main()
