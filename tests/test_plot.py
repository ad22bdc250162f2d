"""The plot command turns a run's CSV logs into one PNG per stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.plot import main, read_series


def test_plot_writes_png_per_stage(tmp_path: Path) -> None:
    stage = tmp_path / "diffusion"
    stage.mkdir()
    (stage / "log.csv").write_text("step,time,loss,grad_norm\n1,0,2.0,1.0\n2,0,1.5,0.9\n")
    (stage / "val_log.csv").write_text("step,time,loss_t0.5\n2,0,1.7\n")
    (tmp_path / "latents").mkdir()  # a stage without logs is skipped
    main([str(tmp_path)])
    png = stage / "curves.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    assert read_series(stage / "log.csv")["loss"] == [(1, 2.0), (2, 1.5)]


def test_plot_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no run directory"):
        main([str(tmp_path / "missing")])
    with pytest.raises(SystemExit, match="nothing to plot"):
        main([str(tmp_path)])
