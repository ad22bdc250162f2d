"""Encode the dataset once with the trained VAE (see ``training.latents`` for the layout).

Resumable: episodes whose latents exist are skipped; files are written atomically. The
per-channel statistics are computed once (the first complete run, from the episodes as
recorded, never their mirror images): re-running after adding episodes (or ``data.mirror``)
encodes them but keeps the normalisation the DiT stages were trained on (delete
``stats.json`` to recompute). Under torchrun, episodes are split across processes and rank 0
writes the statistics.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from tqdm import tqdm

from aapt_world.checkpoint import atomic_replace
from aapt_world.vae import CausalVideoVAE
from training.config import TrainConfig
from training.dataset import ClipDataset
from training.latents import STATS, encode_episode, latent_paths, mirror_frames
from training.trainer import Dist, load_stage_weights, stage_dir

STAGE_DIR = "latents"


def run(cfg: TrainConfig, ranks: Dist, device: torch.device) -> dict[str, float]:
    vae = CausalVideoVAE(cfg.model.vae).to(device).eval()
    load_stage_weights(cfg, "vae", {"vae": vae})
    out = stage_dir(cfg, STAGE_DIR)
    out.mkdir(parents=True, exist_ok=True)
    episodes = ClipDataset(cfg.data.root, 1, split="all").episodes
    mine = episodes[ranks.rank::ranks.world_size]
    versions = (False, True) if cfg.data.mirror else (False,)  # data.mirror: also mirrored
    for ep in tqdm(mine, desc="encoding episodes", disable=not (cfg.run.progress
                                                                 and ranks.is_main)):
        for flipped in versions:
            stream_path, first_path = latent_paths(out, ep.id, flipped)
            if stream_path.exists() and first_path.exists():
                continue
            frames = ep.arrays["frames"]
            stream, first = encode_episode(vae, mirror_frames(frames) if flipped else frames,
                                           device)
            for path, array in ((first_path, first), (stream_path, stream)):
                atomic_replace(path, lambda tmp, a=array: np.save(open(tmp, "wb"), a))
    if ranks.world_size > 1:
        torch.distributed.barrier()
    if not ranks.is_main:
        return {}
    if (out / STATS).exists():  # the normalisation later stages trained on stays: episodes
        stats = json.loads((out / STATS).read_text())  # added later are encoded, not averaged in
        return {"episodes": float(len(episodes)), "mean_std": float(np.mean(stats["std"]))}
    # Per-channel statistics over all stream latents (float64 running sums).
    total, sq, count = 0.0, 0.0, 0
    for ep in episodes:
        z = np.load(latent_paths(out, ep.id)[0]).astype(np.float64)
        total = total + z.sum(axis=(0, 2, 3))
        sq = sq + (z**2).sum(axis=(0, 2, 3))
        count += z.shape[0] * z.shape[2] * z.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 1e-12))
    stats = {"mean": mean.tolist(), "std": std.tolist(), "episodes": len(episodes),
             "latent_frames": int(count // (z.shape[2] * z.shape[3]))}
    atomic_replace(out / STATS, lambda tmp: open(tmp, "w").write(json.dumps(stats, indent=1)))
    return {"episodes": float(len(episodes)), "mean_std": float(std.mean())}
