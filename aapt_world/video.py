"""Writing frames to mp4 (H.264 via the ffmpeg binary that imageio-ffmpeg ships: no system deps)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from aapt_world.constants import DOOM_FPS


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float = DOOM_FPS,
              scale: int = 1) -> Path:
    """Write uint8 (H, W, 3) frames to ``path``; ``scale`` enlarges them (nearest neighbour)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=8,
                            macro_block_size=1, ffmpeg_log_level="error") as writer:
        for frame in frames:
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
                raise ValueError(f"frames must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
            if scale > 1:
                frame = frame.repeat(scale, axis=0).repeat(scale, axis=1)
            writer.append_data(frame)
    return path


def read_mp4(path: str | Path) -> np.ndarray:
    """All frames of a video as uint8 (T, H, W, 3)."""
    import imageio.v2 as imageio

    with imageio.get_reader(path) as reader:
        return np.stack([np.asarray(frame) for frame in reader])
