"""``aapt-world latent-channels``: which latent channels a one-step generator can follow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.evaluation.latent_channels import channel_variants, lowpass


def test_channel_variants_replace_only_their_group():
    z = torch.randn(1, 4, 5, 3, 3)
    unpredictable = torch.tensor([True, False, True, False])
    v = channel_variants(z, unpredictable)
    copied = v["unpredictable copied from the previous step"]
    assert torch.equal(copied[:, 1::2], z[:, 1::2])  # predictable channels untouched
    assert torch.equal(copied[:, 0::2, 1:], z[:, 0::2, :-1])  # the rest one step late
    means = z.mean(dim=(0, 2, 3, 4), keepdim=True).expand_as(z)
    assert torch.equal(v["unpredictable at their mean"][:, 0::2], means[:, 0::2])
    assert torch.equal(v["unpredictable at their mean"][:, 1::2], z[:, 1::2])
    assert torch.equal(v["predictable at their mean"][:, 0::2], z[:, 0::2])
    assert torch.equal(v["predictable at their mean"][:, 1::2], means[:, 1::2])
    assert torch.equal(v["all channels"], z)


def test_lowpass_keeps_a_constant_and_smooths_a_checkerboard():
    flat = torch.full((1, 2, 3, 5, 5), 2.0)
    assert torch.allclose(lowpass(flat), flat)
    checker = (torch.arange(5)[:, None] + torch.arange(5)[None]).remainder(2).float()
    z = (2 * checker - 1).expand(1, 2, 3, 5, 5)
    inner = lowpass(z)[..., 1:-1, 1:-1]  # a 3x3 box over +-1 cells: |mean| = 1/9
    assert torch.allclose(inner.abs(), torch.full_like(inner, 1 / 9))


def test_latent_channels_cli_on_tiny_world(tiny_world_dir, tmp_path):
    from agents.evaluation.latent_channels import main

    out = tmp_path / "lc"
    result = main(["--world", str(tiny_world_dir), "--maps", "MAP01", "--clip-steps", "3",
                   "--threshold", "0", "--out", str(out)])
    saved = json.loads((out / "latent_channels.json").read_text())
    assert saved == result and result["clips"] == 1
    channels = len(result["copy_over_zero"])
    assert result["unpredictable"] == list(range(channels))  # threshold 0: every channel
    psnr = result["decoded_psnr"]
    # every channel unpredictable: copying those is copying all, zeroing the others changes nothing
    assert psnr["unpredictable copied from the previous step"] == pytest.approx(
        psnr["all copied from the previous step"])
    assert psnr["predictable at their mean"] == pytest.approx(psnr["all channels"])
    assert all(np.isfinite(v) for v in psnr.values())
    assert "| latents decoded | PSNR dB |" in (out / "latent_channels.md").read_text()


def test_latent_change_ratio_is_zero_for_still_and_two_for_independent_latents():
    from training.losses import latent_change_ratio

    still = torch.randn(3, 4, 1, 5, 5).expand(3, 4, 7, 5, 5).clone()
    still[:, :, 0] = 9.0  # the first-frame latent is excluded
    assert latent_change_ratio(still).item() == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    independent = torch.randn(64, 4, 9, 6, 6, generator=g)
    assert latent_change_ratio(independent).item() == pytest.approx(2.0, rel=0.05)
    assert latent_change_ratio(100 * independent).item() == pytest.approx(
        latent_change_ratio(independent).item())  # scale-free
    pattern = 50 * torch.randn(1, 4, 1, 6, 6, generator=g)  # a fixed code per position
    assert latent_change_ratio(independent + pattern).item() == pytest.approx(
        latent_change_ratio(independent).item(), rel=1e-4)
    with pytest.raises(ValueError, match="clip_steps"):
        latent_change_ratio(independent[:, :, :2])



def test_swap_vae_takes_a_stage_checkpoints_encoder_and_light_decoder(tiny_world_dir,
                                                                       tmp_path):
    from aapt_world.checkpoint import save_weights
    from aapt_world.world import load_world
    from agents.evaluation.latent_channels import swap_vae

    world = load_world(tiny_world_dir)
    state = {k: v.clone() for k, v in world.vae.state_dict().items()}
    stage = {f"vae.{k}": v + 1.0 for k, v in state.items() if k.startswith("encoder.")}
    stage.update({f"light_decoder.{k[len('decoder.'):]}": v + 1.0 for k, v in state.items()
                  if k.startswith("decoder.")})
    save_weights(tmp_path / "vae.safetensors", stage, {})
    swap_vae(world, tmp_path / "vae.safetensors")
    swapped = world.vae.state_dict()
    for k, v in state.items():
        if k.startswith(("encoder.", "decoder.")):
            torch.testing.assert_close(swapped[k], v + 1.0)
        else:  # the world's latent normalisation stays
            torch.testing.assert_close(swapped[k], v)
    del stage[next(iter(stage))]
    save_weights(tmp_path / "partial.safetensors", stage, {})
    with pytest.raises(ValueError, match="partial.safetensors"):
        swap_vae(world, tmp_path / "partial.safetensors")
