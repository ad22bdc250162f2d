"""Stage 0b: sharpen the inference decoder with a patch discriminator (encoder frozen).

An L1 / SSIM / gradient-trained decoder returns the conditional mean of a frame given its
latent: Doom's textures come out as blur. A small patch GAN (hinge loss, as in VQGAN / SD's
VAE) pushes the light decoder toward plausible texture instead. The encoder is frozen, so
the latent space — and every DiT stage trained on it — stays valid: this stage can run
before, after or beside the DiT stages, and export picks its decoder up when it exists.

Loss of the decoder: the VAE stage's reconstruction loss + ``adv_weight`` * (-D(fake)),
on latents perturbed like the VAE stage's (``vae.decoder_noise``), so predicted latents
decode to plausible frames too. With ``decoder.generated`` > 0 a fraction of the clips is
decoded from the generator's own teacher-forced predictions instead (against the real
frames): the decoder meets the latents it will be given at inference.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aapt_world.checkpoint import load_modules, load_weights
from aapt_world.vae import CausalVideoVAE, LightDecoder
from aapt_world.world_model import teacher_forced
from training.batches import VideoData, video_batch, video_datasets
from training.config import TrainConfig
from training.latents import read_stats
from training.losses import perturb_latents, psnr, reconstruction_loss
from training.models import frozen_generator
from training.trainer import (
    Dist,
    StageParts,
    adamw,
    eval_mode,
    load_stage_weights,
    optimizer_step,
    stage_dir,
    step_rng,
    train_parts,
    warmup_lr,
)

STAGE_DIR = "decoder"
EVAL_SEED = 10**9  # the generator's noise in evaluation: apart from every training step


class PatchDiscriminator(nn.Module):
    """Frames (N, 3, H, W) -> patch logits (N, 1, H/8, W/8); each sees a ~30 px receptive field."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in (width, 2 * width, 4 * width):  # three stride-2 stages: 8x down
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1),
                       nn.GroupNorm(min(8, c), c), nn.LeakyReLU(0.2)]
            c_in = c
        layers.append(nn.Conv2d(c_in, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def build(cfg: TrainConfig, ranks: Dist, device: torch.device, data: VideoData | None = None,
          pretrained: bool = True) -> StageParts:
    if ranks.world_size > 1:
        raise NotImplementedError("stage decoder runs in one process")
    vae, light = frozen_vae_and_light_decoder(cfg, device, pretrained)
    predict = generated_latents_fn(cfg, device) if cfg.decoder.generated > 0 else None
    disc = PatchDiscriminator(cfg.decoder.disc_width).to(device)
    g_opt = adamw(cfg, light.parameters())
    d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.decoder.d_lr, betas=(0.5, 0.9))
    # after the weights: a missing earlier stage is reported before missing data
    train, val = data or video_datasets(cfg)

    def frames_of(video: torch.Tensor) -> torch.Tensor:
        return video.transpose(1, 2).flatten(0, 1)  # (B, 3, T, H, W) -> (B T, 3, H, W)

    def train_step(step: int) -> dict[str, torch.Tensor]:
        rng = step_rng(cfg, ranks, step)
        batch = video_batch(train, rng, cfg.run.batch_size, device)
        with torch.no_grad():
            encoded = vae.encode(batch.video)
            z_gen = (predict(encoded.mode(), batch.conds, step)
                     if predict is not None and rng.random() < cfg.decoder.generated else None)
            paired = z_gen is not None and cfg.decoder.generated_loss == "paired"
            z = z_gen if paired else perturb_latents(encoded.sample(), cfg.vae.decoder_noise)
        recon = light.decode(z)
        real, fake = frames_of(batch.video), frames_of(recon)
        # "adversarial": the generator's latents are judged by D only (no frame to match)
        fakes = fake if z_gen is None or paired else torch.cat(
            [fake, frames_of(light.decode(z_gen))])
        warmup_lr(d_opt, cfg.optim, step, cfg.decoder.d_lr)
        d_loss = hinge_d_loss(disc(real), disc(fakes.detach()))
        optimizer_step(d_opt, d_loss, disc.parameters(), cfg.optim.grad_clip)

        warmup_lr(g_opt, cfg.optim, step)
        disc.requires_grad_(False)
        parts = reconstruction_loss(cfg, recon, batch.video)
        adv = -disc(fakes).mean()
        loss = parts["total"] + cfg.decoder.adv_weight * adv
        grad_norm = optimizer_step(g_opt, loss, light.parameters(), cfg.optim.grad_clip)
        disc.requires_grad_(True)
        with torch.no_grad():
            quality = psnr(fake, real).mean()
        return {"loss": loss.detach(), "l1": parts["l1"].detach(), "adv": adv.detach(),
                "d_loss": d_loss.detach(), "psnr": quality, "grad_norm": grad_norm}

    def evaluate() -> dict[str, float]:
        """Held-out PSNR and the high-frequency energy ratio decoded / real (1 = as sharp)."""
        rng = np.random.default_rng(12345)
        scores, hf, generated = [], [], []
        with eval_mode(light):
            for i in range(cfg.data.val_batches):
                batch = video_batch(val, rng, cfg.run.batch_size, device)
                real = frames_of(batch.video)
                z = vae.encode(batch.video).mode()
                fake = frames_of(light.decode(z))
                scores.append(psnr(fake, real))
                hf.append(laplacian_energy(fake) / laplacian_energy(real))
                if predict is not None:  # the generator's teacher-forced steps, decoded
                    decoded = light.decode(predict(z, batch.conds, EVAL_SEED + i))
                    generated.append(psnr(frames_of(decoded[:, :, 1:]),
                                          frames_of(batch.video[:, :, 1:])))
        out = {"light_psnr": torch.cat(scores).mean().item(), "hf_ratio": float(np.mean(hf))}
        if generated:
            out["generated_psnr"] = torch.cat(generated).mean().item()
        return out

    return StageParts({"light_decoder": light, "patch_disc": disc}, {"g": g_opt, "d": d_opt},
                      train_step, evaluate,
                      units_per_step=cfg.run.batch_size * (4 * cfg.data.clip_steps + 1),
                      unit="video_frames", trainable=list(light.parameters()))


def frozen_vae_and_light_decoder(cfg: TrainConfig, device: torch.device, pretrained: bool
                                 ) -> tuple[CausalVideoVAE, LightDecoder]:
    """The VAE stage's (frozen) VAE and its light decoder, or ``decoder.init_light``'s."""
    vae = CausalVideoVAE(cfg.model.vae).to(device).eval().requires_grad_(False)
    light = LightDecoder(cfg.model.vae).to(device)
    if pretrained:
        load_stage_weights(cfg, "vae", {"vae": vae, "light_decoder": light})
        if cfg.decoder.init_light:
            tensors, _ = load_weights(cfg.decoder.init_light)
            load_modules({"light_decoder": light}, tensors, cfg.decoder.init_light)
    return vae, light


def generated_latents_fn(cfg: TrainConfig, device: torch.device
                         ) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
    """(raw latents (B, C, K+1, h, w), per-frame conditions (B, K, 4, ...), step) -> the same
    latents with 1..K replaced by the frozen generator's teacher-forced one-step predictions."""
    generator = frozen_generator(cfg, cfg.decoder.generator, device,
                                 "decoder.generated > 0 (decoder.generator=...)")
    stats = read_stats(stage_dir(cfg, "latents"))  # the normalisation the DiT trained with
    shape = (1, -1, 1, 1, 1)
    mean = torch.tensor(stats["mean"], device=device).view(shape)
    std = torch.tensor(stats["std"], device=device).view(shape)

    def predict(z: torch.Tensor, conds: torch.Tensor, step: int) -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(cfg.run.seed * 1_000_003 + step)
        zn = (z - mean) / std
        eps, ctx = (torch.randn(zn[:, :, 1:].shape, generator=g, device=device) for _ in "ab")
        pred = teacher_forced(generator, zn, conds, eps, cfg.decoder.context_noise, ctx)
        return torch.cat([z[:, :, :1], pred * std + mean], dim=2)

    return predict


def run(cfg: TrainConfig, ranks: Dist, device: torch.device) -> dict[str, float]:
    return train_parts(cfg, STAGE_DIR, build(cfg, ranks, device), ranks)


def laplacian_energy(frames: torch.Tensor) -> float:
    """Mean |Laplacian| of the grey frames (N, 3, H, W): how much fine texture they hold."""
    grey = frames.mean(1, keepdim=True)
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]], device=frames.device)
    return F.conv2d(grey, kernel.view(1, 1, 3, 3)).abs().mean().item()
