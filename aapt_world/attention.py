"""Attention for the block-causal DiT: QK-norm attention module, backends, block-causal masks.

Visibility (``N`` = window in latent frames)
--------------------------------------------
* a token of frame ``q`` attends to the SINK (latent frame 0, always visible) and to frames
  ``max(1, q - N) .. q``: full attention inside a frame, causal across frames, a sliding window
  of ``N`` past frames.

Temporal positions that never run out
-------------------------------------
Keys are stored in the KV cache WITHOUT their temporal RoPE rotation (the spatial rotation is
applied once, when a key is written). At every step the temporal positions are assigned relative
to the window: for query frame ``q`` let ``offset(q) = max(0, q - N - 1)``; window frame ``j``
gets position ``j - offset(q)``, the sink gets ``0`` and the query gets
``q - offset(q) <= N + 1``.
Before the window slides (``q <= N + 1``) these are exactly the absolute positions. After it
slides, all distances between window frames are unchanged (RoPE only sees differences) and the
sink simply sits just before the window. Positions therefore stay in ``[0, N + 1]`` forever: a
10,000-frame rollout sees exactly the position pattern training saw.

The parallel (training) forward implements the same semantics with ONE masked attention call.
Window frames use absolute positions (only differences matter). The keys whose relative position
to the query does change once the window slides (the sink, which sits at distance
``q - offset(q)`` from query frame ``q``) are replicated once per offset
``o = 0 .. T - N - 2`` with an extra temporal rotation by ``o``, and query frame ``q`` sees only
copy ``offset(q)``. When ``T <= N + 1`` there is a single copy and this is a plain block-causal
mask over absolute positions. See :func:`parallel_layout`.

Backends
--------
* ``"sdpa"`` (default): ``torch.nn.functional.scaled_dot_product_attention`` on any device.
* ``"flash"``: flash-attn's ``flash_attn_func`` (import guarded, never required; raises at
  construction if flash-attn is missing) for unmasked calls on CUDA fp16/bf16 tensors; masked
  calls fall back to SDPA since flash-attn cannot express the block mask. ``"auto"`` does the
  same but silently uses SDPA when flash-attn is not importable. ``flash_attn_with_kvcache`` is
  not used: its append-at-``cache_seqlens`` layout and rotary options assume absolute positions,
  while this ring cache re-rotates the temporal channels of all cached keys to window-relative
  positions every step; ``flash_attn_func`` on the ring buffer does the same job.
* FlexAttention (block-sparse masks, GPU, wants ``torch.compile``) is NOT implemented. The
  parallel path uses one dense masked SDPA call (it computes the masked-out blocks too, about 2x
  the causal attention FLOPs); the step path needs no mask at all once the window is full.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rope import apply_rotary

try:  # optional, CUDA only
    from flash_attn import flash_attn_func as _flash_attn_func
except Exception:  # noqa: BLE001 - any import failure means "not available"
    _flash_attn_func = None

BACKENDS = ("sdpa", "flash", "auto")


def flash_available() -> bool:
    return _flash_attn_func is not None


def window_offset(q: int | Tensor, window: int) -> int | Tensor:
    """Temporal position offset of query frame ``q``: ``max(0, q - window - 1)``."""
    if isinstance(q, Tensor):
        return (q - window - 1).clamp(min=0)
    return max(0, q - window - 1)


def frame_visibility(num_frames: int, window: int) -> Tensor:
    """Reference frame-level mask (T, T): ``[q, j]`` is True if frame q's tokens see frame j."""
    q = torch.arange(num_frames)[:, None]
    j = torch.arange(num_frames)[None, :]
    return (j == 0) | ((j <= q) & (j >= (q - window).clamp(min=1)))


@dataclass(frozen=True)
class ParallelLayout:
    """Token layout of the parallel forward's single attention call.

    Queries: frames ``0..T-1`` (T * tpf tokens).
    Keys: ``num_offsets`` copies of the sink frame (copy ``o`` rotated by temporal position
    ``o``), then frames ``1..T-1`` at their absolute temporal positions.
    """

    num_offsets: int
    mask: Tensor  # (Lq, Lk) bool
    query_time: Tensor  # (T * tpf,) long: temporal positions of the visual queries
    key_time: Tensor  # (Lk,) long


@functools.lru_cache(maxsize=16)
def parallel_layout(num_frames: int, tokens_per_frame: int, window: int) -> ParallelLayout:
    """Build (and memoise, on the CPU) the parallel block-causal layout; see module docstring.

    Built outside inference mode so a layout memoised by inference stays usable in training.
    """
    with torch.inference_mode(False):
        return _parallel_layout(num_frames, tokens_per_frame, window)


def _parallel_layout(num_frames: int, tokens_per_frame: int, window: int) -> ParallelLayout:
    t, n = num_frames, tokens_per_frame
    num_offsets = max(1, t - window - 1)
    q_frame = torch.arange(t).repeat_interleave(n)  # per query token
    q_off = window_offset(q_frame, window)
    # Per key token: copies of the sink (copy o, frame -1), then frames 1..T-1 (copy -1).
    is_sink = torch.cat([torch.ones(num_offsets * n, dtype=torch.bool),
                         torch.zeros((t - 1) * n, dtype=torch.bool)])
    k_copy = torch.cat(
        [torch.arange(num_offsets).repeat_interleave(n), torch.full(((t - 1) * n,), -1)]
    )
    k_frame = torch.cat(
        [torch.full((num_offsets * n,), -1), torch.arange(1, t).repeat_interleave(n)]
    )
    qf, qo = q_frame[:, None], q_off[:, None]
    ks, kc, kf = is_sink[None, :], k_copy[None, :], k_frame[None, :]
    vis_sink = ks & (kc == qo)  # query frame q sees sink copy offset(q)
    vis_window = ~ks & (kf <= qf) & (kf >= (qf - window).clamp(min=1))
    key_time = torch.where(is_sink, k_copy, k_frame)
    return ParallelLayout(
        num_offsets=num_offsets,
        mask=vis_sink | vis_window,
        query_time=torch.arange(t).repeat_interleave(n),
        key_time=key_time,
    )


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, backend: str = "sdpa"
) -> Tensor:
    """Attention over (B, H, L, D) tensors; ``mask`` is a boolean "may attend" mask or None."""
    if (
        backend != "sdpa"
        and mask is None
        and _flash_attn_func is not None
        and q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
    ):
        out = _flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    """Multi-head attention projections with QK-norm (RMSNorm per head on q and k).

    Positional rotation and the key/value sources are decided by the caller (parallel block
    mask or KV cache), so this module only projects (``project``, optionally applying a rotary
    embedding to q and k), attends (``attend``) and projects back (``output``).
    """

    def __init__(
        self, dim: int, heads: int, qk_norm: bool = True, eps: float = 1e-6, backend: str = "sdpa"
    ) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        if backend not in BACKENDS:
            raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "flash" and not flash_available():
            raise ImportError("attention backend 'flash' needs the flash-attn package (CUDA)")
        self.heads = heads
        self.head_dim = dim // heads
        self.backend = backend
        self.eps = eps
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # RMSNorm weights of q (row 0) and k (row 1), applied jointly.
        self.qk_norm = nn.Parameter(torch.ones(2, 1, self.head_dim)) if qk_norm else None

    def project(
        self, x: Tensor, rotation: tuple[Tensor, Tensor] | None = None, start: int = 0
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(B, L, dim) -> q, k, v each (B, heads, L, head_dim); q and k normalised, then both
        rotated on channels ``[start:]`` by ``rotation`` = (cos, sin) of shape (L, half)."""
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim)
        qk, v = qkv[:, :, :2], qkv[:, :, 2]
        if self.qk_norm is not None:
            qk = F.rms_norm(qk, (self.head_dim,), eps=self.eps) * self.qk_norm
        if rotation is not None:
            cos, sin = rotation
            qk = apply_rotary(qk, cos[:, None, None], sin[:, None, None], start)
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v.transpose(1, 2)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        return attend(q, k, v, mask, self.backend)

    def output(self, o: Tensor) -> Tensor:
        """(B, heads, L, head_dim) -> (B, L, dim)."""
        b, _, n, _ = o.shape
        return self.proj(o.transpose(1, 2).reshape(b, n, -1))
