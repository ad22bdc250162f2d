"""Pose following: does a neural humanoid world draw the body it is told to (issue 11)?

Scripted performances (the performer, new seeds) play in the REAL humanoid env and, from the
same real start frame, in the neural world conditioned on the real run's per-frame 2D
keypoints. Measured on every generated frame, next to baselines on the same frames:

- keypoint error (pixels): the pose probe read off the generated frame vs the commanded
  keypoints; the probe's own error on the real frames is the ceiling, and the probe on the
  frozen start frame is what a still picture scores;
- PSNR / SSIM against the real render of the same poses, with the frozen start frame's;
- late-window brightness / saturation / HF energy inside the real 5-95 % range;
- speed: generated video frames per second at batch 1 (step + decode).

    aapt-world pose-follow --world runs/humanoid/world   # the shipped probe by default

Writes report.json, report.md, a real-above-neural strip (frames 0, 4, 40, 400, 1400) and a
side-by-side mp4 of the first performance under ``--out``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from aapt_world import metrics as M
from aapt_world.cli_options import add_threads, apply_threads, command_parser
from aapt_world.constants import FRAMES_PER_STEP, HUMANOID_FPS
from aapt_world.report import print_report
from aapt_world.video import write_mp4
from aapt_world.world import World, load_world
from agents.evaluation.ladder import STRIP_FRAMES, decode_latents, encode_latents, strip
from agents.evaluation.pose_probe import PoseProbe, keypoint_error, load_probe, predict
from envs import DEFAULT_HUMANOID_WORLD
from envs.humanoid import HUMANOID_SCENES, HumanoidConfig, HumanoidEnv, condition_keypoints
from envs.motions import PerformerPolicy

# the probe trained on 16 real episodes (fp16, shipped beside the humanoid VAE)
DEFAULT_PROBE = Path(__file__).parents[2] / "worlds/humanoid-training/pose_probe.safetensors"
N_BUCKETS = 10
LATE_FRACTION = 0.3  # as the Doom drift report: the last 30 % of the frames
SEED_OFFSET = 1000  # performer seeds the collector never draws (it uses 0 .. episodes-1)
BODY_MARGIN_PX = 6  # the body's box: the keypoints' box grown by this (limbs and head reach
# past their joints at 128x96); PSNR inside and outside it says where a world loses the frame
KEYPOINT_FACTOR = 2.0  # target: generated keypoint error <= 2 x the probe's error on real frames
PSNR_MARGIN_DB = 3.0  # target: PSNR >= frozen start frame + 3 dB


@dataclass
class PoseFollowingConfig:
    world: str = str(DEFAULT_HUMANOID_WORLD)
    probe: str = str(DEFAULT_PROBE)
    steps: int = 360  # 1440 video frames
    performances: int = 3
    long_minutes: float = 0.0  # plus one performance this long (5 = 9000 frames at 30 fps)
    scene: str = "fixed"
    seed: int = 0
    device: str = "cpu"
    out: str = "outputs/pose_following"
    progress: bool = True


@dataclass
class RealPerformance:
    frames: np.ndarray  # (1 + 4 S, H, W, 3) uint8, the reset frame first
    keypoints: np.ndarray  # (1 + 4 S, K, 2) pixels of the commanded body
    floor: np.ndarray  # (1 + 4 S, 2) pixels of the floor anchor (envs.humanoid)

    def conditions(self, floor_anchor: bool) -> np.ndarray:
        """(1 + 4 S, K (+1), 2): what a pose world is conditioned on, per video frame."""
        return condition_keypoints({"keypoints_2d": self.keypoints, "floor_2d": self.floor},
                                   floor_anchor)


def real_performance(steps: int, scene: str, width: int, height: int, seed: int,
                     progress: bool = False) -> RealPerformance:
    """The performer (seeded) for ``steps`` steps in the real humanoid env."""
    env = HumanoidEnv(HumanoidConfig(width=width, height=height,
                                     orbit_deg_per_s=HUMANOID_SCENES[scene]))
    performer = PerformerPolicy()
    performer.reset(np.random.default_rng(seed))
    try:
        frame, info = env.reset(seed=seed)
        frames, keypoints, floor = [frame], [info["keypoints_2d"][:1]], [info["floor_2d"][:1]]
        for _ in tqdm(range(steps), desc="real", leave=False, disable=not progress):
            _, _, _, _, info = env.step(performer.act())
            frames.extend(info["frames"])
            keypoints.append(info["keypoints_2d"])
            floor.append(info["floor_2d"])
    finally:
        env.close()
    return RealPerformance(np.stack(frames), np.concatenate(keypoints).astype(np.float32),
                           np.concatenate(floor).astype(np.float32))


def neural_performance(world: World, real: RealPerformance, seed: int, progress: bool = False,
                       recycled: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The world from the real start frame, conditioned on the real run's keypoints. Returns
    (frames (1 + 4 S, H, W, 3) uint8, wall seconds of each step). ``recycled``: the real
    frames' normalised latents (1, C, 1 + S, h, w): teacher forcing, each step generated from
    the REAL previous latent (one-step quality, no drift)."""
    session = world.session(1)
    first = session.reset(torch.from_numpy(np.ascontiguousarray(real.frames[0])[None]),
                          seeds=[seed])
    out, seconds = [first[0].cpu().numpy()], []
    conditions = real.conditions(world.config.condition.floor_anchor)
    per_step = torch.from_numpy(conditions[1:]).view(-1, FRAMES_PER_STEP, *conditions.shape[1:])
    for k, conds in enumerate(tqdm(per_step, desc="neural", leave=False,
                                   disable=not progress)):
        t0 = time.perf_counter()
        frames = session.step(conds[None].to(world.device),
                              None if recycled is None else recycled[:, :, k])
        if frames.is_cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
        out.extend(frames[0].cpu().numpy())
    return np.stack(out), np.asarray(seconds)


def body_masks(keypoints: np.ndarray, height: int, width: int,
               margin: float = BODY_MARGIN_PX) -> np.ndarray:
    """(T, H, W) bool: each frame's box around its keypoints (T, K, 2) as (column, row) px,
    grown by ``margin``."""
    lo, hi = keypoints.min(axis=1) - margin, keypoints.max(axis=1) + margin  # (T, 2)
    cols, rows = np.arange(width)[None, None, :], np.arange(height)[None, :, None]
    return ((cols >= lo[:, 0, None, None]) & (cols <= hi[:, 0, None, None])
            & (rows >= lo[:, 1, None, None]) & (rows <= hi[:, 1, None, None]))


def evaluate(real: RealPerformance, neural: np.ndarray, probe: PoseProbe,
             n_buckets: int = N_BUCKETS, vae_frames: np.ndarray | None = None,
             teacher_forced: np.ndarray | None = None) -> dict[str, Any]:
    """Every metric of one performance (frame 0, the shared start frame, excluded).
    ``vae_frames``: the real frames through the world's own VAE (encoder, then the decoder the
    session streams with), the PSNR ceiling of a perfect generator. ``teacher_forced``: the
    world's frames generated each from the real previous latent (``neural_performance`` with
    ``recycled``): its one-step quality; the gap to ``neural`` is what free running costs."""
    rf, nf, kp = real.frames[1:], neural[1:], real.keypoints[1:]
    frozen = np.broadcast_to(neural[:1], nf.shape)
    err = {"neural": keypoint_error(predict(probe, nf), kp),
           "real": keypoint_error(predict(probe, rf), kp),  # the probe's ceiling
           "frozen": keypoint_error(np.broadcast_to(predict(probe, neural[:1]), kp.shape), kp)}
    seen = {"neural": nf, "frozen": frozen}
    if vae_frames is not None:
        seen["vae"] = vae_frames[1:]
    if teacher_forced is not None:
        seen["teacher_forced"] = teacher_forced[1:]
    psnr = {k: M.psnr(v, rf) for k, v in seen.items()}
    body = body_masks(kp, *rf.shape[1:3])
    region_psnr = {region: {k: float(np.nanmean(M.masked_psnr(v, rf, mask)))
                            for k, v in seen.items()}
                   for region, mask in (("body", body), ("background", ~body))}
    rstats, nstats = M.frame_stats(rf), M.frame_stats(nf)
    late_in_range = {name: M.fraction_in_range(M.late_window(nstats[name], LATE_FRACTION),
                                               rstats[name]) for name in M.FRAME_STATS}
    return {
        "frames": int(len(nf)),
        "keypoint_px": {k: float(v.mean()) for k, v in err.items()},
        "keypoint_px_buckets": {k: M.bucket_means(v, n_buckets) for k, v in err.items()},
        "psnr": {k: float(v.mean()) for k, v in psnr.items()},
        "psnr_buckets": {k: M.bucket_means(v, n_buckets) for k, v in psnr.items()},
        "psnr_body": region_psnr["body"],  # inside the body's box (body_masks)
        "psnr_background": region_psnr["background"],
        "body_fraction": float(body.mean()),
        "ssim": float(M.ssim(nf, rf).mean()),
        "late_in_range": late_in_range,
        "flicker_ratio": M.flicker_ratio(nf, rf),
    }


def targets(perf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    kp, ps = perf["keypoint_px"], perf["psnr"]
    return {
        "keypoints": {"value": kp["neural"], "target": KEYPOINT_FACTOR * kp["real"],
                      "met": kp["neural"] <= KEYPOINT_FACTOR * kp["real"]},
        "psnr": {"value": ps["neural"], "target": ps["frozen"] + PSNR_MARGIN_DB,
                 "met": ps["neural"] >= ps["frozen"] + PSNR_MARGIN_DB},
    }


def speed(step_seconds: np.ndarray) -> dict[str, float]:
    total = float(step_seconds.sum())
    fps = len(step_seconds) * FRAMES_PER_STEP / total if total > 0 else math.inf
    return {"video_fps": fps, "realtime_factor": fps / HUMANOID_FPS,
            "step_ms_p50": float(np.percentile(step_seconds * 1e3, 50))}


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = ["# Pose following", "",
             f"World `{cfg['world']}`, probe `{cfg['probe']}`, scene `{cfg['scene']}`; "
             f"performer seeds from {SEED_OFFSET + cfg['seed']}. Keypoint error in pixels "
             "(probe on the frame vs the commanded keypoints); PSNR against the real render "
             "of the same poses. Targets: keypoints <= 2x the probe on real frames, PSNR >= "
             "frozen + 3 dB.", "",
             "| performance | frames | keypoints neural / real (ceiling) / frozen px | PSNR "
             "neural / frozen / VAE (ceiling) dB | PSNR teacher-forced 1 step dB | PSNR in "
             "the body's box / outside it, neural / frozen / VAE dB | SSIM | late in range "
             "b / s / HF | flicker ratio | targets met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in report["performances"].items():
        kp, ps, late = p["keypoint_px"], p["psnr"], p["late_in_range"]
        met = sum(t["met"] for t in p["targets"].values())
        lines.append(f"| {name} | {p['frames']} | {kp['neural']:.2f} / {kp['real']:.2f} / "
                     f"{kp['frozen']:.2f} | {ps['neural']:.2f} / {ps['frozen']:.2f} / "
                     f"{ps.get('vae', math.nan):.2f} | "
                     f"{ps.get('teacher_forced', math.nan):.2f} | {_regions(p)} | "
                     f"{p['ssim']:.3f} | {late['brightness']:.2f} / {late['saturation']:.2f} / "
                     f"{late['hf_energy']:.2f} | {p['flicker_ratio']:.2f} | {met} / 2 |")
    first = next(iter(report["performances"].values()))
    lines += ["", "Keypoint error by time bucket (first performance, px):", "",
              "| bucket | " + " | ".join(str(i) for i in range(len(
                  first["keypoint_px_buckets"]["neural"]))) + " |",
              "|---" * (1 + len(first["keypoint_px_buckets"]["neural"])) + "|"]
    for k in ("neural", "real", "frozen"):
        lines.append(f"| {k} | " + " | ".join(f"{v:.2f}" for v in
                                             first["keypoint_px_buckets"][k]) + " |")
    s = report["speed"]
    lines += ["", f"Speed (batch 1, {report['device']}): {s['video_fps']:.1f} video fps, "
              f"real-time factor {s['realtime_factor']:.2f} at {HUMANOID_FPS} fps.", ""]
    return "\n".join(lines)


def _regions(perf: dict[str, Any]) -> str:
    """'body n / f / v; background n / f / v' (reports written before the split: '-')."""
    if "psnr_body" not in perf:
        return "-"
    return "; ".join(
        " / ".join(f"{perf[key].get(k, math.nan):.2f}" for k in ("neural", "frozen", "vae"))
        for key in ("psnr_body", "psnr_background"))


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The demo's summary of the first performance."""
    name, p = next(iter(report["performances"].items()))
    kp, ps, s = p["keypoint_px"], p["psnr"], report["speed"]
    return [
        f"world:      {report['config']['world']} (pose-conditioned), {name}: {p['frames']} "
        f"video frames, real and neural from the same start frame and poses",
        f"speed:      {s['video_fps']:.1f} video fps = real-time factor "
        f"{s['realtime_factor']:.2f} at {HUMANOID_FPS} fps",
        f"pose:       keypoint error {kp['neural']:.2f} px (probe on real frames {kp['real']:.2f},"
        f" frozen start frame {kp['frozen']:.2f})",
        f"fidelity:   PSNR {ps['neural']:.2f} dB vs frozen start frame {ps['frozen']:.2f}, SSIM "
        f"{p['ssim']:.3f}",
        f"video:      {report['files'].get('video')}  (left real MuJoCo render, right neural)",
    ]


def run_pose_following(cfg: PoseFollowingConfig) -> dict[str, Any]:
    if cfg.scene not in HUMANOID_SCENES:
        raise ValueError(f"scene must be one of {sorted(HUMANOID_SCENES)}, got {cfg.scene!r}")
    world = load_world(cfg.world, device=cfg.device)
    if world.config.condition.kind != "pose":
        raise ValueError(f"{cfg.world} is a {world.config.condition.kind!r} world, not a pose "
                         "world")
    probe = load_probe(cfg.probe)
    height, width, _ = world.frame_shape
    if (probe.height, probe.width) != (height, width):
        raise ValueError(f"the probe reads {probe.width}x{probe.height} frames, the world "
                         f"draws {width}x{height}")
    plan = {f"performance {i}": cfg.steps for i in range(cfg.performances)}
    if cfg.long_minutes > 0:
        plan[f"{cfg.long_minutes:g} minutes"] = round(cfg.long_minutes * 60 * HUMANOID_FPS
                                                      / FRAMES_PER_STEP)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    performances, seconds, files = {}, [], {}
    for i, (name, steps) in enumerate(plan.items()):
        seed = SEED_OFFSET + cfg.seed + i
        real = real_performance(steps, cfg.scene, width, height, seed, cfg.progress)
        neural, step_seconds = neural_performance(world, real, seed, cfg.progress)
        seconds.append(step_seconds)
        latents = encode_latents(world, real.frames, str(world.device))
        ceiling = decode_latents(world, latents)
        forced, _ = neural_performance(world, real, seed, cfg.progress, recycled=latents)
        perf = evaluate(real, neural, probe, vae_frames=ceiling, teacher_forced=forced)
        perf["seed"], perf["targets"] = seed, targets(perf)
        performances[name] = perf
        if i == 0:
            files["strip"] = str(out / "strip.png")
            import cv2

            cv2.imwrite(files["strip"], cv2.cvtColor(
                strip(real.frames, {"neural": neural}, STRIP_FRAMES), cv2.COLOR_RGB2BGR))
            files["video"] = str(write_mp4(out / "side_by_side.mp4",
                                           np.concatenate([real.frames, neural], axis=2),
                                           fps=HUMANOID_FPS, scale=2))
    report = {"config": asdict(cfg), "device": str(world.device), "performances": performances,
              "speed": speed(np.concatenate(seconds)), "files": files}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    d = PoseFollowingConfig()
    parser = command_parser("aapt-world pose-follow", __doc__)
    parser.add_argument("--world", default=d.world, help="a pose world's directory")
    parser.add_argument("--probe", default=d.probe, help="the pose probe (aapt-world pose-probe)")
    parser.add_argument("--steps", type=int, default=d.steps, help="steps per performance "
                        "(4 video frames each)")
    parser.add_argument("--performances", type=int, default=d.performances)
    parser.add_argument("--long-minutes", type=float, default=d.long_minutes,
                        help="plus one performance this many minutes long (0 = none)")
    parser.add_argument("--scene", default=d.scene, choices=sorted(HUMANOID_SCENES))
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--out", default=d.out)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    add_threads(parser)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    cfg = PoseFollowingConfig(world=args.world, probe=args.probe, steps=args.steps,
                              performances=args.performances, long_minutes=args.long_minutes,
                              scene=args.scene, seed=args.seed, device=args.device,
                              out=args.out, progress=args.progress)
    report = run_pose_following(cfg)
    rows = [{"performance": name, "frames": p["frames"],
             "kp neural px": p["keypoint_px"]["neural"], "kp real px": p["keypoint_px"]["real"],
             "kp frozen px": p["keypoint_px"]["frozen"], "psnr": p["psnr"]["neural"],
             "psnr frozen": p["psnr"]["frozen"],
             "met": sum(t["met"] for t in p["targets"].values())}
            for name, p in report["performances"].items()]
    print_report("pose following", rows, {"speed": report["speed"], "files": report["files"]})
    return report
