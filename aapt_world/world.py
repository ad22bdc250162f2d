"""A shipped neural world: every model a session needs, its start frames and its model card.

On disk a world is one directory::

    world.safetensors      fp16 weights: vae.encoder.*, vae.decoder.* (the inference decoder),
                           vae.latent_scale/shift, generator.*, heads.* (sharded if large);
                           metadata "config" (JSON: model configs) and "card" (JSON)
    start_frames.npy       uint8 (N, H, W, 3): frames ``reset()`` starts from
    MODEL_CARD.md          the card for people (data, steps, compute, metrics)

``export_world`` assembles one from a training run (``run.out_dir``); ``load_world`` reads it
back with clear errors for missing or corrupt files.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import CheckpointError, atomic_replace, load_into, load_weights, save_weights
from .conditions import ConditionConfig
from .heads import HeadsConfig, RewardTerminationHeads
from .transformer import DiTConfig
from .vae import CausalVideoVAE, VAEConfig
from .world_model import WorldModel

WEIGHTS = "world.safetensors"
START_FRAMES = "start_frames.npy"
CARD = "MODEL_CARD.md"


@dataclass
class WorldConfig:
    """Everything needed to rebuild a world's modules (stored as JSON in the weights)."""

    vae: VAEConfig
    dit: DiTConfig
    condition: ConditionConfig
    heads: HeadsConfig | None
    action_type: str = "discrete"  # the env's action space: discrete | continuous (Doom)
    fps: int = 35
    frames_per_step: int = 4
    sample_steps: int = 1  # NFE per latent frame: 1 for the AAPT / consistency generators,
    timestep_shift: float = 1.0  # N (Euler, shifted schedule) for a diffusion baseline
    context_noise: float = 0.0  # inference noise level of the recycled frame (see session)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> WorldConfig:
        return WorldConfig(
            vae=VAEConfig(**data["vae"]), dit=DiTConfig(**data["dit"]),
            condition=ConditionConfig(**data["condition"]),
            heads=HeadsConfig(**data["heads"]) if data.get("heads") else None,
            action_type=data["action_type"], fps=data["fps"],
            frames_per_step=data["frames_per_step"],
            sample_steps=data.get("sample_steps", 1),
            timestep_shift=data.get("timestep_shift", 1.0),
            context_noise=data.get("context_noise", 0.0))


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

    def modules(self) -> dict[str, torch.nn.Module]:
        mods: dict[str, torch.nn.Module] = {"vae": self.vae, "generator": self.generator}
        if self.heads is not None:
            mods["heads"] = self.heads
        return mods

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
    save_weights(directory / WEIGHTS, tensors,
                 {"config": world.config.to_json(), "card": world.card}, dtype=dtype)
    atomic_replace(directory / START_FRAMES,
                   lambda tmp: np.save(open(tmp, "wb"), world.start_frames))
    atomic_replace(directory / CARD, lambda tmp: Path(tmp).write_text(render_card(world)))


def update_card(directory: str | Path, **sections: Any) -> World:
    """Merge ``sections`` (e.g. ``metrics={...}``) into a world's card: the weights' metadata
    and MODEL_CARD.md are rewritten (fp16 round trip: the weights do not change)."""
    world = load_world(directory)
    world.card = {**world.card, **sections}
    save_world(directory, world)
    return world


def load_world(directory: str | Path, device: str | torch.device = "cpu") -> World:
    """Load a world directory; raises CheckpointError naming the missing or corrupt file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no world at {directory}: expected a directory with {WEIGHTS} "
                              f"and {START_FRAMES}")
    tensors, meta = load_weights(directory / WEIGHTS)
    if "config" not in meta:
        raise CheckpointError(f"{directory / WEIGHTS} has no 'config' metadata: not a world")
    try:
        config = WorldConfig.from_json(meta["config"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{directory / WEIGHTS}: bad world config ({err})") from err
    frames_path = directory / START_FRAMES
    try:
        start_frames = np.load(frames_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise CheckpointError(f"missing or corrupt start frames {frames_path}: {err}") from err
    if start_frames.dtype != np.uint8 or start_frames.shape[1:] != (config.vae.height,
                                                                   config.vae.width, 3):
        raise CheckpointError(f"{frames_path} holds {start_frames.dtype} {start_frames.shape}, "
                              f"expected uint8 (N, {config.vae.height}, {config.vae.width}, 3)")
    world = build_world(config, start_frames, meta.get("card", {}))
    for name, module in world.modules().items():
        prefix = f"{name}."
        load_into(module, {k[len(prefix):]: v for k, v in tensors.items()
                           if k.startswith(prefix)}, f"{directory / WEIGHTS} [{name}]")
    for module in world.modules().values():
        module.to(device)
    return world.eval()


def render_card(world: World) -> str:
    card, cfg = world.card, world.config
    lines = [f"# {card.get('name', 'neural world')}", "",
             card.get("description", ""), "",
             f"- frames: {cfg.vae.width}x{cfg.vae.height}, {cfg.fps} fps, "
             f"{cfg.frames_per_step} frames per latent step",
             f"- action space: {cfg.action_type}; condition: {cfg.condition.kind}",
             f"- generator: dim {cfg.dit.dim}, depth {cfg.dit.depth}, window {cfg.dit.window}, "
             f"{cfg.sample_steps} NFE per latent frame, inference context noise "
             f"{cfg.context_noise:g}",
             f"- start frames: {len(world.start_frames)}"]
    lines += [f"- {key}: `{card[key]}`" for key in ("recipe", "evaluation") if key in card]
    lines.append("")
    for key in ("data", "training", "compute", "metrics"):
        if key in card:
            lines += [f"## {key}", "", "```json", json.dumps(card[key], indent=1), "```", ""]
    return "\n".join(lines)
