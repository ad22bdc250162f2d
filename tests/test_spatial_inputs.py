"""Spatial inputs of the generator: the recycled frame turned by the commanded yaw
(aapt_world.view_warp) or slid by the strafe velocity, and the joints' maps of a pose world
(WorldModel.pose_tokens)."""

import math

import pytest
import torch

from aapt_world.checkpoint import load_into
from aapt_world.conditions import ConditionConfig
from aapt_world.momentum import DOOM_FRICTION, CommandMomentum
from aapt_world.transformer import dit_config
from aapt_world.view_warp import slide_view, turn_view
from aapt_world.world_model import WorldModel, add_zero_pose_maps

FOV = 90.0


def column_image(width: int = 64, height: int = 16, column: int = 32) -> torch.Tensor:
    img = torch.zeros(1, 1, height, width)
    img[..., column] = 1.0
    return img


def test_no_turn_is_identity():
    frames = torch.randn(3, 4, 12, 16)
    assert torch.allclose(turn_view(frames, torch.zeros(3), FOV), frames, atol=1e-5)


@pytest.mark.parametrize("right_deg", [10.0, -20.0])
def test_turning_right_moves_the_scene_left_by_the_pinhole_amount(right_deg):
    """What was straight ahead appears at x = cx - f tan(theta) after a right turn by theta."""
    width = 64
    img = column_image(width, column=width // 2)  # the column centred at x = 32.5 - 0.5
    out = turn_view(img, torch.tensor([right_deg]), FOV)
    focal = (width / 2) / math.tan(math.radians(FOV / 2))
    expected = width / 2 - focal * math.tan(math.radians(right_deg))  # continuous x of the column
    profile = out[0, 0, 8]
    centre = float((profile * (torch.arange(width) + 0.5)).sum() / profile.sum())
    assert abs(centre - (expected + 0.5)) < 0.6, (centre, expected)
    # rows are stretched towards the edge the scene moved to, never shrunk to nothing
    assert profile.sum() > 0.5


def test_turn_view_rejects_bad_shapes_and_fov():
    with pytest.raises(ValueError, match="right_deg"):
        turn_view(torch.zeros(2, 1, 4, 4), torch.zeros(3), FOV)
    with pytest.raises(ValueError, match="fov_deg"):
        turn_view(torch.zeros(2, 1, 4, 4), torch.zeros(2), 180.0)


def warp_model(fov: float = FOV) -> WorldModel:
    torch.manual_seed(0)
    dit = dit_config("tiny")
    cond = ConditionConfig(kind="action", action_dim=4, cond_dim=dit.cond_dim,
                           warp_fov_deg=fov, turn_channel=2, turn_deg=6.0)
    model = WorldModel(dit, cond).eval()
    with torch.no_grad():  # adaLN-Zero weights randomised so that every path carries signal
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return model


def random_clip(model: WorldModel, b: int, frames: int, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy, prev) latents (b, C, frames, h, w) for ``model``."""
    cfg = model.cfg
    shape = (b, cfg.latent_channels, frames, cfg.latent_height, cfg.latent_width)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def assert_cached_steps_match(model: WorldModel, noisy: torch.Tensor, prev: torch.Tensor,
                              conds: torch.Tensor, v: torch.Tensor) -> None:
    with torch.no_grad():
        cache = model.init_cache(noisy.shape[0])
        steps = [model.step(noisy[:, :, k], prev[:, :, k], conds[:, k], 1.0, cache)
                 for k in range(noisy.shape[2])]
    assert (torch.stack(steps, 2) - v).abs().max() < 1e-5


def test_world_model_sees_the_turned_frame_in_parallel_and_cached_steps():
    model, plain = warp_model(), warp_model(0.0)
    plain.load_state_dict(model.state_dict())
    b, frames = 2, 5
    noisy, prev = random_clip(model, b, frames, seed=1)
    conds = torch.zeros(b, frames, 4, 4)
    conds[..., 2] = torch.linspace(-1, 1, frames).view(1, frames, 1)  # full left .. full right
    with torch.no_grad():
        v = model(noisy, prev, conds, 1.0)
        turned = model.recycled_view(prev, conds)
        assert torch.allclose(v, plain(noisy, turned, conds, 1.0), atol=1e-5)
        # the still frame (turn 0) passes unchanged; the others move
        assert torch.allclose(turned[:, :, 2], prev[:, :, 2], atol=1e-5)
        assert (turned[:, :, 0] - prev[:, :, 0]).abs().mean() > 0.1
    assert_cached_steps_match(model, noisy, prev, conds, v)


def test_warp_needs_a_turn_axis():
    dit = dit_config("tiny")
    with pytest.raises(ValueError, match="turn_channel"):
        WorldModel(dit, ConditionConfig(kind="action", action_dim=4, cond_dim=dit.cond_dim,
                                        warp_fov_deg=FOV))


def pose_model(sigma: float) -> WorldModel:
    torch.manual_seed(0)
    dit = dit_config("tiny")
    cond = ConditionConfig(kind="pose", cond_dim=dit.cond_dim, num_keypoints=3,
                           pose_map_sigma=sigma)
    model = WorldModel(dit, cond).eval()
    with torch.no_grad():
        model.cond.offset.fill_(16.0)  # a 32 x 32 frame -> 4 x 4 latents
        model.cond.scale.fill_(16.0)
    return model


def test_pose_maps_start_as_the_same_function_and_then_carry_the_joints():
    plain, mapped = pose_model(0.0), pose_model(0.6)
    for p in plain.parameters():  # adaLN-Zero weights randomised: every path carries signal
        if not p.any():
            with torch.no_grad():
                p.normal_(0.0, 0.05)
    # a stage-1 model without maps loads strictly, its maps entering through zero weights
    tensors = add_zero_pose_maps({f"model.{k}": v for k, v in plain.state_dict().items()},
                                 mapped)
    load_into(mapped, {k[len("model."):]: v for k, v in tensors.items()}, "test")
    cfg = mapped.cfg
    b, frames = 2, 4
    shape = (b, cfg.latent_channels, frames, cfg.latent_height, cfg.latent_width)
    g = torch.Generator().manual_seed(1)
    noisy, prev = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    kp = torch.rand(b, frames, 4, 3, 2, generator=g) * 32
    with torch.no_grad():
        assert torch.equal(mapped(noisy, prev, kp, 1.0), plain(noisy, prev, kp, 1.0))
        mapped.pose_map_embed.weight.normal_(0.0, 0.1)
        v = mapped(noisy, prev, kp, 1.0)
        assert (v - plain(noisy, prev, kp, 1.0)).abs().mean() > 1e-3
        cache = mapped.init_cache(b)
        steps = [mapped.step(noisy[:, :, k], prev[:, :, k], kp[:, k], 1.0, cache)
                 for k in range(frames)]
        assert (torch.stack(steps, 2) - v).abs().max() < 1e-5
        # the null condition drops the maps with the global condition
        null = torch.ones(b, dtype=torch.bool)
        assert torch.equal(mapped(noisy, prev, kp, 1.0, null=null),
                           mapped(noisy, prev, kp.flip(0), 1.0, null=null))


def test_pose_maps_need_a_pose_world():
    dit = dit_config("tiny")
    with pytest.raises(ValueError, match="pose_map_sigma"):
        WorldModel(dit, ConditionConfig(kind="action", action_dim=4, cond_dim=dit.cond_dim,
                                        pose_map_sigma=0.5))


def slide_model(slide_frac: float) -> WorldModel:
    """A generator whose commands carry the velocity and whose view slides with the strafe."""
    torch.manual_seed(0)
    dit = dit_config("tiny")
    cond = ConditionConfig(kind="action", action_dim=4, cond_dim=dit.cond_dim,
                           momentum_channels=(0, 1), momentum_decay=DOOM_FRICTION,
                           slide_channel=1 if slide_frac else -1, slide_frac=slide_frac)
    model = WorldModel(dit, cond).eval()
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return model


def test_the_recycled_frame_slides_by_the_velocity_in_parallel_and_cached_steps():
    slid, plain = slide_model(-0.1), slide_model(0.0)
    plain.load_state_dict(slid.state_dict())
    b, frames = 2, 4
    noisy, prev = random_clip(slid, b, frames, seed=2)
    commands = torch.zeros(b, frames, 4, 4)
    commands[:, :2, :, 1] = 1.0  # strafe right two steps, then let go: the view keeps sliding
    conds, _ = CommandMomentum((0, 1)).augment(commands, torch.zeros(b, 2))
    with torch.no_grad():
        v = slid(noisy, prev, conds, 1.0)
        seen = slid.recycled_view(prev, conds)
        shifts = conds[..., 5].sum(-1) * -0.1  # the strafe velocity's channel, summed per step
        expected = slide_view(prev.transpose(1, 2).flatten(0, 1), shifts.flatten())
        assert torch.allclose(seen, expected.view(b, frames, *prev.shape[1:2], *prev.shape[3:])
                              .transpose(1, 2), atol=1e-6)
        assert torch.allclose(v, plain(noisy, seen, conds, 1.0), atol=1e-5)
    assert_cached_steps_match(slid, noisy, prev, conds, v)
    with pytest.raises(ValueError, match="slide_channel"):
        ConditionConfig(kind="action", action_dim=4, momentum_channels=(0,), slide_channel=1,
                        slide_frac=0.1)
