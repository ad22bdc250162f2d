"""Dataset format: round trip, clip sampling, splits, and clear errors on bad files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from training.dataset import (
    ClipDataset,
    DatasetError,
    Episode,
    read_manifest,
    remove_stale_temporaries,
    write_episode,
    write_manifest,
)

H, W = 16, 24


def make_episode(index: int, steps: int, split: str = "train") -> Episode:
    rng = np.random.default_rng(index)
    frames = rng.integers(0, 256, size=(1 + 4 * steps, H, W, 3), dtype=np.uint8)
    frames[:, 0, 0, 0] = np.arange(1 + 4 * steps) % 256  # frame index stamped in pixel (0, 0)
    return Episode(
        frames=frames,
        poses=np.arange(1 + 4 * steps, dtype=np.float32)[:, None].repeat(5, axis=1),
        actions=np.arange(steps, dtype=np.float32)[:, None].repeat(4, axis=1),
        rewards=np.arange(steps, dtype=np.float32), terminated=np.arange(steps) == steps - 1,
        meta={"id": f"ep_{index:06d}", "split": split},
    )


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    for i, (steps, split) in enumerate([(10, "train"), (6, "train"), (3, "train"), (8, "val")]):
        write_episode(tmp_path, make_episode(i, steps, split))
    write_manifest(tmp_path, {"world": "test"})
    return tmp_path


def test_round_trip(dataset: Path) -> None:
    manifest = read_manifest(dataset)
    assert manifest["num_episodes"] == 4 and manifest["world"] == "test"
    assert manifest["num_frames"] == sum(1 + 4 * s for s in (10, 6, 3, 8))
    original = make_episode(0, 10)
    clip = ClipDataset(dataset, num_steps=10, split="train")[0]
    for name in ("frames", "poses", "actions", "rewards", "terminated"):
        np.testing.assert_array_equal(getattr(clip, name), getattr(original, name))
    assert (dataset / "episodes" / "ep_000000" / "frames.npy").stat().st_mode & 0o044


def test_clips_are_aligned_to_steps(dataset: Path) -> None:
    data = ClipDataset(dataset, num_steps=4, split="train")
    # episodes of 10 and 6 steps hold 7 + 3 clip positions; the 3-step episode is too short
    assert len(data) == 10
    rng = np.random.default_rng(0)
    for _ in range(30):
        clip = data.sample(rng)
        assert clip.frames.shape == (4 * 4 + 1, H, W, 3)
        assert clip.actions.shape == (4, 4) and clip.rewards.shape == (4,)
        s = clip.start_step
        np.testing.assert_array_equal(clip.frames[:, 0, 0, 0], np.arange(4 * s, 4 * s + 17) % 256)
        np.testing.assert_array_equal(clip.actions[:, 0], np.arange(s, s + 4))
    assert {data[i].episode_id for i in range(len(data))} == {"ep_000000", "ep_000001"}


def test_split_by_episode(dataset: Path) -> None:
    val = ClipDataset(dataset, num_steps=2, split="val")
    assert {ep.id for ep in val.episodes} == {"ep_000003"}
    with pytest.raises(DatasetError, match="no val episode"):
        ClipDataset(dataset, num_steps=9, split="val")


def test_truncated_shard_names_the_file(dataset: Path) -> None:
    path = dataset / "episodes" / "ep_000001" / "frames.npy"
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(DatasetError, match="ep_000001/frames.npy"):
        ClipDataset(dataset, num_steps=2)


def test_garbage_shard_names_the_file(dataset: Path) -> None:
    path = dataset / "episodes" / "ep_000000" / "rewards.npy"
    path.write_bytes(b"not a numpy file at all")
    with pytest.raises(DatasetError, match="ep_000000/rewards.npy"):
        ClipDataset(dataset, num_steps=2)


def test_flipped_bytes_caught_by_checksum(dataset: Path) -> None:
    path = dataset / "episodes" / "ep_000002" / "actions.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    ClipDataset(dataset, num_steps=2)  # shapes still agree: the cheap check passes
    with pytest.raises(DatasetError, match="checksum mismatch in .*ep_000002/actions.npy"):
        ClipDataset(dataset, num_steps=2, verify_checksums=True)


def test_manifest_disagreeing_with_files(dataset: Path) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    manifest["episodes"][0]["files"]["frames"]["shape"][0] = 999
    (dataset / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"ep_000000/frames.npy holds .* manifest says"):
        ClipDataset(dataset, num_steps=2)


def test_missing_episode_and_missing_file(dataset: Path) -> None:
    os.remove(dataset / "episodes" / "ep_000001" / "poses.npy")
    with pytest.raises(DatasetError, match="missing file .*ep_000001/poses.npy"):
        ClipDataset(dataset, num_steps=2)
    os.rename(dataset / "episodes" / "ep_000001", dataset / "elsewhere")
    with pytest.raises(DatasetError, match="missing on disk.*ep_000001"):
        ClipDataset(dataset, num_steps=2)


def test_no_manifest_or_wrong_format(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="manifest.json is missing"):
        ClipDataset(tmp_path, num_steps=1)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(DatasetError, match="not a aapt-world-dataset"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(DatasetError, match="corrupt manifest"):
        read_manifest(tmp_path)


def test_writing_never_overwrites_and_cleans_temporaries(dataset: Path) -> None:
    before = (dataset / "episodes" / "ep_000000" / "frames.npy").read_bytes()
    with pytest.raises(FileExistsError):
        write_episode(dataset, make_episode(0, 4))
    assert (dataset / "episodes" / "ep_000000" / "frames.npy").read_bytes() == before
    (dataset / "episodes" / ".tmp-ep_000009-crashed").mkdir()
    assert remove_stale_temporaries(dataset) == 1
    assert read_manifest(dataset)["num_episodes"] == 4


def test_invalid_episode_rejected(tmp_path: Path) -> None:
    episode = make_episode(0, 3)
    episode.frames = episode.frames[:-1]
    with pytest.raises(ValueError, match="need 13 frames"):
        write_episode(tmp_path, episode)
    assert not (tmp_path / "episodes" / "ep_000000").exists()


def test_merge_links_renumbers_resumes_and_checks(tmp_path: Path) -> None:
    from training.merge import merge_datasets

    a, b, c, out = (tmp_path / n for n in ("a", "b", "c", "out"))
    for root, episodes in ((a, [(0, 5, "train"), (1, 3, "val")]), (b, [(0, 4, "train")])):
        for i, steps, split in episodes:
            write_episode(root, make_episode(i + 10 * (root == b), steps, split))
        write_manifest(root, {"world": "test", "width": W})
    merged = merge_datasets(out, [a])
    assert merged["num_episodes"] == 2
    merged = merge_datasets(out, [a, b])  # resumes, adds b at the end
    assert [e["id"] for e in merged["episodes"]] == ["ep_000000", "ep_000001", "ep_000002"]
    assert merged["episodes"][2]["source"] == {"root": str(b), "id": "ep_000010"}
    assert merged["merged_from"] == [str(a), str(b)] and merged["width"] == W
    linked = out / "episodes" / "ep_000002" / "frames.npy"
    assert os.path.samefile(linked, b / "episodes" / "ep_000010" / "frames.npy")
    data = ClipDataset(out, 2, split="all", verify_checksums=True)
    assert sorted(ep.num_steps for ep in data.episodes) == [3, 4, 5]
    assert ClipDataset(out, 2, split="val").episodes[0].num_steps == 3  # splits kept
    with pytest.raises(DatasetError, match="came from"):
        merge_datasets(out, [b, a])  # another order would renumber what is there
    write_episode(c, make_episode(20, 3))
    write_manifest(c, {"world": "test", "width": W + 8})
    with pytest.raises(DatasetError, match=r"differ in \['width'\]"):
        merge_datasets(tmp_path / "out2", [a, c])
