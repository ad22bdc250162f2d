"""The player's momentum as a condition (aapt_world.momentum): the recurrence, the session's
state, a generator that starts without it, and view_warp.slide_view."""

import numpy as np
import pytest
import torch

from aapt_world.conditions import ConditionConfig
from aapt_world.momentum import DOOM_FRICTION, CommandMomentum
from aapt_world.session import StreamingSession
from aapt_world.transformer import dit_config
from aapt_world.vae import CausalVideoVAE, VAEConfig
from aapt_world.view_warp import slide_view
from aapt_world.world_model import WorldModel, add_zero_momentum

STRAFE = CommandMomentum((0, 1))
H, W = 32, 48  # latent 4 x 6


def held(commands: np.ndarray) -> torch.Tensor:
    """Per-step commands (S, A) -> per-frame conditions (1, S, 4, A)."""
    return torch.from_numpy(commands.astype(np.float32))[None, :, None, :].expand(-1, -1, 4, -1)


def test_velocity_is_doom_friction_on_the_thrust_normalised_by_the_steady_speed():
    """w = v / v_max for v <- d (v + g u): the raw recurrence, divided, for any thrust g."""
    rng = np.random.default_rng(0)
    commands = rng.choice([-1.0, 0.0, 1.0], size=(20, 4))
    gain, v, raw = 0.835, np.zeros(2), []
    for u in np.repeat(commands[:, :2], 4, axis=0):
        v = DOOM_FRICTION * (v + gain * u)
        raw.append(v)
    steady = gain * DOOM_FRICTION / (1 - DOOM_FRICTION)
    expected = np.array(raw).reshape(20, 4, 2) / steady
    assert np.allclose(STRAFE.episode(commands), expected, atol=1e-6)


def test_integration_in_pieces_equals_the_whole_episode():
    commands = np.random.default_rng(1).uniform(-1, 1, size=(30, 4))
    first, end = STRAFE.integrate(held(commands[:11]), torch.zeros(1, 2))
    rest, _ = STRAFE.integrate(held(commands[11:]), end)
    assert np.allclose(torch.cat([first, rest], 1)[0].numpy(), STRAFE.episode(commands),
                       atol=1e-6)


def test_a_held_command_reaches_full_speed_and_the_player_slides_after_it():
    commands = np.zeros((12, 4))
    commands[:8, 1] = 1.0  # strafe right 8 steps (32 tics), then nothing
    w = STRAFE.episode(commands)[..., 1]
    assert w[7, -1] > 0.95  # 1 - d^32
    assert 0.2 < w[8, -1] < w[7, -1]  # still moving one step after the release
    assert np.all(np.diff(w[8:].ravel()) < 0)


@pytest.mark.parametrize("bad", [dict(channels=()), dict(channels=(-1,)),
                                 dict(channels=(1,), decay=1.0)])
def test_bad_rules_and_shapes_are_named(bad):
    with pytest.raises(ValueError, match="momentum"):
        CommandMomentum(**bad)
    with pytest.raises(ValueError, match="momentum start"):
        STRAFE.integrate(torch.zeros(2, 1, 4, 4), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="A > 1"):
        STRAFE.integrate(torch.zeros(2, 1, 4, 1), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="momentum_channels"):
        ConditionConfig(kind="action", action_dim=2, momentum_channels=(2,))


def momentum_model(channels: tuple[int, ...], slide_frac: float = 0.0) -> WorldModel:
    torch.manual_seed(0)
    dit = dit_config("tiny", latent_height=H // 8, latent_width=W // 8, window=3)
    cond = ConditionConfig(kind="action", action_dim=4, cond_dim=dit.cond_dim,
                           momentum_channels=channels, momentum_decay=DOOM_FRICTION,
                           slide_channel=1 if slide_frac else -1, slide_frac=slide_frac)
    model = WorldModel(dit, cond).eval()
    with torch.no_grad():
        for p in model.parameters():  # adaLN-Zero weights randomised: every path carries signal
            if not p.any():
                p.normal_(0.0, 0.05)
    return model


def test_a_generator_without_momentum_continues_as_the_same_function():
    plain, moving = momentum_model(()), momentum_model((0, 1))
    tensors = {f"model.{k}": v for k, v in plain.state_dict().items()}
    adapted = add_zero_momentum(tensors, moving)
    moving.load_state_dict({k.removeprefix("model."): v for k, v in adapted.items()})
    cfg = plain.cfg
    shape = (2, cfg.latent_channels, 3, cfg.latent_height, cfg.latent_width)
    noisy, prev = torch.randn(shape), torch.randn(shape)
    conds = torch.randn(2, 3, 4, 4)
    velocity = torch.randn(2, 3, 4, 2)
    with torch.no_grad():
        v_plain = plain(noisy, prev, conds, 1.0)
        v_moving = moving(noisy, prev, torch.cat([conds, velocity], -1), 1.0)
    assert torch.allclose(v_plain, v_moving, atol=1e-5)
    assert add_zero_momentum(adapted, moving) is adapted  # already wide: kept


def tiny_session(model: WorldModel) -> StreamingSession:
    torch.manual_seed(0)
    vae = CausalVideoVAE(VAEConfig(height=H, width=W, hi_channels=4, enc_channels=16,
                                   temporal_channels=16, dec_channels=16, norm_groups=4,
                                   light_temporal_channels=8, light_dec_channels=8)).eval()
    return StreamingSession(model, vae, batch_size=2, seed=3)


def test_the_session_carries_the_velocity_between_steps_and_in_snapshots():
    model = momentum_model((0, 1))
    session = tiny_session(model)
    start = torch.zeros(2, H, W, 3, dtype=torch.uint8)
    strafe = torch.zeros(2, 4, 4)
    strafe[:, :, 1] = 1.0
    session.reset(start)
    session.step(strafe)
    assert torch.allclose(session.momentum[:, 1], torch.full((2,), 1 - DOOM_FRICTION**4))
    snap = session.snapshot()
    after_strafe = session.step(torch.zeros(2, 4, 4))  # no command: the player still slides
    session.restore(snap)
    assert torch.equal(session.step(torch.zeros(2, 4, 4)), after_strafe)
    session.reset(start[:1], items=[0])  # a restarted stream is at rest, the other keeps moving
    assert session.momentum[0].abs().max() == 0 and session.momentum[1, 1] > 0


def test_slide_view_moves_the_content_by_the_given_fraction_of_the_width():
    img = torch.zeros(2, 1, 4, 16)
    img[..., 8] = 1.0
    out = slide_view(img, torch.tensor([0.0, -2 / 16]))  # still; two pixels left
    assert torch.allclose(out[0], img[0])
    assert out[1, 0, :, 6].min() > 0.99 and out[1, 0, :, 8].abs().max() < 1e-6
    half = slide_view(img, torch.tensor([0.5 / 16, 0.5 / 16]))  # half a pixel: bilinear
    assert torch.allclose(half[0, 0, 0, 8:10], torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="slide_view"):
        slide_view(img, torch.zeros(3))
