"""Cached VAE latents of a dataset, so the DiT stages never touch pixels.

Layout, next to the VAE checkpoint (``<out_dir>/latents``)::

    stats.json                 per-channel mean/std of the latents (-> normalisation)
    <episode_id>.npy           float16 (S + 1, C, h, w): the episode encoded as one causal stream
    <episode_id>.first.npy     float16 (S + 1, C, h, w): frame 4s encoded ALONE, for every s
    <episode_id>.mirror[.first].npy   the same for the episode mirrored left-right
                               (``data.mirror``: only when the run trains on mirrored clips)

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
# Commands whose sign flips in a left-right mirrored world (Doom's: a strafe or a turn to the
# left becomes one to the right; forward motion and pitch stay). A mirrored episode (frames
# flipped, these commands negated) is another valid episode of the same game.
MIRRORED_COMMANDS = ("strafe", "turn")


@dataclass
class LatentClip:
    latents: np.ndarray  # float32 (K + 1, C, h, w), normalised
    actions: np.ndarray  # float32 (K, A)
    rewards: np.ndarray  # float32 (K,)
    terminated: np.ndarray  # bool (K,)
    keypoints: np.ndarray | None = None  # float32 (K, 4, P, 2): pose worlds' per-frame condition
    momentum: np.ndarray | None = None  # float32 (K, 4, M): a momentum world's velocity channels


def latent_paths(directory: Path, episode_id: str, mirror: bool = False) -> tuple[Path, Path]:
    """(stream, first) latent files of an episode, or of its left-right mirror image."""
    stem = f"{episode_id}.mirror" if mirror else episode_id
    return directory / f"{stem}.npy", directory / f"{stem}.first.npy"


def mirrored_columns(action_names: list[str]) -> np.ndarray:
    """Indices of the commands a left-right mirror negates (``MIRRORED_COMMANDS``)."""
    cols = [i for i, name in enumerate(action_names) if name in MIRRORED_COMMANDS]
    if not cols:
        raise DatasetError(f"data.mirror needs commands that a mirror negates "
                           f"{MIRRORED_COMMANDS}; this dataset's action_names are {action_names}")
    return np.array(cols, dtype=np.int64)


def mirror_frames(frames: np.ndarray) -> np.ndarray:
    """Frames (T, H, W, 3) flipped left-right."""
    return np.ascontiguousarray(frames[:, :, ::-1])


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
                 momentum: CommandMomentum | None = None, mirror: bool = False,
                 floor_anchor: bool = False) -> None:
        """``keypoints``: a pose world; each clip also carries the 2D keypoints of its 4 video
        frames per step (pixels), the condition its generator is trained on (``floor_anchor``:
        the floor anchor after them, ``keypoint_columns``). ``momentum``: each
        clip also carries its commands' velocity (see :mod:`aapt_world.momentum`). ``mirror``:
        half the clips (drawn at random) come from the episodes mirrored left-right, their
        ``MIRRORED_COMMANDS`` (and those commands' velocity) negated: twice the data, and a
        world that must strafe and turn the same both ways."""
        if mirror and keypoints:
            raise DatasetError("data.mirror is for command worlds: a pose world's keypoints "
                               "would need their left and right joints swapped")
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
        self.keypoint_columns = (keypoint_columns(self.clips.manifest, floor_anchor)
                                 if keypoints else None)
        self.mirror_cols = None
        if mirror:
            self.mirror_cols = mirrored_columns(list(self.clips.manifest["action_names"]))
            channels = momentum.channels if momentum is not None else ()
            self.mirror_momentum = np.array([c in self.mirror_cols for c in channels])
        # episode id -> memory-mapped latents, as recorded and (data.mirror) mirrored
        self.stream, self.first = self._open(False)
        self.mirror_stream, self.mirror_first = self._open(True) if mirror else ({}, {})

    def _open(self, flipped: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every episode's (stream, first) latents, memory-mapped and checked."""
        streams, firsts = {}, {}
        for ep in self.clips.episodes:
            stream_path, first_path = latent_paths(self.dir, ep.id, flipped)
            for path in (stream_path, first_path):
                if not path.exists():
                    raise DatasetError(f"missing cached latents {path}: re-run "
                                       f"stage=latents{' data.mirror=true' * flipped}")
            streams[ep.id] = np.load(stream_path, mmap_mode="r")
            firsts[ep.id] = np.load(first_path, mmap_mode="r")
            if streams[ep.id].shape[0] != ep.num_steps + 1:
                raise DatasetError(f"{stream_path} holds {streams[ep.id].shape[0]} latents, "
                                   f"episode {ep.id} needs {ep.num_steps + 1}")
        return streams, firsts

    def __len__(self) -> int:
        return len(self.clips)

    def sample(self, rng: np.random.Generator, index: int | None = None) -> LatentClip:
        """A random clip, or clip ``index`` (still mirrored at random with data.mirror)."""
        episode, s = (self.clips.sample_position(rng) if index is None  # no frame is read
                      else self.clips.position(index))
        flipped = self.mirror_cols is not None and bool(rng.random() < 0.5)
        k, a = self.num_steps, episode.arrays
        stream, first = ((self.mirror_stream, self.mirror_first) if flipped
                         else (self.stream, self.first))
        z = np.concatenate([first[episode.id][s:s + 1],
                            stream[episode.id][s + 1:s + k + 1]]).astype(np.float32)
        actions, momentum = np.array(a["actions"][s:s + k]), self.clips.clip_momentum(episode, s)
        if flipped:
            actions[:, self.mirror_cols] *= -1
            if momentum is not None:
                momentum[..., self.mirror_momentum] *= -1
        keypoints = None
        if self.keypoint_columns is not None:  # the 4 frames of steps s..s+k-1: 4s+1 .. 4(s+k)
            rows = np.array(a["poses"][FRAMES_PER_STEP * s + 1:FRAMES_PER_STEP * (s + k) + 1])
            keypoints = rows[:, self.keypoint_columns].reshape(
                k, FRAMES_PER_STEP, *self.keypoint_columns.shape).astype(np.float32)
        return LatentClip((z - self.mean) / self.std, actions, np.array(a["rewards"][s:s + k]),
                          np.array(a["terminated"][s:s + k]), keypoints, momentum)


def read_stats(latents_dir: str | Path) -> dict:
    return json.loads((Path(latents_dir) / STATS).read_text())


def dataset_episode_ids(root: str | Path) -> list[str]:
    return [e["id"] for e in read_manifest(root)["episodes"]]
