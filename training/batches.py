"""Turning sampled dataset clips into training tensors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from aapt_world.session import from_uint8_frames
from training.dataset import ClipDataset


@dataclass
class VideoBatch:
    video: torch.Tensor  # float (B, 3, 4K+1, H, W) in [-1, 1]
    actions: torch.Tensor  # float (B, K, A) per-step command
    rewards: torch.Tensor  # float (B, K)
    terminated: torch.Tensor  # float (B, K)


def video_batch(dataset: ClipDataset, rng: np.random.Generator, batch_size: int,
                device: torch.device) -> VideoBatch:
    clips = [dataset.sample(rng) for _ in range(batch_size)]
    frames = torch.from_numpy(np.stack([c.frames for c in clips])).to(device)
    video = from_uint8_frames(frames).transpose(1, 2)  # (B, 3, T, H, W) in [-1, 1]
    as_tensor = lambda name: torch.from_numpy(
        np.stack([getattr(c, name) for c in clips]).astype(np.float32)).to(device)
    return VideoBatch(video, as_tensor("actions"), as_tensor("rewards"), as_tensor("terminated"))
