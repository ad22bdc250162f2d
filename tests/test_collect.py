"""Data collection from the real Doom world: planning, resume, and the CLI."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from envs.scripted import ExplorerPolicy, RandomCommandPolicy
from training.collect import CollectConfig, collect, plan_episodes
from training.dataset import ClipDataset, read_manifest


def small(root: Path, **kw) -> CollectConfig:
    base = dict(root=str(root), num_episodes=3, steps_per_episode=12, width=64, height=48,
                workers=1, val_every=3)
    return CollectConfig(**{**base, **kw})


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "episodes").rglob("*")) if p.is_file()}


def test_collect_then_resume_adds_only_missing(tmp_path: Path) -> None:
    summary = collect(small(tmp_path, num_episodes=2), progress=False)
    assert summary["recorded_episodes"] == 2 and summary["recorded_frames"] == 2 * 49
    before = digest(tmp_path)
    summary = collect(small(tmp_path, num_episodes=3), progress=False)
    assert summary["recorded_episodes"] == 1 and summary["total_episodes"] == 3
    after = digest(tmp_path)
    assert {k: after[k] for k in before} == before  # existing episodes untouched
    manifest = read_manifest(tmp_path)
    assert [e["split"] for e in manifest["episodes"]] == ["train", "val", "train"]
    assert collect(small(tmp_path), progress=False)["recorded_episodes"] == 0
    clip = ClipDataset(tmp_path, num_steps=4, split="val").sample(np.random.default_rng(0))
    assert clip.frames.shape == (17, 48, 64, 3)


def test_parallel_workers_match_serial(tmp_path: Path) -> None:
    collect(small(tmp_path / "serial"), progress=False)
    collect(small(tmp_path / "parallel", workers=2), progress=False)
    assert digest(tmp_path / "serial") == digest(tmp_path / "parallel")  # deterministic


def test_resume_with_other_settings_refused(tmp_path: Path) -> None:
    collect(small(tmp_path, num_episodes=2), progress=False)
    with pytest.raises(ValueError, match="different settings"):
        collect(small(tmp_path, width=128, height=96), progress=False)


def test_a_rerun_with_another_plan_is_refused_not_skipped(tmp_path: Path) -> None:
    collect(small(tmp_path), progress=False)  # 3 episodes, val_every 3: episode 1 validates
    with pytest.raises(ValueError, match=r"ep_000002 .*'split': \('train', 'val'\)"):
        collect(small(tmp_path, val_every=2), progress=False)  # would make episode 2 val
    with pytest.raises(ValueError, match=r"'steps_per_episode': \(12, 20\)"):
        collect(small(tmp_path, steps_per_episode=20), progress=False)
    with pytest.raises(ValueError, match=r"ep_000000 .*'seed': \(0, 5\)"):
        collect(small(tmp_path, seed=5), progress=False)
    with pytest.raises(ValueError, match=r"'map': \('MAP01', 'MAP02'\)"):
        collect(small(tmp_path, maps=["MAP02"]), progress=False)


def test_small_plans_always_have_a_validation_episode() -> None:
    for n in range(2, 12):
        plans = plan_episodes(CollectConfig(num_episodes=n))  # default val_every=8
        assert [p.split for p in plans].count("val") >= 1, n
        bigger = plan_episodes(CollectConfig(num_episodes=n + 5))
        assert [p.split for p in bigger[:n]] == [p.split for p in plans]  # growth keeps splits
    with pytest.raises(ValueError, match="num_episodes must be >= 2"):
        CollectConfig(num_episodes=1).validate()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown doom policies"):
        small(Path("x"), policies=["dance"]).validate()
    with pytest.raises(ValueError, match="multiples of 8"):
        small(Path("x"), width=50).validate()


def test_plan_is_deterministic_and_balanced() -> None:
    plans = plan_episodes(CollectConfig(num_episodes=9, val_every=4))
    assert plans == plan_episodes(CollectConfig(num_episodes=9, val_every=4))
    assert [p.split for p in plans].count("val") == 2
    assert [p.scene for p in plans][:5] == ["MAP01", "MAP02", "MAP03", "MAP04", "MAP01"]
    cfg = CollectConfig(num_episodes=64, val_every=8, policies=["a", "b", "c", "d"])
    plans = plan_episodes(cfg)
    pairs = {(p.scene, p.policy) for p in plans}
    assert len(pairs) == 16  # every map meets every policy
    val = [p for p in plans if p.split == "val"]
    assert len(val) == 8
    assert {p.scene for p in val} == set(cfg.maps)  # validation is not one map
    assert len({p.policy for p in val}) >= 3


def test_explorer_moves_like_a_player() -> None:
    """Smooth turning and a mix of behaviours, not independent random commands per step."""
    policy = ExplorerPolicy()
    policy.reset(np.random.default_rng(0))
    poses = np.zeros((4, 5), dtype=np.float32)
    poses[:, 0] = np.arange(4) * 10.0  # moving: never stuck
    commands = np.stack([policy.act(None, {"poses": poses}) for _ in range(400)])
    assert np.all(np.abs(commands) <= 1)
    walking = commands[:, 0] > 0.4
    assert 0.2 < walking.mean() < 0.9
    turn = commands[:, 2]
    assert np.corrcoef(turn[:-1], turn[1:])[0, 1] > 0.5  # momentum in turning
    random = RandomCommandPolicy()
    random.reset(np.random.default_rng(0))
    assert np.std([random.act(None, {})[0] for _ in range(100)]) > 0.3


def test_explorer_escapes_walls() -> None:
    policy = ExplorerPolicy()
    policy.reset(np.random.default_rng(1))
    stuck = {"poses": np.zeros((4, 5), dtype=np.float32)}
    commands = [policy.act(None, stuck) for _ in range(3)]
    assert abs(commands[-1][2]) == 1.0 and commands[-1][0] == 0.0  # full-rate turn, no push


def test_lingerer_stands_still_long_and_pushes_into_walls() -> None:
    """Still stretches longer than the attention window (the explorer's never are) and walks
    that keep pushing into a wall: what the no-op hold and wall-bump rungs test."""
    from envs.scripted import make_policy

    policy = make_policy("lingerer")
    policy.reset(np.random.default_rng(0))
    moving = {"poses": np.arange(20, dtype=np.float32).reshape(4, 5) * 10.0}
    still = np.array([not policy.act(None, moving).any() for _ in range(600)])
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, still.astype(int), 0])))[::2]
    assert still.mean() > 0.15 and runs.max() > 8
    policy.reset(np.random.default_rng(1))
    policy._start("walk")
    stuck = {"poses": np.zeros((4, 5), dtype=np.float32)}
    assert all(policy.act(None, stuck)[0] > 0 for _ in range(10))  # still pushing


def test_strafer_steps_sideways_into_walls_and_the_explorer_replays() -> None:
    """Pure full-speed strafes that go on when a wall stops them (what the ladder's strafe
    family asks); the new config fields leave the explorer's random stream as it was, so
    datasets recorded before them replay bit for bit."""
    from envs.scripted import ExplorerConfig, make_policy

    policy = make_policy("strafer")
    policy.reset(np.random.default_rng(0))
    stuck = {"poses": np.zeros((4, 5), dtype=np.float32)}
    commands = np.stack([policy.act(None, stuck) for _ in range(800)])
    pure = (np.abs(commands[:, 1]) == 1.0) & (commands[:, 0] == 0) & (commands[:, 2] == 0)
    assert pure.mean() > 0.15  # the explorer's mix: under 1 %
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, pure.astype(int), 0])))[::2]
    assert runs.max() >= 8  # not stopped by being stuck
    moving = {"poses": np.arange(20, dtype=np.float32).reshape(4, 5) * 10.0}
    plain, explicit = ExplorerPolicy(), ExplorerPolicy(ExplorerConfig(strafe_sweep=1.0,
                                                                      full_speed=0.0))
    for p in (plain, explicit):
        p.reset(np.random.default_rng(3))
    a = np.stack([plain.act(None, moving) for _ in range(300)])
    b = np.stack([explicit.act(None, moving) for _ in range(300)])
    np.testing.assert_array_equal(a, b)
    strafes = np.abs(a[:, 1]) > 0
    assert (np.abs(a[strafes, 2]) > 0).mean() > 0.5  # the explorer's strafes still sweep


def test_wall_hugger_strafes_one_way_per_episode() -> None:
    from envs.scripted import make_policy

    policy = make_policy("wall_hugger")
    sides = set()
    for seed in range(8):
        policy.reset(np.random.default_rng(seed))
        commands = np.stack([policy.act(None, {}) for _ in range(20)])
        assert (commands == commands[0]).all() and abs(commands[0, 1]) == 1.0
        sides.add(float(commands[0, 1]))
    assert sides == {-1.0, 1.0}


def test_cli_collect_and_rollout(tmp_path: Path) -> None:
    root = tmp_path / "data"
    cmd = [sys.executable, "-m", "agents.cli", "collect", f"root={root}", "num_episodes=2",
           "steps_per_episode=5", "workers=1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "recorded_episodes=2" in out.stdout
    bad = subprocess.run(cmd[:-1] + ["workers=zero"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "workers" in bad.stderr
    video = tmp_path / "real.mp4"
    out = subprocess.run([sys.executable, "-m", "agents.cli", "rollout", "--steps", "6",
                          "--out", str(video)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    from aapt_world.video import read_mp4

    assert read_mp4(video).shape == (25, 192, 256, 3)
