"""Benchmark reporting: every benchmark prints one table for people and one JSON line for tools."""

from __future__ import annotations

import json
import os
import platform
from typing import Any


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def print_report(title: str, rows: list[dict[str, Any]], extra: dict[str, Any] | None = None,
                 json_path: str | None = None) -> dict[str, Any]:
    """Print ``rows`` as an aligned table, then the whole result as JSON (optionally to a file)."""
    result = {"benchmark": title, "machine": machine_info(), "rows": rows, **(extra or {})}
    if rows:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        print(f"\n{title}")
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
        print("  ".join("-" * w for w in widths))
        for r in cells:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    text = json.dumps(result)
    print(text)
    if json_path:
        with open(json_path, "w") as f:
            f.write(text + "\n")
    return result


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
