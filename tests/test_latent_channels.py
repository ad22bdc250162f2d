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
    assert torch.equal(v["unpredictable at their mean"][:, 0::2], torch.zeros(1, 2, 5, 3, 3))
    assert torch.equal(v["predictable at their mean"][:, 0::2], z[:, 0::2])
    assert torch.equal(v["predictable at their mean"][:, 1::2], torch.zeros(1, 2, 5, 3, 3))
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
