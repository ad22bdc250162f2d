"""3D rotary position embedding (time, height, width) with angles computed on the fly.

Each attention head's ``head_dim`` channels are split into three contiguous blocks
``[time | height | width]`` (sizes from :func:`rope_axis_dims`). The time block is one
"rotate-half" block (channel ``i`` pairs with ``i + time_dim / 2``); height and width form one
spatial rotate-half block over ``[time_dim:]`` with their angles concatenated. Keeping the two
apart lets the KV cache store keys with only their spatial rotation applied and add the
temporal rotation (channels ``[:time_dim]``, contiguous halves, cheap) at attention time; see
:mod:`aapt_world.attention` for why.

There is no position table: angles are ``position * inv_freq`` computed from integer positions
in float64 on the CPU (where the cache bookkeeping lives) and then cast, so no position can ever
run out of a table.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Split ``head_dim`` into (time, height, width) channel counts, each even.

    Height and width get ``2 * (head_dim // 6)`` each; time gets the rest (a little more than a
    third), e.g. 64 -> (24, 20, 20), 16 -> (8, 4, 4).
    """
    if head_dim % 2 != 0 or head_dim < 6:
        raise ValueError(f"head_dim must be even and >= 6 for 3D RoPE, got {head_dim}")
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def _inv_freq(dim: int, theta: float) -> Tensor:
    return 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, start: int = 0) -> Tensor:
    """Rotate the block ``x[..., start : start + 2 * cos.shape[-1]]`` (rotate-half pairs).

    ``cos``/``sin`` broadcast against ``x[..., :half]``; channels outside the block pass
    through. Out of place (autograd friendly).
    """
    half = cos.shape[-1]
    end = start + 2 * half
    x1, x2 = x[..., start : start + half], x[..., start + half : end]
    parts = [x1 * cos - x2 * sin, x2 * cos + x1 * sin]
    if start > 0:
        parts.insert(0, x[..., :start])
    if end < x.shape[-1]:
        parts.append(x[..., end:])
    return torch.cat(parts, dim=-1)


def apply_rotary_into(out: Tensor, x: Tensor, cos: Tensor, sin: Tensor) -> None:
    """In-place variant for inference: ``out[..., :2h] = rotate(x[..., :2h])``, h = cos.shape[-1].

    ``out`` may be a strided view (e.g. the temporal channels of a key buffer); nothing is
    allocated. Not for tensors that autograd records.
    """
    half = cos.shape[-1]
    x1, x2 = x[..., :half], x[..., half : 2 * half]
    o1, o2 = out[..., :half], out[..., half : 2 * half]
    torch.mul(x1, cos, out=o1)
    o1.addcmul_(x2, sin, value=-1)
    torch.mul(x2, cos, out=o2)
    o2.addcmul_(x1, sin)


class Rope3D:
    """Stateless 3D RoPE helper for one head size (``theta`` shared by the three axes).

    ``time_rotation(pos)`` -> cos, sin (*pos.shape, time_dim // 2) for channels
    ``[:time_dim]``; ``spatial_rotation(hp, wp)`` -> cos, sin (hp * wp, (h_dim + w_dim) // 2)
    for channels ``[time_dim:]`` of a row-major token grid (height and width angles
    concatenated, so the spatial block is one rotate-half block).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        self.head_dim = head_dim
        self.time_dim, self.h_dim, self.w_dim = rope_axis_dims(head_dim)
        self.inv_freq_t = _inv_freq(self.time_dim, theta)
        self.inv_freq_h = _inv_freq(self.h_dim, theta)
        self.inv_freq_w = _inv_freq(self.w_dim, theta)
        self._spatial: dict[tuple, tuple[Tensor, Tensor]] = {}

    def spatial_rotation(
        self, hp: int, wp: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        key = (hp, wp, str(device), dtype)
        if key not in self._spatial:
            # Built outside inference mode: a table first made by a streaming session must stay
            # usable by training later (inference tensors cannot be saved for backward).
            with torch.inference_mode(False):
                rows = torch.arange(hp, dtype=torch.float64).repeat_interleave(wp)
                cols = torch.arange(wp, dtype=torch.float64).repeat(hp)
                ang = torch.cat([rows[:, None] * self.inv_freq_h,
                                 cols[:, None] * self.inv_freq_w], -1)
                self._spatial[key] = (ang.cos().to(device, dtype), ang.sin().to(device, dtype))
        return self._spatial[key]

    def time_rotation(
        self, pos: Tensor, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        ang = pos.detach().to("cpu", torch.float64)[..., None] * self.inv_freq_t
        return ang.cos().to(device, dtype), ang.sin().to(device, dtype)

    def rotate_time(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        return apply_rotary(x, cos, sin, start=0)

    def rotate_space(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        return apply_rotary(x, cos, sin, start=self.time_dim)
