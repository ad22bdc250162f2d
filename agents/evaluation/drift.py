"""Long-horizon drift evaluation of a neural world against the real game (``aapt-world drift``).

For each scripted action family (a deterministic command sequence), the real ViZDoom world is
run from ``reset(seed)`` with continuous actions at the world's resolution; every neural world
(the one under test, plus any ``--compare name=DIR``) is started from the real reset frame and
driven with the same commands through a ``StreamingSession`` (commands are the conditions, so
no discrete-action rounding). Frames are then compared: PSNR/SSIM per time bucket, frame
statistics vs the real video's 5-95 % range in the late window, flicker, action following
(yaw from phase correlation vs the commanded turn) and generation speed.

Baselines are worlds too: ``aapt-world train stage=export export.source=diffusion`` exports the
stage-1 model sampled with N Euler steps per frame (N KV caches, see ``WorldModel.sample_step``),
``export.source=consistency`` the stage-2 model at 1 NFE; pass them with ``--compare``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from aapt_world import metrics as M
from aapt_world.cli_options import add_threads, apply_threads, comma_list, command_parser
from aapt_world.constants import DOOM_FPS
from aapt_world.devices import resolve_device
from aapt_world.report import print_report
from aapt_world.video import write_mp4
from aapt_world.world import World, load_world, update_card
from envs import DEFAULT_WORLD
from envs.actions import FRAMES_PER_STEP, command_to_frame_conditions
from envs.doom import DoomConfig, DoomEnv
from envs.scripted import ExplorerPolicy, RandomCommandPolicy

N_BUCKETS = 10
LATE_FRACTION = 0.3  # late window: frames ~1000-1440 of a 1440-frame run


# -- action families --------------------------------------------------------------------------

def _walk(n: int, rng: np.random.Generator) -> np.ndarray:
    """Straight walk at 0.6 speed, with a ~96 degree right turn every 40 steps (off walls)."""
    c = np.zeros((n, 4), np.float32)
    c[:, 0] = 0.6
    t = np.arange(n)
    c[(t % 40) >= 36, 2] = 1.0
    return c


def _slow_turn(n: int, rng: np.random.Generator) -> np.ndarray:
    """Standing slow turns at 0.35 rate (8.4 deg/step), changing direction every 45 steps."""
    c = np.zeros((n, 4), np.float32)
    c[:, 2] = np.where((np.arange(n) // 45) % 2 == 0, 0.35, -0.35)
    return c


def _spin(n: int, rng: np.random.Generator) -> np.ndarray:
    """Full-speed spins (360 deg in 15 steps): right for the first half, then left."""
    c = np.zeros((n, 4), np.float32)
    c[:, 2] = np.where(np.arange(n) < (n + 1) // 2, 1.0, -1.0)
    return c


def _wall_bump(n: int, rng: np.random.Generator) -> np.ndarray:
    """Full-speed forward the whole run: the player soon walks into a wall and keeps pushing."""
    c = np.zeros((n, 4), np.float32)
    c[:, 0] = 1.0
    return c


def _strafe(n: int, rng: np.random.Generator) -> np.ndarray:
    """Strafing right then left, 20 steps each."""
    c = np.zeros((n, 4), np.float32)
    c[:, 1] = np.where((np.arange(n) // 20) % 2 == 0, 1.0, -1.0)
    return c


def _random(n: int, rng: np.random.Generator) -> np.ndarray:
    """The random player (``RandomCommandPolicy``), which never reads observations."""
    policy = RandomCommandPolicy()
    policy.reset(rng)
    return np.stack([policy.act(None, {}) for _ in range(n)]).astype(np.float32)


FAMILIES = {"walk": _walk, "slow_turn": _slow_turn, "spin": _spin, "wall_bump": _wall_bump,
            "strafe": _strafe, "random": _random}


def family_commands(name: str, steps: int, seed: int = 0) -> np.ndarray:
    """The deterministic command sequence (steps, 4) of an action family."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}: expected one of {sorted(FAMILIES)}")
    return FAMILIES[name](steps, np.random.default_rng(seed))


# -- rollouts ---------------------------------------------------------------------------------

@dataclass
class RealRun:
    frames: np.ndarray  # uint8 (1 + 4 S, H, W, 3): reset frame, then 4 per step
    poses: np.ndarray  # float32 (1 + 4 S, 5)
    commands: np.ndarray  # float32 (S, 4): what the env reported applying (info["command"])
    seconds: float


def real_run(commands: np.ndarray | None, doom_map: str, width: int, height: int, seed: int,
             policy: Any = None, steps: int = 0) -> RealRun:
    """Drive the real game with fixed ``commands``, or with ``policy`` (reads info) for
    ``steps``. Stops early if the episode ends."""
    env = DoomEnv(DoomConfig(doom_map=doom_map, width=width, height=height,
                             action_type="continuous"))
    try:
        start = time.perf_counter()
        obs, info = env.reset(seed=seed)
        frames, poses, applied = [obs], [info["poses"][-1]], []
        if policy is not None:
            policy.reset(np.random.default_rng(seed))
        n = len(commands) if commands is not None else steps
        for i in range(n):
            cmd = commands[i] if commands is not None else policy.act(obs, info)
            obs, _r, term, trunc, info = env.step(np.asarray(cmd, np.float32))
            frames.extend(info["frames"])
            poses.extend(info["poses"])
            applied.append(info["command"])
            if term or trunc:
                break
        seconds = time.perf_counter() - start
    finally:
        env.close()
    applied_arr = np.stack(applied) if applied else np.zeros((0, 4))
    return RealRun(np.stack(frames), np.stack(poses).astype(np.float32),
                   applied_arr.astype(np.float32), seconds)


def neural_run(world: Any, start_frame: np.ndarray, commands: np.ndarray, seed: int,
               desc: str = "neural") -> tuple[np.ndarray, np.ndarray]:
    """Stream ``world`` from ``start_frame`` with ``commands``. Returns (frames (1 + 4 S, H, W,
    3) uint8 with the decoded start frame first, wall seconds of each step (generate + decode))."""
    session = world.session(1)
    first = session.reset(torch.from_numpy(np.ascontiguousarray(start_frame)[None]),
                          seeds=[seed])
    out = [first[0].cpu().numpy()]
    seconds = []
    for cmd in tqdm(commands, desc=desc, leave=False):
        conds = torch.from_numpy(command_to_frame_conditions(cmd))[None]
        t0 = time.perf_counter()
        frames = session.step(conds)
        if frames.is_cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - t0)
        out.extend(frames[0].cpu().numpy())
    return np.stack(out), np.asarray(seconds)


def speed(step_seconds: np.ndarray) -> dict[str, float]:
    """Video fps, real-time factor at the game's DOOM_FPS and step latency percentiles (ms)."""
    total = float(step_seconds.sum())
    fps = len(step_seconds) * FRAMES_PER_STEP / total if total > 0 else math.inf
    ms = step_seconds * 1e3 if len(step_seconds) else np.full(1, math.nan)
    return {"fps": fps, "rtf": fps / DOOM_FPS, "latency_ms_p50": float(np.percentile(ms, 50)),
            "latency_ms_p95": float(np.percentile(ms, 95))}


# -- evaluation -------------------------------------------------------------------------------

def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy -> python."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def evaluate(real: RealRun, neural: np.ndarray, commands: np.ndarray,
             n_buckets: int = N_BUCKETS) -> dict[str, Any]:
    """All metrics of one neural rollout against the real one (same length, frame 0 excluded
    from fidelity: it is the shared reset frame)."""
    n = min(len(real.frames), len(neural))
    rf, nf = real.frames[:n], neural[:n]
    steps = (n - 1) // FRAMES_PER_STEP
    turn = commands[:steps, 2]
    psnr, ssim = M.psnr(nf[1:], rf[1:]), M.ssim(nf[1:], rf[1:])
    rstats, nstats = M.frame_stats(rf[1:]), M.frame_stats(nf[1:])
    stats = {}
    for name in M.FRAME_STATS:
        low, high = M.real_range(rstats[name])
        late = M.late_window(nstats[name], LATE_FRACTION)
        stats[name] = {"real_p5": low, "real_p95": high, "late_mean": float(late.mean()),
                       "late_in_range": M.fraction_in_range(late, rstats[name]),
                       "real_buckets": M.bucket_means(rstats[name], n_buckets),
                       "neural_buckets": M.bucket_means(nstats[name], n_buckets)}
    nflick, rflick = M.flicker(nf[1:]), M.flicker(rf[1:])
    yaw_neural, yaw_real = M.step_yaw(nf), M.step_yaw(rf)
    yaw_pose = M.pose_yaw_steps(real.poses[:n])
    return {
        "frames": int(n - 1),
        "psnr_mean": float(psnr.mean()), "ssim_mean": float(ssim.mean()),
        "psnr_buckets": M.bucket_means(psnr, n_buckets),
        "ssim_buckets": M.bucket_means(ssim, n_buckets),
        "stats": stats,
        "flicker": {"neural": float(nflick.mean()) if len(nflick) else math.nan,
                    "real": float(rflick.mean()) if len(rflick) else math.nan,
                    "ratio": M.flicker_ratio(nf[1:], rf[1:]) if len(nflick) else math.nan,
                    "neural_buckets": M.bucket_means(nflick, n_buckets)},
        "action_following": {
            "neural": M.action_following(yaw_neural, turn),
            "real_video": M.action_following(yaw_real, turn),  # the estimator's own ceiling
            "real_pose": M.action_following(yaw_pose, turn),
            "neural_mean_abs_yaw_deg": float(np.abs(yaw_neural).mean()) if steps else math.nan,
            "real_mean_abs_yaw_deg": float(np.abs(yaw_pose).mean()) if steps else math.nan},
        "_series": {"psnr": psnr, "ssim": ssim, "real": rstats, "neural": nstats},
    }


def _plots(out: Path, results: dict[str, dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for family, res in results.items():
        for gen, ev in res["generators"].items():
            y = ev["_series"]["psnr"]
            k = max(1, len(y) // 50)
            smooth = np.convolve(y, np.ones(k) / k, mode="valid")
            ax.plot(np.arange(len(smooth)) + k // 2 + 1, smooth, label=f"{family} / {gen}")
    ax.set(xlabel="video frame", ylabel="PSNR (dB)", title="PSNR vs the real game over time")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "psnr.png", dpi=100)
    plt.close(fig)
    written.append("psnr.png")

    for family, res in results.items():
        fig, axes = plt.subplots(1, len(M.FRAME_STATS), figsize=(14, 3.8))
        first = next(iter(res["generators"].values()))
        for ax, name in zip(axes, M.FRAME_STATS):
            real = first["_series"]["real"][name]
            t = np.arange(1, len(real) + 1)
            low, high = M.real_range(real)
            ax.axhspan(low, high, color="grey", alpha=0.2, label="real 5-95 %")
            ax.plot(t, real, color="k", lw=0.8, label="real")
            for gen, ev in res["generators"].items():
                ax.plot(t, ev["_series"]["neural"][name], lw=0.8, label=gen)
            ax.set(title=f"{family}: {name}", xlabel="video frame")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"stats_{family}.png", dpi=100)
        plt.close(fig)
        written.append(f"stats_{family}.png")
    return written


def fmt(x: Any, spec: str = ".2f") -> str:
    missing = x is None or (isinstance(x, float) and not math.isfinite(x))
    return "n/a" if missing else format(x, spec)


def _markdown(report: dict[str, Any]) -> str:
    lines = ["# Drift evaluation: neural world vs the real game", "",
             f"- world: `{report['world']}`; map {report['map']}; seed {report['seed']}; "
             f"{report['width']}x{report['height']}",
             "- fidelity: PSNR (dB, capped at 100) and SSIM per time bucket (10 buckets over "
             "the run); late window = last 30 % of frames (~1000-1440 of 1440)",
             "- action following: per-step yaw from phase correlation (90 deg HFOV) vs the "
             "commanded turn; sign accuracy over steps with |turn| > 0.3; `real video` is the "
             "same estimator on the real frames (its ceiling), `real pose` uses the game's yaw",
             "- NFE: generator forwards per latent frame (4 video frames)", "",
             "## Summary", "",
             "| family | generator | NFE | video fps | PSNR first | PSNR last | SSIM last | "
             "late stats in real 5-95 % (bright/sat/HF) | flicker ratio | yaw sign acc | "
             "yaw corr |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for family, res in report["families"].items():
        for gen, ev in res["generators"].items():
            st, af = ev["stats"], ev["action_following"]["neural"]
            in_range = "/".join(fmt(st[k]["late_in_range"]) for k in st)
            lines.append(f"| {family} | {gen} | {ev.get('nfe', 1)} | {fmt(ev['fps'], '.1f')} | "
                         f"{fmt(ev['psnr_buckets'][0] if ev['psnr_buckets'] else None)} | "
                         f"{fmt(ev['psnr_buckets'][-1] if ev['psnr_buckets'] else None)} | "
                         f"{fmt(ev['ssim_buckets'][-1] if ev['ssim_buckets'] else None, '.3f')} | "
                         f"{in_range} | {fmt(ev['flicker']['ratio'])} | "
                         f"{fmt(af['sign_accuracy'])} | {fmt(af['pearson'])} |")
    lines.append("")
    for family, res in report["families"].items():
        lines += [f"## {family} ({res['steps']} steps, {res['frames']} frames)", ""]
        for gen, ev in res["generators"].items():
            nb = len(ev["psnr_buckets"])
            lines += [f"### {gen} — {fmt(ev['fps'], '.1f')} video fps", "",
                      "| bucket | " + " | ".join(str(i + 1) for i in range(nb)) + " |",
                      "|---|" + "---|" * nb,
                      "| PSNR | " + " | ".join(fmt(v) for v in ev["psnr_buckets"]) + " |",
                      "| SSIM | " + " | ".join(fmt(v, ".3f") for v in ev["ssim_buckets"]) + " |",
                      "", "| stat | real p5 | real p95 | late mean | late in range |",
                      "|---|---|---|---|---|"]
            for name, s in ev["stats"].items():
                lines.append(f"| {name} | {fmt(s['real_p5'])} | {fmt(s['real_p95'])} | "
                             f"{fmt(s['late_mean'])} | {fmt(s['late_in_range'])} |")
            fl, af = ev["flicker"], ev["action_following"]
            lines += ["", f"- flicker: neural {fmt(fl['neural'])}, real {fmt(fl['real'])}, "
                      f"ratio {fmt(fl['ratio'])}",
                      "", "| action following | sign acc | pearson | turn steps |",
                      "|---|---|---|---|"]
            for who in ("neural", "real_video", "real_pose"):
                a = af[who]
                lines.append(f"| {who} | {fmt(a['sign_accuracy'])} | {fmt(a['pearson'])} | "
                             f"{a['n_turn_steps']} |")
            lines.append("")
    if report.get("video"):
        lines += [f"Side-by-side video (real | neural): `{report['video']}`", ""]
    lines += ["Plots: " + ", ".join(f"`{p}`" for p in report["plots"]), ""]
    return "\n".join(lines)


def run_drift(world_dir: str, steps: int = 360, families: list[str] | None = None,
              long_steps: int = 0, out: str = "outputs/drift", video: bool = False,
              seed: int = 0, doom_map: str | None = None,
              compare: dict[str, str] | None = None, device: str = "cpu",
              card: bool = False) -> dict[str, Any]:
    """Every family (and the optional long explorer run) in the real game and in each world;
    writes report.json / report.md / plots (and a side-by-side mp4) under ``out``."""
    worlds = load_worlds({"neural": world_dir, **(compare or {})}, device)
    h, w, _ = worlds["neural"].frame_shape
    doom_map = doom_map or worlds["neural"].source_map()
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    families = list(FAMILIES) if families is None else families
    plan: list[tuple[str, np.ndarray | None, int]] = [
        (f, family_commands(f, steps, seed), steps) for f in families]
    if long_steps > 0:
        plan.append((f"explorer_{long_steps}", None, long_steps))  # policy reads the real game

    results: dict[str, dict[str, Any]] = {}
    video_path = None
    for family, commands, n in tqdm(plan, desc="drift families"):
        real = real_run(commands, doom_map, w, h, seed, steps=n,
                        policy=ExplorerPolicy() if commands is None else None)
        results[family], frames = run_family(family, real, worlds, seed)
        if video and video_path is None:
            video_path = write_side_by_side(outdir / f"side_by_side_{family}.mp4", real.frames,
                                            frames["neural"])

    report = _clean({"world": str(world_dir), "map": doom_map, "seed": seed, "width": w,
                     "height": h, "compare": compare or {}, "video": video_path,
                     "plots": _plots(outdir, results), "families": _without_series(results)})
    (outdir / "report.json").write_text(json.dumps(report, indent=1))
    (outdir / "report.md").write_text(_markdown(report))
    print_report("drift", summary_rows(report), {"out": str(outdir)})
    if card:
        metrics = worlds["neural"].card.get("metrics", {})  # keep families of earlier runs
        drift = {**metrics.get("drift", {}), **card_metrics(report)}
        update_card(world_dir, metrics={**metrics, "drift": drift})
    return report


def load_worlds(dirs: dict[str, str], device: str) -> dict[str, World]:
    """Load the worlds to compare; they must make frames of one size."""
    worlds = {name: load_world(path, device) for name, path in dirs.items()}
    shape = next(iter(worlds.values())).frame_shape
    for name, wd in worlds.items():
        if wd.frame_shape != shape:
            raise ValueError(f"world {name!r} makes {wd.frame_shape} frames, the evaluated world "
                             f"{shape}: compare worlds of one resolution")
    return worlds


def run_family(family: str, real: RealRun, worlds: dict[str, World], seed: int
               ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Each world driven by the commands the real game applied (it stops early if the episode
    ended), evaluated against it; returns the family's results and each world's frames."""
    cmds = real.commands
    gens, frames = {}, {}
    for gname, wd in worlds.items():
        frames[gname], step_seconds = neural_run(wd, real.frames[0], cmds, seed,
                                                 desc=f"{family}/{gname}")
        ev = evaluate(real, frames[gname], cmds)
        ev.update(speed(step_seconds))
        ev["nfe"] = wd.config.sample_steps
        gens[gname] = ev
    result = {"steps": int(len(cmds)), "frames": int(len(cmds) * FRAMES_PER_STEP),
              "commands": cmds, "real_seconds": real.seconds, "generators": gens}
    return result, frames


def write_side_by_side(path: Path, real: np.ndarray, neural: np.ndarray) -> str:
    k = min(len(real), len(neural))
    write_mp4(path, np.concatenate([real[:k], neural[:k]], axis=2), fps=DOOM_FPS,
              scale=max(1, 256 // real.shape[2]))
    return str(path)


def _without_series(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The results as reported: per-frame series (kept for the plots) left out."""
    return {f: {**{k: v for k, v in r.items() if k != "generators"},
                "generators": {g: {k: v for k, v in ev.items() if k != "_series"}
                               for g, ev in r["generators"].items()}}
            for f, r in results.items()}


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per (family, world): first/last PSNR, flicker, yaw following, speed."""
    rows = []
    for family, res in report["families"].items():
        for gen, ev in res["generators"].items():
            buckets = ev["psnr_buckets"]
            rows.append({"family": family, "gen": gen, "frames": res["frames"],
                         "psnr_first": buckets[0] if buckets else None,
                         "psnr_last": buckets[-1] if buckets else None,
                         "ssim_last": ev["ssim_buckets"][-1] if ev["ssim_buckets"] else None,
                         "flicker_ratio": ev["flicker"]["ratio"],
                         "yaw_sign_acc": ev["action_following"]["neural"]["sign_accuracy"],
                         "yaw_corr": ev["action_following"]["neural"]["pearson"],
                         "nfe": ev["nfe"], "fps": ev["fps"]})
    return rows


def card_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The evaluated world's headline numbers per family, for its model card."""
    out: dict[str, Any] = {"map": report["map"], "seed": report["seed"]}
    for family, res in report["families"].items():
        ev = res["generators"]["neural"]
        out[family] = {
            "frames": res["frames"], "fps": ev["fps"], "rtf": ev["rtf"],
            "psnr_first": ev["psnr_buckets"][0] if ev["psnr_buckets"] else None,
            "psnr_last": ev["psnr_buckets"][-1] if ev["psnr_buckets"] else None,
            "ssim_last": ev["ssim_buckets"][-1] if ev["ssim_buckets"] else None,
            "late_in_range": {k: v["late_in_range"] for k, v in ev["stats"].items()},
            "flicker_ratio": ev["flicker"]["ratio"],
            "yaw_sign_accuracy": ev["action_following"]["neural"]["sign_accuracy"],
            "yaw_pearson": ev["action_following"]["neural"]["pearson"]}
    return _clean(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = command_parser("aapt-world drift", __doc__.split("\n")[0])
    parser.add_argument("--world", default=str(DEFAULT_WORLD),
                        help="world directory to evaluate (default: the shipped world)")
    parser.add_argument("--steps", type=int, default=360, help="steps per family (4 frames each)")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"comma-separated, of {','.join(FAMILIES)}")
    parser.add_argument("--long-steps", type=int, default=0,
                        help="extra long explorer run (2625 steps = 5 min at 35 fps); 0 = off")
    parser.add_argument("--out", default="outputs/drift",
                        help="output directory (report.md/json, plots, mp4)")
    parser.add_argument("--video", action="store_true", help="side-by-side mp4 of the 1st family")
    parser.add_argument("--seed", type=int, default=0, help="seed of the worlds and the routes")
    parser.add_argument("--map", default=None, help="Doom map (None: the world card's)")
    parser.add_argument("--compare", nargs="*", default=[], metavar="NAME=DIR",
                        help="extra worlds evaluated side by side")
    parser.add_argument("--device", default="auto", help="torch device of the worlds: auto "
                        "(cuda when available), cpu or cuda")
    parser.add_argument("--card", action="store_true",
                        help="write the headline numbers into the evaluated world's model card")
    add_threads(parser)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    compare = parse_compare(parser, args.compare)
    families = parse_families(parser, args.families)
    return run_drift(args.world, args.steps, families, args.long_steps, args.out, args.video,
                     args.seed, args.map, compare, resolve_device(args.device), args.card)


def parse_compare(parser: argparse.ArgumentParser, items: list[str], option: str = "--compare",
                  value: str = "DIR") -> dict[str, str]:
    """``--compare NAME=DIR ...`` -> {name: dir}; a malformed item is a parser error."""
    compare = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"{option} takes NAME={value}, got {item!r}")
        compare[name] = path
    return compare


def parse_families(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """``--families a,b`` -> [a, b], each a known family ('' = none)."""
    families = comma_list(text)
    for f in families:
        if f not in FAMILIES:
            parser.error(f"unknown family {f!r}: expected some of {','.join(FAMILIES)}")
    return families
