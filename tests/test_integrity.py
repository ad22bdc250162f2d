"""World integrity (issue 13): checksums, finite weights, configs that fit, errors that name
the damaged file, and no silent NaN in a step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from aapt_world.checkpoint import CheckpointError, load_weights, save_weights
from aapt_world.session import NonFiniteError
from aapt_world.world import START_FRAMES, WEIGHTS, load_world, save_world
from envs.neural import NeuralWorldEnv

INDEX = WEIGHTS + ".index.json"


@pytest.fixture
def world_dir(tiny_world_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "world"
    shutil.copytree(tiny_world_dir, out)
    return out


def shards(directory: Path) -> list[Path]:
    return sorted(directory.glob("world-*-of-*.safetensors"))


def edit_index(directory: Path, edit) -> None:
    spec = json.loads((directory / INDEX).read_text())
    edit(spec)
    (directory / INDEX).write_text(json.dumps(spec))


def test_a_saved_world_records_and_passes_its_checksums(world_dir: Path) -> None:
    spec = json.loads((world_dir / INDEX).read_text())
    # the index verifies every file: each shard and the start frames (also in the metadata)
    assert set(spec["sha256"]) == {p.name for p in shards(world_dir)} | {START_FRAMES}
    assert START_FRAMES in json.loads(spec["metadata"]["files"])
    load_world(world_dir)


def test_random_bytes_in_a_shard_name_that_shard(world_dir: Path) -> None:
    shard = shards(world_dir)[-1]
    data = bytearray(shard.read_bytes())
    data[-64:] = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes()
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{shard.name}: its SHA-256 does not match"):
        load_world(world_dir)


def test_truncated_shard_is_named(world_dir: Path) -> None:
    shard = shards(world_dir)[0]
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=shard.name):
        load_world(world_dir)
    edit_index(world_dir, lambda spec: spec.pop("sha256"))  # an index without checksums
    with pytest.raises(CheckpointError, match=f"corrupt checkpoint .*{shard.name}"):
        load_world(world_dir)


def test_non_finite_weights_name_the_tensor_and_file(world_dir: Path) -> None:
    shard = shards(world_dir)[0]
    tensors = load_file(str(shard))
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name][0] = float("nan")
    from safetensors import safe_open

    with safe_open(str(shard), framework="pt") as f:
        meta = f.metadata()
    save_file(tensors, str(shard), metadata=meta)
    edit_index(world_dir, lambda spec: spec.pop("sha256"))  # the NaN check on its own
    with pytest.raises(CheckpointError, match=rf"{shard.name}.*{name}.*non-finite"):
        load_world(world_dir)


@pytest.mark.parametrize("content", [b"\xff\xfe garbage \x00", b"[1, 2, 3]", b'{"weight_map": 3}'])
def test_garbage_index_is_a_checkpoint_error_naming_it(world_dir: Path, content: bytes) -> None:
    (world_dir / INDEX).write_bytes(content)
    with pytest.raises(CheckpointError, match=INDEX):
        load_world(world_dir)


def test_an_edited_index_config_does_not_fit_the_weights(world_dir: Path) -> None:
    def window(spec: dict) -> None:
        config = json.loads(spec["metadata"]["config"])
        config["dit"]["window"] += 5
        spec["metadata"]["config"] = json.dumps(config)

    edit_index(world_dir, window)
    with pytest.raises(CheckpointError, match=r"\['config'\] differs from the metadata"):
        load_world(world_dir)


def resave_config(directory: Path, edit) -> None:
    """Rewrite the world consistently (shards, index, checksums) with an edited config."""
    tensors, meta = load_weights(directory / WEIGHTS)
    edit(meta["config"])
    save_weights(directory / WEIGHTS, tensors, meta, index=True)


@pytest.mark.parametrize("edit, match", [
    (lambda c: c.update(action_type="joystick"), "action_type must be one of"),
    (lambda c: c.update(fps=0), "fps must be > 0"),
    (lambda c: c.update(frames_per_step=3), "frames_per_step must be 4"),
    (lambda c: c.update(heads=[1, 2]), "heads must be an object"),
    (lambda c: c["dit"].update(window=0), "dit.window must be >= 1"),
    (lambda c: c.update(sample_steps=0), "sample_steps must be >= 1"),
    (lambda c: c.update(termination="sometimes"), "termination must be one of"),
])
def test_bad_config_values_are_rejected_with_the_path(world_dir: Path, edit, match) -> None:
    resave_config(world_dir, edit)
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS}.*{match}"):
        load_world(world_dir)


def test_invalid_config_json_says_so(world_dir: Path) -> None:
    tensors, meta = load_weights(world_dir / WEIGHTS)
    meta["config"] = '{"vae": {'
    save_weights(world_dir / WEIGHTS, tensors, meta, index=True)
    with pytest.raises(CheckpointError, match="'config' metadata is not valid JSON"):
        load_world(world_dir)


def test_start_frames_checksum_and_empty_array(world_dir: Path) -> None:
    frames = np.load(world_dir / START_FRAMES)
    np.save(world_dir / START_FRAMES, 255 - frames)  # same shape, other pictures
    with pytest.raises(CheckpointError, match=f"corrupt start frames .*{START_FRAMES}"):
        load_world(world_dir)
    np.save(world_dir / START_FRAMES, frames)
    base = load_world(world_dir)
    base.start_frames = frames[:0]
    save_world(world_dir, base)
    with pytest.raises(CheckpointError, match=f"{START_FRAMES} holds no start frames"):
        load_world(world_dir)


def test_a_non_finite_step_raises_instead_of_playing_black(world_dir: Path) -> None:
    env = NeuralWorldEnv(world_dir)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    with torch.no_grad():
        next(env.world.generator.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="generated latent is not finite"):
        env.step(env.action_space.sample())
