"""Stage 0: the causal video VAE (and its light inference decoder), trained on real clips.

Loss per clip: L1 + multi-scale SSIM + image-gradient L1 (sharpness without a downloaded
perceptual network) + a small KL. The light decoder trains at the same time on the same
(detached) latents against the real frames, so one run yields both decoders; the encoder only
gets gradients through the full decoder.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from aapt_world.vae import (
    CausalVideoVAE,
    LightDecoder,
    adapt_latent_channels,
    adapt_temporal_kernel,
    add_residual_blocks,
)
from training.batches import VideoData, video_batch, video_datasets
from training.config import TrainConfig
from training.dataset import ClipDataset
from training.losses import latent_change_ratio, perturb_latents, psnr, reconstruction_loss
from training.trainer import (
    Dist,
    StageParts,
    adamw,
    autocast,
    eval_mode,
    optimizer_step,
    step_rng,
    train_parts,
    warmup_lr,
    wrap_distributed,
)

STAGE_DIR = "vae"


class VAEPair(nn.Module):
    """The VAE and the light decoder as one module, so one DDP wrapper covers both."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.vae = CausalVideoVAE(cfg.model.vae)
        self.light_decoder = LightDecoder(cfg.model.vae)

    def forward(self, video: torch.Tensor, noise: float = 0.0):
        posterior = self.vae.encode(video)
        z = perturb_latents(posterior.sample(), noise)
        return self.vae.decode(z), self.light_decoder.decode(z.detach()), posterior


def build(cfg: TrainConfig, ranks: Dist, device: torch.device, data: VideoData | None = None,
          pretrained: bool = True) -> StageParts:
    pair = VAEPair(cfg).to(device)
    vae, light = pair.vae, pair.light_decoder
    train, val = data or video_datasets(cfg)
    params = list(pair.parameters())
    opt = adamw(cfg, params)
    model = wrap_distributed(pair, ranks)
    kernel, channels = cfg.model.vae.temporal_kernel, cfg.model.vae.latent_channels
    fresh = {f"{name}.{k}": v.detach().clone()  # new residual blocks start as these (identity)
             for name, m in (("vae", vae), ("light_decoder", light))
             for k, v in m.state_dict().items()}

    def train_step(step: int) -> dict[str, torch.Tensor]:
        warmup_lr(opt, cfg.optim, step)
        batch = video_batch(train, step_rng(cfg, ranks, step), cfg.run.batch_size, device)
        with autocast(device, cfg.run.precision):
            recon, light_recon, posterior = model(batch.video, cfg.vae.decoder_noise)
        recon, light_recon = recon.float(), light_recon.float()  # the losses in fp32
        main = reconstruction_loss(cfg, recon, batch.video)
        light_parts = reconstruction_loss(cfg, light_recon, batch.video)
        kl = posterior.kl()
        loss = main["total"] + light_parts["total"] + cfg.vae.kl_weight * kl
        if cfg.vae.temporal_weight > 0:
            change = latent_change_ratio(posterior.mean)
            loss = loss + cfg.vae.temporal_weight * change
        grad_norm = optimizer_step(opt, loss, params, cfg.optim.grad_clip)
        with torch.no_grad():
            quality = psnr(recon.transpose(1, 2).flatten(0, 1),
                           batch.video.transpose(1, 2).flatten(0, 1)).mean()
        logs = {"loss": loss.detach(), "l1": main["l1"].detach(), "ssim": main["ssim"].detach(),
                "kl": kl.detach(), "psnr": quality, "light_l1": light_parts["l1"].detach(),
                "grad_norm": grad_norm}
        if cfg.vae.temporal_weight > 0:
            logs["latent_change"] = change.detach()
        if "bright" in light_parts:  # vae.bright_weight > 0: the inference decoder's error there
            logs["light_bright_l1"] = light_parts["bright"].detach()
        return logs

    def evaluate() -> dict[str, float]:
        return evaluate_psnr(cfg, vae, light, val, device)

    return StageParts({"vae": vae, "light_decoder": light}, {"opt": opt}, train_step, evaluate,
                      units_per_step=cfg.run.batch_size * (4 * cfg.data.clip_steps + 1),
                      unit="video_frames", trainable=params,
                      adapt_init=lambda tensors: add_residual_blocks(adapt_latent_channels(
                          adapt_temporal_kernel(tensors, kernel), channels), fresh))


def run(cfg: TrainConfig, ranks: Dist, device: torch.device) -> dict[str, float]:
    return train_parts(cfg, STAGE_DIR, build(cfg, ranks, device), ranks)


def evaluate_psnr(cfg: TrainConfig, vae: CausalVideoVAE, light: LightDecoder, val: ClipDataset,
                  device: torch.device) -> dict[str, float]:
    """Held-out PSNR of the full and light decoders (posterior mean, fixed clips)."""
    rng = np.random.default_rng(12345)
    full, lite = [], []
    with eval_mode(vae, light):
        for _ in range(cfg.data.val_batches):
            batch = video_batch(val, rng, cfg.run.batch_size, device)
            z = vae.encode(batch.video).mode()
            v = batch.video.transpose(1, 2).flatten(0, 1)
            full.append(psnr(vae.decode(z).transpose(1, 2).flatten(0, 1), v))
            lite.append(psnr(light.decode(z).transpose(1, 2).flatten(0, 1), v))
    return {"psnr": torch.cat(full).mean().item(), "light_psnr": torch.cat(lite).mean().item()}
