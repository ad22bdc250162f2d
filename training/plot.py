"""Plot a training run's logs: one PNG per stage with every logged metric against the step.

    aapt-world plot runs/doom          # -> runs/doom/<stage>/curves.png
"""

from __future__ import annotations

import math
from pathlib import Path

from aapt_world.cli_options import command_parser
from training.trainer import read_log

SKIP = {"step", "time"}


def read_series(path: Path) -> dict[str, list[tuple[int, float]]]:
    """A stage log as one (step, value) series per column (``read_log`` rows)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in read_log(path):
        for key, value in row.items():
            if key not in SKIP and value == value:  # NaN: an empty cell
                series.setdefault(key, []).append((int(row["step"]), value))
    return series


def plot_stage(stage_dir: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for name, prefix in (("log.csv", ""), ("val_log.csv", "val_")):
        if (stage_dir / name).exists():
            series.update({prefix + k: v for k, v in read_series(stage_dir / name).items()})
    if not series:
        return None
    cols = min(3, len(series))
    rows = math.ceil(len(series) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, (key, points) in zip(axes.flat, sorted(series.items())):
        steps, values = zip(*points)
        ax.plot(steps, values, marker="." if len(points) < 30 else None)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.suptitle(f"{stage_dir.parent.name} / {stage_dir.name}")
    fig.tight_layout()
    out = stage_dir / "curves.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = command_parser("aapt-world plot", "training curves of a run, one PNG per stage")
    parser.add_argument("run_dir", help="a training run's out_dir (or one stage directory)")
    args = parser.parse_args(argv)
    run = Path(args.run_dir)
    if not run.is_dir():
        raise SystemExit(f"no run directory at {run}")
    stages = [run] if (run / "log.csv").exists() else sorted(p for p in run.iterdir() if p.is_dir())
    written = [out for out in map(plot_stage, stages) if out is not None]
    if not written:
        raise SystemExit(f"no log.csv under {run}: nothing to plot")
    for out in written:
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
