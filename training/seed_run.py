"""Seed a run directory with a shipped world's autoencoder, so later stages share its latents.

    python -m training.seed_run --world worlds/doom --vae worlds/doom-training/vae.safetensors \
        --run runs/doom4
    python -m training.seed_run --world worlds/doom \
        --decoder runs/doom6-dec/decoder/model.safetensors --out runs/doom6-dec/world
    (the way back: a world with a run's decoder; --heads: with a run's heads)

A fresh clone has no ``runs/``. The DiT stages can start from a world (``run.init_from``), but
they also need the world's latent space: this writes ``<run>/vae/model.safetensors`` (the
training copy of the VAE: encoder, full and light decoder) and ``<run>/decoder/model.safetensors``
(the world's own, patch-GAN-sharpened light decoder, which export then ships again). The VAE's
encoder must be the world's, bit for bit: otherwise the latents would not be the world's.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from aapt_world.checkpoint import (
    CheckpointError,
    atomic_replace,
    load_into,
    load_weights,
    save_weights,
    weights_exist,
)
from aapt_world.world import WEIGHTS as WORLD_WEIGHTS
from aapt_world.world import load_world, save_world
from training.latents import STATS
from training.trainer import WEIGHTS

WORLD_ENCODER, WORLD_DECODER = "vae.encoder.", "vae.decoder."  # a world's VAE: light decoder
STAGE_DECODER = "light_decoder."
STAGE_HEADS = "heads."


def seed_stats(world_tensors: dict[str, torch.Tensor], run: Path) -> list[Path]:
    """``<run>/latents/stats.json`` from the world's own latent normalisation (when the run
    has none): stage=latents then keeps it, so the generator continues on the latents it was
    trained on instead of a fresh encoding's statistics (they differ by a few %)."""
    path = run / "latents" / STATS
    if path.exists():
        return []
    shift, scale = (world_tensors[f"vae.latent_{k}"].double() for k in ("shift", "scale"))
    stats = {"mean": shift.tolist(), "std": (1.0 / scale).tolist(), "from_world": True}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_replace(path, lambda tmp: Path(tmp).write_text(json.dumps(stats, indent=1)))
    return [path]


def seed_run(world: Path, vae: Path, run: Path, world_encoder: bool = False) -> list[Path]:
    """Write the vae and decoder stages of ``run`` from ``world`` and the VAE file, and the
    world's latent normalisation; returns the files written (none when all exist already).
    ``world_encoder``: when the world's VAE was fine-tuned after the file was written, take
    the world's encoder into the VAE stage (what its generator learned on) instead of
    refusing the pair; the file's full decoder then meets an encoder it was not trained with."""
    targets = run / "vae" / WEIGHTS, run / "decoder" / WEIGHTS
    if (run / "latents" / STATS).exists() and all(weights_exist(t) for t in targets):
        return []  # seeded already: no need to read the world
    world_tensors, _ = load_weights(world / WORLD_WEIGHTS)
    written = seed_stats(world_tensors, run)
    if all(weights_exist(t) for t in targets):
        return written
    vae_tensors, vae_meta = load_weights(vae)
    encoder = {k: v for k, v in world_tensors.items() if k.startswith(WORLD_ENCODER)}
    differ = [k for k, v in encoder.items() if k not in vae_tensors
              or not torch.equal(v.float(), vae_tensors[k].float())]
    if encoder and differ and world_encoder:
        vae_tensors = {**vae_tensors, **encoder}
        vae_meta = {**vae_meta, "encoder_from_world": str(world)}
    elif not encoder or differ:
        raise CheckpointError(f"{vae} is not the VAE of {world}: encoder tensors differ "
                              f"({differ[:3]})")
    decoder = {STAGE_DECODER + k[len(WORLD_DECODER):]: v.float()
               for k, v in world_tensors.items() if k.startswith(WORLD_DECODER)}
    written += save_weights(targets[0], {k: v.float() for k, v in vae_tensors.items()}, vae_meta)
    written += save_weights(targets[1], decoder,
                            {**vae_meta, "stage": "decoder", "from_world": str(world)})
    return written


def stage_weights(path: Path, prefix: str, what: str) -> tuple[dict[str, torch.Tensor], dict]:
    """A stage file's ``prefix``* tensors with the prefix stripped, and its metadata."""
    tensors, meta = load_weights(path)
    weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not weights:
        raise CheckpointError(f"{path} holds no {prefix}* weights: not {what}")
    return weights, meta


def with_decoder(world_dir: Path, decoder: Path, out: Path) -> None:
    """The way back: ``world_dir`` with its light decoder replaced by a decoder stage's
    (``<run>/decoder/model.safetensors``), written to ``out`` (generator, encoder, start
    frames and card kept; the card records the new decoder)."""
    world = load_world(world_dir)
    light, meta = stage_weights(decoder, STAGE_DECODER, "a decoder stage")
    load_into(world.vae.decoder, light, str(decoder))
    world.card = {**world.card, "decoder": {"from": str(decoder), "step": meta.get("step"),
                                            "based_on": str(world_dir)}}
    save_world(out, world)


def with_heads(world_dir: Path, heads: Path, out: Path) -> None:
    """``world_dir`` with its reward / termination heads replaced by a heads stage's
    (``<run>/heads/model.safetensors``, e.g. heads trained on this world's own sampled
    rollouts), written to ``out``; everything else kept, the card records the new heads."""
    world = load_world(world_dir)
    if world.heads is None:
        raise CheckpointError(f"{world_dir} has no heads to replace (export it with a heads "
                              "stage first: its config fixes their shape)")
    weights, meta = stage_weights(heads, STAGE_HEADS, "a heads stage")
    load_into(world.heads, weights, str(heads))
    trained = {"steps": meta.get("step"), "weights": str(heads)}
    val_log = heads.parent / "val_log.csv"  # the stage's last validation, when beside it
    if val_log.exists():
        with open(val_log, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows:
            trained["val"] = {k: round(float(v), 4) for k, v in rows[-1].items() if v}
    world.card = {**world.card, "heads": {"from": str(heads), "step": meta.get("step"),
                                          "based_on": str(world_dir)},
                  "training": {**world.card.get("training", {}), "heads": trained}}
    save_world(out, world)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.seed_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, required=True, help="a world directory")
    parser.add_argument("--vae", type=Path, help="the training copy of that world's VAE "
                        "(stage=vae weights): seed --run with it")
    parser.add_argument("--run", type=Path, help="the run directory to seed")
    parser.add_argument("--world-encoder", action="store_true", help="the VAE file's encoder "
                        "differs from the world's (fine-tuned later): take the world's")
    parser.add_argument("--decoder", type=Path, help="instead: a decoder stage's weights to put "
                        "into --world, written to --out")
    parser.add_argument("--heads", type=Path, help="instead: a heads stage's weights to put "
                        "into --world, written to --out")
    parser.add_argument("--out", type=Path, help="the world directory --decoder / --heads "
                        "writes")
    args = parser.parse_args(argv)
    if args.decoder is not None and args.heads is not None:
        parser.error("--decoder and --heads: one at a time")
    for option, swap in (("decoder", with_decoder), ("heads", with_heads)):
        if getattr(args, option) is not None:
            if args.out is None:
                parser.error(f"--{option} needs --out")
            swap(args.world, getattr(args, option), args.out)
            print(f"wrote {args.out}")
            return
    if args.vae is None or args.run is None:
        parser.error("seeding needs --vae and --run")
    for path in seed_run(args.world, args.vae, args.run, args.world_encoder):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
