"""Loss functions of every stage, written out so the math is visible (and unit-tested).

Flow matching (stage 1): ``x_t = (1 - t) x0 + t eps``, the model predicts ``v = eps - x0``.
Timesteps are drawn ``t ~ U(0, 1)`` then shifted, ``shift(t, s) = s t / (1 + (s - 1) t)``, which
pushes mass toward high noise for large latents (paper: s = 24 at 736x416).

Adversarial (stage 3, R3GAN's relativistic pairing): ``L_D = softplus(D(fake) - D(real))``,
``L_G = softplus(D(real) - D(fake))``, and approximated R1/R2 without double backward:
``lambda * ||D(x) - D(x + sigma n)||^2`` on real (R1) and fake (R2) samples; for small sigma it
equals ``lambda sigma^2 ||grad D(x)||^2`` in expectation over n.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Shared with inference (N-step sampling of the diffusion model), defined next to the model.
from aapt_world.world_model import euler_schedule, shift_timesteps  # noqa: F401
from training.config import TrainConfig

# -- flow matching ----------------------------------------------------------------------------


def add_noise(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """x_t = (1 - t) x0 + t eps, with t broadcast from (B,) or (B, T) over (B, C, T, h, w)."""
    t = t.view(t.shape[0], 1, -1, 1, 1) if t.dim() == 2 else t.view(-1, 1, 1, 1, 1)
    return (1 - t) * x0 + t * eps


def flow_matching_loss(v_pred: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
    return F.mse_loss(v_pred, eps - x0)


# -- consistency distillation -------------------------------------------------------------------


def pseudo_huber(x: Tensor, y: Tensor, c: float | None = None) -> Tensor:
    """Improved consistency models' metric: sqrt(||x - y||^2 + c^2) - c, per sample, averaged.

    ``c`` defaults to 0.00054 * sqrt(d) (iCT's choice for d-dimensional samples).
    """
    d = x[0].numel()
    c = 0.00054 * d**0.5 if c is None else c
    sq = (x - y).flatten(1).square().sum(1)
    return ((sq + c * c).sqrt() - c).mean() / d**0.5


# -- adversarial ----------------------------------------------------------------------------------


def relativistic_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    return F.softplus(d_fake - d_real).mean()


def relativistic_g_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    return F.softplus(d_real - d_fake).mean()


def approx_gradient_penalty(d_clean: Tensor, d_perturbed: Tensor) -> Tensor:
    """||D(x) - D(x + sigma n)||^2, averaged over logits (multiply by lambda outside)."""
    return (d_clean - d_perturbed).square().mean()


# -- reconstruction (VAE) -------------------------------------------------------------------------


def _gaussian_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum())[:, None] * (g / g.sum())[None, :]


def ssim(x: Tensor, y: Tensor, window: int = 7, sigma: float = 1.5) -> Tensor:
    """Mean SSIM of image batches (N, C, H, W) in [-1, 1] (data range 2), per image (N,)."""
    c = x.shape[1]
    w = _gaussian_window(window, sigma, x.device, x.dtype).expand(c, 1, window, window)
    blur = lambda t: F.conv2d(t, w, groups=c)  # valid conv: no padding artefacts at borders
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


def multiscale_ssim_loss(x: Tensor, y: Tensor, scales: int = 3) -> Tensor:
    """1 - mean SSIM over ``scales`` dyadic scales (averaged, not the MS-SSIM product: stabler)."""
    total = x.new_zeros(())
    for i in range(scales):
        if i:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        total = total + (1 - ssim(x, y, window=min(7, min(x.shape[-2:]) // 2 * 2 - 1))).mean()
    return total / scales


def image_gradient_loss(x: Tensor, y: Tensor) -> Tensor:
    """L1 between horizontal and vertical finite differences of (N, C, H, W) images."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]
    return F.l1_loss(dx(x), dx(y)) + F.l1_loss(dy(x), dy(y))


def psnr_of_mse(mse: Tensor | float) -> Tensor:
    """PSNR in dB of a mean squared error of images in [-1, 1] (data range 2)."""
    return 10 * torch.log10(4.0 / torch.as_tensor(mse).clamp_min(1e-10))


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR in dB of images in [-1, 1] (data range 2), per item of the leading dim."""
    return psnr_of_mse((x - y).float().flatten(1).square().mean(1))


def reconstruction_loss(cfg: TrainConfig, recon: torch.Tensor, video: torch.Tensor
                        ) -> dict[str, torch.Tensor]:
    """Per-frame image losses on (B, 3, T, H, W) videos."""
    r = recon.transpose(1, 2).flatten(0, 1)
    v = video.transpose(1, 2).flatten(0, 1)
    error = (r - v).abs()
    parts = {"l1": error.mean(), "ssim": multiscale_ssim_loss(r, v),
             "grad": image_gradient_loss(r, v)}
    s = cfg.vae
    parts["total"] = (s.l1_weight * parts["l1"] + s.ssim_weight * parts["ssim"]
                      + s.gradient_weight * parts["grad"])
    if s.bright_weight > 0:
        parts["bright"] = bright_l1(error, v, s.bright_threshold)
        parts["total"] = parts["total"] + s.bright_weight * parts["bright"]
    return parts


def bright_l1(error: Tensor, target: Tensor, threshold: float) -> Tensor:
    """Mean of ``error`` (N, 3, H, W) over the target's bright pixels (max channel above
    ``threshold``, the mask dilated by one pixel for the halo); 0 when nothing is bright."""
    bright = (target.amax(dim=1, keepdim=True) > threshold).float()
    bright = F.max_pool2d(bright, 3, stride=1, padding=1)
    return (error * bright).sum() / (3 * bright.sum()).clamp_min(1.0)


def latent_change_ratio(mean: torch.Tensor) -> torch.Tensor:
    """Step-to-step change of latents (B, C, L, h, w) over their variance in time at each
    position, per channel, averaged over channels; latent 0 (the first frame, encoded alone)
    excluded. 0 when every step repeats the last, ~2 when steps are independent. Scale-free,
    and blind to a static spatial pattern: an encoder cannot lower it by shrinking its latents
    or by adding a fixed code per position (a ratio over the spread across positions was met
    that way: 91 % of the variance became static while the decoded copy stayed as poor)."""
    x = mean[:, :, 1:].float()
    if x.shape[2] < 2:
        raise ValueError(f"latent_change_ratio needs >= 2 latent steps after the first, got "
                         f"{x.shape[2]} (data.clip_steps >= 2)")
    change = (x[:, :, 1:] - x[:, :, :-1]).square().mean(dim=(0, 2, 3, 4))
    spread = x.var(dim=2, correction=1).mean(dim=(0, 2, 3))  # in time, per position
    return (change / spread.clamp_min(1e-8)).mean()


def perturb_latents(z: torch.Tensor, max_level: float) -> torch.Tensor:
    """z + s * std_c(z) * n, s ~ U(0, max_level) per clip, std per channel over the batch."""
    if max_level <= 0:
        return z
    std = z.detach().std(dim=(0, 2, 3, 4), keepdim=True)
    s = torch.rand(z.shape[0], 1, 1, 1, 1, device=z.device, dtype=z.dtype) * max_level
    return z + s * std * torch.randn_like(z)
