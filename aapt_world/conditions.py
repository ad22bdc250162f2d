"""Per-latent-frame condition encoders: camera motion, body pose, actions.

One latent frame covers ``frames_per_latent`` (= 4, the VAE's temporal compression) video
frames. Every encoder folds the per-video-frame signals of one latent frame into ONE condition
vector, so all of them map ``(B, T, 4, ...)`` to ``(B, T, cond_dim)``, which is what
:class:`aapt_world.transformer.BlockCausalDiT` takes as ``cond``.

* :class:`CameraConditionEncoder` - relative camera motion per video frame
  ``(dx_forward, dy_right, dz, dyaw_deg, dpitch_deg)`` (see :func:`relative_camera_motion`),
  divided by fixed per-channel scales (buffers, set from dataset statistics).
* :class:`PoseConditionEncoder` - body keypoints ``(B, T, 4, K, D)``, D = 2 or 3.
* :class:`ActionConditionEncoder` - discrete actions ``(B, T, 4)`` (one index per video frame)
  through an embedding, or continuous commands ``(B, T, 4, A)``.

Build one from a :class:`ConditionConfig` with :func:`build_condition_encoder`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from .momentum import CommandMomentum

CAMERA_CHANNELS = 5  # dx_forward, dy_right, dz, dyaw_deg, dpitch_deg
FULL_TURN_DEG = 360.0
HALF_TURN_DEG = 180.0


def wrap_degrees(angle: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Wrap angles in degrees to (-180, 180]."""
    if isinstance(angle, Tensor):
        return angle - FULL_TURN_DEG * torch.ceil((angle - HALF_TURN_DEG) / FULL_TURN_DEG)
    return angle - FULL_TURN_DEG * np.ceil((angle - HALF_TURN_DEG) / FULL_TURN_DEG)


def relative_camera_motion(poses: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """Camera motion of each frame relative to the previous one, in the previous frame's frame.

    ``poses`` (..., N, 5) = ``[x, y, z, yaw_deg, pitch_deg]`` in world coordinates (Doom: yaw
    counter-clockwise from +x, so the forward vector is (cos yaw, sin yaw) and the right vector
    is (sin yaw, -cos yaw)). Returns (..., N, 5) = ``[dx_forward, dy_right, dz, dyaw, dpitch]``
    where the planar displacement is expressed in the previous frame's yaw-rotated axes and the
    angle deltas are wrapped to (-180, 180]. The first frame's motion is 0. Works on numpy
    arrays and torch tensors (returns the same kind).
    """
    is_torch = isinstance(poses, Tensor)
    xp = torch if is_torch else np
    if poses.shape[-1] != CAMERA_CHANNELS:
        raise ValueError(f"poses must end with {CAMERA_CHANNELS} channels, got {poses.shape}")
    if not is_torch:
        poses = np.asarray(poses, dtype=np.float64)
    prev, cur = poses[..., :-1, :], poses[..., 1:, :]
    d = cur - prev
    yaw = prev[..., 3] * (math.pi / HALF_TURN_DEG)
    cos, sin = xp.cos(yaw), xp.sin(yaw)
    forward = d[..., 0] * cos + d[..., 1] * sin
    right = d[..., 0] * sin - d[..., 1] * cos
    motion = xp.stack(
        [forward, right, d[..., 2], wrap_degrees(d[..., 3]), wrap_degrees(d[..., 4])], -1
    )
    first = xp.zeros_like(motion[..., :1, :])
    return xp.cat([first, motion], -2) if is_torch else np.concatenate([first, motion], -2)


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))


def _check(x: Tensor, tail: tuple[int, ...], frames: int, name: str) -> None:
    if x.dim() != 3 + len(tail) or x.shape[2] != frames or tuple(x.shape[3:]) != tail:
        raise ValueError(f"{name} must have shape (B, T, {frames}, {tail}), got {tuple(x.shape)}")


class CameraConditionEncoder(nn.Module):
    """(B, T, 4, 5) relative camera motion -> (B, T, cond_dim)."""

    def __init__(self, cond_dim: int, hidden_dim: int = 256, frames_per_latent: int = 4) -> None:
        super().__init__()
        self.frames_per_latent = frames_per_latent
        self.register_buffer("scale", torch.ones(CAMERA_CHANNELS))
        self.mlp = _mlp(frames_per_latent * CAMERA_CHANNELS, hidden_dim, cond_dim)

    @torch.no_grad()
    def set_scale(self, scale: Tensor | np.ndarray | list[float]) -> None:
        """Per-channel scales (e.g. dataset std of each motion channel); must be positive."""
        scale = torch.as_tensor(np.asarray(scale, dtype=np.float32)).to(self.scale)
        if scale.shape != self.scale.shape or bool((scale <= 0).any()):
            raise ValueError(f"scale must be {CAMERA_CHANNELS} positive numbers")
        self.scale.copy_(scale)

    def forward(self, motion: Tensor) -> Tensor:
        _check(motion, (CAMERA_CHANNELS,), self.frames_per_latent, "camera motion")
        x = (motion / self.scale).to(self.mlp[0].weight.dtype)
        return self.mlp(x.flatten(2))


class PoseConditionEncoder(nn.Module):
    """(B, T, 4, K, D) body keypoints -> (B, T, cond_dim), with fixed offset/scale buffers.
    ``floor_anchor``: the last of the K points is the floor anchor (``envs.humanoid``), not a
    joint: it enters the global condition only, no map."""

    def __init__(
        self,
        cond_dim: int,
        num_keypoints: int,
        keypoint_dim: int = 2,
        hidden_dim: int = 256,
        frames_per_latent: int = 4,
        floor_anchor: bool = False,
    ) -> None:
        super().__init__()
        if keypoint_dim not in (2, 3):
            raise ValueError(f"keypoint_dim must be 2 or 3, got {keypoint_dim}")
        self.frames_per_latent = frames_per_latent
        self.joints = num_keypoints - int(floor_anchor)  # the points drawn as maps
        self.tail = (num_keypoints, keypoint_dim)
        self.register_buffer("offset", torch.zeros(keypoint_dim))
        self.register_buffer("scale", torch.ones(keypoint_dim))
        self.mlp = _mlp(frames_per_latent * num_keypoints * keypoint_dim, hidden_dim, cond_dim)

    def forward(self, keypoints: Tensor) -> Tensor:
        _check(keypoints, self.tail, self.frames_per_latent, "keypoints")
        x = ((keypoints - self.offset) / self.scale).to(self.mlp[0].weight.dtype)
        return self.mlp(x.flatten(2))

    def heatmaps(self, keypoints: Tensor, height: int, width: int, sigma: float) -> Tensor:
        """Where each joint is, on the latent grid: keypoints (B, T, 4, K, 2) (the frame's
        first two coordinates: column, row) -> Gaussian maps of std ``sigma`` latent pixels,
        (B, 4 K, T, height, width), one per video frame and joint (the global condition alone
        has to learn where a coordinate lands; these are aligned with the latent)."""
        _check(keypoints, self.tail, self.frames_per_latent, "keypoints")
        joints = keypoints[..., :self.joints, :2]
        u = (joints - self.offset[:2]) / self.scale[:2]  # [-1, 1] over the frame
        col = (u[..., 0].float() + 1) * (width / 2) - 0.5  # latent pixel centres at 0 .. w - 1
        row = (u[..., 1].float() + 1) * (height / 2) - 0.5
        xs = torch.arange(width, device=u.device, dtype=torch.float32)
        ys = torch.arange(height, device=u.device, dtype=torch.float32)
        dx2 = (xs - col[..., None]).square()[..., None, :]  # (B, T, 4, K, 1, w)
        dy2 = (ys - row[..., None]).square()[..., :, None]  # (B, T, 4, K, h, 1)
        maps = torch.exp(-(dx2 + dy2) / (2 * sigma**2))
        return maps.flatten(2, 3).transpose(1, 2)


class ActionConditionEncoder(nn.Module):
    """Discrete ``(B, T, 4)`` int actions (``num_actions`` > 0) or continuous ``(B, T, 4, A)``
    commands (``action_dim`` > 0) -> (B, T, cond_dim)."""

    def __init__(
        self,
        cond_dim: int,
        num_actions: int = 0,
        action_dim: int = 0,
        embed_dim: int = 32,
        hidden_dim: int = 256,
        frames_per_latent: int = 4,
        extra_dim: int = 0,
    ) -> None:
        """``extra_dim``: channels appended to each continuous command (the momentum, see
        :mod:`aapt_world.momentum`)."""
        super().__init__()
        if (num_actions > 0) == (action_dim > 0):
            raise ValueError("set exactly one of num_actions (discrete) or action_dim (continuous)")
        self.frames_per_latent = frames_per_latent
        self.discrete = num_actions > 0
        if extra_dim and self.discrete:
            raise ValueError("extra condition channels need continuous commands (action_dim)")
        self.action_dim = action_dim
        self.input_dim = action_dim + extra_dim
        if self.discrete:
            self.embed = nn.Embedding(num_actions, embed_dim)
            in_dim = frames_per_latent * embed_dim
        else:
            self.register_buffer("scale", torch.ones(action_dim))
            in_dim = frames_per_latent * self.input_dim
        self.mlp = _mlp(in_dim, hidden_dim, cond_dim)

    def forward(self, actions: Tensor) -> Tensor:
        if self.discrete:
            _check(actions, (), self.frames_per_latent, "discrete actions")
            x = self.embed(actions.long())
        else:
            _check(actions, (self.input_dim,), self.frames_per_latent, "continuous actions")
            commands, extra = actions.split([self.action_dim, self.input_dim - self.action_dim], -1)
            x = torch.cat([commands / self.scale, extra], -1).to(self.mlp[0].weight.dtype)
        return self.mlp(x.flatten(2))


@dataclass
class ConditionConfig:
    kind: str = "camera"  # "camera" | "pose" | "action"
    cond_dim: int = 128
    hidden_dim: int = 256
    frames_per_latent: int = 4
    num_keypoints: int = 17  # pose
    keypoint_dim: int = 2  # pose: 2 or 3
    num_actions: int = 0  # action: discrete vocabulary size (> 0 selects discrete)
    action_dim: int = 0  # action: continuous command width (> 0 selects continuous)
    action_embed_dim: int = 32
    # pose worlds: > 0 also hands the DiT Gaussian maps of every joint on the latent grid
    # (std in latent pixels), added to its tokens; 0 = the global condition only
    pose_map_sigma: float = 0.0
    # pose worlds: the last of the num_keypoints points is the floor anchor (the floor point
    # under the previous frame's root, in this frame's image: how far the floor moved)
    floor_anchor: bool = False
    # action worlds with a turning camera: the recycled frame is turned by the commanded yaw
    # before the DiT sees it (``view_warp.turn_view``); 0 = off. ``turn_channel`` is the
    # command's turn axis, ``turn_deg`` the degrees per video frame a full command turns right.
    warp_fov_deg: float = 0.0
    turn_channel: int = -1
    turn_deg: float = 0.0
    # action worlds whose player keeps moving: the velocity of these command channels under
    # friction ``momentum_decay`` per video frame (see :mod:`aapt_world.momentum`) follows each
    # command as extra condition channels; () = off
    momentum_channels: tuple[int, ...] = ()
    momentum_decay: float = 0.0
    # ... and whose view slides when the player moves sideways: the recycled frame is moved by
    # ``slide_frac`` of its width per video frame at full velocity of command channel
    # ``slide_channel`` (one of momentum_channels; ``view_warp.slide_view``); 0 = off
    slide_channel: int = -1
    slide_frac: float = 0.0

    def __post_init__(self) -> None:
        self.momentum_channels = tuple(int(c) for c in self.momentum_channels)  # JSON: a list
        if self.floor_anchor and not (self.kind == "pose" and self.num_keypoints >= 2):
            raise ValueError(f"floor_anchor needs a pose world with joints before the anchor, "
                             f"got kind {self.kind!r}, num_keypoints {self.num_keypoints}")
        if self.momentum_channels and not (self.kind == "action" and self.action_dim > 0):
            raise ValueError(f"momentum_channels need continuous commands (kind action, "
                             f"action_dim > 0), got kind {self.kind!r}, action_dim "
                             f"{self.action_dim}")
        if any(c >= self.action_dim for c in self.momentum_channels):
            raise ValueError(f"momentum_channels {self.momentum_channels} must be < action_dim "
                             f"{self.action_dim}")
        if self.slide_frac and self.slide_channel not in self.momentum_channels:
            raise ValueError(f"slide_frac needs slide_channel among momentum_channels "
                             f"{self.momentum_channels} (the slide follows the velocity), got "
                             f"{self.slide_channel}")

    def momentum(self) -> CommandMomentum | None:
        """The momentum these conditions carry, or None."""
        if not self.momentum_channels:
            return None
        return CommandMomentum(self.momentum_channels, self.momentum_decay)


def build_condition_encoder(cfg: ConditionConfig) -> nn.Module:
    """Instantiate the encoder named by ``cfg.kind``."""
    if cfg.kind == "camera":
        return CameraConditionEncoder(cfg.cond_dim, cfg.hidden_dim, cfg.frames_per_latent)
    if cfg.kind == "pose":
        return PoseConditionEncoder(
            cfg.cond_dim, cfg.num_keypoints, cfg.keypoint_dim, cfg.hidden_dim,
            cfg.frames_per_latent, cfg.floor_anchor,
        )
    if cfg.kind == "action":
        return ActionConditionEncoder(
            cfg.cond_dim, cfg.num_actions, cfg.action_dim, cfg.action_embed_dim, cfg.hidden_dim,
            cfg.frames_per_latent, len(cfg.momentum_channels),
        )
    raise ValueError(f"unknown condition kind {cfg.kind!r}; expected camera, pose or action")
