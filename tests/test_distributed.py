"""Multi-process training on CPU: ``torchrun --nproc_per_node=2`` with gloo.

1. The real CLI (``-m training.train stage=diffusion``, then ``stage=consistency``) under
   torchrun on the tiny dataset: it finishes, rank 0 alone writes one checkpoint and one log.
2. DDP really averages: a small script builds the stage model, wraps it with
   ``training.trainer.wrap_distributed``, takes one step on rank-dependent data and checks,
   with ``all_gather``, that the gradient is the mean of the per-rank gradients and that the
   parameters are identical on both ranks afterwards.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from training.collect import CollectConfig, collect
from training.config import ModelConfig, TrainConfig
from training.train import run_stage


def _torchrun_missing() -> str | None:
    if not dist.is_available() or not dist.is_gloo_available():
        return "torch.distributed with gloo is not available in this torch build"
    if importlib.util.find_spec("torch.distributed.run") is None:
        return "torchrun (torch.distributed.run) is not available"
    return None


pytestmark = pytest.mark.skipif(_torchrun_missing() is not None,
                                reason=_torchrun_missing() or "")

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def latents_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Tiny dataset -> 1-step VAE -> cached latents (what stage=diffusion needs)."""
    data = tmp_path_factory.mktemp("tinydata")
    collect(CollectConfig(root=str(data), num_episodes=3, steps_per_episode=12, width=64,
                          height=48, workers=1, val_every=3), progress=False)
    out = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()
    try:
        for stage, steps in (("vae", 1), ("latents", 0)):
            cfg = TrainConfig(stage=stage)
            cfg.model = _tiny_model()
            cfg.data.root, cfg.data.clip_steps, cfg.data.val_batches = str(data), 3, 1
            cfg.run.out_dir, cfg.run.steps, cfg.run.batch_size = str(out), steps, 1
            cfg.run.progress, cfg.run.threads = False, 1
            cfg.adversarial.disc_layers = [0, 1]
            run_stage(cfg)
    finally:
        torch.set_num_threads(threads)
    return data, out


def _tiny_model() -> ModelConfig:
    from aapt_world.transformer import DiTConfig
    from aapt_world.vae import VAEConfig

    return ModelConfig(
        name="tiny",
        vae=VAEConfig(height=48, width=64, hi_channels=4, enc_channels=16, temporal_channels=16,
                      dec_channels=16, norm_groups=4, light_temporal_channels=8,
                      light_dec_channels=8),
        dit=DiTConfig(latent_height=6, latent_width=8, dim=64, depth=2, heads=4, cond_dim=16,
                      window=3),
        cond_hidden=32)


@pytest.mark.parametrize("stage", ["diffusion", "consistency"])  # in order: CD needs stage 1
def test_torchrun_two_processes(latents_run: tuple[Path, Path], stage: str) -> None:
    """Consistency distillation also runs the DDP-wrapped student twice per step (its target
    under no_grad, then with grad): DDP must accept that."""
    data, out = latents_run
    steps = 4
    cmd = [*TORCHRUN, "-m", "training.train", f"stage={stage}", "model=tiny",
           f"data.root={data}", f"run.out_dir={out}", "run.device=cpu", f"run.steps={steps}",
           "run.batch_size=1", "data.clip_steps=3", "data.val_batches=1", "run.log_every=1",
           "run.progress=false", "run.threads=1", "optim.warmup_steps=1"]
    done = subprocess.run(cmd, cwd=out, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    directory = out / stage
    files = sorted(p.name for p in directory.iterdir())
    assert files == ["log.csv", "model.safetensors", "trainer_state.pt", "val_log.csv"], files
    assert torch.load(directory / "trainer_state.pt", weights_only=True)["step"] == steps
    with open(directory / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))  # rank 0 logs, once


DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    import torch.distributed as dist
    from training.config import TrainConfig
    from training.models import build_world_model
    from training.stages.diffusion import diffusion_loss
    from training.trainer import adamw, init_distributed, wrap_distributed
    from aapt_world.transformer import DiTConfig

    torch.set_num_threads(1)
    ranks = init_distributed("cpu")
    cfg = TrainConfig()
    cfg.model.dit = DiTConfig(latent_channels=4, latent_height=4, latent_width=4, dim=32,
                              depth=2, heads=2, cond_dim=16, window=3)
    cfg.model.cond_hidden = 16
    torch.manual_seed(100 + ranks.rank)  # different init per rank: DDP must broadcast rank 0's
    model = build_world_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)

    def gather(x):
        out = [torch.zeros_like(x) for _ in range(ranks.world_size)]
        dist.all_gather(out, x.contiguous())
        return out

    flat = lambda ts: torch.cat([t.reshape(-1) for t in ts])
    before = flat([p.detach() for p in model.parameters()])
    ddp = wrap_distributed(model, ranks)
    after_wrap = gather(flat([p.detach() for p in model.parameters()]))
    reference = build_world_model(cfg)
    reference.load_state_dict(model.state_dict())

    g = torch.Generator().manual_seed(ranks.rank)  # rank-dependent data and noise
    z = torch.randn(2, 4, 4, 4, 4, generator=g)
    conds = torch.rand(2, 3, 4, 4, generator=g)
    t = torch.rand(2, generator=g)
    loss = diffusion_loss(ddp, z, conds, t, torch.Generator().manual_seed(7 + ranks.rank))
    opt = adamw(cfg, model.parameters())
    opt.zero_grad()
    loss.backward()
    local = diffusion_loss(reference, z, conds, t, torch.Generator().manual_seed(7 + ranks.rank))
    local.backward()
    ddp_grad = flat([p.grad for p in model.parameters()])
    local_grad = flat([p.grad for p in reference.parameters()])
    local_grads = gather(local_grad)
    mean_grad = sum(local_grads) / ranks.world_size
    opt.step()
    params = gather(flat([p.detach() for p in model.parameters()]))
    losses = gather(loss.detach().reshape(1))
    result = {
        "rank": ranks.rank,
        "init_differed": not torch.equal(gather(before)[0], gather(before)[1]),
        "synced_at_wrap": all(torch.equal(after_wrap[0], x) for x in after_wrap),
        "local_grads_differ": not torch.allclose(local_grads[0], local_grads[1]),
        "grad_is_mean_err": (ddp_grad - mean_grad).abs().max().item(),
        "grad_scale": mean_grad.abs().max().item(),
        "params_equal": all(torch.equal(params[0], x) for x in params),
        "losses_differ": losses[0].item() != losses[1].item(),
    }
    with open(sys.argv[1] + f".{ranks.rank}.json", "w") as f:
        json.dump(result, f)
    dist.barrier()  # both ranks done before teardown (gloo can abort on an uneven exit)
    dist.destroy_process_group()
    # gloo's threads can still abort in the interpreter's exit under a loaded CPU ("terminate
    # called without an active exception"), after the results above are written and closed
    os._exit(0)
""")


def run_rank_script(tmp_path: Path, source: str) -> list[dict]:
    """Run ``source`` under torchrun on 2 processes; each rank writes ``<argv[1]>.<rank>.json``."""
    script = tmp_path / "rank_check.py"
    script.write_text(source)
    result = tmp_path / "result"
    done = subprocess.run([*TORCHRUN, str(script), str(result)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    return [json.loads(Path(f"{result}.{rank}.json").read_text()) for rank in (0, 1)]


def test_ddp_averages_gradients(tmp_path: Path) -> None:
    for r in run_rank_script(tmp_path, DDP_SCRIPT):
        assert r["init_differed"] and r["synced_at_wrap"]  # rank 0's weights broadcast
        assert r["losses_differ"] and r["local_grads_differ"]  # the ranks saw different data
        assert r["grad_is_mean_err"] <= 1e-6 * max(1.0, r["grad_scale"]), r  # DDP averaged
        assert r["params_equal"], r  # identical after the optimizer step on both ranks


FSDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch, torch.distributed as dist
    from aapt_world.conditions import ConditionConfig
    from aapt_world.transformer import dit_config
    from aapt_world.world_model import WorldModel
    from training.trainer import init_distributed, wrap_distributed

    ranks = init_distributed("cpu")
    torch.manual_seed(0)  # same init on both ranks
    cfg = dit_config("tiny", latent_height=4, latent_width=4)
    cond = ConditionConfig(kind="action", action_dim=4, cond_dim=cfg.cond_dim, hidden_dim=16)
    reference = WorldModel(cfg, cond)
    for p in reference.parameters():
        torch.nn.init.normal_(p, std=0.05)
    model = WorldModel(cfg, cond)
    model.load_state_dict(reference.state_dict())
    model = wrap_distributed(model, ranks, fsdp=True)
    g = torch.Generator().manual_seed(100 + ranks.rank)  # rank-dependent data
    x, prev = torch.randn(2, 16, 3, 4, 4, generator=g), torch.randn(2, 16, 3, 4, 4, generator=g)
    conds = torch.rand(2, 3, 4, 4, generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x, prev, conds, torch.full((2,), 0.5)).square().mean().backward()
    opt.step()
    sharded = type(next(model.parameters())).__name__
    full = torch.cat([p.full_tensor().flatten() for p in model.parameters()])
    # reference: one SGD step on the mean of both ranks' gradients
    reference(x, prev, conds, torch.full((2,), 0.5)).square().mean().backward()
    grads = torch.cat([p.grad.flatten() for p in reference.parameters()])
    dist.all_reduce(grads)
    expected = torch.cat([p.detach().flatten() for p in reference.parameters()]) - 0.1 * grads / 2
    with open(sys.argv[1] + f".{ranks.rank}.json", "w") as f:
        json.dump({"sharded": sharded, "err": (full - expected).abs().max().item()}, f)
    dist.barrier()  # both ranks done before teardown (gloo can abort on an uneven exit)
    dist.destroy_process_group()
    # gloo's threads can still abort in the interpreter's exit under a loaded CPU ("terminate
    # called without an active exception"), after the results above are written and closed
    os._exit(0)
""")


def test_fsdp2_fully_shard_step_matches_averaged_gradient(tmp_path: Path) -> None:
    """FSDP2 (``fully_shard`` per block) on 2 gloo CPU processes: one optimizer step equals a
    single-process step on the mean of both ranks' gradients."""
    for r in run_rank_script(tmp_path, FSDP_SCRIPT):
        assert r["sharded"] == "DTensor", r
        assert r["err"] < 1e-5, r


def test_torchrun_fsdp2_stage_checkpoints_and_resumes(latents_run: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    """``run.fsdp=true``: the diffusion stage trains sharded on 2 processes, writes a full
    (unsharded) checkpoint that a single process can load, and resumes from it sharded."""
    import shutil

    data, out = latents_run
    run = tmp_path / "run"
    shutil.copytree(out / "vae", run / "vae")
    shutil.copytree(out / "latents", run / "latents")
    base = [*TORCHRUN, "-m", "training.train", "stage=diffusion", "model=tiny",
            f"data.root={data}", f"run.out_dir={run}", "run.device=cpu", "run.fsdp=true",
            "run.batch_size=1", "data.clip_steps=3", "data.val_batches=1", "run.log_every=1",
            "run.progress=false", "run.threads=1", "optim.warmup_steps=1", "run.ckpt_every=2"]
    for steps in (2, 4):  # the second run resumes the first's sharded training
        done = subprocess.run([*base, f"run.steps={steps}"], cwd=run, env=_env(),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
        state = torch.load(run / "diffusion" / "trainer_state.pt", weights_only=True)
        assert state["step"] == steps
    with open(run / "diffusion" / "log.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]
    # the saved weights are full tensors: a plain single-process model loads them
    from training.models import build_world_model
    from training.trainer import load_stage_weights

    cfg = TrainConfig(stage="diffusion", model=_tiny_model())
    cfg.run.out_dir = str(run)
    load_stage_weights(cfg, "diffusion", {"model": build_world_model(cfg)})
