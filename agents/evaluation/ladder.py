"""The fidelity ladder (``aapt-world ladder``): how good is a neural world, rung by rung.

Each rung isolates one way a world can fail, always next to baselines measured on the same
frames, so a change to the recipe can be judged by one command:

1. ``vae``: held-out reconstruction PSNR / SSIM of the world's own VAE (the ceiling every
   other rung is bounded by) and how predictable its latent is: the copy-previous latent MSE
   relative to predicting zero (per-channel normalised latents; 1 = a copy is worthless).
2. ``teacher_forced``: one generated latent step from the REAL previous latent and the real
   command, decoded and compared with the real next 4 frames; baselines: copy the previous
   real frame, and the VAE ceiling of those frames.
3. ``noop_hold``: N noop steps from real start frames (the camera does not move): PSNR against
   the real game's frames, last quarter, next to the VAE ceiling.
4. ``loop_closure``: a full-speed 360 degree turn (15 steps) must bring the start view back;
   the real game's own end-vs-start PSNR is the reference.
5. ``rollouts``: the drift families (``agents.evaluation.drift``) over 1440 frames, with two
   baselines in every bucket: the frozen start frame and the VAE ceiling; late-window frame
   statistics in the real 5-95 % range, flicker and yaw following.

Plus an image strip, real above each neural world, at video frames 0, 4, 40, 400, 1400. Held-out
clips are explorer-policy runs at seeds the collection never used (it uses 0 .. episodes-1).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from aapt_world import metrics as M
from aapt_world.cli_options import add_threads, apply_threads, comma_list, command_parser
from aapt_world.constants import COLLECTION_MAPS, HELD_OUT_SEED
from aapt_world.devices import resolve_device
from aapt_world.report import print_report
from aapt_world.session import from_uint8_frames, to_uint8_frames
from aapt_world.view_warp import turn_view
from aapt_world.world import load_world
from agents.evaluation.drift import (
    FAMILIES,
    LATE_FRACTION,
    RealRun,
    _clean,
    evaluate,
    family_commands,
    fmt,
    neural_run,
    parse_compare,
    parse_families,
    real_run,
)
from envs import DEFAULT_WORLD
from envs.actions import COMMAND_NAMES, FRAMES_PER_STEP, CommandScale, command_to_frame_conditions
from envs.doom import DOOM_FOV_DEG
from envs.scripted import ExplorerPolicy

FULL_TURN_STEPS = 15  # a full-speed turn is 24 degrees per step: 360 degrees in 15 steps
STRIP_FRAMES = (0, 4, 40, 400, 1400)


@dataclass
class LadderConfig:
    steps: int = 360  # rollout steps per drift family (4 video frames each)
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    maps: list[str] = field(default_factory=lambda: list(COLLECTION_MAPS))
    clip_steps: int = 60  # held-out explorer clip per map (VAE and teacher-forced rungs)
    noop_steps: int = 90
    seed: int = HELD_OUT_SEED  # held-out: the collection plan uses seeds 0 .. N - 1
    rollout_maps: list[str] = field(default_factory=list)  # start maps of the drift families;
    # empty = the world card's map (or MAP01). With several, each family runs from each map
    # (reported as family@MAP): a world's rollout numbers depend on the start view too
    strip_family: str = "walk"
    strip_frames: tuple[int, ...] = STRIP_FRAMES


# -- helpers ------------------------------------------------------------------------------------

def _video(frames: np.ndarray, device: str) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> (1, 3, T, H, W) in [-1, 1]."""
    return from_uint8_frames(torch.from_numpy(np.ascontiguousarray(frames)).to(device)) \
        .transpose(0, 1).unsqueeze(0)


def _uint8(video: torch.Tensor) -> np.ndarray:
    """(1, 3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3)."""
    return to_uint8_frames(video[0].transpose(0, 1)).cpu().numpy()


@torch.inference_mode()
def encode_latents(world: Any, frames: np.ndarray, device: str) -> torch.Tensor:
    """Real frames (1 + 4 S, H, W, 3) -> normalised posterior-mean latents (1, C, 1 + S, h, w),
    streamed one group at a time (equal to whole-clip encoding, light on memory)."""
    vae = world.vae
    state = vae.init_encode_state(1)
    latents = []
    for k in range((len(frames) - 1) // FRAMES_PER_STEP + 1):
        group = frames[:1] if k == 0 else frames[1 + 4 * (k - 1): 1 + 4 * k]
        post, state = vae.encode_step(_video(group, device), state)
        latents.append(post.mode())
    return vae.normalize(torch.cat(latents, 2))


@torch.inference_mode()
def decode_latents(world: Any, z: torch.Tensor) -> np.ndarray:
    """Normalised latents (1, C, L, h, w) -> uint8 frames (1 + 4 (L - 1), H, W, 3), streamed."""
    vae = world.vae
    state = vae.init_decode_state(1)
    out = []
    for k in range(z.shape[2]):
        frames, state = vae.decode_step(vae.denormalize(z[:, :, k:k + 1]), state)
        out.append(_uint8(frames[:, :, :1] if k == 0 else frames))
    return np.concatenate(out)


def latent_predictability(z: torch.Tensor) -> dict[str, Any]:
    """Copy-previous latent MSE / zero-prediction MSE over latents 1.. (normalised latents are
    ~zero-mean, so zero is the unconditional guess); per channel too."""
    x = z[0, :, 1:].float()  # (C, L, h, w), the first-frame latent excluded
    x = x - x.mean(dim=(1, 2, 3), keepdim=True)
    copy = (x[:, 1:] - x[:, :-1]).square().mean(dim=(1, 2, 3))
    zero = x[:, 1:].square().mean(dim=(1, 2, 3))
    return {"copy_over_zero": float(copy.sum() / zero.sum()),
            "per_channel": (copy / zero.clamp_min(1e-12)).tolist()}


def _steps_psnr(pred: np.ndarray, real: np.ndarray) -> float:
    return float(M.psnr(pred, real).mean())


def rollout_key(family: str, doom_map: str, maps: list[str]) -> str:
    """A drift family's name in the report: ``family``, or ``family@MAP`` with several maps."""
    return family if len(maps) == 1 else f"{family}@{doom_map}"


# -- rungs --------------------------------------------------------------------------------------

def held_out_clips(cfg: LadderConfig, width: int, height: int) -> list[RealRun]:
    return [real_run(None, m, width, height, cfg.seed + i, policy=ExplorerPolicy(),
                     steps=cfg.clip_steps) for i, m in enumerate(cfg.maps)]


def turned_copy(frame: np.ndarray, command: np.ndarray) -> np.ndarray:
    """The last real frame (H, W, 3) turned by one step's commanded yaw, frame by frame: what
    the camera's geometry alone predicts of the next 4 frames (uint8, (4, H, W, 3))."""
    turn_deg = float(command[COMMAND_NAMES.index("turn")]) * CommandScale().turn
    frames = from_uint8_frames(torch.from_numpy(np.repeat(frame[None], FRAMES_PER_STEP, 0)))
    turned = turn_view(frames, turn_deg * torch.arange(1.0, FRAMES_PER_STEP + 1), DOOM_FOV_DEG)
    return to_uint8_frames(turned).numpy()


@torch.inference_mode()
def rung_vae_and_teacher_forced(world: Any, clips: list[RealRun], device: str,
                                seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    vae_psnr, vae_ssim, tf, copy, turned, ceiling, pred = [], [], [], [], [], [], []
    latents, copy_latent = [], []
    for i, clip in enumerate(clips):
        real = clip.frames
        z = encode_latents(world, real, device)
        latents.append(z)
        recon = decode_latents(world, z)
        # the generator's own skip: the previous latent again (decoded), i.e. the previous
        # 4 frames as the next 4 through the VAE: what a latent world gains over "no change"
        shifted = decode_latents(world, torch.cat([z[:, :, :1], z[:, :, :-1]], 2))
        copy_latent.append(M.psnr(shifted[1:], real[1:]))
        vae_psnr.append(M.psnr(recon[1:], real[1:]))
        vae_ssim.append(M.ssim(recon[1:], real[1:]))
        session = world.session(1)
        session.reset(torch.from_numpy(real[:1]), seeds=[seed + i])
        for k, cmd in enumerate(clip.commands):
            conds = torch.from_numpy(command_to_frame_conditions(cmd))[None]
            frames = session.step(conds, recycled=z[:, :, k])[0].cpu().numpy()
            target = real[1 + 4 * k: 5 + 4 * k]
            tf.append(_steps_psnr(frames, target))
            copy.append(_steps_psnr(np.repeat(real[4 * k][None], FRAMES_PER_STEP, 0), target))
            turned.append(_steps_psnr(turned_copy(real[4 * k], cmd), target))
            ceiling.append(_steps_psnr(recon[1 + 4 * k: 5 + 4 * k], target))
        pred.append(latent_predictability(z))
    per_channel = np.mean([p["per_channel"] for p in pred], axis=0)
    vae = {"psnr": float(np.concatenate(vae_psnr).mean()),
           "ssim": float(np.concatenate(vae_ssim).mean()),
           "latent_copy_over_zero": float(np.mean([p["copy_over_zero"] for p in pred])),
           "latent_copy_over_zero_per_channel": per_channel.tolist(),
           "frames": int(sum(len(c.frames) - 1 for c in clips))}
    teacher = {"psnr": float(np.mean(tf)), "copy_previous": float(np.mean(copy)),
               "copy_previous_turned": float(np.mean(turned)),
               "copy_previous_latent": float(np.concatenate(copy_latent).mean()),
               "vae_ceiling": float(np.mean(ceiling)), "steps": len(tf)}
    return vae, teacher


def _hold_stats(world: Any, real: RealRun, commands: np.ndarray, device: str,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    neural, _ = neural_run(world, real.frames[0], commands, seed, desc="hold")
    recon = decode_latents(world, encode_latents(world, real.frames, device))
    return neural, recon


def rung_noop_hold(world: Any, reals: list[RealRun], device: str, seed: int) -> dict[str, Any]:
    last, ceiling, frozen, first_step = [], [], [], []
    for i, real in enumerate(reals):
        neural, recon = _hold_stats(world, real, real.commands, device, seed + i)
        n = len(real.frames) - 1
        q = slice(1 + (3 * n) // 4, n + 1)  # the last quarter of the frames
        last.append(_steps_psnr(neural[q], real.frames[q]))
        ceiling.append(_steps_psnr(recon[q], real.frames[q]))
        frozen.append(_steps_psnr(np.repeat(real.frames[:1], q.stop - q.start, 0),
                                  real.frames[q]))
        first_step.append(_steps_psnr(neural[1:5], real.frames[1:5]))
    return {"steps": int(len(reals[0].commands)), "starts": len(reals),
            "psnr_first_step": float(np.mean(first_step)),
            "psnr_last_quarter": float(np.mean(last)),
            "vae_ceiling_last_quarter": float(np.mean(ceiling)),
            "frozen_last_quarter": float(np.mean(frozen))}


def rung_loop_closure(world: Any, reals: list[RealRun], device: str,
                      seed: int) -> dict[str, Any]:
    neural_end, real_end, ceiling = [], [], []
    for i, real in enumerate(reals):
        neural, recon = _hold_stats(world, real, real.commands, device, seed + i)
        start = real.frames[:1]
        neural_end.append(_steps_psnr(neural[-1:], start))
        real_end.append(_steps_psnr(real.frames[-1:], start))
        ceiling.append(_steps_psnr(recon[-1:], start))
    return {"steps": FULL_TURN_STEPS, "starts": len(reals),
            "neural_end_vs_start": float(np.mean(neural_end)),
            "real_end_vs_start": float(np.mean(real_end)),
            "vae_ceiling_end_vs_start": float(np.mean(ceiling))}


def rung_rollouts(world: Any, reals: dict[str, RealRun], device: str,
                  seed: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    out, videos = {}, {}
    for family, real in reals.items():
        neural, _ = neural_run(world, real.frames[0], real.commands, seed, desc=family)
        ev = evaluate(real, neural, real.commands)
        recon = decode_latents(world, encode_latents(world, real.frames, device))
        n = min(len(real.frames), len(neural))
        frozen = M.psnr(np.repeat(real.frames[:1], n - 1, 0), real.frames[1:n])
        ceiling = M.psnr(recon[1:n], real.frames[1:n])
        out[family] = {
            "frames": ev["frames"], "psnr_buckets": ev["psnr_buckets"],
            "frozen_buckets": M.bucket_means(frozen), "vae_buckets": M.bucket_means(ceiling),
            "margin_over_frozen_min": float(np.min(np.subtract(ev["psnr_buckets"],
                                                               M.bucket_means(frozen)))),
            "late_in_range": {k: v["late_in_range"] for k, v in ev["stats"].items()},
            "flicker_ratio": ev["flicker"]["ratio"],
            "yaw_sign_accuracy": ev["action_following"]["neural"]["sign_accuracy"],
            "yaw_pearson": ev["action_following"]["neural"]["pearson"]}
        videos[family] = neural
    return out, videos


# -- targets ------------------------------------------------------------------------------------

def targets(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets for the default world, each as value / threshold / met."""
    vae, tf, hold = r["vae"], r["teacher_forced"], r["noop_hold"]
    rolls = r["rollouts"]
    out = {
        "vae_psnr >= 28": (vae["psnr"], 28.0),
        "teacher_forced >= vae - 2": (tf["psnr"], tf["vae_ceiling"] - 2.0),
        "teacher_forced >= copy + 3": (tf["psnr"], tf["copy_previous"] + 3.0),
        "noop last quarter >= vae - 3": (hold["psnr_last_quarter"],
                                         hold["vae_ceiling_last_quarter"] - 3.0),
    }
    if rolls:
        out["rollout margin over frozen >= 2 dB (min bucket)"] = (
            min(v["margin_over_frozen_min"] for v in rolls.values()), 2.0)
        late = [min(v["late_in_range"].values()) for v in rolls.values()]
        out["late stats in real range >= 0.8 (worst stat, mean family)"] = (
            float(np.mean(late)), 0.8)
        yaw = [v["yaw_sign_accuracy"] for v in rolls.values()
               if v["yaw_sign_accuracy"] is not None and math.isfinite(v["yaw_sign_accuracy"])]
        if yaw:
            out["yaw sign accuracy >= 0.9 (mean family)"] = (float(np.mean(yaw)), 0.9)
    return {k: {"value": v, "threshold": t, "met": bool(v >= t)} for k, (v, t) in out.items()}


SUMMARY_LABELS = {"mean_margin_over_frozen": "mean margin over frozen (dB)",
                  "worst_margin_over_frozen": "worst bucket margin (dB)",
                  "yaw_sign_accuracy": "yaw sign accuracy",
                  "flicker_ratio": "flicker ratio (1 = real; median family)"}


def rollout_summary(rolls: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The free rollouts in a few numbers: margin over the frozen start frame averaged over every
    bucket of every family and its worst bucket, mean yaw sign accuracy, median flicker ratio,
    the late-window fraction of frames whose brightness / saturation / HF energy is in the real
    range (PSNR alone rewards a blurry mean frame; these do not)."""
    if not rolls:
        return {}
    margins = [np.mean(np.subtract(v["psnr_buckets"], v["frozen_buckets"]))
               for v in rolls.values()]
    yaw = [v["yaw_sign_accuracy"] for v in rolls.values()
           if v["yaw_sign_accuracy"] is not None and math.isfinite(v["yaw_sign_accuracy"])]
    stats = next(iter(rolls.values()))["late_in_range"]
    late = {f"late_{k}_in_range": float(np.mean([v["late_in_range"][k] for v in rolls.values()]))
            for k in stats}  # a world that fades to a flat mean image scores high PSNR, 0 here
    return {"mean_margin_over_frozen": float(np.mean(margins)),
            "worst_margin_over_frozen": min(v["margin_over_frozen_min"] for v in rolls.values()),
            "yaw_sign_accuracy": float(np.mean(yaw)) if yaw else math.nan,
            "flicker_ratio": float(np.median([v["flicker_ratio"] for v in rolls.values()])),
            **late}


# -- report -------------------------------------------------------------------------------------

def strip(real: np.ndarray, neural: dict[str, np.ndarray], frames: tuple[int, ...],
          scale: int = 2) -> np.ndarray:
    """Image grid uint8: the real row above one row per world, at the given video frames."""
    import cv2

    rows = {"real": real, **neural}
    h, w = real.shape[1:3]
    cols = [f for f in frames if f < min(len(v) for v in rows.values())]
    label_w = 90
    grid = np.full((len(rows) * (h * scale + 4), label_w + len(cols) * (w * scale + 4), 3), 255,
                   np.uint8)
    for r, (name, video) in enumerate(rows.items()):
        y = r * (h * scale + 4)
        cv2.putText(grid, name[:11], (4, y + h * scale // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
        for c, f in enumerate(cols):
            x = label_w + c * (w * scale + 4)
            grid[y:y + h * scale, x:x + w * scale] = cv2.resize(
                video[f], (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
            if r == 0:
                cv2.putText(grid, f"frame {f}", (x + 2, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                            (255, 255, 255), 1, cv2.LINE_AA)
    return grid


def markdown(report: dict[str, Any]) -> str:
    names = list(report["worlds"])
    paths = ", ".join(f"`{n}` = `{report['paths'][n]}`" for n in names)
    lines = ["# Fidelity ladder", "",
             f"Worlds: {paths}. "
             f"Held-out explorer clips: {report['config']['clip_steps']} steps on each of "
             f"{', '.join(report['config']['maps'])}, seeds from {report['config']['seed']}. "
             f"Drift families from {', '.join(report.get('rollout_maps', []))}'s reset "
             "frame. PSNR in dB against the real game's frames.", "",
             "| rung | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label: str, get: Any, spec: str = ".2f") -> None:
        lines.append(f"| {label} | " + " | ".join(fmt(get(report["worlds"][n]), spec)
                                                  for n in names) + " |")

    row("VAE held-out PSNR (ceiling)", lambda w: w["vae"]["psnr"])
    row("VAE held-out SSIM", lambda w: w["vae"]["ssim"], ".3f")
    row("latent copy-prev MSE / zero MSE", lambda w: w["vae"]["latent_copy_over_zero"], ".3f")
    row("teacher-forced 1 step PSNR", lambda w: w["teacher_forced"]["psnr"])
    row("  copy-previous baseline", lambda w: w["teacher_forced"]["copy_previous"])
    row("  copy-previous latent, decoded", lambda w: w["teacher_forced"].get(
        "copy_previous_latent"))
    row("  copy-previous turned by the command", lambda w: w["teacher_forced"].get(
        "copy_previous_turned"))
    row("  VAE ceiling (same frames)", lambda w: w["teacher_forced"]["vae_ceiling"])
    row("no-op hold: first step PSNR", lambda w: w["noop_hold"]["psnr_first_step"])
    row("no-op hold: last quarter PSNR", lambda w: w["noop_hold"]["psnr_last_quarter"])
    row("  VAE ceiling (last quarter)", lambda w: w["noop_hold"]["vae_ceiling_last_quarter"])
    row("  frozen start frame (last quarter)", lambda w: w["noop_hold"]["frozen_last_quarter"])
    row("loop closure: neural end vs start", lambda w: w["loop_closure"]["neural_end_vs_start"])
    row("  real game end vs start", lambda w: w["loop_closure"]["real_end_vs_start"])
    row("NFE per latent frame", lambda w: w["nfe"], "d")
    summary_keys = next(iter(report["worlds"].values())).get("rollout_summary", {})
    for key in summary_keys:
        row(f"rollouts: {SUMMARY_LABELS.get(key, key.replace('_', ' ') + ' (mean family)')}",
            lambda w, key=key: w["rollout_summary"][key])
    lines += _rollout_lines(report, names)
    lines += ["", "## Targets (default world)", "", "| target | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    for key in next(iter(report["worlds"].values()))["targets"]:
        cells = []
        for n in names:
            t = report["worlds"][n]["targets"][key]
            cells.append(f"{fmt(t['value'])} / {fmt(t['threshold'])} "
                         f"{'met' if t['met'] else 'not met'}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append("| targets met | " + " | ".join(
        f"{sum(t['met'] for t in report['worlds'][n]['targets'].values())} / "
        f"{len(report['worlds'][n]['targets'])}" for n in names) + " |")
    if report.get("strip"):
        lines += ["", f"![strip]({Path(report['strip']).name})", ""]
    return "\n".join(lines) + "\n"


def summary_markdown(report: dict[str, Any]) -> str:
    """One row per world, the rungs that decide a change (for comparing many worlds)."""
    lines = ["| world | teacher-forced | no-op hold first / last quarter | loop closure | rollout "
             "margin mean / worst | yaw sign acc | flicker ratio | late in range bright / sat "
             "/ HF | targets met |", "|---|---|---|---|---|---|---|---|---|"]
    for name, w in report["worlds"].items():
        s, hold = w.get("rollout_summary", {}), w["noop_hold"]
        late = " / ".join(fmt(v) for k, v in s.items() if k.startswith("late_")) or "-"
        met = sum(t["met"] for t in w["targets"].values())
        lines.append(
            f"| {name} | {fmt(w['teacher_forced']['psnr'])} | {fmt(hold['psnr_first_step'])} / "
            f"{fmt(hold['psnr_last_quarter'])} | {fmt(w['loop_closure']['neural_end_vs_start'])}"
            f" | {fmt(s.get('mean_margin_over_frozen'))} / "
            f"{fmt(s.get('worst_margin_over_frozen'))} | {fmt(s.get('yaw_sign_accuracy'))} | "
            f"{fmt(s.get('flicker_ratio'))} | {late} | {met} / {len(w['targets'])} |")
    return "\n".join(lines) + "\n"


def _rollout_lines(report: dict[str, Any], names: list[str]) -> list[str]:
    """The per-family rollout table (PSNR buckets next to both baselines, late stats, ...)."""
    fams = list(next(iter(report["worlds"].values()))["rollouts"])
    if not fams:
        return []
    lines = ["", "## Free rollouts (PSNR per time bucket: first / middle / last)", "",
             "| family | world | neural | frozen start frame | VAE ceiling | min margin "
             "over frozen | late in range (bright/sat/HF) | flicker ratio | yaw sign acc |",
             "|---|---|---|---|---|---|---|---|---|"]

    def three(b: list[float]) -> str:
        return " / ".join(fmt(b[i]) for i in (0, len(b) // 2, -1))

    for f in fams:
        for n in names:
            v = report["worlds"][n]["rollouts"][f]
            lines.append(f"| {f} | {n} | {three(v['psnr_buckets'])} | "
                         f"{three(v['frozen_buckets'])} | {three(v['vae_buckets'])} | "
                         f"{fmt(v['margin_over_frozen_min'])} | "
                         + "/".join(fmt(x) for x in v["late_in_range"].values())
                         + f" | {fmt(v['flicker_ratio'])} | {fmt(v['yaw_sign_accuracy'])} |")
    return lines


def run_ladder(worlds: dict[str, str], cfg: LadderConfig, out: str = "outputs/ladder",
               strip_path: str | None = None, device: str = "cpu") -> dict[str, Any]:
    import cv2

    loaded = {name: load_world(path, device) for name, path in worlds.items()}
    first = next(iter(loaded.values()))
    h, w, _ = first.frame_shape
    for name, wd in loaded.items():
        if wd.frame_shape != (h, w, 3):
            raise ValueError(f"world {name!r} makes {wd.frame_shape} frames, not {(h, w, 3)}: "
                             "compare worlds of one resolution")
    rollout_maps = cfg.rollout_maps or [first.source_map()]
    # The real runs, shared by every world.
    clips = held_out_clips(cfg, w, h)
    noop = np.zeros((cfg.noop_steps, 4), np.float32)
    turn = np.zeros((FULL_TURN_STEPS, 4), np.float32)
    turn[:, 2] = 1.0
    holds = [real_run(noop, m, w, h, cfg.seed + i) for i, m in enumerate(cfg.maps)]
    loops = [real_run(turn, m, w, h, cfg.seed + i) for i, m in enumerate(cfg.maps)]
    families = {rollout_key(f, m, rollout_maps):
                real_run(family_commands(f, cfg.steps, cfg.seed), m, w, h, cfg.seed)
                for m in rollout_maps for f in tqdm(cfg.families, desc=f"real rollouts {m}")}
    strip_key = rollout_key(cfg.strip_family, rollout_maps[0], rollout_maps)

    results, videos = {}, {}
    for name, wd in tqdm(loaded.items(), desc="worlds"):
        vae, tf = rung_vae_and_teacher_forced(wd, clips, device, cfg.seed)
        r = {"nfe": wd.config.sample_steps, "vae": vae, "teacher_forced": tf,
             "noop_hold": rung_noop_hold(wd, holds, device, cfg.seed),
             "loop_closure": rung_loop_closure(wd, loops, device, cfg.seed)}
        r["rollouts"], vids = rung_rollouts(wd, families, device, cfg.seed)
        r["targets"] = targets(r)
        r["rollout_summary"] = rollout_summary(r["rollouts"])
        results[name] = r
        if strip_key in vids:
            videos[name] = vids[strip_key]

    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    written_strip = None
    if videos:
        grid = strip(families[strip_key].frames, videos, cfg.strip_frames)
        written_strip = strip_path or str(outdir / "strip.png")
        Path(written_strip).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(written_strip, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    report = _clean({"paths": worlds, "rollout_maps": rollout_maps,
                     "late_fraction": LATE_FRACTION,
                     "config": asdict(cfg), "strip": written_strip, "worlds": results})
    write_report(report, outdir)
    return report


def write_report(report: dict[str, Any], outdir: Path) -> None:
    """ladder.json, ladder.md, summary.md (a row per world) and the printed table of a report."""
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "ladder.json").write_text(json.dumps(report, indent=1))
    (outdir / "ladder.md").write_text(markdown(report))
    (outdir / "summary.md").write_text(summary_markdown(report))
    rows = [{"world": n, "vae": r["vae"]["psnr"], "latent_copy/zero":
             r["vae"]["latent_copy_over_zero"], "tf": r["teacher_forced"]["psnr"],
             "tf_copy": r["teacher_forced"]["copy_previous"],
             "noop_last_q": r["noop_hold"]["psnr_last_quarter"],
             "loop_end": r["loop_closure"]["neural_end_vs_start"],
             "mean_margin": r["rollout_summary"].get("mean_margin_over_frozen"),
             "yaw_acc": r["rollout_summary"].get("yaw_sign_accuracy"),
             "targets_met": sum(t["met"] for t in r["targets"].values()),
             "targets": len(r["targets"])} for n, r in report["worlds"].items()]
    print_report("ladder", rows, {"out": str(outdir)})


# What fixes the frames a ladder measures: reports that agree on these can share one table.
SAME_FRAMES = ("steps", "families", "maps", "clip_steps", "noop_steps", "seed", "rollout_maps")


def merge_reports(reports: dict[str, dict[str, Any]],
                  pick: dict[str, str] | None = None) -> dict[str, Any]:
    """Several ladder.json reports measured on the same frames -> one report, without running
    a world again. A report with one world (or one picked: ``pick[key]``) is named by its key;
    with several, key/world."""
    pick = pick or {}
    if not reports:
        raise ValueError("merge needs at least one ladder report")
    first_name, first = next(iter(reports.items()))
    merged: dict[str, Any] = {"paths": {}, "rollout_maps": first["rollout_maps"],
                              "late_fraction": first["late_fraction"],
                              "config": first["config"], "strip": None, "worlds": {}}
    for name, rep in reports.items():
        for key in SAME_FRAMES:
            mine, theirs = rep["config"].get(key), first["config"].get(key)
            if mine != theirs:
                raise ValueError(f"ladder {name!r} measured other frames than {first_name!r}: "
                                 f"{key} = {mine!r} vs {theirs!r}")
        worlds = rep["worlds"]
        if name in pick:
            if pick[name] not in worlds:
                raise ValueError(f"ladder {name!r} has no world {pick[name]!r} "
                                 f"(it has {sorted(worlds)})")
            worlds = {pick[name]: worlds[pick[name]]}
        for world, result in worlds.items():
            label = name if len(worlds) == 1 else f"{name}/{world}"
            if label in merged["worlds"]:
                raise ValueError(f"two merged worlds are both named {label!r}")
            merged["worlds"][label] = result
            merged["paths"][label] = rep["paths"][world]
    return merged


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = command_parser("aapt-world ladder", __doc__.split("\n")[0])
    parser.add_argument("--world", default=str(DEFAULT_WORLD), help="world directory")
    parser.add_argument("--compare", nargs="*", default=[], metavar="NAME=DIR",
                        help="more worlds measured on the same frames")
    parser.add_argument("--steps", type=int, default=LadderConfig.steps,
                        help="rollout steps per family (360 = 1440 frames)")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help="comma-separated drift families ('' = none)")
    parser.add_argument("--clip-steps", type=int, default=LadderConfig.clip_steps,
                        help="steps of each held-out clip (teacher-forced rung)")
    parser.add_argument("--noop-steps", type=int, default=LadderConfig.noop_steps,
                        help="steps of the no-op hold")
    parser.add_argument("--maps", default=",".join(COLLECTION_MAPS),
                        help="comma-separated maps of the held-out clips")
    parser.add_argument("--seed", type=int, default=LadderConfig.seed,
                        help="first seed of the held-out clips (unseen in training)")
    parser.add_argument("--rollout-maps", default="",
                        help="comma-separated start maps of the drift families ('' = the "
                        "world card's map); with several, every family runs from each")
    parser.add_argument("--strip-family", default=LadderConfig.strip_family,
                        help="drift family shown in the image strip")
    parser.add_argument("--out", default="outputs/ladder",
                        help="output directory (ladder.json, ladder.md)")
    parser.add_argument("--strip", default=None, help="also write the image strip here")
    parser.add_argument("--device", default="auto", help="torch device of the worlds: auto "
                        "(cuda when available), cpu or cuda")
    parser.add_argument("--merge", nargs="*", default=[], metavar="NAME=LADDER_JSON[#WORLD]",
                        help="run nothing: merge ladder.json files measured on the same frames "
                        "into one table under --out (#WORLD: only that world of the file)")
    add_threads(parser)
    args = parser.parse_args(argv)
    if args.merge:
        sources = parse_compare(parser, args.merge, "--merge", "LADDER_JSON[#WORLD]")
        files = {name: path.partition("#") for name, path in sources.items()}
        report = merge_reports({name: json.loads(Path(path).read_text())
                                for name, (path, _, _) in files.items()},
                               {name: world for name, (_, _, world) in files.items() if world})
        write_report(report, Path(args.out))
        return report
    apply_threads(args.threads)
    worlds = {"neural": args.world, **parse_compare(parser, args.compare)}
    families = parse_families(parser, args.families)
    maps = comma_list(args.maps)
    if not maps:
        parser.error("--maps needs at least one map")
    cfg = LadderConfig(steps=args.steps, families=families, maps=maps,
                       clip_steps=args.clip_steps, noop_steps=args.noop_steps, seed=args.seed,
                       strip_family=args.strip_family,
                       rollout_maps=comma_list(args.rollout_maps))
    return run_ladder(worlds, cfg, args.out, args.strip, resolve_device(args.device))
