"""Record episodes of a real source world with scripted players: Doom or the humanoid.

    aapt-world collect root=data/doom num_episodes=64 steps_per_episode=500 workers=2
    aapt-world collect world=humanoid root=data/humanoid num_episodes=32

``world=doom`` (default): ViZDoom maps, player-like explorers (``envs.scripted``).
``world=humanoid``: MuJoCo's humanoid driven by the performer (``envs.motions``); its "maps"
are camera scenes, ``fixed`` or ``orbit`` (``HUMANOID_SCENES``); poses.npy holds the per-frame
record of ``envs.humanoid`` (pose, 3D and 2D keypoints; names in the manifest).

The collection is a fixed plan (``plan_episodes``): episode i runs map ``maps[i % len(maps)]``
with seed ``seed + i``, every map meets every policy, and validation episodes rotate over maps
and policies. Re-running the same command skips
the episodes already on disk and records only what is missing; a crash leaves at most a
temporary directory, which the next run deletes. Every ``val_every``-th episode goes to the
validation split (its position in each block of ``val_every`` rotates).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from aapt_world.constants import COLLECTION_MAPS, DOOM_FPS, HUMANOID_FPS
from envs.actions import COMMAND_NAMES
from envs.doom import POSE_NAMES, DoomConfig, DoomEnv
from envs.humanoid import (
    HUMANOID_SCENES,
    KEYPOINT_NAMES,
    ROOT_NAMES,
    HumanoidConfig,
    HumanoidEnv,
    record_names,
)
from envs.motions import HUMANOID_POLICIES
from envs.motions import JOINTS as HUMANOID_JOINTS
from envs.scripted import POLICIES
from training.dataset import (
    FRAMES_PER_STEP,
    MANIFEST,
    DatasetError,
    Episode,
    check_dataset_meta,
    check_episodes_match,
    completed_episode_ids,
    remove_stale_temporaries,
    validation_episodes,
    write_episode,
    write_manifest,
)

WORLDS = ("doom", "humanoid")
DEFAULT_MAPS = {"doom": list(COLLECTION_MAPS), "humanoid": list(HUMANOID_SCENES)}
DEFAULT_POLICIES = {"doom": ["explorer", "explorer", "explorer", "random"],
                    "humanoid": ["performer"]}
WORLD_POLICIES = {"doom": POLICIES, "humanoid": HUMANOID_POLICIES}


@dataclass
class CollectConfig:
    root: str = "data/doom"
    world: str = "doom"  # doom | humanoid
    scenario: str = "freedoom2"  # Doom only
    maps: list[str] = field(default_factory=list)  # Doom maps or humanoid camera scenes;
    policies: list[str] = field(default_factory=list)  # empty = the world's defaults
    num_episodes: int = 32
    steps_per_episode: int = 500  # 2001 video frames, about 57 s of game at 35 fps
    width: int = 128
    height: int = 96
    seed: int = 0
    val_every: int = 8  # one episode in 8 is validation: 1, 10, 19, ... (see plan_episodes)
    workers: int = 2

    def __post_init__(self) -> None:
        if self.world in WORLDS:
            self.maps = list(self.maps) or list(DEFAULT_MAPS[self.world])
            self.policies = list(self.policies) or list(DEFAULT_POLICIES[self.world])

    def validate(self, extra_players: tuple[str, ...] = ()) -> None:
        """``extra_players``: names of players built by the caller (``collect(players=...)``)."""
        if self.world not in WORLDS:
            raise ValueError(f"world must be one of {WORLDS}, got {self.world!r}")
        if self.world == "doom":
            DoomConfig(scenario=self.scenario, width=self.width, height=self.height).validate()
        else:
            HumanoidConfig(width=self.width, height=self.height).validate()
            unknown_scenes = set(self.maps) - set(HUMANOID_SCENES)
            if unknown_scenes:
                raise ValueError(f"unknown humanoid scenes {sorted(unknown_scenes)}: expected "
                                 f"{sorted(HUMANOID_SCENES)}")
        if self.num_episodes < 2 or self.steps_per_episode < 1:
            raise ValueError(f"num_episodes must be >= 2 (one episode goes to validation) and "
                             f"steps_per_episode >= 1, got {self.num_episodes} and "
                             f"{self.steps_per_episode}")
        if not self.maps or not self.policies:
            raise ValueError("maps and policies must not be empty")
        if self.scenario != "freedoom2" and len(self.maps) != 1:
            raise ValueError(f"scenario {self.scenario} brings its own map: pass one map entry "
                             f"(e.g. maps=[MAP01]), got maps={self.maps}")
        known = [*WORLD_POLICIES[self.world], *extra_players]
        unknown = set(self.policies) - set(known)
        if unknown:
            raise ValueError(f"unknown {self.world} policies {sorted(unknown)}: expected "
                             f"{sorted(known)}")
        if self.workers < 1 or self.val_every < 2:
            raise ValueError("workers must be >= 1 and val_every >= 2")

    def dataset_meta(self) -> dict[str, Any]:
        """What every episode of this dataset shares; a resumed run must agree with it."""
        if self.world == "humanoid":
            joints = HUMANOID_JOINTS
            return {"world": "humanoid", "plan_version": 3, "width": self.width,
                    "height": self.height, "frames_per_step": FRAMES_PER_STEP,
                    "fps": HUMANOID_FPS, "action_names": list(ROOT_NAMES + joints),
                    "pose_names": list(record_names(joints)),
                    "keypoint_names": list(KEYPOINT_NAMES)}
        return {"world": "doom", "plan_version": 3, "scenario": self.scenario, "width": self.width,
                "height": self.height, "frames_per_step": FRAMES_PER_STEP, "fps": DOOM_FPS,
                "action_names": list(COMMAND_NAMES), "pose_names": list(POSE_NAMES)}

    def make_env(self, scene: str) -> Any:
        """The real source env of one planned map / scene."""
        if self.world == "humanoid":
            return HumanoidEnv(HumanoidConfig(width=self.width, height=self.height,
                                              orbit_deg_per_s=HUMANOID_SCENES[scene]))
        return DoomEnv(DoomConfig(scenario=self.scenario, doom_map=scene, width=self.width,
                                  height=self.height, action_type="continuous"))

    def make_policy(self, name: str) -> Any:
        return WORLD_POLICIES[self.world][name]()


@dataclass
class EpisodePlan:
    index: int
    id: str
    scene: str  # the Doom map, or the humanoid's camera scene (meta key "map")
    seed: int
    policy: str
    split: str


def plan_episodes(cfg: CollectConfig) -> list[EpisodePlan]:
    """Episode i: map i mod M; the policy list shifts by one every round of maps, so every map
    meets every policy (with one map, e.g. a scenario's, the policies take turns); one
    validation episode per block of ``val_every``, at a position that moves on by one each
    block, so validation covers every map and policy too (a fixed position would correlate
    with the map/policy cycles)."""
    m, p, n = len(cfg.maps), len(cfg.policies), cfg.num_episodes
    val = validation_episodes(n, cfg.val_every)
    return [
        EpisodePlan(index=i, id=f"ep_{i:06d}", scene=cfg.maps[i % m], seed=cfg.seed + i,
                    policy=cfg.policies[(i % m + i // m) % p],
                    split="val" if i in val else "train")
        for i in range(n)
    ]


def check_plan_matches_disk(root: Path, plans: list[EpisodePlan], steps: int) -> None:
    check_episodes_match(root, {p.id: {"map": p.scene, "seed": p.seed, "policy": p.policy,
                                       "split": p.split} for p in plans}, steps)


def record_episode(env: Any, policy: Any, steps: int, seed: int) -> dict[str, np.ndarray]:
    """Run one episode; returns the arrays of an ``Episode`` (stops early on termination)."""
    rng = np.random.default_rng(seed)
    policy.reset(rng)
    obs, info = env.reset(seed=seed)
    frames, poses = [info["frames"][-1:]], [info["poses"][-1:]]  # frame 0: the reset frame
    actions, rewards, terminated = [], [], []
    for _ in range(steps):
        command = policy.act(obs, info)
        obs, reward, term, trunc, info = env.step(command)
        frames.append(info["frames"])
        poses.append(info["poses"])
        actions.append(info["command"])
        rewards.append(reward)
        terminated.append(term)
        if term or trunc:
            break
    return {
        "frames": np.concatenate(frames), "poses": np.concatenate(poses).astype(np.float32),
        "actions": np.stack(actions).astype(np.float32),
        "rewards": np.asarray(rewards, dtype=np.float32),
        "terminated": np.asarray(terminated, dtype=bool),
    }


Players = Mapping[str, Callable[[], Any]]  # name -> a new player (reset(rng), act(obs, info))


def _worker(args: tuple[dict[str, Any], list[EpisodePlan]],
            players: Players | None = None) -> list[tuple[str, int]]:
    """Record a list of planned episodes in one process (one env instance per map / scene)."""
    cfg_dict, plans = args
    cfg = CollectConfig(**cfg_dict)
    envs: dict[str, Any] = {}
    done = []
    try:
        for plan in plans:
            if plan.scene not in envs:
                envs[plan.scene] = cfg.make_env(plan.scene)
            policy = (players[plan.policy]() if players and plan.policy in players
                      else cfg.make_policy(plan.policy))
            arrays = record_episode(envs[plan.scene], policy, cfg.steps_per_episode, plan.seed)
            meta = {"id": plan.id, "map": plan.scene, "seed": plan.seed,
                    "policy": plan.policy, "split": plan.split,
                    "scenario": cfg.scenario if cfg.world == "doom" else cfg.world}
            write_episode(cfg.root, Episode(**arrays, meta=meta))
            done.append((plan.id, int(arrays["frames"].shape[0])))
    finally:
        for env in envs.values():
            env.close()
    return done


def collect(cfg: CollectConfig, progress: bool = True,
            players: Players | None = None) -> dict[str, Any]:
    """Record every planned episode not yet on disk; returns a summary with throughput.
    ``players``: more players by name, built in this process (a trained agent from a higher
    layer: ``agents/agent_data.py``); they need ``workers=1``."""
    cfg.validate(tuple(players or ()))
    if players and cfg.workers != 1:
        raise ValueError(f"players built by the caller ({sorted(players)}) record in this "
                         f"process: set workers=1, got {cfg.workers}")
    root = Path(cfg.root)
    root.mkdir(parents=True, exist_ok=True)
    meta = cfg.dataset_meta()
    check_dataset_meta(root, meta)
    remove_stale_temporaries(root)
    have = completed_episode_ids(root)
    plans = plan_episodes(cfg)
    todo = [p for p in plans if p.id not in have]
    write_manifest(root, meta)  # picks up episodes a crashed run wrote but did not list
    check_plan_matches_disk(root, plans, cfg.steps_per_episode)
    start, frames = time.perf_counter(), 0
    if todo:
        workers = min(cfg.workers, len(todo))
        jobs = [(asdict(cfg), [plan]) for plan in todo]  # one episode per job: fine-grained resume
        bar = tqdm(total=len(todo), desc="episodes", unit="ep", disable=not progress)
        if workers == 1:
            results = (_worker(job, players) for job in jobs)
            pool = None
        else:
            pool = mp.get_context("spawn").Pool(workers)
            results = pool.imap_unordered(_worker, jobs)
        try:
            for done in results:
                frames += sum(n for _, n in done)
                write_manifest(root, meta)
                bar.update(len(done))
                bar.set_postfix(fps=f"{frames / (time.perf_counter() - start):.0f}")
        finally:
            bar.close()
            if pool is not None:
                pool.close()
                pool.join()
    seconds = time.perf_counter() - start
    manifest = write_manifest(root, meta)
    return {"root": str(root), "recorded_episodes": len(todo), "recorded_frames": frames,
            "seconds": seconds, "frames_per_second": frames / seconds if seconds else 0.0,
            "total_episodes": manifest["num_episodes"], "total_frames": manifest["num_frames"]}


def main() -> None:
    """Hydra entry point: ``aapt-world collect key=value ...``."""
    import hydra
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="collect_schema", node=CollectConfig)

    # its own directory: the training config groups (world=...) must not capture collect's
    # plain "world" field
    @hydra.main(version_base="1.3", config_path="configs/collect", config_name="collect")
    def _run(dict_cfg: Any) -> None:
        cfg = CollectConfig(**OmegaConf.to_container(dict_cfg, resolve=True))
        try:  # bad settings, or a root recorded otherwise: one line with the fix
            cfg.validate()
            if (Path(cfg.root) / MANIFEST).exists():
                check_plan_matches_disk(Path(cfg.root), plan_episodes(cfg), cfg.steps_per_episode)
        except (ValueError, DatasetError) as err:
            print(f"aapt-world collect: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        summary = collect(cfg)
        print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in summary.items()))

    _run()


if __name__ == "__main__":
    main()
