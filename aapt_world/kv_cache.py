"""Sliding-window KV cache with a permanent first-frame sink: a preallocated ring buffer.

Layout of every layer's key (and value) buffer, shape ``(B, heads, length, head_dim)``::

    [ sink frame (latent frame 0) | ring: (window + 1) frame slots ]

The ring has ``window + 1`` slots because the current frame is written into the ring *before*
attention (so one attention call runs over one contiguous buffer, no ``torch.cat``): at query
frame ``q`` the visible window is frames ``max(1, q - window) .. q``, i.e. ``window`` past frames
plus the current one. All batch items write the same ring slot each step
(``slot = step_count % (window + 1)``); per-item bookkeeping (the frame index held by each slot
for each item, ``-1`` = empty, and each item's next frame index) yields the validity mask and the
per-key temporal RoPE positions. Nothing grows and, at inference, nothing is copied per step:
one frame's keys and values are written per layer.

Keys are stored with their spatial RoPE applied and WITHOUT their temporal rotation: the
unrotated temporal channels (the first ``time_dim`` of each head) live in ``k_time``, and
:meth:`KVCache.keys` derives the attention-ready keys of the current step by rotating them to the
temporal positions returned by :meth:`KVCache.begin_step`, which are relative to the window and
stay in ``[0, window + 1]`` forever (see :mod:`aapt_world.attention`). At inference that rotation
is written in place into the temporal channels of ``k`` (a per-step scratch area), so no key
tensor is allocated per step.

Per-item reset: the selected items restart at frame 0 (their next written frame becomes their
sink, their ring slots become invalid) while the other items continue untouched.

Writes are in place under ``torch.no_grad``/``torch.inference_mode`` (buffers keep their
``data_ptr``), and out of place (``index_copy``, one buffer copy per layer and step) when autograd
records the written tensors, so gradients flow through cached keys/values into the steps that
wrote them (student forcing). Autograd then keeps each step's keys/values alive until backward:
about ``2 * B * length * dim * 4`` bytes per layer and step in fp32; detach between segments
(:meth:`KVCache.detach_`).
Create the cache in the same grad mode you step it in (inference tensors cannot join a graph).

Bookkeeping tensors live on the CPU (they are tiny) so that no per-step decision needs a device
synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .rope import apply_rotary, apply_rotary_into


@dataclass
class StepPlan:
    """What one generation step needs from the cache, computed by :meth:`KVCache.begin_step`."""

    slot: int  # ring slot written this step (same for every item)
    frame: Tensor  # (B,) long, cpu: frame index each item writes this step
    write_sink: Tensor  # (B,) bool, cpu: items writing their sink (frame 0) this step
    any_sink: bool
    all_sink: bool
    key_valid: Tensor | None  # (B, 1, 1, length) bool on the cache device; None = all visible
    key_time: Tensor  # (B, length) long, cpu: temporal RoPE position of every key
    query_time: Tensor  # (B,) long, cpu: temporal RoPE position of the query frame


@dataclass
class KVCacheState:
    """A full copy of a cache's state (see :meth:`KVCache.snapshot`)."""

    k: list[Tensor]
    v: list[Tensor]
    k_time: list[Tensor]
    slot_frame: Tensor
    frame: Tensor
    step_count: int


def _write(buf: Tensor, start: int, new: Tensor, items: Tensor | None = None) -> Tensor:
    """Write ``new`` (B, H, n, D) into ``buf[:, :, start:start+n]``, only for ``items`` if given.

    In place when autograd is not recording, otherwise out of place; returns the buffer to keep.
    """
    n = new.shape[2]
    if items is not None:
        new = torch.where(items.view(-1, 1, 1, 1), new, buf[:, :, start : start + n])
    if torch.is_grad_enabled() and (new.requires_grad or buf.requires_grad):
        index = torch.arange(start, start + n, device=buf.device)
        return buf.index_copy(2, index, new.to(buf.dtype))
    buf[:, :, start : start + n].copy_(new)
    return buf


class KVCache:
    """Per-layer preallocated KV ring buffers plus shared per-item bookkeeping."""

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        heads: int,
        head_dim: int,
        tokens_per_frame: int,
        window: int,
        time_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if time_dim % 2 or not 0 < time_dim <= head_dim:
            raise ValueError(f"time_dim must be even and in (0, head_dim], got {time_dim}")
        self.time_dim = time_dim
        self.num_layers = num_layers
        self.batch_size = batch_size
        self.tokens_per_frame = tokens_per_frame
        self.window = window
        self.ring_slots = window + 1
        self.sink_start = 0
        self.ring_start = tokens_per_frame
        self.length = self.ring_start + self.ring_slots * tokens_per_frame
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        shape = (batch_size, heads, self.length, head_dim)

        def zeros(*size: int) -> list[Tensor]:
            # Zeros, not empty: masked keys still enter the attention matmul (0 * NaN = NaN).
            return [torch.zeros(size, device=self.device, dtype=dtype) for _ in range(num_layers)]

        self.k, self.v = zeros(*shape), zeros(*shape)
        self.k_time = zeros(*shape[:-1], time_dim)
        self.slot_frame = torch.full((batch_size, self.ring_slots), -1, dtype=torch.long)
        self.frame = torch.zeros(batch_size, dtype=torch.long)
        self.step_count = 0

    # ------------------------------------------------------------------ stepping
    def begin_step(self) -> StepPlan:
        """Advance the bookkeeping by one frame for every item; return the step's plan.

        Call once per generation step, before the layers call :meth:`write`.
        """
        q = self.frame.clone()
        slot = self.step_count % self.ring_slots
        self.slot_frame[:, slot] = q
        offset = (q - self.window - 1).clamp(min=0)
        ring = self.slot_frame
        ring_valid = (ring >= 1) & (ring >= (q - self.window)[:, None]) & (ring <= q[:, None])
        ring_time = (ring - offset[:, None]).clamp(min=0)
        tpf, b = self.tokens_per_frame, self.batch_size
        fixed = torch.zeros(b, self.ring_start, dtype=torch.long)  # the sink: position 0
        key_time = torch.cat([fixed, ring_time.repeat_interleave(tpf, 1)], dim=1)
        valid = torch.cat([torch.ones(b, tpf, dtype=torch.bool),  # the sink is written by now
                           ring_valid.repeat_interleave(tpf, 1)], dim=1)
        key_valid = None if bool(valid.all()) else valid.to(self.device)[:, None, None, :]
        write_sink = q == 0
        self.frame += 1
        self.step_count += 1
        return StepPlan(
            slot=slot,
            frame=q,
            write_sink=write_sink,
            any_sink=bool(write_sink.any()),
            all_sink=bool(write_sink.all()),
            key_valid=key_valid,
            key_time=key_time,
            query_time=q - offset,
        )

    def _store(self, layer: int, start: int, k: Tensor, v: Tensor, items: Tensor | None) -> None:
        self.k[layer] = _write(self.k[layer], start, k, items)
        self.k_time[layer] = _write(self.k_time[layer], start, k[..., : self.time_dim], items)
        self.v[layer] = _write(self.v[layer], start, v, items)

    def write(self, layer: int, k: Tensor, v: Tensor, plan: StepPlan) -> None:
        """Store one frame's keys (spatially rotated, temporally NOT) and values
        (B, H, tokens_per_frame, D) of ``layer``."""
        self._store(layer, self.ring_start + plan.slot * self.tokens_per_frame, k, v, None)
        if plan.any_sink:
            items = None if plan.all_sink else plan.write_sink.to(self.device)
            self._store(layer, self.sink_start, k, v, items)

    def keys(self, layer: int, cos: Tensor, sin: Tensor) -> Tensor:
        """Attention-ready keys (B, H, length, D) of ``layer``: the stored keys with their
        temporal channels rotated by ``cos``/``sin`` (B, 1, length, time_dim // 2) built from
        the plan's ``key_time``. Sink keys sit at position 0 (no rotation)."""
        k, kt = self.k[layer], self.k_time[layer]
        if torch.is_grad_enabled() and (k.requires_grad or kt.requires_grad):
            return torch.cat([apply_rotary(kt, cos, sin), k[..., self.time_dim :]], dim=-1)
        r = self.ring_start
        apply_rotary_into(k[:, :, r:, : self.time_dim], kt[:, :, r:], cos[:, :, r:], sin[:, :, r:])
        return k

    # ------------------------------------------------------------------ reset / state
    def reset(self, items: Tensor | None = None) -> None:
        """Restart ``items`` (bool mask (B,) or indices; default all) at frame 0."""
        sel = self._items(items)
        self.frame[sel] = 0
        self.slot_frame[sel] = -1

    def detach_(self) -> KVCache:
        """Cut the autograd history of the cached tensors (next training segment)."""
        self.k = [t.detach() for t in self.k]
        self.v = [t.detach() for t in self.v]
        self.k_time = [t.detach() for t in self.k_time]
        return self

    def snapshot(self) -> KVCacheState:
        """A deep copy of the whole state (tensor clones); restore it any number of times."""
        return KVCacheState(
            k=[t.clone() for t in self.k],
            v=[t.clone() for t in self.v],
            k_time=[t.clone() for t in self.k_time],
            slot_frame=self.slot_frame.clone(),
            frame=self.frame.clone(),
            step_count=self.step_count,
        )

    def restore(self, state: KVCacheState) -> None:
        """Load a snapshot (copied in place where possible, so buffers keep their storage)."""
        for bufs, saved in ((self.k, state.k), (self.v, state.v), (self.k_time, state.k_time)):
            for i, src in enumerate(saved):
                dst = bufs[i]
                in_place = (
                    dst.shape == src.shape
                    and not dst.requires_grad
                    and not (dst.is_inference() and not torch.is_inference_mode_enabled())
                )
                if in_place:
                    dst.copy_(src)
                else:
                    bufs[i] = src.clone()
        self.slot_frame.copy_(state.slot_frame)
        self.frame.copy_(state.frame)
        self.step_count = state.step_count

    def clone(self) -> KVCache:
        """An independent cache with a copy of this one's state."""
        new = object.__new__(KVCache)
        new.__dict__.update(self.__dict__)
        state = self.snapshot()
        new.k, new.v, new.k_time = state.k, state.v, state.k_time
        new.slot_frame, new.frame = state.slot_frame, state.frame
        return new

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v + self.k_time)

    def _items(self, items: Tensor | None) -> Tensor:
        if items is None:
            return torch.ones(self.batch_size, dtype=torch.bool)
        items = torch.as_tensor(items).to("cpu")
        if items.dtype != torch.bool:
            mask = torch.zeros(self.batch_size, dtype=torch.bool)
            items = mask.index_fill_(0, items.long(), True)
        return items
