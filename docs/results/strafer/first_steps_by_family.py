"""Teacher-forced and free first steps per drift family, on the real game's runs (24 steps).

    python docs/results/strafer/first_steps_by_family.py shipped=worlds/doom NAME=WORLD_DIR ...

Writes first_steps_by_family.json beside this file: per family@map and world, the mean
teacher-forced PSNR (real previous latent, real command), the copy-previous and VAE-ceiling
baselines of the same frames, and the first 8 steps of each, plus the free rollout's.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from aapt_world import metrics as M
from aapt_world.world import load_world
from agents.evaluation.drift import family_commands, neural_run, real_run
from agents.evaluation.ladder import decode_latents, encode_latents
from envs.actions import FRAMES_PER_STEP, command_to_frame_conditions

FAMILIES = ("strafe", "walk", "slow_turn", "wall_bump")
MAPS = ("MAP01", "MAP04")
STEPS = 24


def step_psnr(pred: np.ndarray, real: np.ndarray) -> float:
    return float(M.psnr(pred, real).mean())


def measure(world_dir: str, real) -> dict:
    world = load_world(world_dir, device="cpu")
    z = encode_latents(world, real.frames, "cpu")
    recon = decode_latents(world, z)
    session = world.session(1)
    session.reset(torch.from_numpy(real.frames[:1]), seeds=[0])
    free, _ = neural_run(world, real.frames[0], real.commands, 0, desc="free")
    rows = {"tf": [], "copy": [], "ceil": [], "free": []}
    for k, command in enumerate(real.commands):
        conds = torch.from_numpy(command_to_frame_conditions(command))[None]
        frames = session.step(conds, recycled=z[:, :, k])[0].cpu().numpy()
        target = slice(1 + FRAMES_PER_STEP * k, 1 + FRAMES_PER_STEP * (k + 1))
        held = np.repeat(real.frames[FRAMES_PER_STEP * k][None], FRAMES_PER_STEP, 0)
        rows["tf"].append(step_psnr(frames, real.frames[target]))
        rows["copy"].append(step_psnr(held, real.frames[target]))
        rows["ceil"].append(step_psnr(recon[target], real.frames[target]))
        rows["free"].append(step_psnr(free[target], real.frames[target]))
    out = {f"{name}_mean": float(np.mean(v)) for name, v in rows.items()}
    out.update({name: np.round(v[:8], 2).tolist() for name, v in rows.items()})
    return out


def main() -> None:
    torch.set_num_threads(1)
    worlds = dict(arg.split("=", 1) for arg in sys.argv[1:])
    report = {}
    for family in FAMILIES:
        for doom_map in MAPS:
            real = real_run(family_commands(family, STEPS, 0), doom_map, 128, 96, 0)
            for name, world_dir in worlds.items():
                r = measure(world_dir, real)
                report[f"{family}@{doom_map}/{name}"] = r
                print(f"{family}@{doom_map} {name}: teacher-forced {r['tf_mean']:.2f}, copy "
                      f"{r['copy_mean']:.2f}, ceiling {r['ceil_mean']:.2f}", flush=True)
    out = Path(__file__).parent / "first_steps_by_family.json"
    out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
