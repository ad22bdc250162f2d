"""Weights on disk: safetensors with the model card in its metadata, written atomically.

A checkpoint is either one ``<name>.safetensors`` file or, when larger than ``max_shard_bytes``,
shards ``<name>-00001-of-0000N.safetensors`` plus the usual ``<name>.safetensors.index.json``
(``{"metadata": ..., "weight_map": {tensor: shard}}``). safetensors metadata is str -> str, so the
config and model card travel as JSON strings under the ``"config"`` and ``"card"`` keys.

Every file is written to a temporary name and ``os.replace``d into place: a crash never leaves
a half-written checkpoint where a complete one is expected. The index records each shard's
SHA-256 (``"sha256": {shard: hex}``), checked at load; every floating tensor must be finite.
Errors name the file that is actually damaged.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

INDEX_SUFFIX = ".safetensors.index.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""

MAX_SHARD_BYTES = 15_000_000  # shipped weights: files of at most 15 MB (decimal), as required


def atomic_replace(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def trim_csv_log(path: Path, column: str, last: float) -> None:
    """On resume: drop the rows of a CSV log written after the checkpoint (``column`` > ``last``,
    or malformed); they will be written again. Atomic; a missing file or column is left."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or column not in rows[0]:
        return
    col, width = rows[0].index(column), len(rows[0])
    kept = rows[:1] + [r for r in rows[1:]
                       if len(r) == width and r[col] and float(r[col]) <= last]
    if len(kept) < len(rows):
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(kept)
        atomic_replace(path, lambda tmp: Path(tmp).write_text(text.getvalue()))


def _index_path(path: Path) -> Path:
    return path.with_name(path.name + ".index.json")


def _shard_paths(path: Path) -> list[Path]:
    stem = path.name[: -len(".safetensors")]
    return sorted(path.parent.glob(f"{stem}-*-of-*.safetensors"))


def weights_exist(path: str | Path) -> bool:
    """Is there a checkpoint at ``path``, as one file or sharded (its index)?"""
    path = Path(path)
    return path.exists() or _index_path(path).exists()


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any],
                 dtype: torch.dtype | None = None, max_shard_bytes: int = MAX_SHARD_BYTES,
                 index: bool = False, checksums: dict[str, str] | None = None) -> list[Path]:
    """Save ``tensors`` (optionally cast to ``dtype``) with JSON-able ``metadata``.

    ``path`` ends in ``.safetensors``. ``index``: always write shards + index (with checksums),
    even for one shard; ``checksums``: SHA-256s of files stored beside it that the index also
    records (e.g. a world's start frames). Returns the files written.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {path}")
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
               .detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    index_path = _index_path(path)
    stale = [index_path, *_shard_paths(path)]  # the other layout: removed once the new one is in
    if len(shards) == 1 and not index:
        atomic_replace(path, lambda tmp: save_file(shards[0], tmp, metadata=meta))
        for old in stale:
            old.unlink(missing_ok=True)
        return [path]
    stem = path.name[: -len(".safetensors")]
    files, weight_map, checksums = [], {}, dict(checksums or {})
    for i, shard in enumerate(shards, 1):
        shard_path = path.with_name(f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors")
        atomic_replace(shard_path, lambda tmp, s=shard: save_file(s, tmp, metadata=meta))
        files.append(shard_path)
        weight_map.update({name: shard_path.name for name in shard})
        checksums[shard_path.name] = sha256_file(shard_path)
    index_text = json.dumps({"metadata": meta, "weight_map": weight_map, "sha256": checksums},
                            indent=1)
    atomic_replace(index_path, lambda tmp: Path(tmp).write_text(index_text))
    for old in [path, *stale[1:]]:
        if old not in files:
            old.unlink(missing_ok=True)
    return [*files, index_path]


def _load_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """One safetensors file, its tensors checked finite; errors name ``path``."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"corrupt checkpoint {path}: {err}") from err
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"corrupt checkpoint {path}: tensor {name!r} holds "
                                  "non-finite values (NaN or inf)")
    return tensors, raw_meta


def _read_index(index: Path) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(metadata, weight_map, sha256) of a shard index; a CheckpointError names it if bad."""
    try:
        spec = json.loads(index.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"corrupt checkpoint index {index}: not JSON ({err})") from err
    if not isinstance(spec, dict) or not isinstance(spec.get("weight_map"), dict):
        raise CheckpointError(f"corrupt checkpoint index {index}: expected a JSON object with "
                              f"a 'weight_map' object, got {type(spec).__name__}")
    parts = spec.get("metadata", {}), spec["weight_map"], spec.get("sha256", {})
    if not all(isinstance(p, dict) and all(isinstance(v, str) for v in p.values())
               for p in parts):
        raise CheckpointError(f"corrupt checkpoint index {index}: 'metadata', 'weight_map' "
                              "and 'sha256' must map names to strings")
    return parts


def recorded_checksums(path: str | Path) -> dict[str, str]:
    """The SHA-256s a sharded checkpoint's index records (shards, and files stored beside it
    such as a world's start frames); {} for a single file or an index without them."""
    index = _index_path(Path(path))
    return _read_index(index)[2] if index.exists() else {}


def add_checksums(path: str | Path, files: dict[str, str]) -> None:
    """Record more SHA-256s in a sharded checkpoint's index, and those of its shards if the
    index lacks them; the shards are not rewritten (their bytes stay the same)."""
    index = _index_path(Path(path))
    spec = json.loads(index.read_text())
    shards = {name: sha256_file(index.with_name(name)) for name in set(spec["weight_map"].values())}
    spec["sha256"] = {**shards, **spec.get("sha256", {}), **files}
    atomic_replace(index, lambda tmp: Path(tmp).write_text(json.dumps(spec, indent=1)))


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a single-file or sharded checkpoint; returns (tensors, metadata with JSON decoded).

    Shards are checked against the index's SHA-256s, and each shard's own metadata must be
    the index's (an edited index cannot pair a new config with old weights)."""
    path = Path(path)
    index = _index_path(path)
    if path.exists():
        tensors, raw_meta = _load_file(path)
    elif index.exists():
        raw_meta, weight_map, checksums = _read_index(index)
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = path.with_name(shard)
            if not shard_path.exists():
                raise CheckpointError(f"shard {shard_path} listed in {index} is missing")
            if shard in checksums and sha256_file(shard_path) != checksums[shard]:
                raise CheckpointError(f"corrupt checkpoint {shard_path}: its SHA-256 does not "
                                      f"match the one recorded in {index}")
            shard_tensors, shard_meta = _load_file(shard_path)
            if checksums and shard_meta != raw_meta:
                differ = sorted(k for k in set(raw_meta) | set(shard_meta)
                                if raw_meta.get(k) != shard_meta.get(k))
                raise CheckpointError(f"{index} metadata {differ} differs from the metadata "
                                      f"saved with the weights in {shard_path}: edited index?")
            tensors.update(shard_tensors)
        missing = set(weight_map) - set(tensors)
        if missing:
            raise CheckpointError(f"{index} lists tensors absent from its shards: "
                                  f"{sorted(missing)[:5]}")
    else:
        raise CheckpointError(f"no checkpoint at {path} (nor a sharded {index.name})")
    return tensors, _decode(raw_meta)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata (JSON decoded) without reading its tensors (not verified: use
    ``load_weights`` for that)."""
    path = Path(path)
    index = _index_path(path)
    if path.exists():
        try:
            with safe_open(str(path), framework="pt") as f:
                return _decode(f.metadata() or {})
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"corrupt checkpoint {path}: {err}") from err
    if index.exists():
        return _decode(_read_index(index)[0])
    raise CheckpointError(f"no checkpoint at {path} (nor a sharded {index.name})")


def _decode(raw_meta: dict[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for key, value in raw_meta.items():
        try:
            metadata[key] = json.loads(value)
        except json.JSONDecodeError:
            metadata[key] = value
    return metadata


def load_modules(modules: dict[str, torch.nn.Module], tensors: dict[str, torch.Tensor],
                 source: str | Path) -> None:
    """Load each module from the tensors named ``<its name>.<param>`` (strictly, see
    ``load_into``); errors name ``source`` and the module."""
    for name, module in modules.items():
        prefix = f"{name}."
        load_into(module, {k[len(prefix):]: v for k, v in tensors.items()
                           if k.startswith(prefix)}, f"{source} [{name}]")


def load_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load ``tensors`` into ``module`` (cast to its dtypes); errors name ``source``."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{source} does not fit {type(module).__name__}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}"
        )
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})
