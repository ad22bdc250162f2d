"""Shared fixtures: a tiny neural world (random weights) saved to a temporary directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aapt_world.conditions import ConditionConfig
from aapt_world.heads import HeadsConfig
from aapt_world.transformer import dit_config
from aapt_world.vae import VAEConfig
from aapt_world.world import World, WorldConfig, build_world, save_world

TINY_H, TINY_W = 48, 64  # training/configs/model/tiny.yaml


def tiny_world_config(heads: bool = True, action_type: str = "discrete") -> WorldConfig:
    """The ``tiny`` model config (training/configs/model/tiny.yaml) as a world."""
    vae = VAEConfig(height=TINY_H, width=TINY_W, hi_channels=4, enc_channels=16,
                    temporal_channels=16, dec_channels=16, norm_groups=4,
                    light_temporal_channels=8, light_dec_channels=8, light_decoder=True)
    dit = dit_config("tiny", latent_height=TINY_H // 8, latent_width=TINY_W // 8, window=3)
    if action_type == "pose":  # the humanoid's 16 2D keypoints per frame, no heads
        condition = ConditionConfig(kind="pose", num_keypoints=16, keypoint_dim=2,
                                    cond_dim=dit.cond_dim, hidden_dim=32)
        return WorldConfig(vae=vae, dit=dit, condition=condition, heads=None,
                           action_type=action_type, fps=30)
    return WorldConfig(
        vae=vae, dit=dit,
        condition=ConditionConfig(kind="action", action_dim=4, cond_dim=dit.cond_dim,
                                  hidden_dim=32),
        heads=HeadsConfig(latent_channels=16, action_dim=4) if heads else None,
        action_type=action_type)


def make_tiny_world(seed: int = 0, heads: bool = True, action_type: str = "discrete",
                    num_start_frames: int = 3) -> World:
    """Random weights, with zero-initialised output layers randomised so that frames change
    from step to step and depend on the action and the noise."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, 256, (num_start_frames, TINY_H, TINY_W, 3), dtype=np.uint8)
    world = build_world(tiny_world_config(heads, action_type), starts,
                        card={"name": "tiny test world"})
    with torch.no_grad():
        for module in world.modules().values():
            for p in module.parameters():
                torch.nn.init.normal_(p, std=0.05)
        if world.heads is not None:  # keep episodes going: termination logit well below 0
            world.heads.out[-1].bias.copy_(torch.tensor([0.0, -10.0]))
    return world


@pytest.fixture(scope="session")
def tiny_world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny world saved with ``save_world`` (fp16 weights, 3 start frames, heads)."""
    directory = tmp_path_factory.mktemp("tiny_world")
    save_world(directory, make_tiny_world())
    return directory


@pytest.fixture(scope="session")
def tiny_world_factory():
    """``make_tiny_world`` for tests that need a World object (e.g. with forced heads)."""
    return make_tiny_world


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are per-op-overhead bound: on the shared 2-core CI machine 1 torch thread is
    up to ~10x faster than 2 (threads spin-wait under contention). Use via
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-episode, 64x48 dataset recorded from the real game (training_run.py)."""
    from training_run import record_tiny_data

    return record_tiny_data(tmp_path_factory.mktemp("tinydata"))


@pytest.fixture(scope="module")
def pipeline(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every training stage, a few steps each, in one run directory (training_run.py)."""
    from training_run import train_pipeline

    return train_pipeline(data_root, tmp_path_factory.mktemp("run"))
