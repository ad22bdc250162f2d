"""On-disk dataset of recorded episodes, and a reader that samples clips for training.

Format (version 1), documented in the README so users can record their own game::

    <root>/manifest.json
    <root>/episodes/<episode_id>/frames.npy      uint8   (T, H, W, 3)   T = 1 + 4 * S
                                 poses.npy       float32 (T, P)         per-frame camera pose
                                 actions.npy     float32 (S, A)         per-step command
                                 rewards.npy     float32 (S,)
                                 terminated.npy  bool    (S,)
                                 meta.json       episode metadata (same dict as its manifest entry)

An episode of S steps has T = 1 + 4 S video frames: frame 0 is the reset frame, step s
(0-based) produced frames 4s+1 .. 4s+4. Plain ``.npy`` files are memory-mapped, so sampling a
clip reads only that clip. Every episode is written to a temporary directory and renamed into
place; the manifest is rewritten atomically from the episodes' ``meta.json`` files. An episode
is therefore either complete or absent, and re-running a collection never touches what exists.

Clips: ``num_steps = K`` gives 4K + 1 video frames starting on a step boundary — the first frame
alone (the causal VAE encodes it into latent frame 0) then K groups of 4 — with the K actions
that produced them, i.e. K + 1 latent frames.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aapt_world.constants import FLOOR_ANCHOR, FRAMES_PER_STEP
from aapt_world.momentum import CommandMomentum

FORMAT_NAME = "aapt-world-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EPISODES_DIR = "episodes"
ARRAYS = ("frames", "poses", "actions", "rewards", "terminated")


class DatasetError(RuntimeError):
    """A dataset file is missing, corrupt, or disagrees with the manifest."""


@dataclass
class Episode:
    """One recorded episode, in memory, ready to write."""

    frames: np.ndarray  # uint8 (T, H, W, 3)
    poses: np.ndarray  # float32 (T, P)
    actions: np.ndarray  # float32 (S, A)
    rewards: np.ndarray  # float32 (S,)
    terminated: np.ndarray  # bool (S,)
    meta: dict[str, Any]

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])

    def validate(self) -> None:
        s = self.num_steps
        expected_t = 1 + FRAMES_PER_STEP * s
        checks = [
            (self.frames.dtype == np.uint8 and self.frames.ndim == 4 and self.frames.shape[-1] == 3,
             f"frames must be uint8 (T, H, W, 3), got {self.frames.dtype} {self.frames.shape}"),
            (self.frames.shape[0] == expected_t,
             f"{s} steps need {expected_t} frames (1 + 4 per step), got {self.frames.shape[0]}"),
            (self.poses.shape[0] == expected_t,
             f"poses need {expected_t} rows, got {self.poses.shape}"),
            (self.actions.ndim == 2, f"actions must be (S, A), got {self.actions.shape}"),
            (self.rewards.shape == (s,), f"rewards must be ({s},), got {self.rewards.shape}"),
            (self.terminated.shape == (s,),
             f"terminated must be ({s},), got {self.terminated.shape}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid episode {self.meta.get('id')!r}: {message}")


# -- writing ----------------------------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; datasets are meant to be shared
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_episode(root: str | Path, episode: Episode) -> dict[str, Any]:
    """Write one episode atomically; returns its manifest entry. Refuses to overwrite."""
    episode.validate()
    root = Path(root)
    episode_id = episode.meta["id"]
    final_dir = root / EPISODES_DIR / episode_id
    if final_dir.exists():
        raise FileExistsError(f"episode {episode_id} already exists at {final_dir}")
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=f".tmp-{episode_id}-"))
    try:
        files = {}
        for name in ARRAYS:
            array = np.ascontiguousarray(getattr(episode, name))
            np.save(tmp_dir / f"{name}.npy", array, allow_pickle=False)
            files[name] = {
                "shape": list(array.shape),
                "dtype": str(array.dtype),
                "sha256": _sha256(tmp_dir / f"{name}.npy"),
            }
        entry = {**episode.meta, "num_steps": episode.num_steps,
                 "num_frames": int(episode.frames.shape[0]), "files": files}
        _atomic_write_text(tmp_dir / "meta.json", json.dumps(entry, indent=1))
        os.chmod(tmp_dir, 0o755)
        os.replace(tmp_dir, final_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return entry


def remove_stale_temporaries(root: str | Path) -> int:
    """Delete half-written episode directories left by a crash. Returns how many."""
    episodes = Path(root) / EPISODES_DIR
    stale = list(episodes.glob(".tmp-*")) if episodes.exists() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def completed_episode_ids(root: str | Path) -> set[str]:
    episodes = Path(root) / EPISODES_DIR
    if not episodes.exists():
        return set()
    return {p.name for p in episodes.iterdir() if not p.name.startswith(".") and p.is_dir()}


def write_manifest(root: str | Path, dataset_meta: dict[str, Any]) -> dict[str, Any]:
    """Rebuild the manifest from the episodes on disk (atomic). Existing episodes always win."""
    root = Path(root)
    entries = []
    for episode_id in sorted(completed_episode_ids(root)):
        meta_path = root / EPISODES_DIR / episode_id / "meta.json"
        try:
            entries.append(json.loads(meta_path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise DatasetError(f"cannot read episode metadata {meta_path}: {err}") from err
    manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **dataset_meta,
                "num_episodes": len(entries),
                "num_frames": sum(e["num_frames"] for e in entries), "episodes": entries}
    root.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1))
    return manifest


def read_manifest(root: str | Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.exists():
        raise DatasetError(f"no dataset at {root}: {path} is missing (collect data first)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"corrupt manifest {path}: {err}") from err
    if manifest.get("format") != FORMAT_NAME or manifest.get("version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path} is not a {FORMAT_NAME} v{FORMAT_VERSION} manifest "
            f"(format={manifest.get('format')!r}, version={manifest.get('version')!r})"
        )
    return manifest


# -- reading ----------------------------------------------------------------------------------


@dataclass
class Clip:
    frames: np.ndarray  # uint8 (4K + 1, H, W, 3)
    poses: np.ndarray  # float32 (4K + 1, P)
    actions: np.ndarray  # float32 (K, A)
    rewards: np.ndarray  # float32 (K,)
    terminated: np.ndarray  # bool (K,)
    episode_id: str
    start_step: int
    momentum: np.ndarray | None = None  # float32 (K, 4, M): a momentum world's velocity channels


def validation_episodes(num_episodes: int, val_every: int) -> set[int]:
    """Indices of the validation episodes: one per block of ``val_every``, at a position that
    moves on by one each block (a fixed one would correlate with map/policy cycles). Block 0
    validates its episode 1, so every dataset of >= 2 episodes has one, and growing a dataset
    never moves an episode's split."""
    v = val_every
    return {i for i in range(num_episodes) if i % v == (1 + i // v) % v}


def check_episodes_match(root: Path, planned: dict[str, dict[str, Any]], steps: int) -> None:
    """Episodes already on disk must be the ones a plan would record (``planned``: episode id
    -> the metadata it would get; ``steps``: steps per episode, shorter only if it ended):
    re-running a recorder with another plan is refused, never a silent no-op."""
    entries = {e["id"]: e for e in read_manifest(root)["episodes"]}
    for episode_id, want in planned.items():
        entry = entries.get(episode_id)
        if entry is None:
            continue
        differ = {k: (entry.get(k), v) for k, v in want.items() if entry.get(k) != v}
        ended = bool(np.load(root / EPISODES_DIR / episode_id / "terminated.npy",
                             mmap_mode="r")[-1:].any()) or bool(entry.get("truncated"))
        if entry["num_steps"] != steps and not (ended and entry["num_steps"] < steps):
            differ["steps_per_episode"] = (entry["num_steps"], steps)
        if differ:
            raise ValueError(
                f"episode {episode_id} at {root} was recorded with other settings (on disk, "
                f"requested): {differ}; record into another root, or delete "
                f"{root / EPISODES_DIR} to re-record")


def check_dataset_meta(root: Path, meta: dict[str, Any]) -> None:
    """A resumed recording must share the dataset-wide settings of what is on disk."""
    if not (root / MANIFEST).exists():
        return
    existing = read_manifest(root)
    mismatched = {k: (existing.get(k), v) for k, v in meta.items() if existing.get(k) != v}
    if mismatched:
        raise ValueError(f"dataset at {root} was recorded with different settings "
                         f"(existing, requested): {mismatched}; use another root")


def check_training_data(root: str | Path, height: int, width: int, clip_steps: int,
                        action_dim: int | None = None, action_type: str | None = None,
                        condition: str = "action", floor_anchor: bool = False) -> None:
    """Fail at once, with the fix in the message, when the dataset at ``root`` cannot feed a
    model of ``height`` x ``width`` frames trained on clips of ``clip_steps`` steps, conditioned
    on ``action_dim``-wide commands (a pose world: ``action_dim / 2`` 2D keypoints per frame),
    exported with env action type ``action_type`` (``floor_anchor``: plus the floor anchor)."""
    manifest = read_manifest(root)
    widths = {e["files"]["actions"]["shape"][1] for e in manifest["episodes"]}
    if condition == "pose":
        keypoints = len(keypoint_columns(manifest, floor_anchor))
        if action_dim is not None and action_dim != 2 * keypoints:
            raise DatasetError(f"dataset at {root} holds {keypoints} 2D points per frame "
                               f"{'(the floor anchor included) ' if floor_anchor else ''}but "
                               f"world.action_dim={action_dim}: pass "
                               f"world.action_dim={2 * keypoints}")
    elif action_dim is not None and widths and widths != {action_dim}:
        raise DatasetError(f"dataset at {root} stores actions of {sorted(widths)} values per "
                           f"step but world.action_dim={action_dim}: pass "
                           f"world.action_dim={min(widths)}")
    if action_type == "game" and "action_space" not in manifest:
        raise DatasetError(f"world.action_type=game needs a dataset recorded from a game "
                           f"(`aapt-world record` / `import-video`): {root / MANIFEST} has no "
                           f"action_space")
    if action_type in ("discrete", "continuous") and "action_space" in manifest:
        raise DatasetError(f"dataset at {root} was recorded from a game with its own action "
                           f"space {manifest['action_space']}: train it with world=game")
    size = (manifest.get("width"), manifest.get("height"))
    if size != (width, height):
        raise DatasetError(
            f"dataset at {root} holds {size[0]}x{size[1]} frames but the model expects "
            f"{width}x{height}: record at that size (`aapt-world collect root=<new root> "
            f"width={width} height={height}`), or pick a model of the data's size "
            f"(model=small is 128x96, model=tiny 64x48)")
    for split in ("train", "val"):
        lengths = [e["num_steps"] for e in manifest["episodes"] if e["split"] == split]
        if not lengths:
            raise DatasetError(
                f"dataset at {root} has no {split} episode (of {len(manifest['episodes'])}): "
                f"record at least 2 episodes (`aapt-world collect root={root} num_episodes=2`); "
                f"one in every val_every goes to validation")
        if max(lengths) < clip_steps:
            raise DatasetError(
                f"the longest {split} episode in {root} has {max(lengths)} steps, fewer than "
                f"data.clip_steps={clip_steps}: lower data.clip_steps or record longer "
                f"episodes (steps_per_episode)")


class EpisodeReader:
    """Memory-mapped arrays of one episode, checked against its manifest entry on open."""

    def __init__(self, root: Path, entry: dict[str, Any], verify_checksums: bool = False) -> None:
        self.entry = entry
        self.id = entry["id"]
        self.num_steps = int(entry["num_steps"])
        directory = root / EPISODES_DIR / self.id
        self.arrays: dict[str, np.ndarray] = {}
        for name in ARRAYS:
            path = directory / f"{name}.npy"
            spec = entry["files"][name]
            if not path.exists():
                raise DatasetError(f"missing file {path} (listed in the manifest)")
            if verify_checksums and _sha256(path) != spec["sha256"]:
                raise DatasetError(f"checksum mismatch in {path}: the file is corrupt")
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as err:
                raise DatasetError(f"corrupt file {path}: {err}") from err
            if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
                raise DatasetError(
                    f"{path} holds {array.dtype} {list(array.shape)} but the manifest says "
                    f"{spec['dtype']} {spec['shape']}"
                )
            self.arrays[name] = array

    def clip(self, start_step: int, num_steps: int) -> Clip:
        if not 0 <= start_step <= self.num_steps - num_steps:
            raise IndexError(f"clip [{start_step}, +{num_steps}) outside episode {self.id} "
                             f"of {self.num_steps} steps")
        f0, f1 = FRAMES_PER_STEP * start_step, FRAMES_PER_STEP * (start_step + num_steps) + 1
        s0, s1 = start_step, start_step + num_steps
        a = self.arrays
        return Clip(
            frames=np.array(a["frames"][f0:f1]), poses=np.array(a["poses"][f0:f1]),
            actions=np.array(a["actions"][s0:s1]), rewards=np.array(a["rewards"][s0:s1]),
            terminated=np.array(a["terminated"][s0:s1]), episode_id=self.id, start_step=start_step,
        )


KEYPOINT_AXES = ("col", "row")  # a pose world's 2D keypoints in poses.npy: <name>_col, <name>_row


def keypoint_columns(manifest: dict, floor_anchor: bool = False) -> np.ndarray:
    """(K, 2) column indices of each body keypoint's (col, row) pixel position in poses.npy, in
    the manifest's keypoint order: the per-frame condition of a pose world (``envs.humanoid``);
    with ``floor_anchor`` the floor anchor's pair follows them (K + 1 rows)."""
    names = list(manifest.get("pose_names", []))
    cols = [i for i, n in enumerate(names) if n.endswith("_" + KEYPOINT_AXES[0])
            and n[:-len(KEYPOINT_AXES[0]) - 1] != FLOOR_ANCHOR]
    pairs = [(i, names.index(names[i][:-3] + KEYPOINT_AXES[1])) for i in cols
             if names[i][:-3] + KEYPOINT_AXES[1] in names]
    if not pairs or len(pairs) != len(cols):
        raise DatasetError(f"a pose world needs 2D keypoints in poses.npy (pose_names "
                           f"'<name>_col' / '<name>_row'); this dataset's pose_names are "
                           f"{names[:6]}{'...' if len(names) > 6 else ''}")
    if floor_anchor:
        floor = [f"{FLOOR_ANCHOR}_{axis}" for axis in KEYPOINT_AXES]
        if not all(name in names for name in floor):
            raise DatasetError(f"world.floor_anchor needs the floor anchor's columns {floor} "
                               "in poses.npy: this dataset was recorded before the humanoid "
                               "env wrote them; record it again (`aapt-world collect "
                               "world=humanoid root=<new root>`)")
        pairs.append(tuple(names.index(name) for name in floor))
    return np.array(pairs, dtype=np.int64)


class ClipDataset:
    """Random clips of ``num_steps`` steps (4K + 1 frames) from one split of a dataset.

    Clips never cross episode boundaries; episodes shorter than ``num_steps`` are skipped.
    Every episode is opened (and checked) up front, so a bad file fails fast with its name.
    """

    def __init__(self, root: str | Path, num_steps: int, split: str = "train",
                 verify_checksums: bool = False, momentum: CommandMomentum | None = None) -> None:
        """``momentum``: clips also carry the velocity its commands integrate to from the
        episode's start (see :mod:`aapt_world.momentum`)."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        self.root = Path(root)
        self.num_steps = num_steps
        self.manifest = read_manifest(self.root)
        on_disk = completed_episode_ids(self.root)
        listed = {e["id"] for e in self.manifest["episodes"]}
        if listed - on_disk:
            raise DatasetError(f"manifest {self.root / MANIFEST} lists episodes missing on disk: "
                               f"{sorted(listed - on_disk)[:5]}")
        entries = [e for e in self.manifest["episodes"] if split == "all" or e["split"] == split]
        self.episodes = [EpisodeReader(self.root, e, verify_checksums) for e in entries
                         if e["num_steps"] >= num_steps]
        if not self.episodes:
            raise DatasetError(f"no {split} episode in {self.root} has >= {num_steps} steps")
        # Clip start counts per episode: sampling uniform over all clip positions.
        self._starts = np.array([ep.num_steps - num_steps + 1 for ep in self.episodes])
        self._cumulative = np.cumsum(self._starts)
        self.momentum = momentum
        self._tracks: dict[str, np.ndarray] = {}  # episode id -> (S, 4, M), computed on first use

    def clip_momentum(self, episode: EpisodeReader, start: int) -> np.ndarray | None:
        """The velocity after each video frame of the clip at ``start`` (K, 4, M), integrated
        from the episode's start (once per episode); None without a momentum rule."""
        if self.momentum is None:
            return None
        if episode.id not in self._tracks:
            self._tracks[episode.id] = self.momentum.episode(np.array(episode.arrays["actions"]))
        return self._tracks[episode.id][start:start + self.num_steps].copy()

    def __len__(self) -> int:
        return int(self._cumulative[-1])

    def position(self, index: int) -> tuple[EpisodeReader, int]:
        """The episode and start step of clip ``index`` (without reading any frame)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        episode = int(np.searchsorted(self._cumulative, index, side="right"))
        offset = index - (self._cumulative[episode - 1] if episode else 0)
        return self.episodes[episode], int(offset)

    def __getitem__(self, index: int) -> Clip:
        episode, start = self.position(index)
        clip = episode.clip(start, self.num_steps)
        clip.momentum = self.clip_momentum(episode, start)
        return clip

    def ending_indices(self, name: str = "terminated") -> np.ndarray:
        """Indices of the clips whose LAST step has ``name`` (e.g. the clips that end in a
        death): the rare events a stage may want to draw more often than uniform sampling."""
        found = []
        for i, episode in enumerate(self.episodes):
            steps = np.flatnonzero(np.asarray(episode.arrays[name]))
            starts = steps[steps >= self.num_steps - 1] - (self.num_steps - 1)
            found.append(starts + (self._cumulative[i - 1] if i else 0))
        return np.concatenate(found).astype(np.int64)

    def sample_position(self, rng: np.random.Generator) -> tuple[EpisodeReader, int]:
        return self.position(int(rng.integers(len(self))))

    def sample(self, rng: np.random.Generator) -> Clip:
        return self[int(rng.integers(len(self)))]
