"""The one-step prediction judged as a picture: a stage-1 loss term through the frozen decoder.

Flow matching is an MSE on normalised latents, but a world is judged on decoded frames, and the
decoder does not weigh latent directions alike (Doom: 10 of 32 channels carry the scene, and a
VAE whose latents were 4x easier by MSE decoded 1.7 dB worse). This term decodes the model's
clean estimate ``x0 = x_t - t v`` (at t = 1 exactly the 1-NFE world's frame) and the real
latent with the run's light decoder (the one the world ships) and adds their pixel MSE, so the
generator spends its capacity where the picture does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from aapt_world.vae import PATCH, LightDecoder, StreamState
from training.config import TrainConfig
from training.latents import read_stats
from training.trainer import load_stage_weights, stage_dir

# (estimated, real) normalised latents, optional generator for the decoded steps -> pixel MSE
PixelLoss = Callable[[Tensor, Tensor, torch.Generator | None], Tensor]


def decode_steps(light: LightDecoder, z: Tensor) -> Tensor:
    """Raw latents (N, C, h, w), each a mid-clip step -> its 4 frames (N, 3, 4, H, W). A
    stateless decoder (``temporal_kernel`` 1) decodes each latent from itself alone."""
    n, _, h, w = z.shape
    fresh = light.init_state(n, h * PATCH, w * PATCH)
    state = StreamState(fresh.caches, torch.zeros_like(fresh.first))  # not a clip's first step
    frames, _ = light.decode_step(z[:, :, None], state)
    return frames


def pixel_loss_fn(cfg: TrainConfig, device: torch.device, positions: int,
                  pretrained: bool = True) -> PixelLoss:
    """(estimated, real) normalised latents (B, C, K, h, w) -> pixel MSE of ``positions`` random
    steps per clip (0 = all), decoded by the run's frozen light decoder (``<run>/vae``) after
    undoing the latent normalisation (``<run>/latents``). ``pretrained=False`` (benchmarks): a
    fresh decoder, no normalisation, the same cost."""
    if cfg.model.vae.temporal_kernel != 1:
        raise ValueError("a pixel term (diffusion. / adversarial.pixel_weight > 0) needs a "
                         "stateless decoder "
                         f"(model.vae.temporal_kernel=1), got {cfg.model.vae.temporal_kernel}")
    light = LightDecoder(cfg.model.vae).to(device).eval().requires_grad_(False)
    channels = cfg.model.vae.latent_channels
    stats = {"mean": [0.0] * channels, "std": [1.0] * channels}
    if pretrained:
        load_stage_weights(cfg, "vae", {"light_decoder": light})
        stats = read_stats(stage_dir(cfg, "latents"))  # the normalisation the DiT trains with
    shape = (1, -1, 1, 1)
    mean = torch.tensor(stats["mean"], device=device).view(shape)
    std = torch.tensor(stats["std"], device=device).view(shape)

    def loss(estimated: Tensor, real: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, _, k = real.shape[:3]
        if 0 < positions < k:  # the same number of steps from every clip, drawn per clip
            keys = torch.rand(b, k, generator=generator, device=real.device)
            steps = keys.argsort(dim=1)[:, :positions]
        else:
            steps = torch.arange(k, device=real.device).expand(b, k)
        rows = torch.arange(b, device=real.device)[:, None]

        def pick(z: Tensor) -> Tensor:  # (B, C, K, h, w) -> (B n, C, h, w)
            return z.transpose(1, 2)[rows, steps].flatten(0, 1).float() * std + mean

        with torch.no_grad():
            target = decode_steps(light, pick(real))
        return F.mse_loss(decode_steps(light, pick(estimated)).float(), target)

    return loss
