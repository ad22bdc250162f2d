"""Model builders every training stage shares (from the run config)."""

from __future__ import annotations

from pathlib import Path

import torch

from aapt_world.conditions import ConditionConfig
from aapt_world.momentum import DOOM_FRICTION
from aapt_world.world_model import WorldModel
from envs.actions import COMMAND_DIM, COMMAND_NAMES, CommandScale
from training.config import TrainConfig

KEYPOINT_DIM = 2  # pose worlds are conditioned on 2D keypoints (pixels) per video frame


def condition_config(cfg: TrainConfig) -> ConditionConfig:
    """The condition encoder of ``cfg``'s world: per-frame commands (width
    ``world.action_dim``), or for a pose world ``world.action_dim / 2`` 2D keypoints."""
    world, dit = cfg.world, cfg.model.dit
    if world.condition == "pose":
        if world.action_dim % KEYPOINT_DIM:
            raise ValueError(f"a pose world's world.action_dim is 2 x its keypoints, got "
                             f"{world.action_dim}")
        return ConditionConfig(kind="pose", cond_dim=dit.cond_dim, hidden_dim=cfg.model.cond_hidden,
                               num_keypoints=world.action_dim // KEYPOINT_DIM,
                               keypoint_dim=KEYPOINT_DIM, pose_map_sigma=world.pose_map_sigma,
                               floor_anchor=world.floor_anchor)
    if world.pose_map_sigma > 0:
        raise ValueError(f"world.pose_map_sigma needs a pose world, got world.condition="
                         f"{world.condition}")
    doom = {}  # what Doom's command layout (forward, strafe, turn, look) lets the model use
    for option, enabled in (("world.view_warp_fov", world.view_warp_fov > 0),
                            ("world.momentum", world.momentum)):
        if enabled and (world.condition != "action" or world.action_dim != COMMAND_DIM):
            raise ValueError(f"{option} needs Doom's {COMMAND_DIM}-wide commands "
                             f"(world.condition=action), got {world.condition} x "
                             f"{world.action_dim}")
    if world.view_warp_fov > 0:  # the turn axis and degrees per frame at full scale
        doom.update(warp_fov_deg=world.view_warp_fov, turn_channel=COMMAND_NAMES.index("turn"),
                    turn_deg=CommandScale().turn)
    if world.momentum:  # the player slides: forward and strafe velocity under friction
        doom.update(momentum_channels=(COMMAND_NAMES.index("forward"),
                                       COMMAND_NAMES.index("strafe")),
                    momentum_decay=DOOM_FRICTION)
    if world.slide_view_px:  # so does the view, by the strafe velocity
        if not world.momentum:
            raise ValueError("world.slide_view_px needs world.momentum=true (the slide follows "
                             "the player's velocity)")
        doom.update(slide_channel=COMMAND_NAMES.index("strafe"),
                    slide_frac=world.slide_view_px / cfg.model.vae.width)
    return ConditionConfig(kind=world.condition, cond_dim=dit.cond_dim,
                           hidden_dim=cfg.model.cond_hidden, action_dim=world.action_dim, **doom)


def build_world_model(cfg: TrainConfig) -> WorldModel:
    """The generator (condition encoder + DiT) of ``cfg``'s model and world."""
    model = WorldModel(cfg.model.dit, condition_config(cfg))
    if cfg.world.condition == "pose":  # pixel keypoints -> [-1, 1] over the frame
        half = torch.tensor([cfg.model.vae.width, cfg.model.vae.height]) / 2
        with torch.no_grad():
            model.cond.offset.copy_(half)
            model.cond.scale.copy_(half)
    return model


def sampling_shift(cfg: TrainConfig, sample_steps: int) -> float:
    """The timestep shift a world samples with: stage 1's for N > 1 Euler steps; none for the
    1-NFE step (t = 1 -> 0, where a shift changes nothing)."""
    return cfg.diffusion.timestep_shift if sample_steps > 1 else 1.0


def frozen_generator(cfg: TrainConfig, path: str, device: torch.device, what: str
                     ) -> WorldModel:
    """``cfg``'s generator with the weights at ``path`` (a world directory or a generator
    stage's file), frozen: a stage that learns on the generator's own outputs (``what``
    names the option that asked, for the error)."""
    from training.trainer import load_generator_weights

    if not path:
        raise ValueError(f"{what} needs a generator: a world directory or a generator file")
    model = build_world_model(cfg).to(device).eval().requires_grad_(False)
    load_generator_weights(Path(path), model)
    return model
