"""Causal 3D video VAE: 4x temporal and 8x spatial compression, streaming encode/decode.

Layout: video (B, 3, T, H, W) in [-1, 1] with T = 1 + 4(L-1)  <->  latents (B, C, L, H/8, W/8).
Frame 0 alone -> latent 0; every following group of 4 frames -> one latent.

The CPU budget drives the design: pixels are space-to-depth'ed at once (one thin 3x3 stage at
H/4), everything else runs at H/8. Time is handled only at latent rate: a per-frame 2D encoder,
each group of 4 frames folded into channels, then causal temporal convs across latent steps.
The decoder mirrors it. Norms are per frame (GroupNorm over C, h, w), never across time, so
streaming one step at a time equals processing the whole clip.

Streaming state (`StreamState`): for every causal temporal conv its last k-1 inputs (zeros at
a clip start) plus a per-item `first` flag. Steps never modify a state in place, so holding a
reference is a snapshot; `clone()` gives an independent copy; `reset_items(state, mask)`
restarts the masked batch items (zero caches, first=True).

First-step rule: a first step's "group" is frame 0 repeated 4 times. `encode_step` uses only
slot 0 of the group for items whose `first` flag is set (a 1-frame input is allowed when all
items are first); `decode_step` always returns 4 frames per item, and for items on their first
step all 4 are the reconstruction of frame 0 (read `state.first` before the step to know which
items those are). `decode(z)` returns exactly 1 + 4(L-1) frames. Latents are raw; the world model
uses `normalize`/`denormalize` (per-channel `latent_shift`/`latent_scale` buffers).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GROUP = 4  # video frames per latent frame (after the first)
PATCH = 8  # spatial downsampling


@dataclass
class VAEConfig:
    latent_channels: int = 16
    height: int = 96  # default frame size, used to size fresh streaming states
    width: int = 128
    hi_channels: int = 16  # thin stage at H/4 (encoder stem and decoder head)
    enc_channels: int = 64  # per-frame 2D encoder width at H/8
    enc_blocks: int = 1
    temporal_channels: int = 96  # width of the causal temporal stacks (latent rate)
    enc_temporal_blocks: int = 1
    dec_temporal_blocks: int = 2
    dec_channels: int = 64  # per-frame 2D decoder width at H/8
    dec_blocks: int = 1
    temporal_kernel: int = 3  # causal kernel over latent steps; k-1 steps are cached. 1 = each
    # latent frame is encoded/decoded from its own 4 frames only: a per-group latent, so that
    # consecutive latents are close when the frames are (what a world model can predict)
    norm_groups: int = 8
    light_decoder: bool = False  # build the LightDecoder as `CausalVideoVAE.decoder`
    light_temporal_channels: int = 64
    light_temporal_blocks: int = 1
    light_dec_channels: int = 32
    light_dec_blocks: int = 1


@dataclass
class StreamState:
    """Causal cache of an encoder or decoder; a plain container of tensors."""

    caches: list[Tensor]  # per temporal block: (B, k-1, C, h, w), the conv's previous inputs
    first: Tensor  # (B,) bool: the next step is the item's first (latent 0 <-> frame 0)

    def clone(self) -> StreamState:
        return StreamState([c.clone() for c in self.caches], self.first.clone())


def reset_items(state: StreamState, mask: Tensor) -> StreamState:
    """New state where items with mask[b] True restart as fresh streams; others are untouched."""
    mask = mask.to(device=state.first.device, dtype=torch.bool)
    m = mask.view(-1, 1, 1, 1, 1)
    caches = [torch.where(m, torch.zeros_like(c), c) for c in state.caches]
    return StreamState(caches, state.first | mask)


class DiagonalGaussian:
    """Posterior N(mean, exp(logvar)) over latents (B, C, L, h, w)."""

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        self.mean, self.logvar = mean, logvar.clamp(-30.0, 20.0)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + torch.exp(0.5 * self.logvar) * eps

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """Mean per-element KL to N(0, I) (scalar, fp32 also for a bf16 encoder)."""
        return kl_divergence(self.mean.float(), self.logvar.float()).mean()


def adapt_temporal_kernel(tensors: dict[str, Tensor], kernel: int) -> dict[str, Tensor]:
    """VAE weights for another ``temporal_kernel``: each causal temporal conv keeps the weights
    of the steps both kernels see (the newest ones); steps a larger kernel adds start at zero.
    Lets a VAE trained with one kernel initialise one with another (e.g. 3 -> 1)."""
    out = dict(tensors)
    for name, w in tensors.items():
        if not name.endswith(".tconv.weight"):
            continue
        c = w.shape[0]
        old = w.shape[1] // c  # the conv's input stacks k steps of c channels, oldest first
        if old == kernel:
            continue
        keep = min(old, kernel)
        new = w.new_zeros(c, kernel * c, *w.shape[2:])
        new[:, (kernel - keep) * c:] = w[:, (old - keep) * c:]
        out[name] = new
    return out


def adapt_latent_channels(tensors: dict[str, Tensor], channels: int,
                          signal: float = 0.1) -> dict[str, Tensor]:
    """VAE weights for a wider latent (``latent_channels`` C -> ``channels``), same function.

    The old channels keep their weights. A new channel's mean starts as a small random
    projection of the encoder's features (``signal`` x the old rows' std: it carries
    information from the first step, so the decoders get a gradient to use it) and its log
    variance as the old channels' average; every decoder reads the new channels through zero
    weights, so the widened VAE starts from the old one's reconstructions. Narrowing is refused
    (which channels to drop is not a rule)."""
    out = dict(tensors)
    gen = torch.Generator().manual_seed(0)
    for name, w in tensors.items():
        if name.endswith(("encoder.conv_out.weight", "encoder.conv_out.bias")):
            old = w.shape[0] // 2
            if old == channels:
                continue
            if channels < old:
                raise ValueError(f"adapt_latent_channels: {name} has {old} latent channels; "
                                 f"cannot narrow to {channels}")
            mean, logvar = w[:old], w[old:]
            extra = channels - old
            noise = torch.randn((extra, *w.shape[1:]), generator=gen).to(w)
            new_mean = noise * signal * mean.float().std() if w.dim() > 1 else w.new_zeros(extra)
            new_logvar = logvar.mean(0, keepdim=True).expand(extra, *w.shape[1:])
            out[name] = torch.cat([mean, new_mean, logvar, new_logvar])
        elif name.endswith("conv_in.weight") and "decoder" in name and w.shape[1] < channels:
            out[name] = torch.cat([w, w.new_zeros(w.shape[0], channels - w.shape[1],
                                                  *w.shape[2:])], 1)
        elif name.endswith(("latent_scale", "latent_shift")) and w.shape[0] < channels:
            fill = 1.0 if name.endswith("latent_scale") else 0.0
            out[name] = torch.cat([w, w.new_full((channels - w.shape[0],), fill)])
    return out


_BLOCK = re.compile(r"(.*\.t?blocks\.\d+)\.")  # "<path>.blocks.<i>." / "<path>.tblocks.<i>."


def add_residual_blocks(tensors: dict[str, Tensor], fresh: dict[str, Tensor]) -> dict[str, Tensor]:
    """VAE weights for more residual blocks (``enc_blocks``, ``dec_blocks``, ...), same function.

    Every ``ResBlock`` / ``TemporalBlock`` ends in a zero-initialised conv, so a fresh block is
    the identity: whole blocks that ``fresh`` (the new model's own state) has and ``tensors``
    lacks are taken from ``fresh``. Anything else missing stays missing (the load names it)."""
    held = {m.group(1) for k in tensors if (m := _BLOCK.match(k))}
    out = dict(tensors)
    for key, value in fresh.items():
        m = _BLOCK.match(key)
        if key not in tensors and m and m.group(1) not in held:
            out[key] = value
    return out


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise KL(N(mean, exp(logvar)) || N(0, 1))."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)


def pixel_shuffle(x: Tensor, r: int) -> Tensor:
    """``F.pixel_shuffle`` as a view and one permuted copy: the same values, 2.5x faster on
    CPU (the ATen kernel takes a slow path for bf16, the inference dtype)."""
    n, c, h, w = x.shape
    c //= r * r
    return x.view(n, c, r, r, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c, h * r, w * r)


def _gn(c: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, c), c, eps=1e-6)


def _zero(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(conv.weight)  # residual branches start as identity: stable early training
    nn.init.zeros_(conv.bias)
    return conv


class ResBlock(nn.Module):
    """Per-frame pre-norm residual block on (N, C, h, w)."""

    def __init__(self, c: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _gn(c, groups), nn.Conv2d(c, c, 3, padding=1)
        self.norm2, self.conv2 = _gn(c, groups), _zero(nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class TemporalBlock(nn.Module):
    """Residual block over latent time: causal conv (k steps, 1x1 in space), then 3x3 in space.

    x: (B, L, C, h, w); past: (B, k-1, C, h, w), the causal conv's previous inputs.
    """

    def __init__(self, c: int, k: int, groups: int) -> None:
        super().__init__()
        self.k = k
        self.norm1, self.tconv = _gn(c, groups), nn.Conv2d(k * c, c, 1)
        self.norm2, self.conv = _gn(c, groups), _zero(nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: Tensor, past: Tensor) -> tuple[Tensor, Tensor]:
        B, L, C, h, w = x.shape
        a = F.silu(self.norm1(x.flatten(0, 1))).view(B, L, C, h, w)
        seq = torch.cat([past, a], 1)  # (B, k-1+L, C, h, w)
        # step t sees inputs t-k+1..t, stacked along channels -> one 1x1 conv2d
        win = torch.cat([seq[:, i : i + L] for i in range(self.k)], 2).flatten(0, 1)
        y = self.conv(F.silu(self.norm2(self.tconv(win))))
        return x + y.view(B, L, C, h, w), seq[:, L:]


def _check_video(x: Tensor, what: str, ts: tuple[int, ...] | None = None) -> None:
    if x.dim() != 5 or x.shape[1] != 3:
        raise ValueError(f"{what}: expected video (B, 3, T, H, W), got shape {tuple(x.shape)}")
    H, W = x.shape[-2:]
    if H % PATCH or W % PATCH:
        raise ValueError(f"{what}: H and W must be divisible by {PATCH}, got H={H}, W={W}")
    T = x.shape[2]
    if ts is None and (T - 1) % GROUP:
        raise ValueError(f"{what}: expected T = 1 + 4k frames (1, 5, 9, ...), got T={T}")
    if ts is not None and T not in ts:
        raise ValueError(f"{what}: expected T in {ts} frames per step, got T={T}")


def _check_latent(z: Tensor, c: int, what: str) -> None:
    if z.dim() != 5 or z.shape[1] != c:
        raise ValueError(f"{what}: expected latents (B, {c}, L, h, w), got shape {tuple(z.shape)}")


def _check_state(st: StreamState, b: int, h: int, w: int, what: str) -> None:
    got = (st.first.shape[0], *(st.caches[0].shape[-2:] if st.caches else (h, w)))
    if got != (b, h, w):
        raise ValueError(f"{what}: state is for (batch, h, w)={got}, input needs {(b, h, w)}")


def _fresh(
    stack: nn.ModuleList, c: int, k: int, b: int, h: int, w: int, like: Tensor
) -> StreamState:
    caches = [like.new_zeros(b, k - 1, c, h, w) for _ in stack]
    return StreamState(caches, torch.ones(b, dtype=torch.bool, device=like.device))


class Encoder(nn.Module):
    """Per-frame 2D encoder -> 4 frames folded into channels -> causal temporal stack."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hi, c, ct, g = cfg.hi_channels, cfg.enc_channels, cfg.temporal_channels, cfg.norm_groups
        # stem (N, 3, H, W) -> (N, c, H/8, W/8): raw 8x8 patches (every pixel, linearly) plus a
        # thin nonlinear 3x3 path at H/4 for structure across patch borders, one 1x1 projection
        self.hi = nn.Conv2d(48, hi, 3, padding=1)
        self.proj = nn.Conv2d(4 * (48 + hi), c, 1)
        self.blocks = nn.Sequential(*[ResBlock(c, g) for _ in range(cfg.enc_blocks)])
        self.fold = nn.Conv2d(GROUP * c, ct, 1)  # one group of 4 frames -> one latent step
        self.tblocks = nn.ModuleList(
            TemporalBlock(ct, cfg.temporal_kernel, g) for _ in range(cfg.enc_temporal_blocks)
        )
        self.norm_out = _gn(ct, g)
        self.conv_out = nn.Conv2d(ct, 2 * cfg.latent_channels, 3, padding=1)

    def _features(self, v: Tensor) -> Tensor:
        B, T = v.shape[:2]  # (B, T, 3, H, W) -> (B, T, c, h, w), each frame on its own
        x = F.pixel_unshuffle(v.flatten(0, 1), 4)  # (N, 48, H/4, W/4)
        x = F.pixel_unshuffle(torch.cat([x, F.silu(self.hi(x))], 1), 2)
        f = self.blocks(self.proj(x))
        return f.view(B, T, *f.shape[1:])

    def _temporal(self, f: Tensor, st: StreamState) -> tuple[DiagonalGaussian, StreamState]:
        B, L = f.shape[0], f.shape[1] // GROUP  # f: (B, 4L, c, h, w), groups of 4 frames
        x = self.fold(f.reshape(B * L, GROUP * f.shape[2], *f.shape[-2:]))
        x = x.view(B, L, *x.shape[1:])
        caches = []
        for blk, past in zip(self.tblocks, st.caches, strict=True):
            x, past = blk(x, past)
            caches.append(past)
        m = self.conv_out(F.silu(self.norm_out(x.flatten(0, 1))))
        mean, logvar = m.view(B, L, *m.shape[1:]).transpose(1, 2).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar), StreamState(caches, torch.zeros_like(st.first))

    def init_state(
        self, batch_size: int, height: int | None = None, width: int | None = None
    ) -> StreamState:
        H, W = height or self.cfg.height, width or self.cfg.width
        like = self.conv_out.weight
        return _fresh(
            self.tblocks,
            self.cfg.temporal_channels,
            self.cfg.temporal_kernel,
            batch_size,
            H // PATCH,
            W // PATCH,
            like,
        )

    def encode(self, video: Tensor) -> DiagonalGaussian:
        """(B, 3, 1+4k, H, W) -> posterior over (B, C, 1+k, H/8, W/8)."""
        _check_video(video, "encode")
        f = self._features(video.transpose(1, 2))
        # frame 0 is replicated to fill its own group, so latent 0 only sees frame 0
        f = torch.cat([f[:, :1].expand(-1, GROUP, -1, -1, -1), f[:, 1:]], 1)
        B, _, _, h, w = f.shape
        return self._temporal(f, self.init_state(B, h * PATCH, w * PATCH))[0]

    def encode_step(
        self, frames: Tensor, state: StreamState
    ) -> tuple[DiagonalGaussian, StreamState]:
        """One group (B, 3, 4, H, W) -> posterior over (B, C, 1, h, w). Items on their first
        step use only frames[:, :, 0]; a (B, 3, 1, H, W) input is allowed if all items are first."""
        _check_video(frames, "encode_step", ts=(1, GROUP))
        _check_state(
            state,
            frames.shape[0],
            frames.shape[-2] // PATCH,
            frames.shape[-1] // PATCH,
            "encode_step",
        )
        v = frames.transpose(1, 2)
        if bool(state.first.all()):
            v = v[:, :1]  # only frame 0 matters
        elif v.shape[1] == 1:
            raise ValueError(
                "encode_step: a 1-frame input is only valid when every item is on "
                "its first step; give 4 frames (B, 3, 4, H, W)"
            )
        f = self._features(v)
        if f.shape[1] == 1:
            f = f.expand(-1, GROUP, -1, -1, -1)
        else:
            f = torch.where(state.first.view(-1, 1, 1, 1, 1), f[:, :1].expand_as(f), f)
        return self._temporal(f, state)


    def encode_groups(
        self, frames: Tensor, state: StreamState
    ) -> tuple[DiagonalGaussian, StreamState]:
        """L groups at once (B, 3, 4L, H, W) -> posterior over (B, C, L, h, w): the same as L
        ``encode_step`` calls, in one batched pass (for items past their first step)."""
        _check_video(frames, "encode_groups", ts=tuple(range(GROUP, frames.shape[2] + 1, GROUP)))
        if bool(state.first.any()):
            raise ValueError("encode_groups: items on their first step need encode_step")
        _check_state(state, frames.shape[0], frames.shape[-2] // PATCH,
                     frames.shape[-1] // PATCH, "encode_groups")
        return self._temporal(self._features(frames.transpose(1, 2)), state)


class Decoder(nn.Module):
    """Causal temporal stack -> each latent step expanded into 4 frames -> per-frame 2D decoder."""

    def __init__(self, cfg: VAEConfig, light: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        if light:
            ct, nt = cfg.light_temporal_channels, cfg.light_temporal_blocks
            c, nb = cfg.light_dec_channels, cfg.light_dec_blocks
        else:
            ct, nt, c, nb = (
                cfg.temporal_channels,
                cfg.dec_temporal_blocks,
                cfg.dec_channels,
                cfg.dec_blocks,
            )
        hi, g = cfg.hi_channels, cfg.norm_groups
        self.ct = ct
        self.conv_in = nn.Conv2d(cfg.latent_channels, ct, 3, padding=1)
        self.tblocks = nn.ModuleList(TemporalBlock(ct, cfg.temporal_kernel, g) for _ in range(nt))
        self.norm_mid = _gn(ct, g)
        self.expand = nn.Conv2d(ct, GROUP * c, 1)  # one latent step -> 4 frames of features
        self.blocks = nn.Sequential(*[ResBlock(c, g) for _ in range(nb)])
        self.norm_out = _gn(c, g)
        # mirror of the stem: to H/4 as 48 linear pixel channels + hi features; the features
        # refine the pixels through a thin 3x3 stage, then 4x4 pixel shuffle to full size
        self.up = nn.Conv2d(c, 4 * (48 + hi), 1)
        self.hi_conv = nn.Conv2d(hi, hi, 3, padding=1)
        self.hi_out = nn.Conv2d(hi, 48, 1)

    def _temporal(self, z: Tensor, st: StreamState) -> tuple[Tensor, StreamState]:
        B, _, L, h, w = z.shape  # -> (B, L, 4, c, h, w) frame features
        x = self.conv_in(z.transpose(1, 2).flatten(0, 1)).view(B, L, self.ct, h, w)
        caches = []
        for blk, past in zip(self.tblocks, st.caches, strict=True):
            x, past = blk(x, past)
            caches.append(past)
        f = self.expand(F.silu(self.norm_mid(x.flatten(0, 1))))
        return f.view(B, L, GROUP, -1, h, w), StreamState(caches, torch.zeros_like(st.first))

    def _frames(self, f: Tensor) -> Tensor:
        B, T = f.shape[:2]  # (B, T, c, h, w) -> (B, 3, T, H, W)
        x = self.up(F.silu(self.norm_out(self.blocks(f.flatten(0, 1)))))
        pix, x = pixel_shuffle(x, 2).split([48, self.hi_conv.in_channels], 1)
        x = pixel_shuffle(pix + self.hi_out(F.silu(x + self.hi_conv(F.silu(x)))), 4)
        return x.view(B, T, *x.shape[1:]).transpose(1, 2)

    def init_state(
        self, batch_size: int, height: int | None = None, width: int | None = None
    ) -> StreamState:
        H, W = height or self.cfg.height, width or self.cfg.width
        return _fresh(
            self.tblocks,
            self.ct,
            self.cfg.temporal_kernel,
            batch_size,
            H // PATCH,
            W // PATCH,
            self.conv_in.weight,
        )

    def decode(self, z: Tensor) -> Tensor:
        """(B, C, L, h, w) -> (B, 3, 1+4(L-1), 8h, 8w); z[:, :, 0] is a clip's first latent."""
        _check_latent(z, self.cfg.latent_channels, "decode")
        B, _, _, h, w = z.shape
        f, _ = self._temporal(z, self.init_state(B, h * PATCH, w * PATCH))
        return self._frames(torch.cat([f[:, 0, :1], f[:, 1:].flatten(1, 2)], 1))

    def decode_step(self, z: Tensor, state: StreamState) -> tuple[Tensor, StreamState]:
        """One latent (B, C, 1, h, w) -> 4 frames (B, 3, 4, H, W); see the first-step rule."""
        _check_latent(z, self.cfg.latent_channels, "decode_step")
        if z.shape[2] != 1:
            raise ValueError(f"decode_step: expected one latent frame (L=1), got L={z.shape[2]}")
        _check_state(state, z.shape[0], z.shape[-2], z.shape[-1], "decode_step")
        f, new = self._temporal(z, state)
        f = f[:, 0]  # (B, 4, c, h, w)
        if bool(state.first.all()):  # clip starts: decode frame 0 only
            return self._frames(f[:, :1]).expand(-1, -1, GROUP, -1, -1).contiguous(), new
        x = self._frames(f)
        if not bool(state.first.any()):
            return x, new
        first = state.first.view(-1, 1, 1, 1, 1)
        return torch.where(first, x[:, :, :1].expand_as(x), x), new


class LightDecoder(Decoder):
    """Narrower/shallower decoder for inference (distilled from the full one); same interface."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__(cfg, light=True)


class CausalVideoVAE(nn.Module):
    def __init__(self, cfg: VAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or VAEConfig()
        self.encoder = Encoder(cfg)
        self.decoder: Decoder = LightDecoder(cfg) if cfg.light_decoder else Decoder(cfg)
        # latent normalisation for the world model: z_model = (z - shift) * scale, per channel
        self.register_buffer("latent_scale", torch.ones(cfg.latent_channels))
        self.register_buffer("latent_shift", torch.zeros(cfg.latent_channels))

    def encode(self, video: Tensor) -> DiagonalGaussian:
        return self.encoder.encode(video)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder.decode(z)

    def init_encode_state(
        self, batch_size: int, height: int | None = None, width: int | None = None
    ) -> StreamState:
        return self.encoder.init_state(batch_size, height, width)

    def init_decode_state(
        self, batch_size: int, height: int | None = None, width: int | None = None
    ) -> StreamState:
        return self.decoder.init_state(batch_size, height, width)

    def encode_step(
        self, frames: Tensor, state: StreamState
    ) -> tuple[DiagonalGaussian, StreamState]:
        return self.encoder.encode_step(frames, state)

    def encode_groups(
        self, frames: Tensor, state: StreamState
    ) -> tuple[DiagonalGaussian, StreamState]:
        return self.encoder.encode_groups(frames, state)

    def decode_step(self, z: Tensor, state: StreamState) -> tuple[Tensor, StreamState]:
        return self.decoder.decode_step(z, state)

    def normalize(self, z: Tensor) -> Tensor:
        """Raw VAE latents (B, C, L, h, w) -> normalised latents for the world model."""
        return (z - self.latent_shift.view(1, -1, 1, 1, 1)) * self.latent_scale.view(1, -1, 1, 1, 1)

    def denormalize(self, z: Tensor) -> Tensor:
        return z / self.latent_scale.view(1, -1, 1, 1, 1) + self.latent_shift.view(1, -1, 1, 1, 1)

    def forward(self, video: Tensor, sample: bool = True) -> tuple[Tensor, DiagonalGaussian]:
        """Training pass: (reconstruction (B, 3, T, H, W), posterior)."""
        post = self.encode(video)
        return self.decode(post.sample() if sample else post.mode()), post
