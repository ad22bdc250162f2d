"""Where and in what precision models run: resolvers of the "auto" | "cpu" | "cuda" device
names and the "fp32" | "bf16" inference dtypes."""

from __future__ import annotations

import torch

DEVICE_NAMES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> str:
    """"auto" -> "cuda" when a GPU is visible, else "cpu"; "cuda" without one is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but no CUDA device is available")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device must be one of {DEVICE_NAMES} (or cuda:N), got {name!r}")
    return name


# bf16 inference: on CPUs with AMX / avx512_bf16 units a world steps ~2x faster than in fp32
# (the generator's matmuls ~7x); on others it is slower, so fp32 stays the default.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    """"fp32" | "bf16" (or a torch dtype among those) -> the torch dtype; anything else is an
    error naming the choices."""
    if isinstance(name, torch.dtype) and name in DTYPES.values():
        return name
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {name!r}")
    return DTYPES[name]
