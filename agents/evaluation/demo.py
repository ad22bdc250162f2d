"""The main job (``aapt-world demo`` / ``make demo``): the shipped neural Doom, headless.

``--world <a pose world>`` (e.g. ``worlds/humanoid``) runs the same for the humanoid: one
scripted performance in the real MuJoCo env and in the world, side by side, with pose
following (``agents.evaluation.pose_following``).

A scripted explorer plays the real ViZDoom for 1440 frames; the neural world starts from the
same real start frame and is driven with the same commands; the two are written side by side to
an mp4 (real | generated) and compared (the drift evaluation of ``agents.evaluation.drift`` on
one run).
Prints a summary: generation speed, step latency and the drift numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from aapt_world.cli_options import add_threads, apply_threads, command_parser
from aapt_world.world import peek_config
from agents.evaluation.drift import fmt, run_drift
from envs import DEFAULT_WORLD


def summary_lines(report: dict[str, Any]) -> list[str]:
    family, res = next(iter(report["families"].items()))
    ev = res["generators"]["neural"]
    stats = ev["stats"]
    af = ev["action_following"]
    late = ", ".join(f"{k} {s['late_mean']:.1f} (real 5-95 %: {s['real_p5']:.1f}-"
                     f"{s['real_p95']:.1f}, {100 * s['late_in_range']:.0f} % of late frames in)"
                     for k, s in stats.items())
    return [
        f"world:      {report['world']} ({ev.get('nfe', 1)} NFE per 4 video frames), "
        f"{report['width']}x{report['height']}, map {report['map']}",
        f"rollout:    {res['frames']} video frames ({family}), real and neural from the same "
        f"start frame and commands",
        f"speed:      {ev['fps']:.1f} video fps = real-time factor {ev['rtf']:.2f} at 35 fps; "
        f"step latency p50 {ev['latency_ms_p50']:.1f} ms, p95 {ev['latency_ms_p95']:.1f} ms "
        f"(4 frames per step)",
        f"fidelity:   PSNR {fmt(ev['psnr_buckets'][0])} dB (first 10 %) -> "
        f"{fmt(ev['psnr_buckets'][-1])} dB (last 10 %), SSIM {fmt(ev['ssim_buckets'][0], '.3f')}"
        f" -> {fmt(ev['ssim_buckets'][-1], '.3f')}",
        f"drift:      late-window (last 30 %) means: {late}",
        f"flicker:    {fmt(ev['flicker']['neural'])} vs real {fmt(ev['flicker']['real'])} "
        f"(ratio {fmt(ev['flicker']['ratio'])})",
        f"actions:    yaw sign accuracy {fmt(af['neural']['sign_accuracy'])}, correlation "
        f"{fmt(af['neural']['pearson'])} (estimator on real frames: "
        f"{fmt(af['real_video']['sign_accuracy'])} / {fmt(af['real_video']['pearson'])})",
        f"video:      {report['video']}  (left real ViZDoom, right neural world)",
    ]


def pose_demo(args: argparse.Namespace) -> dict[str, Any]:
    from agents.evaluation.pose_following import (
        PoseFollowingConfig,
        run_pose_following,
        summary_lines,
    )

    report = run_pose_following(PoseFollowingConfig(world=args.world, steps=args.steps,
                                                    performances=1, seed=args.seed,
                                                    out=args.out))
    print("\n".join(["", "== aapt-world demo ==", *summary_lines(report),
                     f"report:     {Path(args.out) / 'report.md'} (+ report.json, strip.png)"]))
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = command_parser("aapt-world demo", __doc__.split("\n")[0])
    parser.add_argument("--world", default=str(DEFAULT_WORLD), help="world directory")
    parser.add_argument("--steps", type=int, default=360, help="steps of 4 frames (360 = 1440)")
    parser.add_argument("--out", default="outputs/demo",
                        help="output directory (report.md/json, plots, mp4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and the route")
    parser.add_argument("--map", default=None, help="Doom map (None: the world card's)")
    add_threads(parser)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    apply_threads(args.threads)
    if Path(args.world).is_dir() and peek_config(args.world).condition.kind == "pose":
        return pose_demo(args)
    report = run_drift(args.world, families=[], long_steps=args.steps, out=args.out, video=True,
                       seed=args.seed, doom_map=args.map)
    print("\n".join(["", "== aapt-world demo ==", *summary_lines(report),
                     f"report:     {Path(args.out) / 'report.md'} (+ report.json, plots)"]))
    return report
