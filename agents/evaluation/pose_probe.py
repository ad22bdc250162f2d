"""The pose probe: a small CNN that reads a body's 2D keypoints off a frame (issue 11).

It is trained on REAL rendered frames of a pose dataset (``aapt-world collect world=humanoid``)
to regress the 16 keypoints that ``envs.humanoid`` records per frame; its error on held-out real
frames is the ceiling of the pose-following measurement, and applied to a neural world's frames
it says how far the generated body is from the commanded pose:

    aapt-world pose-probe --root data/humanoid --out runs/pose_probe.safetensors --minutes 10

Reported next to a baseline measured on the same frames: the mean training pose (what a probe
that ignores the image would say).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from aapt_world.checkpoint import load_weights, save_weights
from aapt_world.cli_options import add_threads, apply_threads, command_parser
from aapt_world.report import print_report
from training.dataset import ClipDataset, keypoint_columns

CHANNELS = (32, 64, 128, 128)  # one stride-2 conv block each: 128x96 -> 8x6 features


class PoseProbe(nn.Module):
    """uint8 frames (B, H, W, 3) -> keypoints (B, K, 2) as (column, row) pixels."""

    def __init__(self, num_keypoints: int, height: int, width: int) -> None:
        super().__init__()
        self.num_keypoints, self.height, self.width = num_keypoints, height, width
        layers, c_in = [], 3
        for c in CHANNELS:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.SiLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.SiLU()]
            c_in = c
        self.features = nn.Sequential(*layers)
        cells = -(-height // 2 ** len(CHANNELS)) * -(-width // 2 ** len(CHANNELS))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * cells, 256), nn.SiLU(),
                                  nn.Linear(256, num_keypoints * 2))
        self.register_buffer("half_size", torch.tensor([width / 2, height / 2]))

    def forward(self, frames: Tensor) -> Tensor:
        if frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"frames must be (B, {self.height}, {self.width}, 3) uint8, got "
                             f"{tuple(frames.shape)}")
        x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1
        unit = self.head(self.features(x)).view(-1, self.num_keypoints, 2)  # [-1, 1] of the frame
        return (unit + 1) * self.half_size


def keypoint_error(pred: np.ndarray | Tensor, true: np.ndarray | Tensor) -> np.ndarray:
    """Per-frame mean Euclidean keypoint error in pixels: (N, K, 2) x 2 -> (N,)."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return np.sqrt((diff ** 2).sum(-1)).mean(-1)


@dataclass
class FrameSet:
    frames: np.ndarray  # uint8 (N, H, W, 3)
    keypoints: np.ndarray  # float32 (N, K, 2) pixels


def load_frames(root: str | Path, split: str, every: int = 1) -> FrameSet:
    """Every ``every``-th frame of a pose dataset's split, with its recorded 2D keypoints."""
    data = ClipDataset(root, 1, split=split)
    cols = keypoint_columns(data.manifest)
    frames, keypoints = [], []
    for episode in data.episodes:
        frames.append(np.asarray(episode.arrays["frames"][::every]))
        keypoints.append(np.asarray(episode.arrays["poses"][::every])[:, cols])
    return FrameSet(np.concatenate(frames), np.concatenate(keypoints).astype(np.float32))


@dataclass
class ProbeTrainConfig:
    root: str = "data/humanoid"
    out: str = "runs/pose_probe.safetensors"
    steps: int = 20000  # upper bound; minutes usually stops it first
    minutes: float = 10.0
    batch_size: int = 64
    lr: float = 1e-3
    val_every: int = 200
    val_stride: int = 4  # every 4th held-out frame (neighbouring frames are near duplicates)
    seed: int = 0
    progress: bool = True


@torch.inference_mode()
def predict(probe: PoseProbe, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
    probe.eval()
    out = [probe(torch.from_numpy(np.ascontiguousarray(frames[i:i + batch_size]))).numpy()
           for i in range(0, len(frames), batch_size)]
    return np.concatenate(out)


def train_probe(cfg: ProbeTrainConfig) -> dict[str, Any]:
    """Train on the train split, keep the weights with the best held-out error; returns the
    report (probe and mean-pose errors on held-out frames, in pixels)."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    train, val = load_frames(cfg.root, "train"), load_frames(cfg.root, "val", cfg.val_stride)
    _, height, width, _ = train.frames.shape
    probe = PoseProbe(train.keypoints.shape[1], height, width)
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=1e-4)
    mean_pose = train.keypoints.mean(0)
    baseline = float(keypoint_error(np.broadcast_to(mean_pose, val.keypoints.shape),
                                    val.keypoints).mean())
    best, best_state, step, start = float("inf"), None, 0, time.monotonic()
    bar = tqdm(total=cfg.steps, desc="pose probe", disable=not cfg.progress)
    while step < cfg.steps and time.monotonic() - start < 60 * cfg.minutes:
        probe.train()
        idx = rng.integers(len(train.frames), size=cfg.batch_size)
        frames = torch.from_numpy(train.frames[idx])
        if rng.random() < 0.5:  # brightness jitter: generated frames are not exact renders
            frames = (frames.float() * rng.uniform(0.8, 1.2)).clamp(0, 255).to(torch.uint8)
        pred = probe(frames)
        loss = F.smooth_l1_loss(pred / probe.half_size, torch.from_numpy(train.keypoints[idx])
                                / probe.half_size, beta=0.02)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update()
        if step % cfg.val_every == 0 or step == cfg.steps:
            err = float(keypoint_error(predict(probe, val.frames), val.keypoints).mean())
            if err < best:
                best, best_state = err, {k: v.clone() for k, v in probe.state_dict().items()}
            bar.set_postfix(loss=f"{loss.item():.4f}", val_px=f"{err:.2f}")
    bar.close()
    if best_state is None:  # stopped before the first validation
        best = float(keypoint_error(predict(probe, val.frames), val.keypoints).mean())
        best_state = probe.state_dict()
    report = {"root": cfg.root, "steps": step, "minutes": (time.monotonic() - start) / 60,
              "train_frames": len(train.frames), "val_frames": len(val.frames),
              "val_error_px": best, "mean_pose_error_px": baseline,
              "frame_size": [width, height], "config": asdict(cfg)}
    save_weights(cfg.out, best_state, {"kind": "pose_probe", "num_keypoints": probe.num_keypoints,
                                       "height": height, "width": width, "report": report})
    return report


def load_probe(path: str | Path) -> PoseProbe:
    tensors, meta = load_weights(path)
    if meta.get("kind") != "pose_probe":
        raise ValueError(f"{path} is not a pose probe (kind {meta.get('kind')!r})")
    probe = PoseProbe(int(meta["num_keypoints"]), int(meta["height"]), int(meta["width"]))
    probe.load_state_dict({k: v.float() for k, v in tensors.items()})
    return probe.eval()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    d = ProbeTrainConfig()
    parser = command_parser("aapt-world pose-probe", __doc__)
    parser.add_argument("--root", default=d.root, help="a pose dataset (collect world=humanoid)")
    parser.add_argument("--out", default=d.out, help="where the probe's weights go")
    parser.add_argument("--minutes", type=float, default=d.minutes, help="training wall time")
    parser.add_argument("--steps", type=int, default=d.steps, help="at most this many steps")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--val-every", type=int, default=d.val_every)
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    add_threads(parser)
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    cfg = ProbeTrainConfig(root=args.root, out=args.out, minutes=args.minutes, steps=args.steps,
                           batch_size=args.batch_size, val_every=args.val_every,
                           progress=args.progress)
    report = train_probe(cfg)
    rows = [{"frames": "held-out real", "keypoint error px": report["val_error_px"],
             "mean-pose baseline px": report["mean_pose_error_px"],
             "steps": report["steps"], "minutes": report["minutes"]}]
    print_report("pose probe", rows, report)
    Path(cfg.out).with_suffix(".json").write_text(json.dumps(report, indent=1))
    return report
