"""Loss formulas of every stage against hand computation (training/losses.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training import losses as L

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- flow matching ---------------------------------------------------------------------------------


def test_shift_timesteps() -> None:
    t = torch.linspace(0, 1, 11)
    torch.testing.assert_close(L.shift_timesteps(t, 1.0), t)  # s = 1: identity
    assert L.shift_timesteps(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)  # 1.5 / 2
    assert L.shift_timesteps(torch.tensor(0.25), 24.0).item() == pytest.approx(6 / 6.75)
    s = L.shift_timesteps(t, 3.0)
    assert s[0] == 0 and s[-1] == 1 and bool((s[1:] > t[1:-1].new_tensor(0)).all())
    assert bool((s[1:-1] > t[1:-1]).all())  # s > 1 pushes mass toward high noise
    assert bool((s.diff() > 0).all())  # still monotone


def test_add_noise_endpoints_and_per_frame_t() -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 4, 2, 2, generator=g), torch.randn(2, 3, 4, 2, 2, generator=g)
    torch.testing.assert_close(L.add_noise(x0, eps, torch.zeros(2)), x0)
    torch.testing.assert_close(L.add_noise(x0, eps, torch.ones(2)), eps)
    t = torch.tensor([0.25, 0.5])
    expected = torch.stack([0.75 * x0[0] + 0.25 * eps[0], 0.5 * x0[1] + 0.5 * eps[1]])
    torch.testing.assert_close(L.add_noise(x0, eps, t), expected)
    t2 = torch.tensor([[0.0, 1.0, 0.5, 0.1]] * 2)  # (B, T): one t per frame
    out = L.add_noise(x0, eps, t2)
    torch.testing.assert_close(out[:, :, 0], x0[:, :, 0])
    torch.testing.assert_close(out[:, :, 1], eps[:, :, 1])
    torch.testing.assert_close(out[:, :, 3], 0.9 * x0[:, :, 3] + 0.1 * eps[:, :, 3])


def test_flow_matching_target_is_velocity() -> None:
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 3, 2, 2, 2, generator=g), torch.randn(2, 3, 2, 2, 2, generator=g)
    assert L.flow_matching_loss(eps - x0, x0, eps).item() == 0.0  # v = eps - x0 is exact
    v = torch.randn(x0.shape, generator=g)
    assert L.flow_matching_loss(v, x0, eps).item() == pytest.approx(
        ((v - eps + x0) ** 2).mean().item(), rel=1e-6)
    # dx_t/dt = v: one Euler step over the whole interval from x_1 = eps lands on x0
    t = torch.tensor([0.3, 0.8])
    x_t = L.add_noise(x0, eps, t)
    torch.testing.assert_close(x_t - t.view(-1, 1, 1, 1, 1) * (eps - x0), x0)


def test_euler_schedule() -> None:
    sched = L.euler_schedule(4, 1.0)
    torch.testing.assert_close(sched, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    shifted = L.euler_schedule(32, 3.0)
    assert shifted.shape == (33,) and shifted[0] == 1 and shifted[-1] == 0
    assert bool((shifted.diff() < 0).all())


# -- consistency ---------------------------------------------------------------------------------


def test_pseudo_huber_by_hand() -> None:
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    y = torch.zeros(2, 2)
    c = 1.0
    # per sample sqrt(||x - y||^2 + c^2) - c: sqrt(26) - 1 and 0; averaged, over sqrt(d)
    expected = ((math.sqrt(26) - 1) + 0.0) / 2 / math.sqrt(2)
    assert L.pseudo_huber(x, y, c).item() == pytest.approx(expected, rel=1e-6)
    # the default c = 0.00054 sqrt(d)
    d = 2
    c0 = 0.00054 * math.sqrt(d)
    expected = ((math.sqrt(25 + c0 * c0) - c0) + 0.0) / 2 / math.sqrt(d)
    assert L.pseudo_huber(x, y).item() == pytest.approx(expected, rel=1e-6)
    # small c: ~ L2 distance / sqrt(d); large c: ~ squared distance / (2 c sqrt(d))
    assert L.pseudo_huber(x, y, 1e-8).item() == pytest.approx(5 / 2 / math.sqrt(2), rel=1e-6)
    assert L.pseudo_huber(x, y, 100.0).item() == pytest.approx(25 / 200 / 2 / math.sqrt(2),
                                                                rel=2e-3)


# -- adversarial ---------------------------------------------------------------------------------


def test_relativistic_losses_vs_softplus() -> None:
    d_real = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    d_fake = torch.tensor([[0.0, 1.0], [2.5, -1.0]])
    softplus = lambda z: math.log1p(math.exp(z))
    pairs = list(zip(d_real.flatten().tolist(), d_fake.flatten().tolist()))
    exp_d = sum(softplus(f - r) for r, f in pairs) / 4
    exp_g = sum(softplus(r - f) for r, f in pairs) / 4
    assert L.relativistic_d_loss(d_real, d_fake).item() == pytest.approx(exp_d, rel=1e-6)
    assert L.relativistic_g_loss(d_real, d_fake).item() == pytest.approx(exp_g, rel=1e-6)
    # symmetric: G's loss is D's with the roles swapped; equal logits give log 2
    assert L.relativistic_g_loss(d_real, d_fake).item() == pytest.approx(
        L.relativistic_d_loss(d_fake, d_real).item())
    assert L.relativistic_d_loss(d_real, d_real).item() == pytest.approx(math.log(2))


def test_approx_gradient_penalty_formula() -> None:
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 4.0]])
    assert L.approx_gradient_penalty(a, b).item() == pytest.approx((0.25 + 4.0) / 2)


def _check_approx_r1(d_fn, x: torch.Tensor, sigma: float, samples: int, seed: int) -> None:
    """E_n mean_logits (D(x) - D(x + sigma n))^2 ~= sigma^2 ||J||_F^2 / logits for small sigma."""
    xg = x.clone().requires_grad_(True)
    out = d_fn(xg)
    grads = [torch.autograd.grad(out.flatten()[i], xg, retain_graph=True)[0]
             for i in range(out.numel())]
    exact = sigma**2 * sum(g.square().sum() for g in grads).item() / out.numel()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        clean = d_fn(x)
        estimates = [L.approx_gradient_penalty(
            clean, d_fn(x + sigma * torch.randn(x.shape, generator=g))).item()
            for _ in range(samples)]
    approx = sum(estimates) / samples
    assert exact > 0
    assert abs(approx - exact) / exact < 0.1, (approx, exact)


def test_approx_r1_matches_gradient_norm_mlp() -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32),
                              torch.nn.Tanh(), torch.nn.Linear(32, 1))
    x = torch.randn(1, 16)
    # many n at once: a batch of perturbations through the same MLP
    sigma, samples = 1e-3, 4000
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mlp(xg).sum(), xg)
    exact = sigma**2 * grad.square().sum().item()
    with torch.no_grad():
        n = torch.randn(samples, 16, generator=torch.Generator().manual_seed(1))
        approx = L.approx_gradient_penalty(mlp(x).expand(samples, 1), mlp(x + sigma * n)).item()
    assert abs(approx - exact) / exact < 0.1, (approx, exact)
    # a large sigma no longer measures the gradient (the approximation is first order)
    with torch.no_grad():
        far = L.approx_gradient_penalty(mlp(x).expand(samples, 1), mlp(x + 3.0 * n)).item()
    assert abs(far / 9.0 - exact / sigma**2) / (exact / sigma**2) > 0.1


def test_approx_r1_matches_gradient_norm_discriminator() -> None:
    """The real AAPT discriminator (tiny backbone, per-frame logits, fixed t and D-noise)."""
    from aapt_world.conditions import ConditionConfig
    from aapt_world.discriminator import Discriminator
    from aapt_world.transformer import dit_config
    from aapt_world.world_model import WorldModel

    torch.manual_seed(0)
    cfg = dit_config("tiny", latent_channels=4, dim=32, heads=2, depth=2, cond_dim=8,
                     latent_height=4, latent_width=4, window=3)
    backbone = WorldModel(cfg, ConditionConfig(kind="action", action_dim=4, hidden_dim=16,
                                               cond_dim=cfg.cond_dim))
    for p in backbone.parameters():  # zero-initialised adaLN/out layers: make it non-trivial
        torch.nn.init.normal_(p, std=0.1)
    disc = Discriminator(backbone, [0, 1], queries=2).eval()
    k = 3
    frames = torch.randn(1, 4, k + 1, 4, 4)
    conds = torch.rand(1, k, 4, 4) * 2 - 1
    t = torch.tensor([0.3])
    d_noise = torch.randn(1, 4, k, 4, 4)
    _check_approx_r1(lambda x: disc(x, conds, t, d_noise), frames, sigma=1e-3, samples=400,
                     seed=2)


# -- reconstruction ------------------------------------------------------------------------------


def test_ssim_identity_and_noise() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    torch.testing.assert_close(L.ssim(x, x), torch.ones(2))
    noisy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    very = (x + 1.0 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    s_noisy, s_very = L.ssim(x, noisy), L.ssim(x, very)
    assert bool((s_noisy < 0.9).all()) and bool((s_very < s_noisy).all())
    assert L.multiscale_ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert L.multiscale_ssim_loss(x, noisy).item() > 0.1
    # a constant image vs itself shifted in brightness: luminance term only
    c = torch.zeros(1, 1, 16, 16)
    c1 = (0.01 * 2) ** 2
    expected = (2 * 0 * 0.5 + c1) / (0 + 0.25 + c1)
    assert L.ssim(c, c + 0.5).item() == pytest.approx(expected, rel=1e-4)


def test_psnr_known_values() -> None:
    x = torch.zeros(3, 3, 8, 8)
    # data range 2: PSNR = 10 log10(4 / mse)
    assert L.psnr(x, x + 0.1).tolist() == pytest.approx([10 * math.log10(4 / 0.01)] * 3,
                                                        rel=1e-5)  # 26.02 dB
    assert L.psnr(x, x + 2.0)[0].item() == pytest.approx(0.0, abs=1e-5)  # mse = range^2
    y = x.clone()
    y[1] = 1.0  # item 1: mse 1 -> 6.02 dB; items 0 and 2 exact -> clamped, finite and huge
    p = L.psnr(x, y)
    assert p[1].item() == pytest.approx(10 * math.log10(4), rel=1e-6)
    assert bool(torch.isfinite(p).all()) and p[0].item() > 100


def test_image_gradient_loss() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)  # dx = 1, dy = 4 everywhere
    assert L.image_gradient_loss(x, x + 3).item() == 0.0  # shift invariant
    assert L.image_gradient_loss(x, torch.zeros_like(x)).item() == pytest.approx(1 + 4)
    assert L.image_gradient_loss(x, 2 * x).item() == pytest.approx(
        F.l1_loss(torch.ones(1), 2 * torch.ones(1)).item() + 4)


def test_bright_l1_weighs_only_the_bright_pixels_and_their_halo() -> None:
    target = -torch.ones(1, 3, 8, 8)
    target[0, :, 3, 3] = torch.tensor([0.9, 0.8, -0.2])  # one bright (fireball) pixel
    error = torch.zeros(1, 3, 8, 8)
    error[0, :, 0, 0] = 5.0  # far from it: ignored
    assert L.bright_l1(error, target, 0.6).item() == 0.0
    error[0, :, 4, 4] = 0.9  # in the 3x3 halo: counted, averaged over the 9 masked pixels
    assert L.bright_l1(error, target, 0.6).item() == pytest.approx(0.9 / 9)
    assert L.bright_l1(error, -torch.ones_like(target), 0.6).item() == 0.0  # nothing bright


def test_reconstruction_loss_adds_the_bright_term_only_when_asked() -> None:
    from training.train import compose_config

    cfg = compose_config(["model=tiny"])
    torch.manual_seed(0)
    video = torch.rand(1, 3, 2, 16, 16) * 2 - 1
    recon = video + 0.1 * torch.randn_like(video)
    plain = L.reconstruction_loss(cfg, recon, video)
    assert "bright" not in plain
    cfg.vae.bright_weight = 2.0
    weighted = L.reconstruction_loss(cfg, recon, video)
    assert weighted["total"].item() == pytest.approx(
        plain["total"].item() + 2.0 * weighted["bright"].item(), rel=1e-5)
    cfg.vae.bright_weight = -1.0
    with pytest.raises(ValueError, match="vae.bright_weight"):
        cfg.validate()
