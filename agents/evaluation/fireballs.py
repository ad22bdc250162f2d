"""Does a TakeCover dream keep the fireballs? A colour detector for the imps' fireballs.

In ViZDoom's ``take_cover`` the only bright yellow things are the fireballs (walls are brown,
floor and sky grey), so a pixel counts as fireball when it is bright, yellow and not white.
Measured on the recorded real episodes (64x48): 22-42 % of frames show one (>= 3 pixels), and
a fireball about to hit covers hundreds of pixels. A dream whose frames lose them cannot make
the player's death depend on how it dodges; ``agent eval`` reports the share of steps with a
fireball and their mean area for the real game and the dream side by side, and
``python -m agents.evaluation.fireballs --world W --root DATA`` whether the world's VAE keeps
them at all (real frames through encode/decode).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aapt_world.cli_options import add_threads, apply_threads, command_parser
from aapt_world.constants import FRAMES_PER_STEP as GROUP
from aapt_world.report import print_report
from aapt_world.session import from_uint8_frames, to_uint8_frames
from aapt_world.world import load_world

MIN_RED, MIN_GREEN, MAX_BLUE = 200, 170, 170  # bright yellow: the fireballs' core and halo
MIN_PIXELS = 3  # a frame "shows a fireball" from this many pixels (a far fireball is ~4)


def fireball_pixels(frame: np.ndarray) -> int:
    """Fireball-coloured pixels of one uint8 (H, W, 3) frame."""
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected one (H, W, 3) frame, got shape {frame.shape}")
    r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
    return int(np.count_nonzero((r > MIN_RED) & (g > MIN_GREEN) & (b < MAX_BLUE)))


def fireball_stats(pixels: list[int], frame_size: int) -> dict[str, float]:
    """Per-step fireball pixel counts -> the share of steps showing one and the mean share of
    the frame they cover."""
    counts = np.asarray(pixels, dtype=np.float64)
    if counts.size == 0:
        return {"fireball_steps": 0.0, "fireball_area": 0.0}
    return {"fireball_steps": float((counts >= MIN_PIXELS).mean()),
            "fireball_area": float(counts.mean() / frame_size)}


# ------------------------------------------------------------------ do they survive the VAE?
CLIP_FRAMES = 121  # 30 latent groups + the first frame: one encode/decode call


def vae_recall(vae: Any, episodes: list[Path]) -> dict[str, float]:
    """Encode and decode real episodes with ``vae`` (a world's CausalVideoVAE) and compare the
    detector's counts: the share of frames showing a fireball, real and reconstructed; the
    share of real fireballs the reconstruction still shows (all, and small ones < 50 pixels);
    the reconstructed fireball area over the real one."""
    real, recon = [], []
    for episode in episodes:
        frames = np.load(episode / "frames.npy")
        for start in range(0, len(frames) - GROUP, CLIP_FRAMES):
            clip = frames[start:start + CLIP_FRAMES]
            clip = clip[:1 + GROUP * ((len(clip) - 1) // GROUP)]
            video = from_uint8_frames(torch.from_numpy(clip)).permute(1, 0, 2, 3)[None]
            with torch.inference_mode():
                decoded = vae.decode(vae.encode(video).mode())
            real += [fireball_pixels(f) for f in clip]
            recon += [fireball_pixels(f) for f in to_uint8_frames(decoded[0].transpose(0, 1))
                      .numpy()]
    real_px, recon_px = np.asarray(real), np.asarray(recon)
    shown, small = real_px >= MIN_PIXELS, (real_px >= MIN_PIXELS) & (real_px < 50)
    kept = recon_px >= MIN_PIXELS
    return {"frames": int(real_px.size), "real_frames_with_fireball": float(shown.mean()),
            "recon_frames_with_fireball": float(kept.mean()),
            "recall": float(kept[shown].mean()) if shown.any() else float("nan"),
            "recall_small": float(kept[small].mean()) if small.any() else float("nan"),
            "area_ratio": float(recon_px[shown].sum() / max(1, real_px[shown].sum()))}


def stage_vae(path: str, model: str) -> Any:
    """The encoder and light decoder of a VAE stage checkpoint, built as ``model``."""
    from aapt_world.checkpoint import load_modules, load_weights
    from aapt_world.vae import CausalVideoVAE
    from training.train import compose_config

    cfg = compose_config([f"model={model}"]).model.vae
    vae = CausalVideoVAE(dataclasses.replace(cfg, light_decoder=True)).eval()
    load_modules({"vae.encoder": vae.encoder, "light_decoder": vae.decoder},
                 load_weights(Path(path))[0], path)
    return vae


def main(argv: list[str] | None = None) -> None:
    """python -m agents.evaluation.fireballs --world W --root DATA [--episodes 6]: does the
    world's VAE keep the fireballs of a recorded TakeCover dataset (at the world's size)?"""
    parser = command_parser("python -m agents.evaluation.fireballs",
                            "fireball recall of a world's VAE on recorded TakeCover episodes")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--world", help="world directory (its VAE is used)")
    source.add_argument("--vae", help="a VAE stage's weights (<run>/vae/model.safetensors: its "
                                      "encoder and light decoder, as a world would ship them)")
    parser.add_argument("--model", default="dream96",
                        help="with --vae: the training model config it was trained as")
    parser.add_argument("--root", required=True, help="recorded dataset (aapt-world collect)")
    parser.add_argument("--episodes", type=int, default=6, help="episodes read (sorted names)")
    parser.add_argument("--json", default=None, help="also write the JSON result here")
    add_threads(parser, default=1)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    episodes = sorted(Path(args.root, "episodes").glob("ep_*"))[:args.episodes]
    if not episodes:
        raise SystemExit(f"--root: no episodes under {Path(args.root, 'episodes')}")
    vae = load_world(args.world).vae if args.world else stage_vae(args.vae, args.model)
    shape = (vae.cfg.height, vae.cfg.width, 3)
    if np.load(episodes[0] / "frames.npy", mmap_mode="r").shape[1:] != shape:
        raise SystemExit(f"--root: frames of {episodes[0]} are not the VAE's {shape} (record "
                         f"the dataset at its size)")
    row = {"world": args.world or args.vae, "root": args.root, **vae_recall(vae, episodes)}
    print_report("fireballs through the VAE", [row], json_path=args.json)


if __name__ == "__main__":
    main()
