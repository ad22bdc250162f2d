"""Does a TakeCover dream keep the fireballs? A colour detector for the imps' fireballs.

In ViZDoom's ``take_cover`` the only bright yellow things are the fireballs (walls are brown,
floor and sky grey), so a pixel counts as fireball when it is bright, yellow and not white.
Measured on the recorded real episodes (64x48): 22-42 % of frames show one (>= 3 pixels), and
a fireball about to hit covers hundreds of pixels. A dream whose frames lose them cannot make
the player's death depend on how it dodges; ``agent eval`` reports the share of steps with a
fireball and their mean area for the real game and the dream side by side.
"""

from __future__ import annotations

import numpy as np

MIN_RED, MIN_GREEN, MAX_BLUE = 200, 170, 170  # bright yellow: the fireballs' core and halo
MIN_PIXELS = 3  # a frame "shows a fireball" from this many pixels (a far fireball is ~4)


def fireball_pixels(frame: np.ndarray) -> int:
    """Fireball-coloured pixels of one uint8 (H, W, 3) frame."""
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"expected one (H, W, 3) frame, got shape {frame.shape}")
    r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
    return int(np.count_nonzero((r > MIN_RED) & (g > MIN_GREEN) & (b < MAX_BLUE)))


def fireball_stats(pixels: list[int], frame_size: int) -> dict[str, float]:
    """Per-step fireball pixel counts -> the share of steps showing one and the mean share of
    the frame they cover."""
    counts = np.asarray(pixels, dtype=np.float64)
    if counts.size == 0:
        return {"fireball_steps": 0.0, "fireball_area": 0.0}
    return {"fireball_steps": float((counts >= MIN_PIXELS).mean()),
            "fireball_area": float(counts.mean() / frame_size)}
