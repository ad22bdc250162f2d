"""A shipped neural world: every model a session needs, its start frames and its model card.

On disk a world is one directory::

    world-0000i-of-0000N.safetensors  fp16 weights: vae.encoder.*, vae.decoder.* (the inference
                           decoder), vae.latent_scale/shift, generator.*, heads.*; metadata
                           "config" (JSON: model configs), "card" (JSON) and "files" (the
                           SHA-256 of start_frames.npy)
    world.safetensors.index.json  the shards' tensor map, metadata and SHA-256s
    start_frames.npy       uint8 (N, H, W, 3): frames ``reset()`` starts from
    MODEL_CARD.md          the card for people (data, steps, compute, metrics)

``export_world`` assembles one from a training run (``run.out_dir``); ``load_world`` reads it
back and verifies it: checksums, finite weights, a config that fits the weights; every error
names the file at fault.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import (
    CheckpointError,
    atomic_replace,
    load_modules,
    load_weights,
    read_metadata,
    recorded_checksums,
    save_weights,
    sha256_file,
)
from .conditions import ConditionConfig
from .constants import DEFAULT_MAP, DOOM_FPS, FRAMES_PER_STEP
from .devices import resolve_dtype
from .heads import HeadsConfig, RewardTerminationHeads
from .session import StreamingSession
from .transformer import DiTConfig
from .vae import CausalVideoVAE, VAEConfig
from .world_model import WorldModel

WEIGHTS = "world.safetensors"
START_FRAMES = "start_frames.npy"
CARD = "MODEL_CARD.md"
# Doom's action types (envs.actions), "game": a recorded game's own action_space, or "pose":
# a body-pose world (envs.humanoid's pose command; conditioned on its 2D keypoints)
ACTION_TYPES = ("discrete", "continuous", "dodge", "game", "pose")
TERMINATION_RULES = ("threshold", "sample")  # see WorldConfig.termination


# DiT options that were removed; a world saved with their (unused) defaults still loads.
REMOVED_DIT_OPTIONS = {"context_tokens": 0, "context_dim": 0}


def dit_from_json(data: dict[str, Any]) -> DiTConfig:
    used = {k: v for k, v in data.items() if REMOVED_DIT_OPTIONS.get(k, v) != v}
    if used:
        raise TypeError(f"this world uses removed DiT options {used}")
    return DiTConfig(**{k: v for k, v in data.items() if k not in REMOVED_DIT_OPTIONS})


@dataclass
class WorldConfig:
    """Everything needed to rebuild a world's modules (stored as JSON in the weights)."""

    vae: VAEConfig
    dit: DiTConfig
    condition: ConditionConfig
    heads: HeadsConfig | None
    action_type: str = "discrete"  # the env's action space: discrete | continuous (Doom) or
    # game: a recorded game's own space, described by action_space (envs.game_actions JSON)
    fps: int = DOOM_FPS
    frames_per_step: int = 4
    sample_steps: int = 1  # NFE per latent frame: 1 for the AAPT / consistency generators,
    timestep_shift: float = 1.0  # N (Euler, shifted schedule) for a diffusion baseline
    context_noise: float = 0.0  # inference noise level of the recycled frame (see session)
    action_space: dict[str, Any] | None = None  # action_type game: the source env's space
    termination: str = "threshold"  # how the head's logit ends an episode: threshold (logit >
    # 0) | sample (Bernoulli(sigmoid(logit)) from the env's rng: a calibrated hazard)
    temperature: float = 1.0  # scale of the generator's input noise (see session)
    guidance: float = 1.0  # classifier-free guidance on the conditions (see session; 1 = off)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def problems(self) -> list[str]:
        """What is wrong with this config (empty when it is usable)."""
        checks = [
            (self.action_type in ACTION_TYPES,
             f"action_type must be one of {ACTION_TYPES}, got {self.action_type!r}"),
            (isinstance(self.fps, int) and self.fps > 0, f"fps must be > 0, got {self.fps!r}"),
            (self.frames_per_step == FRAMES_PER_STEP == self.condition.frames_per_latent,
             f"frames_per_step must be {FRAMES_PER_STEP} (the VAE's frames per latent), got "
             f"{self.frames_per_step!r}"),
            (isinstance(self.sample_steps, int) and self.sample_steps >= 1,
             f"sample_steps must be >= 1, got {self.sample_steps!r}"),
            (0 <= self.context_noise < 1,
             f"context_noise must be in [0, 1), got {self.context_noise!r}"),
            ((self.action_type == "game") == isinstance(self.action_space, dict),
             f"action_space must be an object exactly when action_type is 'game', got "
             f"{self.action_space!r}"),
            (self.termination in TERMINATION_RULES,
             f"termination must be one of {TERMINATION_RULES}, got {self.termination!r}"),
            (self.temperature >= 0,
             f"temperature must be >= 0, got {self.temperature!r}"),
            (self.guidance >= 0, f"guidance must be >= 0 (1 = off), got {self.guidance!r}"),
            (isinstance(self.dit.window, int) and self.dit.window >= 1,
             f"dit.window must be >= 1, got {self.dit.window!r}"),
        ]
        return [message for ok, message in checks if not ok]

    @staticmethod
    def from_json(data: dict[str, Any]) -> WorldConfig:
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        heads = data.get("heads")
        if heads is not None and not isinstance(heads, dict):
            raise TypeError(f"heads must be an object or null, got {heads!r}")
        return WorldConfig(
            vae=VAEConfig(**data["vae"]), dit=dit_from_json(data["dit"]),
            condition=ConditionConfig(**data["condition"]),
            heads=HeadsConfig(**heads) if heads else None,
            action_type=data["action_type"], fps=data["fps"],
            frames_per_step=data["frames_per_step"],
            sample_steps=data.get("sample_steps", 1),
            timestep_shift=data.get("timestep_shift", 1.0),
            context_noise=data.get("context_noise", 0.0),
            action_space=data.get("action_space"),
            termination=data.get("termination", "threshold"),
            temperature=data.get("temperature", 1.0),
            guidance=data.get("guidance", 1.0))


@dataclass
class World:
    config: WorldConfig
    vae: CausalVideoVAE  # its ``decoder`` is the inference decoder (light when trained so)
    generator: WorldModel
    heads: RewardTerminationHeads | None
    start_frames: np.ndarray  # uint8 (N, H, W, 3)
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.config.vae.height, self.config.vae.width, 3)

    def source_game(self) -> tuple[str | None, str | None]:
        """(scenario, map) of the real game the world was trained on, from its card (top level
        or under "data"; None when the card does not say)."""
        data = self.card.get("data") if isinstance(self.card.get("data"), dict) else {}
        return (self.card.get("scenario") or data.get("scenario"),
                self.card.get("map") or self.card.get("doom_map") or data.get("map")
                or data.get("doom_map"))

    def source_map(self) -> str:
        """The map to compare this world against: its card's, else ``DEFAULT_MAP``."""
        return self.source_game()[1] or DEFAULT_MAP

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def session(self, batch_size: int) -> StreamingSession:
        """A fresh streaming session of ``batch_size`` streams, sampled as the world says
        (NFE, timestep shift, inference context noise, temperature, guidance)."""
        return StreamingSession(self.generator, self.vae, batch_size=batch_size,
                                sample_steps=self.config.sample_steps,
                                timestep_shift=self.config.timestep_shift,
                                context_noise=self.config.context_noise,
                                temperature=self.config.temperature,
                                guidance=self.config.guidance)

    def modules(self) -> dict[str, torch.nn.Module]:
        mods: dict[str, torch.nn.Module] = {"vae": self.vae, "generator": self.generator}
        if self.heads is not None:
            mods["heads"] = self.heads
        return mods

    def to(self, device: str | torch.device | None = None,
           dtype: str | torch.dtype | None = None) -> World:
        """Move every module (in place) to ``device`` and/or cast it to ``dtype`` ("fp32" |
        "bf16"); a session follows its generator's dtype."""
        cast = None if dtype is None else resolve_dtype(dtype)
        for module in self.modules().values():
            module.to(device=device, dtype=cast)
        return self

    def eval(self) -> World:
        for module in self.modules().values():
            module.eval().requires_grad_(False)
        return self


def build_world(config: WorldConfig, start_frames: np.ndarray,
                card: dict[str, Any] | None = None) -> World:
    """Fresh (randomly initialised) modules for ``config``."""
    heads = RewardTerminationHeads(config.heads) if config.heads is not None else None
    return World(config, CausalVideoVAE(config.vae), WorldModel(config.dit, config.condition),
                 heads, start_frames, card or {}).eval()


def save_world(directory: str | Path, world: World, dtype: torch.dtype = torch.float16) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"{name}.{k}": v for name, m in world.modules().items()
               for k, v in m.state_dict().items()}
    atomic_replace(directory / START_FRAMES,
                   lambda tmp: np.save(open(tmp, "wb"), world.start_frames))
    files = {START_FRAMES: sha256_file(directory / START_FRAMES)}
    save_weights(directory / WEIGHTS, tensors,
                 {"config": world.config.to_json(), "card": world.card, "files": files},
                 dtype=dtype, index=True, checksums=files)  # the index verifies every file
    atomic_replace(directory / CARD, lambda tmp: Path(tmp).write_text(render_card(world)))


def update_card(directory: str | Path, **sections: Any) -> World:
    """Merge ``sections`` (e.g. ``metrics={...}``) into a world's card: the weights' metadata
    and MODEL_CARD.md are rewritten (fp16 round trip: the weights do not change)."""
    world = load_world(directory)
    world.card = {**world.card, **sections}
    save_world(directory, world)
    return world


def read_world_config(path: Path, meta: dict[str, Any]) -> WorldConfig:
    """The world config in a weights file's metadata; CheckpointError naming ``path`` if bad."""
    if "config" not in meta:
        raise CheckpointError(f"{path} has no 'config' metadata: not a world")
    if isinstance(meta["config"], str):
        raise CheckpointError(f"{path}: the 'config' metadata is not valid JSON")
    try:
        config = WorldConfig.from_json(meta["config"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: bad world config ({err})") from err
    problems = config.problems()
    if problems:
        raise CheckpointError(f"{path}: bad world config: {'; '.join(problems)}")
    return config


def peek_config(directory: str | Path) -> WorldConfig:
    """A world directory's config alone (no weights read): e.g. which env or viewer fits it."""
    weights = Path(directory) / WEIGHTS
    return read_world_config(weights, read_metadata(weights))


def load_start_frames(path: Path, config: WorldConfig, sha256: str | None) -> np.ndarray:
    if sha256 is not None and path.exists() and sha256_file(path) != sha256:
        raise CheckpointError(f"corrupt start frames {path}: its SHA-256 does not match the one "
                              "recorded with the world's weights")
    try:
        frames = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise CheckpointError(f"missing or corrupt start frames {path}: {err}") from err
    h, w = config.vae.height, config.vae.width
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (h, w, 3):
        raise CheckpointError(f"{path} holds {frames.dtype} {frames.shape}, expected uint8 "
                              f"(N, {h}, {w}, 3)")
    if len(frames) == 0:
        raise CheckpointError(f"{path} holds no start frames: a world needs at least one")
    return frames


def load_world(directory: str | Path, device: str | torch.device = "cpu",
               dtype: str | torch.dtype = "fp32") -> World:
    """Load a world directory onto ``device`` in ``dtype`` ("fp32" | "bf16"); raises
    CheckpointError naming the missing or corrupt file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no world at {directory}: expected a directory with {WEIGHTS} "
                              f"and {START_FRAMES}")
    weights = directory / WEIGHTS
    tensors, meta = load_weights(weights)
    config = read_world_config(weights, meta)
    files = meta.get("files") if isinstance(meta.get("files"), dict) else {}
    frames_sha = files.get(START_FRAMES) or recorded_checksums(weights).get(START_FRAMES)
    start_frames = load_start_frames(directory / START_FRAMES, config, frames_sha)
    world = build_world(config, start_frames, meta.get("card", {}))
    load_modules(world.modules(), tensors, weights)
    return world.to(device, dtype).eval()


# what retune may change (inference only: the weights stay)
INFERENCE_SETTINGS = ("temperature", "context_noise", "termination", "guidance")


def retune_world(source: str | Path, out: str | Path, **settings: Any) -> World:
    """Copy the world at ``source`` to ``out`` with inference settings changed (weights as
    they are); the copy's card records where it came from and what changed."""
    unknown = set(settings) - set(INFERENCE_SETTINGS)
    if unknown:
        raise ValueError(f"retune changes only {INFERENCE_SETTINGS}, got {sorted(unknown)}")
    world = load_world(source)
    config = dataclasses.replace(world.config, **settings)
    problems = config.problems()
    if problems:
        raise ValueError(f"retune of {source}: {'; '.join(problems)}")
    world.config = config
    world.card = {**world.card, "retuned_from": str(source), "retuned": settings}
    save_world(out, world)
    return world


def render_card(world: World) -> str:
    card, cfg = world.card, world.config
    lines = [f"# {card.get('name', 'neural world')}", "",
             card.get("description", ""), "",
             f"- frames: {cfg.vae.width}x{cfg.vae.height}, {cfg.fps} fps, "
             f"{cfg.frames_per_step} frames per latent step",
             f"- action space: {cfg.action_type}; condition: {cfg.condition.kind}"
             + (f"; the recycled frame is turned by the commanded yaw (pinhole, fov "
                f"{cfg.condition.warp_fov_deg:g})" if cfg.condition.warp_fov_deg > 0 else "")
             + (f"; plus Gaussian maps of the joints on the latent grid (std "
                f"{cfg.condition.pose_map_sigma:g} latent px)"
                if cfg.condition.pose_map_sigma > 0 else "")
             + (f"; plus the velocity of command channels {list(cfg.condition.momentum_channels)} "
                f"under friction {cfg.condition.momentum_decay:g} per frame"
                if cfg.condition.momentum_channels else "")
             + (f"; the recycled frame slides by {cfg.condition.slide_frac:g} of its width per "
                f"frame at full velocity of channel {cfg.condition.slide_channel}"
                if cfg.condition.slide_frac else ""),
             f"- generator: dim {cfg.dit.dim}, depth {cfg.dit.depth}, window {cfg.dit.window}, "
             f"{cfg.sample_steps} NFE per latent frame, inference context noise "
             f"{cfg.context_noise:g}, temperature {cfg.temperature:g}"
             + (f", guidance {cfg.guidance:g}" if cfg.guidance != 1.0 else ""),
             f"- start frames: {len(world.start_frames)}"]
    lines += [f"- {key}: `{card[key]}`" for key in ("recipe", "evaluation") if key in card]
    lines.append("")
    for key in ("data", "training", "compute", "metrics"):
        if key in card:
            lines += [f"## {key}", "", "```json", json.dumps(card[key], indent=1), "```", ""]
    return "\n".join(lines)
