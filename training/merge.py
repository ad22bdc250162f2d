"""Merge recorded datasets into one, without copying the arrays.

    aapt-world merge-data --out data/doom_mix data/doom data/doom_linger

A collection is a fixed plan (one policy mix, one seed range), so data recorded later with
another player lives in its own root; training reads one root. The merged root holds every
episode of the sources, in source order, renumbered ``ep_000000``...; each episode's arrays are
hard links to the source files (a copy across file systems), its ``meta.json`` keeps the
source's fields (split, policy, seed, map, checksums) plus ``source`` (root and old id).
Episodes already merged are skipped, so the command resumes and can add a new source at the
end; the sources must agree on everything but their episodes (world, frame size, scenario...).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from training.dataset import (
    EPISODES_DIR,
    MANIFEST,
    DatasetError,
    completed_episode_ids,
    read_manifest,
    write_manifest,
)

PER_EPISODE_KEYS = ("episodes", "num_episodes", "num_frames")


def dataset_meta(manifest: dict[str, Any]) -> dict[str, Any]:
    """What every episode of a dataset shares (the manifest without its episode list)."""
    return {k: v for k, v in manifest.items()
            if k not in PER_EPISODE_KEYS and k not in ("format", "version", "merged_from")}


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def merge_datasets(out: str | Path, sources: list[str | Path]) -> dict[str, Any]:
    """Merge ``sources`` into ``out`` (see the module docstring); returns the manifest."""
    if not sources:
        raise ValueError("merge_datasets needs at least one source dataset")
    out = Path(out)
    manifests = [read_manifest(src) for src in sources]
    meta = dataset_meta(manifests[0])
    for src, manifest in zip(sources[1:], manifests[1:], strict=True):
        other = dataset_meta(manifest)
        if other != meta:
            diff = sorted(k for k in set(meta) | set(other) if meta.get(k) != other.get(k))
            raise DatasetError(f"{src} cannot merge with {sources[0]}: they differ in {diff}")
    planned = [(Path(src), entry) for src, manifest in zip(sources, manifests, strict=True)
               for entry in sorted(manifest["episodes"], key=lambda e: e["id"])]
    have = completed_episode_ids(out)
    for index, (src, entry) in enumerate(planned):
        new_id = f"ep_{index:06d}"
        source = {"root": str(src), "id": entry["id"]}
        final_dir = out / EPISODES_DIR / new_id
        if new_id in have:
            merged = json.loads((final_dir / "meta.json").read_text())
            if merged.get("source") != source:
                raise DatasetError(f"{final_dir} came from {merged.get('source')}, not {source}: "
                                   "merge into a new root, or list the sources in their order")
            continue
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=f".tmp-{new_id}-"))
        try:
            for name in entry["files"]:
                _link_or_copy(src / EPISODES_DIR / entry["id"] / f"{name}.npy",
                              tmp_dir / f"{name}.npy")
            (tmp_dir / "meta.json").write_text(
                json.dumps({**entry, "id": new_id, "source": source}, indent=1))
            os.chmod(tmp_dir, 0o755)
            os.replace(tmp_dir, final_dir)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    extra = completed_episode_ids(out) - {f"ep_{i:06d}" for i in range(len(planned))}
    if extra:
        raise DatasetError(f"{out / EPISODES_DIR} holds episodes no source has: "
                           f"{sorted(extra)[:4]}")
    return write_manifest(out, {**meta, "merged_from": [str(s) for s in sources]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aapt-world merge-data",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", help="dataset roots, in the order to merge")
    parser.add_argument("--out", required=True, help=f"the merged root (its {MANIFEST} is "
                                                     "rebuilt)")
    args = parser.parse_args(argv)
    manifest = merge_datasets(args.out, args.sources)
    print(f"{args.out}: {manifest['num_episodes']} episodes, {manifest['num_frames']} frames "
          f"from {len(args.sources)} datasets")


if __name__ == "__main__":
    main()
