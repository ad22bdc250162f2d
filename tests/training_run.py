"""The tiny training run the training tests share: a 4-episode dataset recorded from the real
game and every stage trained a few steps into one run directory (the ``data_root`` and
``pipeline`` fixtures of conftest.py), plus the overrides that keep every run tiny."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from training.collect import CollectConfig, collect
from training.config import TrainConfig
from training.train import compose_config, run_stage

TRAINED_STAGES = ("vae", "diffusion", "consistency", "heads", "adversarial")
PIPELINE_STEPS = {"vae": 3, "diffusion": 30, "consistency": 3, "heads": 3, "adversarial": 3}


def record_tiny_data(root: Path) -> Path:
    collect(CollectConfig(root=str(root), num_episodes=4, steps_per_episode=20, width=64,
                          height=48, workers=1, val_every=2), progress=False)
    return root


def overrides(data_root: Path, out_dir: Path, *extra: str) -> list[str]:
    return ["model=tiny", f"data.root={data_root}", f"run.out_dir={out_dir}",
            "run.batch_size=2", "data.clip_steps=3", "data.val_batches=1", "run.progress=false",
            "run.threads=1", "run.log_every=1", "run.eval_every=1000", "optim.warmup_steps=1",
            "adversarial.rollout_steps=2", *extra]


def make_cfg(items: list[str]) -> TrainConfig:
    return compose_config(items)


def randomize(module: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """DiT output/adaLN layers start at zero: every rollout would be trivial. Randomise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def train_pipeline(data_root: Path, out: Path) -> dict:
    """Every stage in order into one run directory."""
    metrics = {}
    for stage in ("vae", "latents", "diffusion", "consistency", "heads", "adversarial", "export"):
        extra = [f"stage={stage}", f"run.steps={PIPELINE_STEPS.get(stage, 0)}"]
        if stage == "diffusion":
            extra.append("optim.lr=1e-3")
        metrics[stage] = run_stage(make_cfg(overrides(data_root, out, *extra)))
    return {"out": out, "metrics": metrics}


def fresh_run_dir(pipeline: dict, tmp_path: Path, *stages: str) -> Path:
    """A new run directory holding copies of some finished stages of the pipeline."""
    for stage in stages:
        shutil.copytree(pipeline["out"] / stage, tmp_path / stage)
    return tmp_path
