"""Turning sampled dataset clips into training tensors: video clips (VAE, decoder) and
cached-latent clips (every DiT stage and the heads)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from aapt_world.constants import FRAMES_PER_STEP
from aapt_world.session import from_uint8_frames
from training.config import TrainConfig
from training.dataset import ClipDataset
from training.latents import LatentClipDataset
from training.models import condition_config
from training.trainer import stage_dir


@dataclass
class VideoBatch:
    video: torch.Tensor  # float (B, 3, 4K+1, H, W) in [-1, 1]
    conds: torch.Tensor  # float (B, K, 4, A [+ M]): the generator's per-frame conditions
    rewards: torch.Tensor  # float (B, K)
    terminated: torch.Tensor  # float (B, K)


def video_batch(dataset: ClipDataset, rng: np.random.Generator, batch_size: int,
                device: torch.device) -> VideoBatch:
    clips = [dataset.sample(rng) for _ in range(batch_size)]
    frames = torch.from_numpy(np.stack([c.frames for c in clips])).to(device)
    video = from_uint8_frames(frames).transpose(1, 2)  # (B, 3, T, H, W) in [-1, 1]
    as_tensor = lambda name: torch.from_numpy(
        np.stack([getattr(c, name) for c in clips]).astype(np.float32)).to(device)
    momentum = as_tensor("momentum") if clips[0].momentum is not None else None
    return VideoBatch(video, frame_conditions(as_tensor("actions"), momentum),
                      as_tensor("rewards"), as_tensor("terminated"))


@dataclass
class LatentBatch:
    latents: torch.Tensor  # float (B, C, K+1, h, w), normalised
    conds: torch.Tensor  # float (B, K, 4, A [+ M]): each step's command held for its 4 frames
    # (then a momentum world's velocity), or (B, K, 4, P, 2) a pose world's per-frame keypoints
    rewards: torch.Tensor  # float (B, K)
    terminated: torch.Tensor  # float (B, K)


LatentData = tuple[LatentClipDataset, LatentClipDataset]  # (train, val)
VideoData = tuple[ClipDataset, ClipDataset]


def latent_datasets(cfg: TrainConfig) -> LatentData:
    """(train, val) clips of the run's cached latents (``<out_dir>/latents``)."""
    latents, pose = stage_dir(cfg, "latents"), cfg.world.condition == "pose"
    momentum = condition_config(cfg).momentum()
    return tuple(LatentClipDataset(latents, cfg.data.root, cfg.data.clip_steps, split,
                                   keypoints=pose, momentum=momentum,
                                   mirror=cfg.data.mirror and split == "train",
                                   floor_anchor=cfg.world.floor_anchor)
                 for split in ("train", "val"))


def video_datasets(cfg: TrainConfig) -> VideoData:
    """(train, val) clips of the run's recorded episodes (the VAE and decoder stages)."""
    momentum = condition_config(cfg).momentum()
    return tuple(ClipDataset(cfg.data.root, cfg.data.clip_steps, split=split, momentum=momentum)
                 for split in ("train", "val"))


def held_for_frames(actions: torch.Tensor) -> torch.Tensor:
    """Per-step commands (B, K, A) -> per-frame conditions (B, K, 4, A): each step's command
    held for its 4 video frames (what envs produce)."""
    return actions[:, :, None, :].expand(-1, -1, FRAMES_PER_STEP, -1).contiguous()


def frame_conditions(actions: torch.Tensor, momentum: torch.Tensor | None) -> torch.Tensor:
    """The generator's per-frame conditions: step commands (B, K, A) held for their frames,
    then a momentum world's velocity channels (B, K, 4, M) when given."""
    held = held_for_frames(actions)
    return held if momentum is None else torch.cat([held, momentum.to(held.dtype)], -1)


def latent_batch(dataset: LatentClipDataset, rng: np.random.Generator, batch_size: int,
                 device: torch.device, indices: Sequence[int] | None = None) -> LatentBatch:
    """``batch_size`` random clips, or the clips at ``indices``."""
    clips = ([dataset.sample(rng) for _ in range(batch_size)] if indices is None
             else [dataset.sample(rng, int(i)) for i in indices])
    stack = lambda name: torch.from_numpy(np.stack([getattr(c, name) for c in clips])).to(device)
    if clips[0].keypoints is not None:
        conds = stack("keypoints")
    else:
        momentum = stack("momentum") if clips[0].momentum is not None else None
        conds = frame_conditions(stack("actions"), momentum)
    return LatentBatch(latents=stack("latents").transpose(1, 2).contiguous(), conds=conds,
                       rewards=stack("rewards"), terminated=stack("terminated").float())
