"""Block-causal diffusion transformer (DiT) shared by the AAPT generator and discriminator.

Per latent frame the input is the channel concat ``[noisy frame (C) | previous latent (C) |
condition]``. The noisy and previous latents are patchified (``patch_size`` x ``patch_size``
pixel-unshuffle + linear); the condition vector is constant over the frame, so its channel
concat followed by the linear patch embedding equals adding ``Linear(cond)`` to every token of
the frame, which is how it is implemented. The condition also feeds adaLN-Zero together with the
per-frame flow-matching timestep. The output is a v-prediction (``v = eps - x0``) for the frame.

Two paths, identical semantics (see :mod:`aapt_world.attention` for the mask and the
window-relative temporal RoPE positions that never run out):

* :meth:`BlockCausalDiT.forward` - a whole clip in parallel (teacher forcing, discriminator);
* :meth:`BlockCausalDiT.step` - one latent frame against a :class:`~aapt_world.kv_cache.KVCache`
  (inference, student forcing; gradients flow through the cache when autograd is on).

Frame 0 of a clip is the sink. What the caller puts there is its choice, e.g. the generator's
step 0 is ``[noise_1 | x_0 | c_1]``, or a clean ``x_0`` with ``t = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import Attention, parallel_layout
from .kv_cache import KVCache, StepPlan
from .rope import Rope3D, rope_axis_dims


@dataclass
class DiTConfig:
    latent_channels: int = 16
    cond_dim: int = 128  # 0 = unconditional (cond ignored)
    patch_size: int = 2
    latent_height: int = 12  # default latent size, used to size the KV cache
    latent_width: int = 16
    dim: int = 256
    depth: int = 8
    heads: int = 4
    mlp_ratio: float = 4.0
    mlp_type: str = "swiglu"  # "swiglu" (hidden = 2/3 * ratio * dim) or "gelu"
    mlp_hidden_multiple: int = 32  # SwiGLU hidden size rounded up to this
    window: int = 16  # N past latent frames visible besides the sink
    attn_backend: str = "sdpa"  # "sdpa" | "flash" | "auto" (see attention.py)
    qk_norm: bool = True
    rope_theta: float = 10000.0
    timestep_freq_dim: int = 256  # sinusoidal timestep features
    timestep_scale: float = 1000.0  # t in [0, 1] is scaled by this before the sinusoid
    timestep_max_period: float = 10000.0
    norm_eps: float = 1e-6
    # Skip to the recycled frame: v = net + t (x_t - prev), so the one-step (t = 1) prediction
    # x0 = x_t - t v starts as the previous latent ("nothing moved") and the net learns the
    # change; at t -> 0 it is the plain v-prediction.
    prev_skip: bool = False
    # Context-noise augmentation (GameNGen): the recycled frame may be noised to a level in
    # [0, context_noise_max], given to the model in this many buckets (0 = no level input).
    context_noise_buckets: int = 0
    context_noise_max: float = 0.7

    def __post_init__(self) -> None:
        if self.dim % self.heads != 0:
            raise ValueError(f"dim {self.dim} not divisible by heads {self.heads}")
        if self.latent_height % self.patch_size or self.latent_width % self.patch_size:
            raise ValueError("latent size must be divisible by patch_size")
        if self.mlp_type not in ("swiglu", "gelu"):
            raise ValueError(f"mlp_type must be 'swiglu' or 'gelu', got {self.mlp_type!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def tokens_per_frame(self) -> int:
        return (self.latent_height // self.patch_size) * (self.latent_width // self.patch_size)

    @property
    def mlp_hidden(self) -> int:
        if self.mlp_type == "gelu":
            return int(self.mlp_ratio * self.dim)
        hidden = int(2 * self.mlp_ratio * self.dim / 3)
        m = self.mlp_hidden_multiple
        return m * math.ceil(hidden / m)


PRESETS: dict[str, DiTConfig] = {
    # Unit tests: runs in milliseconds.
    "tiny": DiTConfig(dim=64, depth=2, heads=4, cond_dim=16, window=3, latent_height=4,
                      latent_width=4),
    # The default CPU world: 96x128 Doom video -> 16x12 latents -> 48 tokens per frame.
    # (as training/configs/model/small.yaml, so benchmarks time the shipped architecture)
    "small": DiTConfig(dim=256, depth=8, heads=4, cond_dim=128, window=8, prev_skip=True,
                       context_noise_buckets=10),
    # For lent GPUs.
    "base": DiTConfig(dim=768, depth=12, heads=12, cond_dim=256, window=30),
}


def dit_config(name: str = "small", **overrides: object) -> DiTConfig:
    """A preset (``tiny``, ``small``, ``base``) with optional field overrides."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


# ---------------------------------------------------------------------------- building blocks
def patchify(x: Tensor, patch_size: int) -> Tensor:
    """(B, C, T, h, w) -> tokens (B, T, S, C p p): channel-major per p x p patch, S patches
    row by row."""
    b, ch, nt, h, w = x.shape
    p = patch_size
    x = x.view(b, ch, nt, h // p, p, w // p, p).permute(0, 2, 3, 5, 1, 4, 6)
    return x.reshape(b, nt, (h // p) * (w // p), ch * p * p)


def timestep_embedding(t: Tensor, dim: int, max_period: float) -> Tensor:
    """Sinusoidal features (..., dim) of (scaled) timesteps t (...)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.float()[..., None] * freqs
    return torch.cat([args.cos(), args.sin()], dim=-1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class GeluMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def _embed_mlp(in_dim: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))


Rotation = tuple[Tensor, Tensor] | None  # (cos, sin) for Attention.project, or no rotation
# A token stream: tokens (B, F, S, dim) grouped by frame, its activated conditioning (B, F, dim)
# and the rotary embedding of its queries/keys.
Stream = tuple[Tensor, Tensor, Rotation]
QKV = tuple[Tensor, Tensor, Tensor]
# attend(layer, [(q, k, v) per stream]) -> [attention output (B, H, F*S, hd) per stream]
AttendFn = Callable[[int, list[QKV]], list[Tensor]]


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block over one or more token streams sharing one attention."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.dim = cfg.dim
        self.norm1 = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=cfg.norm_eps)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.qk_norm, cfg.norm_eps, cfg.attn_backend)
        self.norm2 = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=cfg.norm_eps)
        mlp_cls = SwiGLU if cfg.mlp_type == "swiglu" else GeluMLP
        self.mlp = mlp_cls(cfg.dim, cfg.mlp_hidden)
        self.ada = nn.Linear(cfg.dim, 6 * cfg.dim)
        self.time_dim = rope_axis_dims(cfg.head_dim)[0]  # q/k channels [time_dim:] are spatial

    def forward(self, layer: int, streams: list[Stream], attend_fn: AttendFn) -> list[Tensor]:
        mods = [self.ada(c).view(*c.shape[:2], 6, 1, self.dim).unbind(2) for _, c, _ in streams]
        qkvs = []
        for (x, _, rotation), m in zip(streams, mods, strict=True):
            h = modulate(self.norm1(x), m[0], m[1])
            qkvs.append(self.attn.project(h.flatten(1, 2), rotation, self.time_dim))
        outs = attend_fn(layer, qkvs)
        new = []
        for (x, _, _), m, o in zip(streams, mods, outs, strict=True):
            x = x + m[2] * self.attn.output(o).view_as(x)
            x = x + m[5] * self.mlp(modulate(self.norm2(x), m[3], m[4]))
            new.append(x)
        return new


# ---------------------------------------------------------------------------- the model
class BlockCausalDiT(nn.Module):
    """Block-causal sliding-window DiT with a first-frame sink and a ring-buffer KV cache.

    Shapes: ``noisy``/``prev`` (B, C, T, h, w); ``cond`` (B, T, cond_dim); ``t`` a float, (B,) or
    (B, T) in [0, 1]. Output v (B, C, T, h, w).
    """

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        p, c, d = cfg.patch_size, cfg.latent_channels, cfg.dim
        self.patch_embed = nn.Linear(2 * c * p * p, d)
        self.t_embed = _embed_mlp(cfg.timestep_freq_dim, d)
        if cfg.cond_dim > 0:
            self.cond_tokens = nn.Linear(cfg.cond_dim, d)  # == channel concat of the condition
            self.cond_embed = _embed_mlp(cfg.cond_dim, d)  # -> adaLN
        if cfg.context_noise_buckets > 0:  # one learned adaLN offset per context-noise bucket
            self.context_noise_embed = nn.Embedding(cfg.context_noise_buckets, d)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=cfg.norm_eps)
        self.final_ada = nn.Linear(d, 2 * d)
        self.final_linear = nn.Linear(d, c * p * p)
        self.rope = Rope3D(cfg.head_dim, cfg.rope_theta)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT init: xavier linears, adaLN modulations and the output layer zeroed."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.t_embed:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
        if self.cfg.context_noise_buckets > 0:
            nn.init.normal_(self.context_noise_embed.weight, std=0.02)
        for blk in self.blocks:
            nn.init.zeros_(blk.ada.weight)
            nn.init.zeros_(blk.ada.bias)
        for lin in (self.final_ada, self.final_linear):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    # ------------------------------------------------------------------ shared pieces
    def _grid(self, h: int, w: int) -> tuple[int, int]:
        p = self.cfg.patch_size
        if h % p or w % p:
            raise ValueError(f"latent size {h}x{w} not divisible by patch_size {p}")
        return h // p, w // p

    def context_noise_bucket(self, level: Tensor) -> Tensor:
        """Context-noise levels in [0, context_noise_max] -> bucket indices (nearest)."""
        n, top = self.cfg.context_noise_buckets, self.cfg.context_noise_max
        return (level.float() / top * (n - 1)).round().clamp(0, n - 1).long()

    def _skip(self, v: Tensor, noisy: Tensor, prev: Tensor, t: Tensor | float) -> Tensor:
        """Add the skip t (x_t - prev) to v (B, C, T, h, w) when ``prev_skip`` is on."""
        if not self.cfg.prev_skip:
            return v
        t = torch.as_tensor(t, device=v.device, dtype=v.dtype)
        b, nt = v.shape[0], v.shape[2]
        t = t.view(b, 1, 1, 1, 1) if t.dim() == 1 else t.expand(b, nt).reshape(b, 1, nt, 1, 1)
        return v + t * (noisy - prev)

    def _embed(
        self, noisy: Tensor, prev: Tensor, cond: Tensor | None, t: Tensor | float,
        context_level: Tensor | None = None, token_bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """-> tokens (B, T, S, dim), activated conditioning (B, T, dim). ``token_bias``
        (B, T, S, dim): added to the tokens (a spatial condition, e.g. pose maps)."""
        b, _, nt, h, w = noisy.shape
        self._grid(h, w)
        x = self.patch_embed(patchify(torch.cat([noisy, prev], dim=1), self.cfg.patch_size))
        if token_bias is not None:
            x = x + token_bias.to(x.dtype)
        t = torch.as_tensor(t, device=noisy.device, dtype=torch.float32)
        t = t.view(b, 1).expand(b, nt) if t.dim() == 1 else t.expand(b, nt)
        feats = timestep_embedding(t * self.cfg.timestep_scale, self.cfg.timestep_freq_dim,
                                   self.cfg.timestep_max_period)
        c = self.t_embed(feats.to(x.dtype))
        if self.cfg.cond_dim > 0:
            if cond is None or cond.shape != (b, nt, self.cfg.cond_dim):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"cond must have shape {(b, nt, self.cfg.cond_dim)}, got {got}")
            x = x + self.cond_tokens(cond)[:, :, None, :]
            c = c + self.cond_embed(cond)
        if self.cfg.context_noise_buckets > 0:  # no level given = a clean context
            level = (torch.zeros(b, nt, device=x.device) if context_level is None
                     else torch.as_tensor(context_level, device=x.device).float())
            level = level.view(b, 1).expand(b, nt) if level.dim() == 1 else level.expand(b, nt)
            c = c + self.context_noise_embed(self.context_noise_bucket(level)).to(c.dtype)
        return x, F.silu(c)

    def _unpatchify(self, x: Tensor, c: Tensor, h: int, w: int) -> Tensor:
        """tokens (B, T, S, dim) -> v (B, C, T, h, w)."""
        b, nt = x.shape[:2]
        p, hp, wp = self.cfg.patch_size, h // self.cfg.patch_size, w // self.cfg.patch_size
        shift, scale = self.final_ada(c)[:, :, None].chunk(2, dim=-1)
        y = self.final_linear(modulate(self.final_norm(x), shift, scale))
        y = y.view(b, nt, hp, wp, -1, p, p).permute(0, 4, 1, 2, 5, 3, 6)
        return y.reshape(b, -1, nt, h, w)

    def _run_blocks(
        self, streams: list[Stream], attend_fn: AttendFn, return_hidden: Sequence[int] | None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Run all blocks; the LAST stream is the visual one whose hidden states are returned."""
        wanted = {i % self.cfg.depth for i in (return_hidden or [])}
        hidden: dict[int, Tensor] = {}
        xs = [x for x, _, _ in streams]
        for i, blk in enumerate(self.blocks):
            xs = blk(i, [(x, c, r) for x, (_, c, r) in zip(xs, streams, strict=True)], attend_fn)
            if i in wanted:
                hidden[i] = xs[-1]
        return xs, [hidden[i % self.cfg.depth] for i in (return_hidden or [])]

    # ------------------------------------------------------------------ parallel path
    def forward(
        self,
        noisy: Tensor,
        prev: Tensor,
        cond: Tensor | None,
        t: Tensor | float,
        return_hidden: Sequence[int] | None = None,
        context_level: Tensor | None = None,
        token_bias: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Whole clip in parallel under the block-causal sliding-window mask.

        Returns v (B, C, T, h, w); with ``return_hidden`` (block indices) also the visual hidden
        states after those blocks, each (B, T, tokens_per_frame, dim).
        """
        b, _, nt, h, w = noisy.shape
        hp, wp = self._grid(h, w)
        n = hp * wp
        x, c = self._embed(noisy, prev, cond, t, context_level, token_bias)
        layout = parallel_layout(nt, n, self.cfg.window)
        dev, dt = x.device, x.dtype
        mask = layout.mask.to(dev)
        sp_cos, sp_sin = self.rope.spatial_rotation(hp, wp, dev, dt)
        spatial = (sp_cos.repeat(nt, 1), sp_sin.repeat(nt, 1))
        q_cos, q_sin = self.rope.time_rotation(layout.query_time, dev, dt)
        k_cos, k_sin = self.rope.time_rotation(layout.key_time, dev, dt)
        def attend_fn(layer: int, qkvs: list[QKV]) -> list[Tensor]:
            q, k, v = qkvs[0]  # spatially rotated
            q = self.rope.rotate_time(q, q_cos, q_sin)
            reps = (1, 1, layout.num_offsets, 1)  # the sink, once per window offset
            keys = torch.cat([k[:, :, :n].repeat(reps), k[:, :, n:]], 2)
            values = torch.cat([v[:, :, :n].repeat(reps), v[:, :, n:]], 2)
            keys = self.rope.rotate_time(keys, k_cos, k_sin)
            return [self.blocks[layer].attn.attend(q, keys, values, mask)]

        xs, hidden = self._run_blocks([(x, c, spatial)], attend_fn, return_hidden)
        v = self._skip(self._unpatchify(xs[-1], c, h, w), noisy, prev, t)
        return (v, hidden) if return_hidden is not None else v

    # ------------------------------------------------------------------ cached path
    def init_cache(self, batch_size: int, latent_size: tuple[int, int] | None = None) -> KVCache:
        """A fresh cache for ``batch_size`` streams (latent size defaults to the config's)."""
        h, w = latent_size or (self.cfg.latent_height, self.cfg.latent_width)
        hp, wp = self._grid(h, w)
        ref = self.patch_embed.weight
        cache = KVCache(
            num_layers=self.cfg.depth,
            batch_size=batch_size,
            heads=self.cfg.heads,
            head_dim=self.cfg.head_dim,
            tokens_per_frame=hp * wp,
            window=self.cfg.window,
            time_dim=self.rope.time_dim,
            device=ref.device,
            dtype=ref.dtype,
        )
        return cache

    def step(
        self,
        noisy: Tensor,
        prev: Tensor,
        cond: Tensor | None,
        t: Tensor | float,
        cache: KVCache,
        return_hidden: Sequence[int] | None = None,
        context_level: Tensor | None = None,
        token_bias: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """One latent frame per item: ``noisy``/``prev`` (B, C, h, w), ``cond`` (B, cond_dim),
        ``t`` float or (B,), ``token_bias`` (B, S, dim). Writes this frame into ``cache`` and
        returns v (B, C, h, w) (plus hidden states (B, 1, tokens_per_frame, dim) per requested
        block)."""
        h, w = noisy.shape[-2:]
        hp, wp = self._grid(h, w)
        if hp * wp != cache.tokens_per_frame:
            raise ValueError("latent size does not match the cache's tokens_per_frame")
        x, c = self._embed(noisy.unsqueeze(2), prev.unsqueeze(2),
                           None if cond is None else cond.unsqueeze(1), t, context_level,
                           None if token_bias is None else token_bias.unsqueeze(1))
        plan: StepPlan = cache.begin_step()
        dev, dt = x.device, x.dtype
        spatial = self.rope.spatial_rotation(hp, wp, dev, dt)
        q_cos, q_sin = (a[:, None, None] for a in self.rope.time_rotation(plan.query_time, dev, dt))
        k_cos, k_sin = (a[:, None] for a in self.rope.time_rotation(plan.key_time, dev, dt))

        def attend_fn(layer: int, qkvs: list[QKV]) -> list[Tensor]:
            q, k, v = qkvs[0]  # spatially rotated
            cache.write(layer, k, v, plan)
            q = self.rope.rotate_time(q, q_cos, q_sin)
            keys = cache.keys(layer, k_cos, k_sin)
            return [self.blocks[layer].attn.attend(q, keys, cache.v[layer], plan.key_valid)]

        xs, hidden = self._run_blocks([(x, c, spatial)], attend_fn, return_hidden)
        v = self._unpatchify(xs[-1], c, h, w)
        v = self._skip(v, noisy.unsqueeze(2), prev.unsqueeze(2), t).squeeze(2)
        return (v, hidden) if return_hidden is not None else v


def adapt_latent_channels(tensors: dict[str, Tensor], channels: int,
                          patch_size: int) -> dict[str, Tensor]:
    """DiT weights for a wider latent (C -> ``channels``), same function on the old channels.

    The patch embedding reads (noisy, prev) channel-major per patch, so the old noisy and
    previous channels move to their new places and the new ones enter through zero weights; the
    output layer predicts zero velocity for the new channels (with ``prev_skip`` a new channel
    starts as a copy of the previous frame). For a generator trained on a VAE that was widened
    by ``vae.adapt_latent_channels``."""
    out = dict(tensors)
    pp = patch_size * patch_size
    for name, w in tensors.items():
        if name.endswith("dit.patch_embed.weight"):
            old = w.shape[1] // (2 * pp)
            if old == channels:
                continue
            if channels < old:
                raise ValueError(f"adapt_latent_channels: {name} reads {old} latent channels; "
                                 f"cannot narrow to {channels}")
            new = w.new_zeros(w.shape[0], 2 * channels * pp)
            new[:, : old * pp] = w[:, : old * pp]  # noisy channels
            new[:, channels * pp : (channels + old) * pp] = w[:, old * pp :]  # previous frame
            out[name] = new
        elif name.endswith(("dit.final_linear.weight", "dit.final_linear.bias")):
            if w.shape[0] < channels * pp:
                out[name] = torch.cat([w, w.new_zeros(channels * pp - w.shape[0], *w.shape[1:])])
    return out


# ---------------------------------------------------------------------------- accounting
def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def step_flops(cfg: DiTConfig, tokens_per_frame: int | None = None) -> int:
    """Matmul FLOPs (2 x multiply-adds) of one cached ``step``, batch 1, window full."""
    n = tokens_per_frame or cfg.tokens_per_frame
    d, patch = cfg.dim, cfg.latent_channels * cfg.patch_size**2
    keys = n * (cfg.window + 2)  # the sink, the window and the current frame
    mlp = (3 if cfg.mlp_type == "swiglu" else 2) * d * cfg.mlp_hidden
    block = n * (4 * d * d + mlp + 2 * keys * d) + 6 * d * d  # proj, mlp, QK^T + AV, adaLN
    embed = n * 2 * patch * d + (cfg.timestep_freq_dim + d) * d + 2 * cfg.cond_dim * d + d * d
    final = 2 * d * d + n * d * patch
    return 2 * (cfg.depth * block + embed + final)


def benchmark_step(
    cfg: DiTConfig, steps: int = 300, warmup: int = 50, batch_size: int = 1
) -> dict[str, float]:
    """Latency (ms) of :meth:`BlockCausalDiT.step` in inference mode after ``warmup`` steps
    (keep warmup > window so the window is full), with the current ``torch.get_num_threads()``."""
    import time

    model = BlockCausalDiT(cfg).eval()
    x = torch.randn(batch_size, cfg.latent_channels, cfg.latent_height, cfg.latent_width)
    cond = torch.randn(batch_size, cfg.cond_dim) if cfg.cond_dim else None
    times = []
    with torch.inference_mode():
        cache = model.init_cache(batch_size)
        for i in range(warmup + steps):
            start = time.perf_counter()
            model.step(x, x, cond, 1.0, cache)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    ts = torch.tensor(times)
    return {
        "p50_ms": ts.median().item(),
        "p95_ms": ts.quantile(0.95).item(),
        "min_ms": ts.min().item(),
        "params_m": count_parameters(model) / 1e6,
        "gflops_per_step": step_flops(cfg) / 1e9,
    }


def _parse_override(cfg: DiTConfig, item: str) -> tuple[str, object]:
    key, value = item.split("=", 1)
    kind = type(getattr(cfg, key))
    if kind is bool:
        return key, value.lower() in ("1", "true", "yes")
    return key, kind(value)


__all__ = [
    "PRESETS",
    "BlockCausalDiT",
    "DiTBlock",
    "DiTConfig",
    "benchmark_step",
    "count_parameters",
    "dit_config",
    "step_flops",
    "timestep_embedding",
]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Benchmark one cached DiT step on this machine.")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. dim=384")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = PRESETS[args.preset]
    overrides = dict(_parse_override(base, item) for item in args.set)
    result = benchmark_step(replace(base, **overrides), args.steps, batch_size=args.batch_size)
    print(" ".join(f"{k}={v:.3f}" for k, v in result.items()))
