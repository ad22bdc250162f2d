"""Checkpoints: safetensors round trip, sharding, metadata, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aapt_world.checkpoint import (
    CheckpointError,
    load_into,
    load_weights,
    save_weights,
    weights_exist,
)


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.randn(64, 64, generator=g) for i in range(4)} | {
        "steps": torch.arange(3)}


def test_round_trip_fp16_with_metadata(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_weights(path, tensors(), {"config": {"dim": 64}, "card": "tiny"}, dtype=torch.float16)
    loaded, meta = load_weights(path)
    assert meta == {"config": {"dim": 64}, "card": "tiny"}
    assert loaded["layer0.weight"].dtype == torch.float16 and loaded["steps"].dtype == torch.long
    torch.testing.assert_close(loaded["layer1.weight"].float(), tensors()["layer1.weight"],
                               atol=1e-2, rtol=1e-3)
    assert not list(tmp_path.glob(".*tmp"))


def test_sharded_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    files = save_weights(path, tensors(), {"config": {}}, max_shard_bytes=20_000)
    assert len(files) == 5 and files[-1].name == "model.safetensors.index.json"
    loaded, _ = load_weights(path)
    assert all(torch.equal(loaded[k], v) for k, v in tensors().items())
    files[1].unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00004.safetensors.*missing"):
        load_weights(path)


def test_layout_switch_leaves_no_stale_files(tmp_path: Path) -> None:
    """A checkpoint that grows past one shard (or shrinks back) replaces the other layout:
    loading never picks up stale weights, and weights_exist sees both layouts."""
    path = tmp_path / "model.safetensors"
    assert not weights_exist(path)
    save_weights(path, tensors(), {"config": {"v": 1}})
    big = {k: v + 1 if v.is_floating_point() else v for k, v in tensors().items()}
    save_weights(path, big, {"config": {"v": 2}}, max_shard_bytes=20_000)
    assert not path.exists() and weights_exist(path)
    loaded, meta = load_weights(path)
    assert meta["config"] == {"v": 2} and torch.equal(loaded["layer0.weight"], big["layer0.weight"])
    save_weights(path, big, {"config": {"v": 3}}, max_shard_bytes=40_000)  # fewer shards
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))  # 4 -> 2 shards
    assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert load_weights(path)[1]["config"] == {"v": 3}
    save_weights(path, tensors(), {"config": {"v": 4}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    assert load_weights(path)[1]["config"] == {"v": 4}


def test_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_weights(tmp_path / "nope.safetensors")
    path = tmp_path / "model.safetensors"
    save_weights(path, tensors(), {})
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        load_weights(path)


def test_load_into_checks_fit() -> None:
    module = torch.nn.Linear(4, 3)
    state = {k: v.clone().half() for k, v in module.state_dict().items()}
    load_into(module, state, "x")  # casts back to the module's dtype
    with pytest.raises(CheckpointError, match=r"x does not fit Linear.*wrong shapes \['weight'\]"):
        load_into(module, {"weight": torch.zeros(2, 2), "bias": torch.zeros(3)}, "x")


def test_with_heads_puts_a_heads_stage_into_a_copy_of_the_world(tiny_world_dir,
                                                                  tmp_path) -> None:
    """seed_run --heads: a heads stage's weights replace the world's heads in a copy; the
    generator and VAE stay bit for bit; a file without heads.* weights is refused."""
    from aapt_world.checkpoint import CheckpointError, save_weights
    from aapt_world.world import load_world
    from training.seed_run import main

    old = load_world(tiny_world_dir)
    stage = {"heads." + k: v + 0.5 for k, v in old.heads.state_dict().items()}
    save_weights(tmp_path / "heads.safetensors", stage, {"stage": "heads", "step": 11})
    main(["--world", str(tiny_world_dir), "--heads", str(tmp_path / "heads.safetensors"),
          "--out", str(tmp_path / "world")])
    new = load_world(tmp_path / "world")
    for k, v in old.heads.state_dict().items():
        torch.testing.assert_close(new.heads.state_dict()[k], v + 0.5, atol=2e-3, rtol=1e-3)
    for k, v in old.generator.state_dict().items():
        assert torch.equal(v, new.generator.state_dict()[k])
    assert new.card["heads"]["step"] == 11
    assert new.card["training"]["heads"] == {"steps": 11,
                                             "weights": str(tmp_path / "heads.safetensors")}
    save_weights(tmp_path / "not_heads.safetensors", {"x.weight": torch.zeros(2)}, {})
    with pytest.raises(CheckpointError, match="no heads"):
        main(["--world", str(tiny_world_dir), "--heads", str(tmp_path / "not_heads.safetensors"),
              "--out", str(tmp_path / "w2")])
    with pytest.raises(SystemExit):  # --out is required
        main(["--world", str(tiny_world_dir), "--heads", str(tmp_path / "heads.safetensors")])


def test_seed_run_and_back_move_a_worlds_decoder(tiny_world_dir, tmp_path) -> None:
    """seed_run: a world's encoder check + decoder into a run; with_decoder: a run's decoder
    back into a copy of the world (everything else unchanged)."""
    from aapt_world.checkpoint import CheckpointError, load_weights, save_weights
    from aapt_world.world import WEIGHTS, load_world
    from training.seed_run import seed_run, with_decoder

    world_tensors, _ = load_weights(tiny_world_dir / WEIGHTS)
    vae = {k: v.float() for k, v in world_tensors.items() if k.startswith("vae.encoder.")}
    vae.update({"light_decoder." + k[len("vae.decoder."):]: v.float()
                for k, v in world_tensors.items() if k.startswith("vae.decoder.")})
    save_weights(tmp_path / "vae.safetensors", vae, {"stage": "vae"})
    written = seed_run(tiny_world_dir, tmp_path / "vae.safetensors", tmp_path / "run")
    assert len(written) >= 3 and seed_run(tiny_world_dir, tmp_path / "vae.safetensors",
                                          tmp_path / "run") == []
    # the world's latent normalisation, so stage=latents keeps it
    import json
    stats = json.loads((tmp_path / "run" / "latents" / "stats.json").read_text())
    torch.testing.assert_close(torch.tensor(stats["mean"], dtype=torch.float64),
                               world_tensors["vae.latent_shift"].double())
    torch.testing.assert_close(torch.tensor(stats["std"], dtype=torch.float64),
                               1 / world_tensors["vae.latent_scale"].double())
    decoder, meta = load_weights(tmp_path / "run" / "decoder" / "model.safetensors")
    key = next(iter(decoder))
    decoder[key] = decoder[key] + 0.25
    save_weights(tmp_path / "new_decoder.safetensors", decoder, {**meta, "step": 7})
    with_decoder(tiny_world_dir, tmp_path / "new_decoder.safetensors", tmp_path / "world")
    old, new = load_world(tiny_world_dir), load_world(tmp_path / "world")
    name = key[len("light_decoder."):]
    torch.testing.assert_close(new.vae.decoder.state_dict()[name],
                               old.vae.decoder.state_dict()[name] + 0.25, atol=2e-3, rtol=1e-3)
    for k, v in old.generator.state_dict().items():
        assert torch.equal(v, new.generator.state_dict()[k])
    assert new.card["decoder"]["step"] == 7
    encoder_only = {k: v for k, v in vae.items() if k.startswith("vae.encoder.")}
    save_weights(tmp_path / "encoder.safetensors", encoder_only, {})
    with pytest.raises(CheckpointError, match="no light_decoder"):
        with_decoder(tiny_world_dir, tmp_path / "encoder.safetensors", tmp_path / "w2")
    vae[next(iter(encoder_only))] = vae[next(iter(encoder_only))] + 1  # another VAE's encoder
    save_weights(tmp_path / "other.safetensors", vae, {})
    with pytest.raises(CheckpointError, match="is not the VAE of"):
        seed_run(tiny_world_dir, tmp_path / "other.safetensors", tmp_path / "run2")
    # a VAE file fine-tuned on before the world was exported: the world's encoder is taken
    seed_run(tiny_world_dir, tmp_path / "other.safetensors", tmp_path / "run3",
             world_encoder=True)
    seeded, seeded_meta = load_weights(tmp_path / "run3" / "vae" / "model.safetensors")
    for k in encoder_only:
        torch.testing.assert_close(seeded[k], world_tensors[k].float())
    assert seeded_meta["encoder_from_world"] == str(tiny_world_dir)


def test_retune_copies_a_world_with_new_inference_settings(tiny_world_dir, tmp_path) -> None:
    """aapt-world retune: same weights, new temperature / context noise / termination; the card
    says where the copy came from; bad settings are refused before anything is written."""
    from aapt_world.world import load_world, retune_world
    from agents.cli import main

    main(["retune", "--world", str(tiny_world_dir), "--out", str(tmp_path / "cold"),
          "--temperature", "0.5", "--termination", "sample", "--guidance", "2"])
    source, cold = load_world(tiny_world_dir), load_world(tmp_path / "cold")
    assert (cold.config.temperature, cold.config.termination) == (0.5, "sample")
    assert cold.config.context_noise == source.config.context_noise
    assert cold.session(1).temperature == 0.5
    assert cold.card["retuned"] == {"temperature": 0.5, "termination": "sample", "guidance": 2.0}
    assert cold.session(1).guidance == 2.0
    for name, module in source.modules().items():
        for (key, a), b in zip(module.state_dict().items(),
                               cold.modules()[name].state_dict().values()):
            assert torch.equal(a, b), f"{name}.{key} changed"
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        retune_world(tiny_world_dir, tmp_path / "bad", temperature=-1.0)
    with pytest.raises(ValueError, match="retune changes only"):
        retune_world(tiny_world_dir, tmp_path / "bad", window=4)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        main(["retune", "--world", str(tiny_world_dir), "--out", str(tmp_path / "none")])
