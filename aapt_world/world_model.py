"""The generator of a world: condition encoder + block-causal DiT, one module.

It takes per-VIDEO-frame conditions (B, T, 4, A) — exactly what envs and datasets produce — and
folds them into one condition per latent frame before the DiT. Training stages, the streaming
session and checkpoints all handle this one module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .conditions import ConditionConfig, build_condition_encoder
from .kv_cache import KVCache
from .transformer import BlockCausalDiT, DiTConfig, patchify
from .view_warp import slide_view, turn_view


def shift_timesteps(t: Tensor, shift: float) -> Tensor:
    """``shift(t, s) = s t / (1 + (s - 1) t)``: moves timesteps toward high noise for s > 1."""
    return shift * t / (1 + (shift - 1) * t)


def euler_schedule(steps: int, shift: float, device: torch.device | None = None) -> Tensor:
    """Timesteps 1 = t_0 > t_1 > ... > t_steps = 0, uniform then shifted (sampling and CD)."""
    return shift_timesteps(torch.linspace(1.0, 0.0, steps + 1, device=device), shift)


ONE_STEP = (1.0, 0.0)  # the 1-NFE generator's schedule: t = 1 -> 0 in one Euler step


def noise_context(prev: Tensor, level: float, noise: Tensor) -> tuple[Tensor, Tensor | None]:
    """The recycled frame as a model trained with context-noise augmentation sees it:
    ``(1 - s) x + s n`` with the level ``s`` handed to the model (B,); s = 0 leaves it clean
    (level None). One rule for inference (the session) and student-forced training."""
    if level <= 0:
        return prev, None
    levels = torch.full((prev.shape[0],), level, device=prev.device)
    return (1 - level) * prev + level * noise, levels


def teacher_forced(generator: WorldModel, latents: Tensor, frame_conds: Tensor, noise: Tensor,
                   context_noise: float = 0.0, context_eps: Tensor | None = None) -> Tensor:
    """Every frame 1..K of a clip generated in parallel at 1 NFE from the REAL previous frame
    (noised as the session's recycled frame when ``context_noise`` > 0; ``context_eps`` is
    that noise): normalised latents (B, C, K+1, h, w) -> predictions (B, C, K, h, w)."""
    prev, level = latents[:, :, :-1], None
    if context_noise > 0:
        if context_eps is None:
            raise ValueError("context_noise > 0 needs context_eps (the noise to mix in)")
        prev, level = noise_context(prev, context_noise, context_eps)
    t = torch.ones(latents.shape[0], device=latents.device)
    return noise - generator(noise, prev, frame_conds, t, context_level=level)


class WorldModel(nn.Module):
    def __init__(self, dit: DiTConfig, condition: ConditionConfig) -> None:
        super().__init__()
        if condition.cond_dim != dit.cond_dim:
            raise ValueError(f"condition.cond_dim {condition.cond_dim} != dit.cond_dim "
                             f"{dit.cond_dim}")
        if condition.warp_fov_deg > 0 and not (
                condition.kind == "action" and 0 <= condition.turn_channel < condition.action_dim
                and condition.turn_deg > 0):
            raise ValueError(f"condition.warp_fov_deg > 0 needs a continuous action world with "
                             f"0 <= turn_channel < action_dim and turn_deg > 0, got {condition}")
        if condition.pose_map_sigma > 0 and condition.kind != "pose":
            raise ValueError(f"condition.pose_map_sigma > 0 needs a pose world, got "
                             f"kind {condition.kind!r}")
        self.dit_config, self.condition_config = dit, condition
        self.momentum = condition.momentum()  # None, or the velocity its conditions end with
        self.cond = build_condition_encoder(condition)
        self.dit = BlockCausalDiT(dit)
        if condition.pose_map_sigma > 0:  # zero-initialised: a stage-1 model starts unchanged
            maps = condition.frames_per_latent * self.cond.joints  # the floor anchor has none
            self.pose_map_embed = nn.Linear(maps * dit.patch_size**2, dit.dim)
            nn.init.zeros_(self.pose_map_embed.weight)
            nn.init.zeros_(self.pose_map_embed.bias)

    @property
    def cfg(self) -> DiTConfig:
        return self.dit.cfg

    def encode_conditions(self, frame_conds: Tensor, null: Tensor | None = None) -> Tensor:
        """Per-frame conditions (B, T, 4, ...) -> condition vectors (B, T, cond_dim). ``null``
        (B,) bool: those items get the NULL condition, a zero vector (an encoded command is
        never exactly zero): the unconditional model classifier-free guidance needs, trained
        by ``diffusion.cond_dropout``."""
        cond = self.cond(frame_conds)
        if null is not None:
            cond = cond * (~null).to(cond.dtype).view(-1, *([1] * (cond.ndim - 1)))
        return cond

    def recycled_view(self, prev: Tensor, frame_conds: Tensor) -> Tensor:
        """The recycled frames as the DiT sees them: turned by each step's commanded yaw when
        ``condition.warp_fov_deg`` > 0, slid by the player's sideways velocity when
        ``condition.slide_frac`` != 0 (see :mod:`aapt_world.view_warp`), else as they are.
        ``prev`` (B, C, T, h, w) with ``frame_conds`` (B, T, 4, A), or (B, C, h, w) with (B, 4, A).
        """
        c = self.condition_config
        if c.warp_fov_deg <= 0 and not c.slide_frac:
            return prev
        clip = prev.dim() == 5
        if clip:  # every step's frame on its own: (B T, C, h, w)
            b, ch, t, h, w = prev.shape
            prev = prev.transpose(1, 2).reshape(b * t, ch, h, w)
        if c.warp_fov_deg > 0:
            right_deg = frame_conds[..., c.turn_channel].float().sum(-1) * c.turn_deg
            prev = turn_view(prev, right_deg.reshape(-1), c.warp_fov_deg)
        if c.slide_frac:  # the velocity channels follow the commands (aapt_world.momentum)
            velocity = frame_conds[..., c.action_dim + c.momentum_channels.index(c.slide_channel)]
            prev = slide_view(prev, velocity.float().sum(-1).reshape(-1) * c.slide_frac)
        return prev.view(b, t, ch, h, w).transpose(1, 2) if clip else prev

    def pose_tokens(self, frame_conds: Tensor, height: int, width: int,
                    null: Tensor | None = None) -> Tensor | None:
        """The joints' maps as a token bias (B, T, S, dim) for pose worlds with
        ``condition.pose_map_sigma`` > 0, else None; ``frame_conds`` (B, T, 4, K, 2); ``null``
        items get none (the null condition, as in :meth:`encode_conditions`)."""
        sigma = self.condition_config.pose_map_sigma
        if sigma <= 0:
            return None
        maps = self.cond.heatmaps(frame_conds, height, width, sigma)
        if null is not None:
            maps = maps * (~null).to(maps.dtype).view(-1, 1, 1, 1, 1)
        weight = self.pose_map_embed.weight
        return self.pose_map_embed(patchify(maps, self.dit_config.patch_size).to(weight.dtype))

    def forward(self, noisy: Tensor, prev: Tensor, frame_conds: Tensor, t: Tensor | float,
                return_hidden: Sequence[int] | None = None, context_level: Tensor | None = None,
                null: Tensor | None = None) -> Tensor | tuple[Tensor, list]:
        """Whole clip: latents (B, C, T, h, w), frame_conds (B, T, 4, ...) -> v (B, C, T, h, w).
        ``context_level`` (B,) or (B, T): how much noise the recycled frames carry (None = 0);
        ``null`` (B,) bool: items without conditions (see :meth:`encode_conditions`)."""
        prev = self.recycled_view(prev, frame_conds)
        return self.dit(noisy, prev, self.encode_conditions(frame_conds, null), t,
                        return_hidden=return_hidden, context_level=context_level,
                        token_bias=self.pose_tokens(frame_conds, *noisy.shape[-2:], null))

    def step(self, noisy: Tensor, prev: Tensor, frame_conds: Tensor, t: Tensor | float,
             cache: KVCache, return_hidden: Sequence[int] | None = None,
             context_level: Tensor | None = None, null: Tensor | None = None
             ) -> Tensor | tuple[Tensor, list]:
        """One latent frame: (B, C, h, w) latents, frame_conds (B, 4, ...) -> v (B, C, h, w)."""
        cond, seen, bias = self._frame_inputs(prev, frame_conds, null)
        return self.dit.step(noisy, seen, cond, t, cache, return_hidden=return_hidden,
                             context_level=context_level, token_bias=bias)

    def _frame_inputs(self, prev: Tensor, frame_conds: Tensor, null: Tensor | None
                      ) -> tuple[Tensor, Tensor, Tensor | None]:
        """What one latent frame's DiT step reads besides the noisy latent: the condition
        vector (B, cond_dim), the recycled frame as seen (turned, if the world turns it) and the
        pose maps' token bias (B, S, dim) or None. The same for every Euler step of a frame."""
        cond = self.encode_conditions(frame_conds.unsqueeze(1), null)[:, 0]
        bias = self.pose_tokens(frame_conds.unsqueeze(1), *prev.shape[-2:], null)
        return (cond, self.recycled_view(prev, frame_conds),
                None if bias is None else bias[:, 0])

    def generate_step(self, noise: Tensor, prev: Tensor, frame_conds: Tensor, cache: KVCache,
                      context_level: Tensor | None = None) -> Tensor:
        """The 1-NFE generator step used by inference AND student-forcing training:
        ``x_{k+1} = eps - v(eps, x_k, c_{k+1}; t = 1)`` (flow matching's one step from t=1 to 0),
        i.e. :meth:`sample_step` with one cache and the schedule (1, 0)."""
        return self.sample_step(noise, prev, frame_conds, (cache,), ONE_STEP, context_level)

    def sample_step(self, noise: Tensor, prev: Tensor, frame_conds: Tensor,
                    caches: Sequence[KVCache], timesteps: Sequence[float],
                    context_level: Tensor | None = None, guidance: float = 1.0) -> Tensor:
        """N-step Euler sampling of one latent frame, N = len(caches) = len(timesteps) - 1:
        ``x <- x + (t_{i+1} - t_i) v(x, x_k, c_{k+1}; t_i)`` from ``x = eps`` at t_0 = 1.

        Stage 1 trains with ONE noise level per clip, so the frames a query at t_i attends to
        were themselves at t_i. Cache i therefore keeps every past frame's keys at t_i (written
        by that frame's own i-th Euler step): N cached steps per frame, exact in distribution,
        no window recomputation. With N = 1 and (1, 0) this is :meth:`generate_step`.

        ``guidance`` w != 1: classifier-free guidance on the conditions, ``v = v_null + w (v -
        v_null)``; the caches then hold 2B streams, the conditioned ones first and their
        unconditioned twins after (each twin keeps its own past, fed the same frames).
        """
        if len(timesteps) != len(caches) + 1:
            raise ValueError(f"need len(caches) + 1 timesteps, got {len(timesteps)} for "
                             f"{len(caches)} caches")
        b = noise.shape[0]
        guided = guidance != 1.0
        if guided:
            if any(c.batch_size != 2 * b for c in caches):
                raise ValueError(f"guidance needs caches of 2 x {b} streams (conditioned, "
                                 f"then null), got {[c.batch_size for c in caches]}")
            prev, frame_conds = torch.cat([prev, prev]), torch.cat([frame_conds, frame_conds])
            context_level = None if context_level is None else torch.cat([context_level] * 2)
            null = torch.arange(2 * b, device=noise.device) >= b
        else:
            null = None
        cond, seen, bias = self._frame_inputs(prev, frame_conds, null)  # once per frame
        x = noise
        for i, cache in enumerate(caches):
            t, t_next = timesteps[i], timesteps[i + 1]
            inp = torch.cat([x, x]) if guided else x
            v = self.dit.step(inp, seen, cond, t, cache, context_level=context_level,
                              token_bias=bias)
            if guided:
                v_cond, v_null = v.chunk(2)
                v = v_null + guidance * (v_cond - v_null)
            x = x + (t_next - t) * v
        return x

    def init_cache(self, batch_size: int, latent_size: tuple[int, int] | None = None) -> KVCache:
        return self.dit.init_cache(batch_size, latent_size=latent_size)


def add_zero_pose_maps(tensors: dict[str, Tensor], model: WorldModel,
                       prefix: str = "model.") -> dict[str, Tensor]:
    """Weights of a generator without pose maps (``tensors``, named ``<prefix><param>``) for
    ``model`` with them: the maps enter through zero weights, so it starts as the same function.
    Tensors that already hold the maps are kept."""
    if model.condition_config.pose_map_sigma <= 0:
        return tensors
    out = dict(tensors)
    for name, param in model.pose_map_embed.state_dict().items():
        out.setdefault(f"{prefix}pose_map_embed.{name}", torch.zeros_like(param))
    return out


def add_zero_floor_anchor(tensors: dict[str, Tensor], model: WorldModel,
                          prefix: str = "model.") -> dict[str, Tensor]:
    """Weights of a pose generator without the floor anchor (``tensors``) for ``model`` with
    it: the anchor's 2 inputs per frame enter the condition MLP through zero weights, so it
    starts as the same function. Weights that already take it are kept."""
    if not model.condition_config.floor_anchor:
        return tensors
    name = f"{prefix}cond.mlp.0.weight"
    weight, frames = tensors[name], model.condition_config.frames_per_latent
    if weight.shape[1] == model.cond.mlp[0].weight.shape[1]:
        return tensors
    dim = model.condition_config.keypoint_dim
    per_frame = weight.view(weight.shape[0], frames, -1, dim)  # (hidden, 4, K, D): flatten(2)
    zeros = per_frame.new_zeros(weight.shape[0], frames, 1, dim)
    return {**tensors, name: torch.cat([per_frame, zeros], 2).flatten(1)}


def add_zero_momentum(tensors: dict[str, Tensor], model: WorldModel,
                      prefix: str = "model.") -> dict[str, Tensor]:
    """Weights of a generator whose commands carry no momentum (``tensors``) for ``model`` whose
    commands do: the velocity channels enter the condition MLP through zero weights, so it starts
    as the same function. Weights already that wide are kept."""
    if model.momentum is None:
        return tensors
    name = f"{prefix}cond.mlp.0.weight"
    weight, frames = tensors[name], model.condition_config.frames_per_latent
    if weight.shape[1] == model.cond.mlp[0].weight.shape[1]:
        return tensors
    per_frame = weight.view(weight.shape[0], frames, -1)  # (hidden, 4, A): flatten(2)'s layout
    zeros = per_frame.new_zeros(weight.shape[0], frames, model.momentum.width)
    return {**tensors, name: torch.cat([per_frame, zeros], -1).flatten(1)}


def student_rollout(generator: WorldModel, start: torch.Tensor, frame_conds: torch.Tensor,
                    noise: torch.Tensor, cache: KVCache | None = None,
                    context_noise: float = 0.0, context_eps: torch.Tensor | None = None,
                    timesteps: Sequence[float] = ONE_STEP, guidance: float = 1.0
                    ) -> tuple[torch.Tensor, KVCache]:
    """Generate K latent frames autoregressively, exactly as inference does.

    start (B, C, h, w) is the previous frame (a real first latent, or the last generated frame
    of the previous segment); frame_conds (B, K, 4, A); noise (B, C, K, h, w). With
    ``context_noise`` > 0 every recycled frame is noised with ``context_eps`` (B, C, K, h, w)
    at that level, as the session does at inference (``noise_context``). Returns the
    generated frames (B, C, K, h, w) — differentiable through the KV cache — and the cache
    (the first Euler step's).

    ``timesteps`` / ``guidance``: sample as a session with ``sample_steps`` N and that guidance
    does (N = len(timesteps) - 1 caches, 2B streams when guided: :meth:`WorldModel.sample_step`);
    ``cache`` continues a 1-NFE unguided rollout only.
    """
    guided = guidance != 1.0
    if cache is not None and (len(timesteps) != 2 or guided):
        raise ValueError("student_rollout: a cache to continue needs the 1-NFE unguided "
                         "schedule (multi-step or guided sampling makes its own caches)")
    if context_noise > 0 and context_eps is None:
        raise ValueError("student_rollout: context_noise > 0 needs context_eps")
    streams = start.shape[0] * (2 if guided else 1)
    caches = ([cache] if cache is not None else
              [generator.init_cache(streams, latent_size=tuple(start.shape[-2:]))
               for _ in range(len(timesteps) - 1)])
    prev, frames = start.detach(), []
    for k in range(frame_conds.shape[1]):
        seen, level = prev, None
        if context_eps is not None:  # what the world sees of its last frame at inference
            seen, level = noise_context(prev, context_noise, context_eps[:, :, k])
        x = generator.sample_step(noise[:, :, k], seen, frame_conds[:, k], caches, timesteps,
                                  context_level=level, guidance=guidance)
        frames.append(x)
        prev = x.detach()  # recycled input detached; the cache keeps the gradient path
    return torch.stack(frames, dim=2), caches[0]
