"""A generator stage as a small fp16 file that a fresh clone resumes from.

    python -m training.snapshot --stage runs/humanoid/diffusion \
        --out worlds/humanoid-training/stage1/model.safetensors

A stage's own checkpoint holds fp32 weights, their weight average and the optimizer state
(tens of MB); a fresh clone only needs the generator. This writes the stage's weight average
(``<name>_ema.*``, the generator export ships; the live weights when it kept none) as
``model.*`` in fp16, sharded at the repository's shard limit, with the stage's metadata and
the step it came from, so ``run.init_from=<out>`` starts the next run from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from aapt_world.checkpoint import load_weights, save_weights, weights_exist
from training.trainer import WEIGHTS, pick_generator

GENERATOR = "model"  # the generator module's name in stage 1 and 2: what run.init_from loads


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m training.snapshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", type=Path, required=True,
                        help="a generator stage's directory (e.g. runs/humanoid/diffusion)")
    parser.add_argument("--out", type=Path, required=True, help="the .safetensors to write")
    args = parser.parse_args(argv)
    stage_file = args.stage / WEIGHTS
    if not weights_exist(stage_file):
        parser.error(f"no stage checkpoint at {stage_file}")
    tensors, metadata = load_weights(stage_file)
    generator, averaged = pick_generator(tensors, stage_file)
    tensors = {f"{GENERATOR}.{k}": v for k, v in generator.items()}
    metadata = {**metadata, "generator_weights": "weight average" if averaged else "live",
                "snapshot_of": str(args.stage)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    files = save_weights(args.out, tensors, metadata, dtype=torch.float16)
    print(f"wrote {', '.join(map(str, files))} (step {metadata.get('step', '?')}, "
          f"{metadata['generator_weights']}, fp16)")
    return files


if __name__ == "__main__":
    main()
