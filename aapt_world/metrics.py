"""Video metrics for long-horizon drift evaluation: pure functions over uint8 frames (T, H, W, 3).

- fidelity vs ground truth: per-frame PSNR (capped at ``PSNR_CAP`` for identical frames) and
  SSIM (Gaussian 11x11 window, sigma 1.5, per channel, data range 255)
- frame statistics: mean brightness, saturation (HSV S mean), high-frequency energy (mean
  |Laplacian| of the grayscale frame)
- temporal flicker: mean |difference| of consecutive frames
- summaries: time buckets, fraction of a late window inside the real video's 5-95 % range
- action following: camera yaw change between consecutive frames from phase correlation of
  the horizontal image shift, in degrees, positive turning right (the command convention)

No dependency on ``training``: the library must not pull the training stack in.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

PSNR_CAP = 100.0  # dB reported for identical frames (MSE 0)
DOOM_HFOV_DEG = 90.0  # Doom's horizontal field of view at 4:3


def _check(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _check(a), _check(b)
    if a.shape != b.shape:
        raise ValueError(f"videos differ in shape: {a.shape} vs {b.shape}")
    return a, b


# -- fidelity ---------------------------------------------------------------------------------

def psnr(pred: np.ndarray, target: np.ndarray, cap: float = PSNR_CAP) -> np.ndarray:
    """Per-frame PSNR in dB (data range 255), float64 (T,); identical frames give ``cap``."""
    pred, target = _pair(pred, target)
    mse = ((pred.astype(np.float64) - target.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(255.0 ** 2 / mse)
    return np.minimum(values, cap)


def masked_psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray,
                cap: float = PSNR_CAP) -> np.ndarray:
    """Per-frame PSNR over the pixels where ``mask`` (T, H, W) bool is set, float64 (T,);
    NaN for a frame whose mask is empty."""
    pred, target = _pair(pred, target)
    if mask.shape != pred.shape[:3]:
        raise ValueError(f"mask must be {pred.shape[:3]} (T, H, W), got {mask.shape}")
    sq = ((pred.astype(np.float64) - target.astype(np.float64)) ** 2).mean(axis=3)
    count = mask.sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        mse = np.where(mask, sq, 0.0).sum(axis=(1, 2)) / count
        values = 10.0 * np.log10(255.0 ** 2 / mse)
    return np.where(count > 0, np.minimum(values, cap), np.nan)


def ssim(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-frame SSIM (Wang et al. 2004; Gaussian window 11, sigma 1.5), mean over pixels and
    channels, float64 (T,)."""
    pred, target = _pair(pred, target)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    out = np.empty(len(pred))
    for i, (x, y) in enumerate(zip(pred.astype(np.float64), target.astype(np.float64))):
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        num = (2 * mx * my + c1) * (2 * sxy + c2)
        den = (mx * mx + my * my + c1) * (sxx + syy + c2)
        out[i] = float((num / den).mean())
    return out


# -- frame statistics -------------------------------------------------------------------------

def brightness(frames: np.ndarray) -> np.ndarray:
    """Mean pixel value over RGB in [0, 255], (T,)."""
    return _check(frames).astype(np.float64).mean(axis=(1, 2, 3))


def saturation(frames: np.ndarray) -> np.ndarray:
    """Mean HSV saturation (OpenCV, [0, 255]), (T,)."""
    return np.array([cv2.cvtColor(f, cv2.COLOR_RGB2HSV)[..., 1].mean() for f in _check(frames)],
                    dtype=np.float64)


def hf_energy(frames: np.ndarray) -> np.ndarray:
    """High-frequency energy: mean |Laplacian| of the grayscale frame, (T,). Blur lowers it,
    noise and checkerboard artefacts raise it."""
    return np.array([np.abs(cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32),
                                          cv2.CV_32F, ksize=3)).mean()
                     for f in _check(frames)], dtype=np.float64)


FRAME_STATS = {"brightness": brightness, "saturation": saturation, "hf_energy": hf_energy}


def frame_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    return {name: fn(frames) for name, fn in FRAME_STATS.items()}


def flicker(frames: np.ndarray) -> np.ndarray:
    """Mean |frame[t+1] - frame[t]| per consecutive pair, (T-1,)."""
    frames = _check(frames).astype(np.int16)
    return np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3)).astype(np.float64)


def flicker_ratio(frames: np.ndarray, real: np.ndarray) -> float:
    """Mean flicker of ``frames`` over that of the real video (1 = as lively as the game)."""
    ref = float(flicker(real).mean())
    return float(flicker(frames).mean()) / ref if ref > 0 else math.inf


# -- summaries --------------------------------------------------------------------------------

def bucket_means(values: np.ndarray, n_buckets: int = 10) -> list[float]:
    """Means of ``values`` over ``n_buckets`` consecutive, near-equal time buckets (fewer when
    there are fewer values)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return []
    return [float(chunk.mean()) for chunk in np.array_split(values, min(n_buckets, len(values)))]


def real_range(real_values: np.ndarray, lo: float = 5.0, hi: float = 95.0) -> tuple[float, float]:
    return float(np.percentile(real_values, lo)), float(np.percentile(real_values, hi))


def late_window(values: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """The last ``fraction`` of a series (at least one value)."""
    values = np.asarray(values)
    return values[-max(1, int(round(len(values) * fraction))):]


def fraction_in_range(values: np.ndarray, real_values: np.ndarray, lo: float = 5.0,
                      hi: float = 95.0) -> float:
    """Fraction of ``values`` inside the [lo, hi] percentile range of ``real_values``."""
    low, high = real_range(real_values, lo, hi)
    values = np.asarray(values, dtype=np.float64)
    return float(((values >= low) & (values <= high)).mean()) if len(values) else math.nan


# -- action following -------------------------------------------------------------------------

def _shift_to_deg(dx_px: float, width: int, hfov_deg: float) -> float:
    # pinhole camera: a pixel offset at the image centre -> rotation angle
    focal = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    return math.degrees(math.atan(dx_px / focal))


def yaw_changes(frames: np.ndarray, hfov_deg: float = DOOM_HFOV_DEG,
                top_fraction: float = 0.6) -> np.ndarray:
    """Camera yaw change (degrees, positive = turned right) between consecutive frames, (T-1,).

    Phase correlation (``cv2.phaseCorrelate``, Hanning window) of grayscale frames; only the top
    ``top_fraction`` of the image is used, which keeps the static weapon sprite out. Turning
    right moves the scene left in the image, so yaw = -shift.
    """
    frames = _check(frames)
    h, w = frames.shape[1:3]
    rows = max(8, int(h * top_fraction))
    gray = [cv2.cvtColor(f[:rows], cv2.COLOR_RGB2GRAY).astype(np.float32) for f in frames]
    window = cv2.createHanningWindow((w, rows), cv2.CV_32F)
    out = np.empty(max(0, len(gray) - 1))
    for i in range(len(out)):
        (dx, _dy), _response = cv2.phaseCorrelate(gray[i], gray[i + 1], window)
        out[i] = -_shift_to_deg(dx, w, hfov_deg)
    return out


def step_yaw(frames: np.ndarray, frames_per_step: int = 4, **kwargs) -> np.ndarray:
    """Yaw change per step of ``frames_per_step`` frames. ``frames``: (1 + S * fps, H, W, 3)
    starting with the frame before the first step; returns (S,)."""
    per_frame = yaw_changes(frames, **kwargs)
    steps = len(per_frame) // frames_per_step
    return per_frame[:steps * frames_per_step].reshape(steps, frames_per_step).sum(axis=1)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def action_following(yaw_deg: np.ndarray, turn_commands: np.ndarray,
                     min_turn: float = 0.3) -> dict[str, float]:
    """How the measured per-step yaw follows the commanded turn (positive = right).

    ``sign_accuracy`` over steps with |turn| > ``min_turn`` (NaN if none), ``pearson`` over all
    steps, ``n_turn_steps`` the steps counted for the sign accuracy.
    """
    yaw_deg, turn = np.asarray(yaw_deg, np.float64), np.asarray(turn_commands, np.float64)
    n = min(len(yaw_deg), len(turn))
    yaw_deg, turn = yaw_deg[:n], turn[:n]
    mask = np.abs(turn) > min_turn
    acc = float((np.sign(yaw_deg[mask]) == np.sign(turn[mask])).mean()) if mask.any() else math.nan
    return {"sign_accuracy": acc, "pearson": pearson(yaw_deg, turn),
            "n_turn_steps": int(mask.sum())}


def pose_yaw_steps(poses: np.ndarray, frames_per_step: int = 4) -> np.ndarray:
    """Per-step yaw change (degrees, positive = right) from real-game poses (1 + S * fps, 5):
    ViZDoom's yaw grows counter-clockwise, so turning right decreases it."""
    yaw = np.asarray(poses, np.float64)[:, 3]
    d = -(((np.diff(yaw) + 180.0) % 360.0) - 180.0)
    steps = len(d) // frames_per_step
    return d[:steps * frames_per_step].reshape(steps, frames_per_step).sum(axis=1)
