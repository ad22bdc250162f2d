"""Benchmark: real-world data collection throughput, frames/s including writing to disk.

    aapt-world bench collect [--episodes 8] [--steps 250] [--workers 1 2]
"""

from __future__ import annotations

import tempfile

from aapt_world.cli_options import command_parser
from aapt_world.report import print_report
from training.collect import CollectConfig, collect


def run(episodes: int, steps: int, workers: list[int], json_path: str | None = None) -> dict:
    rows = []
    for n in workers:
        with tempfile.TemporaryDirectory(prefix="aapt-bench-collect-") as root:
            cfg = CollectConfig(root=root, num_episodes=episodes, steps_per_episode=steps,
                                workers=n)
            summary = collect(cfg, progress=False)
        rows.append({"workers": n, "episodes": episodes, "frames": summary["recorded_frames"],
                     "seconds": summary["seconds"], "frames_per_s": summary["frames_per_second"],
                     "resolution": f"{cfg.width}x{cfg.height}"})
    return print_report("collection throughput (ViZDoom, render + resize + policy + write)",
                        rows, json_path=json_path)


def main(argv: list[str] | None = None) -> None:
    parser = command_parser("aapt-world bench collect", "real-game collection throughput")
    parser.add_argument("--episodes", type=int, default=8, help="episodes per measurement")
    parser.add_argument("--steps", type=int, default=250, help="steps (4 frames) per episode")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker-process counts to measure")
    parser.add_argument("--json", default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    run(args.episodes, args.steps, args.workers, args.json)


if __name__ == "__main__":
    main()
