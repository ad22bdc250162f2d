"""Batched streaming world state: the loop every user of a neural world sits on.

One :meth:`StreamingSession.step` per latent frame, for every batch item at once:

1. the per-frame conditions of the step (B, 4, A) are folded into one condition per item,
2. ONE generator forward over the new latent frame's tokens against the KV cache, fed pure
   noise at t = 1 (1 NFE): ``x_{k+1} = eps - v(eps, x_k, c_{k+1})`` (baselines: ``sample_steps``
   = N Euler steps of a diffusion model, one KV cache per step, see ``WorldModel.sample_step``),
3. the new latent is recycled as the next step's previous frame and streamed through the
   causal VAE decoder, which returns its 4 video frames.

The session owns all mutable state — KV cache, previous latent, decoder state, per-item step
counters and one noise generator per stream — so :meth:`snapshot` / :meth:`restore` /
:meth:`fork` are
exact: a restored session continues bit for bit as the original would have.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .constants import FRAMES_PER_STEP
from .kv_cache import KVCache, KVCacheState
from .vae import CausalVideoVAE, StreamState, reset_items
from .world_model import WorldModel, euler_schedule, noise_context


@dataclass
class SessionSnapshot:
    caches: list[KVCacheState]
    prev: Tensor
    decode_state: StreamState
    steps: Tensor
    rng_states: list[Tensor]
    momentum: Tensor | None = None  # (B, M): the velocity the commands integrate to


@dataclass
class StepTiming:
    """Wall-clock seconds of the last step, by stage (for HUDs and benchmarks)."""

    generator: float = 0.0
    decoder: float = 0.0

    @property
    def total(self) -> float:
        return self.generator + self.decoder


class NonFiniteError(RuntimeError):
    """A model produced NaN or inf: damaged weights or a numerical blow-up, never silent."""


def check_finite(x: Tensor, what: str, steps: Tensor) -> None:
    # a stream's sum is finite iff all its elements are (an overflow needs values ~1e38 / n, a
    # broken world anyway); one reduction pass, ~10x cheaper than isfinite().all() on frames
    bad = ~torch.isfinite(x.sum(dim=tuple(range(1, x.dim())), dtype=torch.float32))
    if bool(bad.any()):
        streams = bad.nonzero().flatten().tolist()
        raise NonFiniteError(f"{what} is not finite (NaN or inf) for streams {streams[:8]} at "
                             f"latent step {steps[streams[0]].item() + 1}: the world's weights "
                             "are damaged or the model diverged")


def to_uint8_frames(video: Tensor) -> Tensor:
    """(..., 3, H, W) floats in [-1, 1] -> (..., H, W, 3) uint8, contiguous."""
    # fp32 first: a bf16 decoder's output cannot round to every one of the 256 levels.
    # (x + 1) * 127.5 rounded half up = floor(x * 127.5 + 128): the uint8 cast floors values
    # >= 0, so in-place passes replace clamp/add/mul/round; the channel move is done last, on
    # bytes (a strided copy of bf16 or fp32 costs several times more)
    pixels = torch.empty(video.shape, dtype=torch.float32, device=video.device)
    pixels.copy_(video)  # always a copy: the in-place steps never touch the caller's tensor
    pixels = pixels.mul_(127.5).add_(128.0).clamp_(0.0, 255.0).to(torch.uint8)
    return pixels.movedim(-3, -1).contiguous()


def from_uint8_frames(frames: Tensor) -> Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-1, 1]."""
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (..., H, W, 3), got {frames.dtype}")
    return frames.movedim(-1, -3).float() / 127.5 - 1.0


def _take(state: StreamState, idx: Tensor) -> StreamState:
    return StreamState([c[idx] for c in state.caches], state.first[idx])


def _put(state: StreamState, sub: StreamState, idx: Tensor) -> StreamState:
    caches = [c.index_copy(0, idx, s) for c, s in zip(state.caches, sub.caches)]
    return StreamState(caches, state.first.index_copy(0, idx, sub.first))


@dataclass
class StreamingSession:
    """A batch of independent world streams advanced together, one latent frame per step.

    ``generator``: the 1-NFE world model (condition encoder + block-causal DiT); ``vae``: its
    encoder turns start images into latent frame 0, its (light) decoder streams latents back
    to frames. ``sample_steps`` > 1 samples each frame with N Euler steps instead (the
    diffusion baseline; ``timestep_shift`` as in training).
    """

    generator: WorldModel
    vae: CausalVideoVAE
    batch_size: int
    seed: int = 0
    sample_steps: int = 1
    timestep_shift: float = 1.0
    context_noise: float = 0.0  # noise level of the recycled frame at inference (a model
    # trained with context-noise augmentation is told the level; 0 = clean)
    temperature: float = 1.0  # scale of the input noise: < 1 trades diversity for stability
    # (less random walk in a long rollout), > 1 a harsher dream (World Models' trick)
    guidance: float = 1.0  # classifier-free guidance on the conditions (1 = off; > 1 makes the
    # actions matter more; needs a generator trained with diffusion.cond_dropout; 2x compute)
    timing: StepTiming = field(default_factory=StepTiming)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.sample_steps < 1:
            raise ValueError(f"sample_steps must be >= 1, got {self.sample_steps}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.guidance < 0:
            raise ValueError(f"guidance must be >= 0 (1 = off), got {self.guidance}")
        # guided sampling runs every stream twice (conditioned, then null): caches of 2B
        self.cache_streams = self.batch_size * (1 if self.guidance == 1.0 else 2)
        param = next(self.generator.parameters())
        self.device, self.dtype = param.device, param.dtype
        # One noise generator per stream: a stream's frames depend on its own seed only, not
        # on which other streams share the batch or when they were reset.
        self._rngs = [torch.Generator(device=self.device).manual_seed(self.seed + i)
                      for i in range(self.batch_size)]
        self.caches: list[KVCache] = []  # one per sampling step (1 for the 1-NFE generator)
        self.timesteps = euler_schedule(self.sample_steps, self.timestep_shift).tolist()
        self.prev: Tensor | None = None
        self.decode_state: StreamState | None = None
        self.steps = torch.zeros(self.batch_size, dtype=torch.long)
        # a world whose player keeps moving integrates the commands' velocity (from rest at reset)
        self.momentum_rule = self.generator.momentum
        width = 0 if self.momentum_rule is None else self.momentum_rule.width
        self.momentum = torch.zeros(self.batch_size, width, device=self.device)
        self._started = torch.zeros(self.batch_size, dtype=torch.bool)

    # -- lifecycle ----------------------------------------------------------------------------

    @torch.inference_mode()
    def reset(self, start_frames: Tensor, items: Tensor | None = None,
              seeds: list[int] | None = None) -> Tensor:
        """(Re)start streams from images: uint8 (n, H, W, 3), n = batch size or len(items).

        ``seeds`` (one per restarted stream) reseeds their noise. Returns the decoded start
        frames, uint8 (n, H, W, 3): what the world "sees" at frame 0.
        Items not listed keep streaming untouched.
        """
        idx = self._indices(items)
        if start_frames.ndim != 4 or start_frames.shape[0] != len(idx):
            raise ValueError(f"start_frames must be uint8 ({len(idx)}, H, W, 3), "
                             f"got {tuple(start_frames.shape)}")
        video = from_uint8_frames(start_frames.to(self.device)).to(self.dtype).unsqueeze(2)
        z0 = self.vae.normalize(self.vae.encode(video).mode())[:, :, 0]  # (n, C, h, w)
        if not self.caches:
            self._allocate(z0)
        elif z0.shape[1:] != self.prev.shape[1:]:
            raise ValueError(f"start frames encode to latents {tuple(z0.shape[1:])}, but this "
                             f"session streams {tuple(self.prev.shape[1:])}: wrong image size")
        if seeds is not None:
            if len(seeds) != len(idx):
                raise ValueError(f"need one seed per restarted stream ({len(idx)}), got {seeds}")
            for i, seed in zip(idx.tolist(), seeds):
                self._rngs[i].manual_seed(int(seed))
        mask = torch.zeros(self.batch_size, dtype=torch.bool)
        mask[idx] = True
        for cache in self.caches:  # a guided stream's null twin restarts with it
            cache.reset(mask.repeat(self.cache_streams // self.batch_size))
        self.prev[idx.to(self.device)] = z0
        self.steps[idx] = 0
        self.momentum[idx.to(self.device)] = 0.0
        self._started[idx] = True
        # The causal decoder must see latent 0 of the reset items (and only theirs).
        dev_idx = idx.to(self.device)
        state = reset_items(self.decode_state, mask.to(self.device))
        frames, sub = self.vae.decode_step(self.vae.denormalize(z0.unsqueeze(2)),
                                          _take(state, dev_idx))
        self.decode_state = _put(state, sub, dev_idx)
        return to_uint8_frames(frames[:, :, -1])

    @torch.inference_mode()
    def step(self, conditions: Tensor, recycled: Tensor | None = None) -> Tensor:
        """Advance every stream by one latent frame. ``conditions``: (B, 4, A) per-frame.

        ``recycled`` (B, C, h, w), normalised latents: teacher forcing, condition on this as
        the previous frame (e.g. the encoder's latent of the real frames) instead of the
        stream's own last output. Returns uint8 (B, 4, H, W, 3): the 4 new video frames.
        """
        if not self.caches or not bool(self._started.all()):
            raise RuntimeError("reset() every stream before step()")
        if conditions.ndim < 3 or conditions.shape[:2] != (self.batch_size, FRAMES_PER_STEP):
            raise ValueError(f"conditions must be ({self.batch_size}, {FRAMES_PER_STEP}, A) (a "
                             f"pose world: (.., K, 2)), got {tuple(conditions.shape)}")
        if recycled is not None:
            if recycled.shape != self.prev.shape:
                raise ValueError(f"recycled must be {tuple(self.prev.shape)} latents, got "
                                 f"{tuple(recycled.shape)}")
            self.prev = recycled.to(self.device, self.dtype)
        t0 = time.perf_counter()
        shape = self.prev.shape[1:]
        noise = torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=self.dtype)
                             for g in self._rngs])
        if self.temperature != 1.0:
            noise.mul_(self.temperature)  # in place: no extra tensor per step
        prev, level = self.prev, None
        if self.context_noise > 0:  # the stream's own rng: snapshots stay exact
            n = torch.stack([torch.randn(shape, generator=g, device=self.device,
                                         dtype=self.dtype) for g in self._rngs])
            prev, level = noise_context(self.prev, self.context_noise, n)
        conditions = conditions.to(self.device, self.dtype)
        if self.momentum_rule is not None:  # the velocity channels follow the commands
            conditions, self.momentum = self.momentum_rule.augment(conditions[:, None],
                                                                   self.momentum)
            conditions = conditions[:, 0]
        x = self.generator.sample_step(noise, prev, conditions,
                                       self.caches, self.timesteps, context_level=level,
                                       guidance=self.guidance)
        check_finite(x, "the generated latent", self.steps)
        self.prev = x
        t1 = time.perf_counter()
        frames, self.decode_state = self.vae.decode_step(self.vae.denormalize(x.unsqueeze(2)),
                                                         self.decode_state)
        video = frames.transpose(1, 2)  # (B, 4, 3, H, W): the decoder's own (contiguous) layout
        check_finite(video, "the decoded frame", self.steps)
        out = to_uint8_frames(video)  # (B, 4, H, W, 3)
        self.timing = StepTiming(generator=t1 - t0, decoder=time.perf_counter() - t1)
        self.steps += 1
        return out

    # -- state ----------------------------------------------------------------------------------

    @torch.inference_mode()
    def snapshot(self) -> SessionSnapshot:
        if not self.caches:
            raise RuntimeError("nothing to snapshot: reset() the session first")
        return SessionSnapshot([c.snapshot() for c in self.caches], self.prev.clone(),
                               self.decode_state.clone(), self.steps.clone(),
                               [g.get_state() for g in self._rngs], self.momentum.clone())

    @torch.inference_mode()
    def restore(self, snap: SessionSnapshot) -> None:
        if not self.caches:
            raise RuntimeError("restore() needs a session that was reset() once")
        for cache, state in zip(self.caches, snap.caches, strict=True):
            cache.restore(state)
        self.prev = snap.prev.clone()
        self.decode_state = snap.decode_state.clone()
        self.steps = snap.steps.clone()
        if snap.momentum is not None:
            self.momentum = snap.momentum.clone()
        for g, state in zip(self._rngs, snap.rng_states):
            g.set_state(state)
        self._started[:] = True

    def fork(self, seed: int | None = None) -> StreamingSession:
        """An independent copy sharing the models; with ``seed`` its noise diverges from here
        (stream i of the fork then draws from seed + i)."""
        other = StreamingSession(self.generator, self.vae, self.batch_size, self.seed,
                                 self.sample_steps, self.timestep_shift, self.context_noise,
                                 self.temperature, self.guidance)
        if self.caches:
            other.caches = [c.clone() for c in self.caches]
            other.restore(self.snapshot())
        if seed is not None:
            for i, g in enumerate(other._rngs):
                g.manual_seed(seed + i)
        return other

    @property
    def cache(self) -> KVCache | None:
        """The generator's KV cache (the first sampling step's); None before the first reset."""
        return self.caches[0] if self.caches else None

    # -- helpers --------------------------------------------------------------------------------

    def _allocate(self, z0: Tensor) -> None:
        _, c, h, w = z0.shape
        self.caches = [self.generator.init_cache(self.cache_streams, latent_size=(h, w))
                       for _ in range(self.sample_steps)]
        self.prev = torch.zeros(self.batch_size, c, h, w, device=self.device, dtype=self.dtype)
        frame_h, frame_w = h * 8, w * 8
        self.decode_state = self.vae.decoder.init_state(self.batch_size, frame_h, frame_w)

    def _indices(self, items: Tensor | None) -> Tensor:
        if items is None:
            return torch.arange(self.batch_size)
        items = torch.as_tensor(items).cpu()
        if items.dtype == torch.bool:
            items = items.nonzero().flatten()
        items = items.long().flatten()
        if len(items) == 0 or items.min() < 0 or items.max() >= self.batch_size:
            raise ValueError(f"items must index streams 0..{self.batch_size - 1}, got {items}")
        return items
