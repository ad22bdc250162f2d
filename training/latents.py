"""Cached VAE latents of a dataset, so the DiT stages never touch pixels.

Layout, next to the VAE checkpoint (``<out_dir>/latents``)::

    stats.json                 per-channel mean/std of the latents (-> normalisation)
    <episode_id>.npy           float16 (S + 1, C, h, w): the episode encoded as one causal stream
    <episode_id>.first.npy     float16 (S + 1, C, h, w): frame 4s encoded ALONE, for every s

A clip starting at step s is ``[first[s], stream[s + 1], ..., stream[s + K]]``: its latent 0 is
a start image encoded alone — exactly what the env feeds the generator at reset — and the rest
comes from the continuous stream (the causal encoder's memory of earlier frames is a few latent
frames long, so mid-episode latents barely differ from clip-start ones).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aapt_world.momentum import CommandMomentum
from aapt_world.session import from_uint8_frames
from training.dataset import (
    FRAMES_PER_STEP,
    ClipDataset,
    DatasetError,
    keypoint_columns,
    read_manifest,
)

STATS = "stats.json"


@dataclass
class LatentClip:
    latents: np.ndarray  # float32 (K + 1, C, h, w), normalised
    actions: np.ndarray  # float32 (K, A)
    rewards: np.ndarray  # float32 (K,)
    terminated: np.ndarray  # bool (K,)
    keypoints: np.ndarray | None = None  # float32 (K, 4, P, 2): pose worlds' per-frame condition
    momentum: np.ndarray | None = None  # float32 (K, 4, M): a momentum world's velocity channels


def latent_paths(directory: Path, episode_id: str) -> tuple[Path, Path]:
    return directory / f"{episode_id}.npy", directory / f"{episode_id}.first.npy"


@torch.no_grad()
def encode_episode(vae, frames: np.ndarray, device: torch.device, chunk_steps: int = 64
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Encode one episode's frames (T = 1 + 4S, H, W, 3) uint8 -> (stream, first) latents."""
    to_video = lambda f: from_uint8_frames(torch.from_numpy(np.array(f)).to(device)) \
        .transpose(0, 1)[None]  # (1, 3, T, H, W) in [-1, 1]
    steps = (frames.shape[0] - 1) // FRAMES_PER_STEP
    state = vae.init_encode_state(1, frames.shape[1], frames.shape[2])
    stream = []
    posterior, state = vae.encode_step(to_video(frames[:1]), state)
    stream.append(posterior.mode()[:, :, 0])
    for s in range(0, steps, chunk_steps):  # chunks of steps: memory flat for any length
        group = frames[1 + FRAMES_PER_STEP * s: 1 + FRAMES_PER_STEP * min(s + chunk_steps, steps)]
        posterior, state = vae.encode_groups(to_video(group), state)
        stream.extend(posterior.mode().unbind(2))
    firsts = []
    starts = frames[::FRAMES_PER_STEP]
    for i in range(0, len(starts), chunk_steps):  # each frame alone: a batch of 1-frame clips
        video = torch.cat([to_video(f[None]) for f in starts[i:i + chunk_steps]])
        firsts.append(vae.encode(video).mode()[:, :, 0])
    as_np = lambda xs: torch.cat(xs).cpu().numpy().astype(np.float16)
    return as_np(stream), as_np(firsts)


class LatentClipDataset:
    """Clips of K steps from cached latents, normalised with the cached statistics."""

    def __init__(self, latents_dir: str | Path, dataset_root: str | Path, num_steps: int,
                 split: str = "train", keypoints: bool = False,
                 momentum: CommandMomentum | None = None) -> None:
        """``keypoints``: a pose world; each clip also carries the 2D keypoints of its 4 video
        frames per step (pixels), the condition its generator is trained on. ``momentum``: each
        clip also carries its commands' velocity (see :mod:`aapt_world.momentum`)."""
        self.dir = Path(latents_dir)
        stats_path = self.dir / STATS
        if not stats_path.exists():
            raise DatasetError(f"no cached latents at {self.dir} ({STATS} missing): run "
                               f"`aapt-world train stage=latents` first")
        stats = json.loads(stats_path.read_text())
        self.mean = np.asarray(stats["mean"], dtype=np.float32)[:, None, None]
        self.std = np.asarray(stats["std"], dtype=np.float32)[:, None, None]
        self.clips = ClipDataset(dataset_root, num_steps, split, momentum=momentum)  # actions ..
        self.num_steps = num_steps
        self.keypoint_columns = keypoint_columns(self.clips.manifest) if keypoints else None
        self.stream, self.first = {}, {}
        for ep in self.clips.episodes:
            stream_path, first_path = latent_paths(self.dir, ep.id)
            for path in (stream_path, first_path):
                if not path.exists():
                    raise DatasetError(f"missing cached latents {path}: re-run stage=latents")
            self.stream[ep.id] = np.load(stream_path, mmap_mode="r")
            self.first[ep.id] = np.load(first_path, mmap_mode="r")
            if self.stream[ep.id].shape[0] != ep.num_steps + 1:
                raise DatasetError(f"{stream_path} holds {self.stream[ep.id].shape[0]} latents, "
                                   f"episode {ep.id} needs {ep.num_steps + 1}")

    def __len__(self) -> int:
        return len(self.clips)

    def sample(self, rng: np.random.Generator) -> LatentClip:
        episode, s = self.clips.sample_position(rng)  # no frame is read
        k, a = self.num_steps, episode.arrays
        z = np.concatenate([self.first[episode.id][s:s + 1],
                            self.stream[episode.id][s + 1:s + k + 1]]).astype(np.float32)
        keypoints = None
        if self.keypoint_columns is not None:  # the 4 frames of steps s..s+k-1: 4s+1 .. 4(s+k)
            rows = np.array(a["poses"][FRAMES_PER_STEP * s + 1:FRAMES_PER_STEP * (s + k) + 1])
            keypoints = rows[:, self.keypoint_columns].reshape(
                k, FRAMES_PER_STEP, *self.keypoint_columns.shape).astype(np.float32)
        return LatentClip((z - self.mean) / self.std, np.array(a["actions"][s:s + k]),
                          np.array(a["rewards"][s:s + k]), np.array(a["terminated"][s:s + k]),
                          keypoints, self.clips.clip_momentum(episode, s))


def read_stats(latents_dir: str | Path) -> dict:
    return json.loads((Path(latents_dir) / STATS).read_text())


def dataset_episode_ids(root: str | Path) -> list[str]:
    return [e["id"] for e in read_manifest(root)["episodes"]]
