"""Which latent channels a world's VAE needs, and which a one-step predictor can follow.

    aapt-world latent-channels --world worlds/doom --out outputs/latent_channels

On the ladder's held-out explorer clips: per channel, copy-previous latent MSE over the zero
prediction (normalised latents; > 1 means consecutive latents correlate at rho < 0.5, so a
one-step mean can only average the channel away), the same after a spatial low-pass (is it
aliasing?), and the clips decoded with the unpredictable channels copied from the previous
step or set to their mean: how much of the picture lives where the generator cannot follow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aapt_world import metrics as M
from aapt_world.checkpoint import load_weights
from aapt_world.cli_options import add_threads, apply_threads, comma_list, command_parser
from aapt_world.report import print_report
from aapt_world.world import load_world
from agents.evaluation.ladder import (
    LadderConfig,
    decode_latents,
    encode_latents,
    held_out_clips,
    latent_predictability,
)
from envs import DEFAULT_WORLD

UNPREDICTABLE = 1.0  # copy/zero above this: a copy is worse than the channel's mean
LOWPASS = 3  # box size of the spatial low-pass (latent cells)


def lowpass(z: torch.Tensor, size: int = LOWPASS) -> torch.Tensor:
    """(1, C, L, h, w) -> the same, each latent frame box-filtered over size x size cells."""
    frames = z[0].transpose(0, 1)  # (L, C, h, w)
    pooled = torch.nn.functional.avg_pool2d(frames, size, 1, size // 2, count_include_pad=False)
    return pooled.transpose(0, 1)[None]


def channel_variants(z: torch.Tensor, unpredictable: torch.Tensor) -> dict[str, torch.Tensor]:
    """The latents with channel groups replaced: what decoding loses without them."""
    previous = torch.cat([z[:, :, :1], z[:, :, :-1]], 2)
    mask = unpredictable.view(1, -1, 1, 1, 1)
    zero = z.mean(dim=(0, 2, 3, 4), keepdim=True).expand_as(z)  # each channel's mean
    return {"all channels": z,
            "unpredictable copied from the previous step": torch.where(mask, previous, z),
            "unpredictable at their mean": torch.where(mask, zero, z),
            "predictable at their mean": torch.where(mask, z, zero),
            "all copied from the previous step": previous}


def swap_vae(world: Any, path: str | Path) -> None:
    """Measure another VAE in this world: the encoder and light decoder of a VAE stage's
    ``model.safetensors`` (the world decodes with the light one) replace the world's."""
    tensors, _ = load_weights(path)
    swapped = {k[len("vae."):]: v for k, v in tensors.items() if k.startswith("vae.encoder.")}
    swapped.update({"decoder." + k[len("light_decoder."):]: v for k, v in tensors.items()
                    if k.startswith("light_decoder.")})
    expected = {k for k in world.vae.state_dict() if k.startswith(("encoder.", "decoder."))}
    if set(swapped) != expected:
        raise ValueError(f"--vae {path}: not a VAE stage checkpoint of this world's shape "
                         f"(missing {sorted(expected - set(swapped))[:3]}, unexpected "
                         f"{sorted(set(swapped) - expected)[:3]})")
    world.vae.load_state_dict(swapped, strict=False)


@torch.inference_mode()
def latent_channels(world: Any, clips: list[np.ndarray], device: str = "cpu",
                    threshold: float = UNPREDICTABLE) -> dict[str, Any]:
    """``clips``: real frames (1 + 4 S, H, W, 3) each. Returns per-channel copy/zero (raw and
    low-passed), the unpredictable channels and the decoded PSNR of every variant."""
    if not clips:
        raise ValueError("latent_channels: no clips to measure")
    latents = [encode_latents(world, frames, device) for frames in clips]
    per_channel = np.mean([latent_predictability(z)["per_channel"] for z in latents], axis=0)
    smooth = np.mean([latent_predictability(lowpass(z))["per_channel"] for z in latents], axis=0)
    unpredictable = torch.from_numpy(per_channel > threshold).to(latents[0].device)
    psnr: dict[str, list[float]] = {}
    for frames, z in zip(clips, latents):
        for name, variant in channel_variants(z, unpredictable).items():
            decoded = decode_latents(world, variant)
            psnr.setdefault(name, []).append(float(M.psnr(decoded[1:], frames[1:]).mean()))
    return {"copy_over_zero": per_channel.tolist(), "copy_over_zero_lowpass": smooth.tolist(),
            "threshold": threshold,
            "unpredictable": np.flatnonzero(per_channel > threshold).tolist(),
            "decoded_psnr": {name: float(np.mean(v)) for name, v in psnr.items()},
            "clips": len(clips)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = command_parser("aapt-world latent-channels", __doc__.split("\n")[0])
    parser.add_argument("--world", default=str(DEFAULT_WORLD), help="world directory")
    parser.add_argument("--maps", default=",".join(LadderConfig().maps),
                        help="comma-separated maps of the held-out clips")
    parser.add_argument("--clip-steps", type=int, default=LadderConfig.clip_steps,
                        help="steps of each held-out explorer clip")
    parser.add_argument("--seed", type=int, default=LadderConfig.seed,
                        help="first seed of the held-out clips")
    parser.add_argument("--vae", default=None, help="measure this VAE stage checkpoint "
                        "(its encoder and light decoder) instead of the world's VAE")
    parser.add_argument("--threshold", type=float, default=UNPREDICTABLE,
                        help="copy/zero above which a channel counts as unpredictable")
    parser.add_argument("--out", default="outputs/latent_channels",
                        help="output directory (latent_channels.json)")
    add_threads(parser)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    maps = comma_list(args.maps)
    if not maps:
        parser.error("--maps needs at least one map")
    world = load_world(args.world)
    if args.vae:
        swap_vae(world, args.vae)
    height, width = world.frame_shape[:2]
    cfg = LadderConfig(maps=maps, clip_steps=args.clip_steps, seed=args.seed)
    clips = [run.frames for run in held_out_clips(cfg, width, height)]
    result = latent_channels(world, clips, threshold=args.threshold)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latent_channels.json").write_text(json.dumps(result, indent=1))
    (out / "latent_channels.md").write_text(markdown(result, args.world))
    rows = [{"latents decoded": name, "psnr_db": psnr}
            for name, psnr in result["decoded_psnr"].items()]
    print_report("latent-channels", rows, {"world": args.world, "vae": args.vae, "out": str(out),
                                           "unpredictable": result["unpredictable"]})
    return result


def markdown(result: dict[str, Any], world: str) -> str:
    order = np.argsort(result["copy_over_zero"])
    lines = [f"# Latent channels of `{world}`", "",
             f"{len(result['unpredictable'])} of {len(order)} channels have copy-previous / "
             f"zero MSE > {result['threshold']} ({result['clips']} held-out clips).", "",
             "| latents decoded | PSNR dB |", "|---|---|"]
    lines += [f"| {name} | {psnr:.2f} |" for name, psnr in result["decoded_psnr"].items()]
    raw, smooth = result["copy_over_zero"], result["copy_over_zero_lowpass"]
    lines += ["", f"| channel | copy / zero | after a {LOWPASS}x{LOWPASS} low-pass |",
              "|---|---|---|"]
    lines += [f"| {c} | {raw[c]:.2f} | {smooth[c]:.2f} |" for c in order]
    return "\n".join(lines) + "\n"
