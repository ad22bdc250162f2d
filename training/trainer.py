"""What every training stage shares: devices, processes, checkpoints, resume, logs, progress.

A stage owns its models and optimizers and implements ``train_step(step) -> metrics``. The
``Trainer`` runs steps up to ``run.steps``, logs metrics to ``<stage_dir>/log.csv`` and a tqdm
bar, and every ``run.ckpt_every`` steps writes, atomically:

- ``<stage_dir>/trainer_state.pt``: the resume point in ONE file: module weights, optimizer
  states, step, torch RNG state (torch.save of plain tensors and numbers only, so
  ``torch.load(weights_only=True)`` reads it),
- ``<stage_dir>/model.safetensors``: fp32 weights of every module (+ config JSON in metadata),
  the export later stages and inference read (re-exported on resume if a kill left it behind).

Data sampling is a pure function of (seed, rank, step) — see :func:`step_rng` — so a resumed
run draws exactly the clips the uninterrupted run would have drawn.

Re-running the same command after a crash (even ``kill -9``) resumes from the last checkpoint
with the same step count; log rows written after that checkpoint are dropped (they are
redone). Under ``torchrun`` every process runs the stage on its own data shard; gradients
are averaged by DDP (or sharded with FSDP2 for large models); rank 0 writes.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from aapt_world.checkpoint import (
    CheckpointError,
    atomic_replace,
    load_into,
    load_modules,
    load_weights,
    save_weights,
    trim_csv_log,
    weights_exist,
)
from aapt_world.devices import resolve_device
from aapt_world.world import WEIGHTS as WORLD_WEIGHTS
from training.config import TrainConfig
from training.ema import EMA_SUFFIX, WeightEMA

WEIGHTS = "model.safetensors"
GENERATOR_MODULES = ("model", "generator")  # what a stage calls its world model
STATE = "trainer_state.pt"
LOG = "log.csv"
VAL_LOG = "val_log.csv"


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> Dist:
    """Join the torchrun process group if there is one (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def finish_distributed(ranks: Dist) -> None:
    """Leave the process group together once every rank has finished its stage (barrier, then
    destroy), so no collective is still in flight when a worker exits; train.main then skips
    the interpreter's teardown (see there)."""
    if ranks.world_size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def pick_device(name: str, ranks: Dist) -> torch.device:
    """``run.device`` for this rank: a GPU per local rank under torchrun."""
    try:
        name = resolve_device(name)
    except ValueError as err:
        raise ValueError(f"run.device: {err}") from None
    if name == "cuda":
        torch.cuda.set_device(ranks.local_rank)
        return torch.device("cuda", ranks.local_rank)
    return torch.device("cpu")


def wrap_distributed(module: torch.nn.Module, ranks: Dist, fsdp: bool = False) -> torch.nn.Module:
    """DDP (default) or FSDP2 ``fully_shard`` per block for large models; identity if 1 process."""
    if ranks.world_size == 1:
        return module
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in getattr(module, "blocks", []):
            fully_shard(block)
        return fully_shard(module)
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [module_device(module).index] if module_device(module).type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


def module_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)


def seed_everything(seed: int) -> None:
    # Denormal floats make CPU matmuls 10-100x slower once small weights/gradients appear.
    torch.set_flush_denormal(True)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_rng(cfg: TrainConfig, ranks: Dist, step: int) -> np.random.Generator:
    """The data RNG of one step of one process: resumable without saving any state."""
    return np.random.default_rng((cfg.run.seed, ranks.rank, step))


def gaussian(rng: np.random.Generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``like``, drawn from the step's numpy rng."""
    return torch.from_numpy(rng.standard_normal(like.shape).astype(np.float32)).to(like.device)


def stage_dir(cfg: TrainConfig, name: str) -> Path:
    return Path(cfg.run.out_dir) / name


def adamw(cfg: TrainConfig, params: Any) -> torch.optim.AdamW:
    o = cfg.optim
    return torch.optim.AdamW(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay)


def warmup_lr(opt: torch.optim.Optimizer, optim_cfg: Any, step: int, lr: float | None = None
              ) -> None:
    """Linear warm-up over ``optim.warmup_steps``, then constant, then (if ``optim.decay_start``
    >= 0) a linear decay to ``min_lr_ratio`` over ``decay_steps``."""
    scale = min(1.0, (step + 1) / max(1, optim_cfg.warmup_steps))
    if optim_cfg.decay_start >= 0 and step >= optim_cfg.decay_start:
        progress = min(1.0, (step - optim_cfg.decay_start) / optim_cfg.decay_steps)
        scale *= 1.0 - (1.0 - optim_cfg.min_lr_ratio) * progress
    for group in opt.param_groups:
        group["lr"] = (lr if lr is not None else optim_cfg.lr) * scale


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, params: Any,
                   grad_clip: float) -> torch.Tensor:
    """zero_grad -> backward -> clip the gradient norm -> step; returns the norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    return norm


def config_metadata(cfg: TrainConfig) -> dict[str, Any]:
    return {"config": dataclasses.asdict(cfg), "stage": cfg.stage}


def load_stage_weights(cfg: TrainConfig, stage: str, modules: dict[str, torch.nn.Module]) -> None:
    """Load modules saved by an earlier stage of this run (``<out_dir>/<stage>``)."""
    path = stage_dir(cfg, stage) / WEIGHTS
    if not weights_exist(path):
        raise FileNotFoundError(f"stage {cfg.stage!r} needs the {stage!r} stage's weights at "
                                f"{path}: run `aapt-world train stage={stage}` first")
    load_modules(modules, load_weights(path)[0], path)


def load_stage_generator(cfg: TrainConfig, stage: str, name: str, module: torch.nn.Module,
                         prefer_average: bool = True) -> bool:
    """An earlier stage's generator (its module ``name``) into ``module``: the stage's weight
    average when it kept one (``run.ema_decay``) and ``prefer_average``, else its live weights.
    Returns whether the average was loaded."""
    path = stage_dir(cfg, stage) / WEIGHTS
    if not weights_exist(path):
        raise FileNotFoundError(f"stage {cfg.stage!r} needs the {stage!r} stage's weights at "
                                f"{path}: run `aapt-world train stage={stage}` first")
    tensors = load_weights(path)[0]
    average = f"{name}{EMA_SUFFIX}"
    use_average = prefer_average and any(k.startswith(average + ".") for k in tensors)
    load_modules({average if use_average else name: module}, tensors, path)
    return use_average


def pick_generator(tensors: dict[str, torch.Tensor], source: Path
                   ) -> tuple[dict[str, torch.Tensor], bool]:
    """A world model's weights (unprefixed) among a file's tensors: a world's ``generator.*``
    or a generator stage's ``model.*`` / ``generator.*``, the weight average ``<name>_ema.*``
    first when the stage kept one (the generator export ships); and whether it was the average.
    """
    for name in ("generator", "model"):
        for prefix, averaged in ((f"{name}{EMA_SUFFIX}.", True), (f"{name}.", False)):
            found = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if found:
                return found, averaged
    raise CheckpointError(f"{source} holds no generator weights (generator.* or model.*)")


def generator_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A world model's weights (unprefixed) from a world directory or a generator stage's
    safetensors (see :func:`pick_generator`)."""
    file = path / WORLD_WEIGHTS if path.is_dir() else path
    return pick_generator(load_weights(file)[0], file)[0]


def load_generator_weights(path: Path, model: torch.nn.Module) -> None:
    """Load a world model from a world directory or a generator stage's file."""
    load_into(model, generator_tensors(path), str(path))


class Trainer:
    """Runs one stage: resume, step loop, logging, atomic checkpoints."""

    def __init__(self, cfg: TrainConfig, stage_dir: Path, modules: dict[str, torch.nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], ranks: Dist,
                 adapt_init: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
                 | None = None, ema_module: str | None = None) -> None:
        self.cfg, self.dir, self.ranks = cfg, stage_dir, ranks
        self.modules, self.optimizers = modules, optimizers
        self.adapt_init = adapt_init  # maps run.init_from tensors onto this stage's layout
        # the weight average of one module (run.ema_decay > 0), saved as <module>_ema.*
        self.ema_name = f"{ema_module}{EMA_SUFFIX}" if ema_module else ""
        self.ema = (WeightEMA(unwrap(modules[ema_module]), cfg.run.ema_decay)
                    if ema_module and cfg.run.ema_decay > 0 else None)
        self.step = 0
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- checkpoints ----------------------------------------------------------------------------

    @property
    def sharded(self) -> bool:
        return self.cfg.run.fsdp and self.ranks.world_size > 1

    def full_states(self) -> tuple[dict[str, dict], dict[str, dict]]:
        """Full (unsharded) module and optimizer states; a collective call under FSDP2."""
        if not self.sharded:
            return ({name: unwrap(m).state_dict() for name, m in self.modules.items()},
                    {k: o.state_dict() for k, o in self.optimizers.items()})
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        (name, module), = self.modules.items()  # run.fsdp stages have one module, one optimizer
        (key, opt), = self.optimizers.items()
        model_sd, opt_sd = get_state_dict(
            module, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {name: model_sd}, {key: opt_sd}

    def state_tensors(self, modules: dict[str, dict] | None = None) -> dict[str, torch.Tensor]:
        modules = modules if modules is not None else self.full_states()[0]
        if self.ema is not None:
            modules = {**modules, self.ema_name: self.ema.shadow.state_dict()}
        return {f"{name}.{k}": v for name, sd in modules.items() for k, v in sd.items()}

    def save(self) -> None:
        module_states, optimizer_states = self.full_states()  # every rank: may be collective
        if not self.ranks.is_main:
            return
        # The resume point is ONE atomic file (weights + optimizers + RNG): a kill between two
        # files can never pair new weights with an old optimizer state and step. It is written
        # first; model.safetensors (what later stages and inference read) follows, and
        # resume() re-exports it if a kill left it behind.
        state = {
            "step": self.step,
            "modules": module_states,
            "optimizers": optimizer_states,
            "torch_rng": torch.get_rng_state(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        atomic_replace(self.dir / STATE, lambda tmp: torch.save(state, tmp))
        self.export(module_states)

    def export(self, module_states: dict[str, dict] | None = None) -> None:
        save_weights(self.dir / WEIGHTS, self.state_tensors(module_states),
                     {**config_metadata(self.cfg), "step": self.step})

    def remove_orphan_temporaries(self) -> list[Path]:
        """Half-written checkpoint files (``.<name>.*.tmp``) a kill left behind."""
        orphans = sorted(self.dir.glob(".*.tmp")) if self.ranks.is_main else []
        for path in orphans:
            path.unlink(missing_ok=True)
        return orphans

    def resume(self) -> bool:
        """Load the last checkpoint of this stage if one exists. Returns whether it did."""
        resumed = self._resume()
        if self.ranks.is_main and resumed:
            steps = self.cfg.run.steps
            note = (f"run.steps={steps} already reached: nothing to train (raise run.steps to "
                    "train further)" if self.step >= steps else f"training to step {steps}")
            print(f"{self.cfg.stage}: resumed at step {self.step} from {self.dir / STATE}; "
                  f"{note}", file=sys.stderr, flush=True)
        return resumed

    def _resume(self) -> bool:
        weights, state_path = self.dir / WEIGHTS, self.dir / STATE
        self.remove_orphan_temporaries()
        if not state_path.exists():
            if self.cfg.run.init_from:
                self.initialise_from(Path(self.cfg.run.init_from))
            if self.ema is not None:
                self.ema.restart()  # the average starts from the initial weights
            return False
        state = torch.load(state_path, weights_only=True)
        if not self._load_states(state, state_path):
            return False
        if self.ema is not None:
            if "ema" in state:
                self.ema.load_state_dict(state["ema"])
            else:  # a stage run before run.ema_decay was set: average from here on
                self.ema.restart()
                print(f"{self.cfg.stage}: {state_path} holds no weight average; "
                      f"{self.ema_name} starts from the resumed weights", file=sys.stderr)
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        if self.ranks.is_main:
            if not weights_exist(weights) or load_weights(weights)[1].get("step") != self.step:
                self.export(state.get("modules"))  # killed between the state and the export
            for file in (LOG, VAL_LOG):  # rows logged after the checkpoint are redone
                trim_csv_log(self.dir / file, "step", self.step)
        return True

    def _load_states(self, state: dict[str, Any], state_path: Path) -> bool:
        """Modules and optimizers from a resume state (False: nothing to resume from)."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            (name, module), = self.modules.items()
            (key, opt), = self.optimizers.items()
            set_state_dict(module, opt, model_state_dict=state["modules"][name],
                           optim_state_dict=state["optimizers"][key],
                           options=StateDictOptions(full_state_dict=True))
            return True
        if "modules" in state:
            for name, m in self.modules.items():
                load_into(unwrap(m), state["modules"][name], f"{state_path} [{name}]")
        elif weights_exist(self.dir / WEIGHTS):  # states written before weights joined them
            load_stage_weights(self.cfg, self.dir.name,
                               {name: unwrap(m) for name, m in self.modules.items()})
        else:
            return False
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        return True

    def initialise_from(self, path: Path) -> None:
        """Fresh stage: load every module from ``path`` (tensors named ``<module>.<param>``).

        ``path`` may also be a world directory (``aapt-world train stage=export``, e.g. the
        shipped ``worlds/doom``): the stage's generator (module ``model`` or ``generator``)
        then starts from the world's generator; other modules keep their fresh init."""
        modules = {name: unwrap(m) for name, m in self.modules.items()}
        if path.is_dir():
            modules = {n: m for n, m in modules.items() if n in GENERATOR_MODULES}
            if not modules:
                raise CheckpointError(f"run.init_from={path} is a world: only a "
                                      f"generator stage (modules {GENERATOR_MODULES}) can "
                                      "start from it")
            generator = generator_tensors(path)
            tensors = {f"{name}.{k}": v for name in modules for k, v in generator.items()}
            path = path / WORLD_WEIGHTS
        else:
            tensors, _ = load_weights(path)
        if self.adapt_init is not None:
            tensors = self.adapt_init(tensors)
        load_modules(modules, tensors, path)

    # -- logging --------------------------------------------------------------------------------

    def log(self, metrics: dict[str, float], file: str = LOG) -> None:
        if not self.ranks.is_main:
            return
        path = self.dir / file
        row = {"step": self.step, "time": time.time(), **metrics}
        new = not path.exists()
        fields = list(row) if new else next(csv.reader(open(path)))
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    # -- loop -------------------------------------------------------------------------------------

    def run(self, train_step: Any, units_per_step: int = 0, unit: str = "frames",
            evaluate: Any = None) -> dict[str, float]:
        """Call ``train_step(step)`` until ``run.steps`` (or ``run.max_minutes`` of wall time:
        then the last step is logged, evaluated and checkpointed like the final one); returns the
        last metrics."""
        run = self.cfg.run
        bar = tqdm(total=run.steps, initial=self.step, desc=self.cfg.stage,
                   disable=not (run.progress and self.ranks.is_main), dynamic_ncols=True)
        metrics: dict[str, float] = {}
        start, start_step = time.perf_counter(), self.step
        while self.step < run.steps:
            metrics = {k: float(v) for k, v in train_step(self.step).items()}
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            bar.update(1)
            elapsed = time.perf_counter() - start
            if units_per_step:
                rate = units_per_step * (self.step - start_step) / elapsed
                metrics[f"{unit}_per_s"] = rate * self.ranks.world_size
            last = self.step == run.steps or self._out_of_time(elapsed)
            if self.step % run.log_every == 0 or last:
                bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()})
                self.log(metrics)
            if evaluate is not None and (self.step % run.eval_every == 0 or last):
                self.log(evaluate(), file=VAL_LOG)
            if self.step % run.ckpt_every == 0 or last:
                self.save()
            if last:
                break
        bar.close()
        return metrics


    def _out_of_time(self, elapsed: float) -> bool:
        """``run.max_minutes`` reached? Decided on rank 0 and shared, so all ranks stop together."""
        limit = self.cfg.run.max_minutes
        if limit <= 0:
            return False
        done = elapsed >= 60.0 * limit
        if self.ranks.world_size == 1:
            return done
        flag = torch.tensor([float(done)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.broadcast(flag, src=0)
        return bool(flag.item())


@dataclasses.dataclass
class StageParts:
    """One stage, built: what its ``run()`` trains and ``aapt-world bench train`` times.

    Every stage module has ``build(cfg, ranks, device, data=None, pretrained=True)``: ``data``
    is its (train, val) datasets (None: the run's own), ``pretrained`` loads the earlier stages'
    weights it starts from (off in the benchmark, which times random weights)."""

    modules: dict[str, torch.nn.Module]  # checkpointed under these names
    optimizers: dict[str, torch.optim.Optimizer]
    train_step: Callable[[int], dict[str, Any]]
    evaluate: Callable[[], dict[str, float]] | None
    units_per_step: int  # for the throughput column
    unit: str
    trainable: list[torch.nn.Parameter]
    adapt_init: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    ema_module: str | None = None  # the module run.ema_decay averages (the generator)


def train_parts(cfg: TrainConfig, name: str, parts: StageParts, ranks: Dist) -> dict[str, float]:
    """Resume a built stage from ``<out_dir>/<name>`` (or ``run.init_from``) and train it."""
    trainer = Trainer(cfg, stage_dir(cfg, name), parts.modules, parts.optimizers, ranks,
                      adapt_init=parts.adapt_init, ema_module=parts.ema_module)
    trainer.resume()
    return trainer.run(parts.train_step, units_per_step=parts.units_per_step, unit=parts.unit,
                       evaluate=parts.evaluate)


def read_log(path: Path) -> list[dict[str, float]]:
    """The rows of a stage's ``log.csv`` / ``val_log.csv`` as floats, an empty cell as NaN
    ([] if absent)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
                for row in csv.DictReader(f)]


def autocast(device: torch.device, precision: str = "auto") -> Any:
    """The forward passes' autocast for ``run.precision``: "auto" is bf16 on CUDA and fp32 on
    CPU (bf16 is slower than fp32 on CPUs without bf16 matrix units), "bf16" asks for it on
    either (on a CPU with AMX it is the faster one), "fp32" turns it off."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def maybe_compile(module: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``torch.compile`` (inductor, static shapes: a stage's clips keep one shape) when
    ``run.compile`` asks; the caller keeps the plain module for checkpoints and evaluation."""
    if not enabled:
        return module
    # the attention layout is an lru_cache of integers only (clip length, window): tracing
    # through the cache is exact, so dynamo's generic warning about it is noise here
    warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
    return torch.compile(module, dynamic=False)


@contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, w in zip(modules, was):
            m.train(w)
