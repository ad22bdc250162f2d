"""The real humanoid world (issue 11): the MuJoCo env, its keypoints, the performer, collection."""

from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from envs.humanoid import (
    KEYPOINT_NAMES,
    ROOT_DIM,
    HumanoidEnv,
    condition_keypoints,
    record_names,
)
from envs.motions import JOINTS, PRIMITIVES, PerformerConfig, PerformerPolicy

SIZE = {"width": 64, "height": 48}


@pytest.fixture(scope="module")
def env():
    e = HumanoidEnv(**SIZE)
    yield e
    e.close()


def test_check_env_and_registration() -> None:
    e = gym.make("aapt/Humanoid-v0", **SIZE)
    check_env(e.unwrapped, skip_render_check=True)
    assert e.spec.max_episode_steps == 450  # 60 s at 30 fps, 4 frames per step
    e.close()


def test_layout_matches_the_model(env) -> None:
    assert env.poser.joint_names == JOINTS
    assert env.action_space.shape == (ROOT_DIM + len(JOINTS),) == (23,)
    _, info = env.reset(seed=0)
    k = len(KEYPOINT_NAMES)
    assert info["frames"].shape == (4, 48, 64, 3) and info["frames"].dtype == np.uint8
    assert info["poses"].shape == (4, 23 + 3 * k + 2 * k + 2) == (4, len(record_names(JOINTS)))
    assert info["keypoints_3d"].shape == (4, k, 3) and info["keypoints_2d"].shape == (4, k, 2)
    # standing at rest: feet on the floor, head above the root
    world_z = info["keypoints_3d"][0, :, 2] + info["poses"][0, 2]
    feet = [KEYPOINT_NAMES.index(n) for n in ("left_foot", "right_foot")]
    assert np.all(np.abs(world_z[feet]) < 0.1)
    assert world_z[KEYPOINT_NAMES.index("head")] > 1.5


def test_floor_anchor_shows_how_far_the_floor_moved(env) -> None:
    """The camera follows the root, so the body's keypoints stay put when it walks; the floor
    anchor (the floor point under the previous frame's root, in this frame's image) moves."""
    pose = env.poser.rest_pose()
    _, info = env.reset(options={"pose": pose})
    still = info["floor_2d"][0]
    names = record_names(JOINTS)
    cols = [names.index("floor_col"), names.index("floor_row")]
    np.testing.assert_allclose(info["poses"][:, cols], info["floor_2d"])  # recorded
    info = env.step(pose)[4]  # standing: the floor stays where it was
    np.testing.assert_allclose(info["floor_2d"], np.repeat(still[None], 4, axis=0), atol=1e-3)
    walked = pose.copy()
    walked[0] += 0.4  # 0.1 m a frame
    info = env.step(walked)[4]
    shift = info["floor_2d"] - still
    assert np.all(np.linalg.norm(shift, axis=1) > 0.5)  # every frame's anchor moved ...
    np.testing.assert_allclose(shift, np.repeat(shift[:1], 4, axis=0), atol=0.2)  # evenly
    kp_moved = np.abs(info["keypoints_2d"] - env.reset(options={"pose": pose})[1]
                      ["keypoints_2d"]).max()
    assert kp_moved < 0.2 * np.linalg.norm(shift[0])  # ... while the body's points did not
    points = condition_keypoints(info, floor_anchor=True)
    assert points.shape == (4, len(KEYPOINT_NAMES) + 1, 2)
    assert np.array_equal(points[:, -1], info["floor_2d"])
    assert np.array_equal(condition_keypoints(info, floor_anchor=False), info["keypoints_2d"])


def test_floor_anchor_enters_a_pose_generator_through_zero_weights() -> None:
    """A stage 1 without the anchor continues with it as the same function."""
    from aapt_world.conditions import ConditionConfig
    from aapt_world.transformer import dit_config
    from aapt_world.world_model import WorldModel, add_zero_floor_anchor

    dit = dit_config("tiny", latent_height=6, latent_width=8, window=3)

    def model(floor: bool) -> WorldModel:
        torch.manual_seed(0)
        return WorldModel(dit, ConditionConfig(kind="pose", num_keypoints=16 + floor,
                                               cond_dim=dit.cond_dim, hidden_dim=32,
                                               pose_map_sigma=0.6, floor_anchor=floor))
    old, new = model(False), model(True)
    for p in old.parameters():  # the zero-initialised layers too, so the check means something
        torch.nn.init.normal_(p, std=0.05)
    tensors = {f"model.{k}": v for k, v in old.state_dict().items()}
    adapted = add_zero_floor_anchor(tensors, new)
    new.load_state_dict({k.removeprefix("model."): v for k, v in adapted.items()})
    kp = torch.rand(1, 2, 4, 16, 2) * 40
    floor = torch.rand(1, 2, 4, 1, 2) * 40
    noisy, prev = torch.randn(2, 1, dit.latent_channels, 2, 6, 8).unbind(0)
    expected = old(noisy, prev, kp, 0.5)
    torch.testing.assert_close(new(noisy, prev, torch.cat([kp, floor], 3), 0.5), expected)
    assert add_zero_floor_anchor(adapted, new) is adapted  # already wide enough: kept
    with pytest.raises(ValueError, match="floor_anchor needs a pose world"):
        ConditionConfig(kind="action", action_dim=4, floor_anchor=True)


def test_keypoints_project_onto_the_body(env) -> None:
    """The 2D keypoints land on pixels where the renderer draws the humanoid, not the floor
    or the sky (segmentation render of the same pose and camera)."""
    import mujoco

    pose = env.poser.rest_pose()
    pose[3] = 0.7  # turned, so the projection is not trivially central
    pose[ROOT_DIM + JOINTS.index("right_shoulder1")] = -1.0
    _, info = env.reset(options={"pose": pose})
    r = env.poser.renderer
    r.enable_segmentation_rendering()
    try:
        r.update_scene(env.poser.data, camera=env.poser.camera)
        seg = r.render()[..., 0]
    finally:
        r.disable_segmentation_rendering()
    floor = mujoco.mj_name2id(env.poser.model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    body = [KEYPOINT_NAMES.index(n) for n in ("head", "pelvis", "lwaist", "right_shin")]
    for i in body:
        col, row = info["keypoints_2d"][0, i]
        assert 0 <= col < 64 and 0 <= row < 48, KEYPOINT_NAMES[i]
        around = seg[max(0, int(row) - 1):int(row) + 2, max(0, int(col) - 1):int(col) + 2]
        assert np.any((around >= 0) & (around != floor)), KEYPOINT_NAMES[i]


def test_step_interpolates_and_clips(env) -> None:
    env.reset(seed=1)
    start = env.poser.rest_pose()
    target = start.copy()
    target[0] = 0.4
    target[ROOT_DIM + JOINTS.index("right_knee")] = -10.0  # beyond the joint range
    obs, reward, terminated, truncated, info = env.step(target)
    knee = ROOT_DIM + JOINTS.index("right_knee")
    low = env.action_space.low[knee]
    assert info["command"][knee] == pytest.approx(low) and reward == 0.0
    assert not terminated and not truncated
    x = info["poses"][:, 0]
    np.testing.assert_allclose(x, [0.1, 0.2, 0.3, 0.4], atol=1e-6)  # frame j at (j+1)/4
    np.testing.assert_array_equal(obs, info["frames"][-1])


def test_yaw_turns_the_short_way(env) -> None:
    start = env.poser.rest_pose()
    start[3] = 3.0
    env.reset(options={"pose": start})
    target = start.copy()
    target[3] = -3.0  # 0.28 rad the short way, across +-pi
    _, _, _, _, info = env.step(target)
    yaw = info["poses"][:, 3]
    steps = np.abs(np.diff(np.unwrap(np.concatenate([[3.0], yaw]))))
    assert np.all(steps < 0.1)


def test_bad_actions_name_what_is_wrong(env) -> None:
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(23,\)"):
        env.step(np.zeros(5))
    bad = env.poser.rest_pose()
    bad[ROOT_DIM + JOINTS.index("left_elbow")] = np.nan
    with pytest.raises(ValueError, match="left_elbow"):
        env.step(bad)
    with pytest.raises(ValueError, match="only the option 'pose'"):
        env.reset(options={"frame": 1})


def test_orbiting_camera_moves_a_still_body() -> None:
    e = HumanoidEnv(orbit_deg_per_s=90.0, **SIZE)
    try:
        _, info = e.reset(seed=0)
        _, _, _, _, info = e.step(e.poser.rest_pose())
        assert not np.array_equal(info["frames"][0], info["frames"][-1])
        assert not np.allclose(info["keypoints_2d"][0], info["keypoints_2d"][-1])
    finally:
        e.close()


def test_antialiasing_is_an_option_that_changes_only_edges(env) -> None:
    """The default renders without MSAA (3x faster in software GL); MuJoCo's 4 samples remain
    available and differ only on edges; a negative count names the field."""
    assert env.config.msaa_samples == 0
    smooth = HumanoidEnv(msaa_samples=4, **SIZE)
    try:
        frames = [e.reset(seed=0)[1]["frames"][0].astype(np.float64) for e in (env, smooth)]
    finally:
        smooth.close()
    mse = ((frames[0] - frames[1]) ** 2).mean()
    assert 0 < mse and 10 * np.log10(255 ** 2 / mse) > 30  # different, yet only at the edges
    with pytest.raises(ValueError, match="msaa_samples"):
        HumanoidEnv(msaa_samples=-1, **SIZE)


def test_performer_is_seeded_varied_and_smooth() -> None:
    def perform(seed: int, steps: int, fps: int = 30) -> tuple[np.ndarray, set[str]]:
        p = PerformerPolicy(PerformerConfig(fps=fps))
        p.reset(np.random.default_rng(seed))
        poses, seen = [], set()
        for _ in range(steps):
            poses.append(p.act())
            seen.add(p.primitive)
        return np.stack(poses), seen

    a, seen = perform(0, 600)  # 80 s
    b, _ = perform(0, 600)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, perform(1, 600)[0])
    assert len(seen) >= 6 and seen <= set(PRIMITIVES)
    # continuous motion, primitive switches included (cross-faded): sampled 16x finer, the
    # largest change per step shrinks with the step (a jump would not)
    fine, _ = perform(0, 600 * 16, fps=30 * 16)
    assert np.abs(np.diff(fine[:, ROOT_DIM:], axis=0)).max() < 0.15
    assert np.abs(np.diff(fine[:, 2])).max() < 0.04  # root height
    assert np.ptp(a[:, 0]) > 1.0 or np.ptp(a[:, 1]) > 1.0  # it travels over the floor
    assert np.all(np.hypot(a[:, 0], a[:, 1]) < 20.0)  # and turns back toward the centre


def test_collect_a_humanoid_dataset(tmp_path) -> None:
    from training.collect import CollectConfig, collect

    cfg = CollectConfig(root=str(tmp_path / "humanoid"), world="humanoid", num_episodes=2,
                        steps_per_episode=3, workers=1, **SIZE)
    assert cfg.maps == ["fixed", "orbit"] and cfg.policies == ["performer"]
    summary = collect(cfg, progress=False)
    assert summary["total_episodes"] == 2 and summary["total_frames"] == 2 * 13
    manifest = json.loads((tmp_path / "humanoid" / "manifest.json").read_text())
    assert manifest["world"] == "humanoid" and len(manifest["pose_names"]) == 105
    episode = next((tmp_path / "humanoid" / "episodes").iterdir())
    poses = np.load(episode / "poses.npy")
    actions = np.load(episode / "actions.npy")
    assert poses.shape == (13, 105) and actions.shape == (3, 23)
    # the command line too (its "world" field is not the training configs' world group)
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "agents.cli", "collect", "world=humanoid",
                           f"root={tmp_path / 'cli'}", "num_episodes=2", "steps_per_episode=2",
                           "workers=1", "width=64", "height=48"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "total_episodes=2" in done.stdout, done.stderr[-1500:]
    with pytest.raises(ValueError, match="unknown humanoid scenes"):
        CollectConfig(world="humanoid", maps=["MAP01"]).validate()
    with pytest.raises(ValueError, match="unknown humanoid policies"):
        CollectConfig(world="humanoid", policies=["explorer"]).validate()


def test_pose_world_trains_on_per_frame_keypoints(tmp_path) -> None:
    """world=humanoid: the DiT stages see each step's 4 frames of 2D keypoints (not a held
    action), straight from poses.npy, and the pose encoder maps pixels to [-1, 1]."""
    import torch

    from training.batches import latent_batch, latent_datasets
    from training.collect import CollectConfig, collect
    from training.dataset import keypoint_columns, read_manifest
    from training.models import build_world_model
    from training.train import compose_config, run_stage

    root, out = tmp_path / "humanoid", tmp_path / "run"
    collect(CollectConfig(root=str(root), world="humanoid", num_episodes=4, steps_per_episode=6,
                          workers=1, val_every=2, **SIZE), progress=False)

    def cfg(*extra: str, run=out):
        items = ["model=tiny", "world=humanoid", f"data.root={root}", f"run.out_dir={run}",
                 "run.batch_size=2", "data.clip_steps=3", "data.val_batches=1",
                 "run.progress=false", "run.threads=1", "run.eval_every=1000",
                 "optim.warmup_steps=1", "adversarial.rollout_steps=2", *extra]
        return compose_config(items)

    for stage in ("vae", "latents", "diffusion", "consistency", "heads", "adversarial"):
        run_stage(cfg(f"stage={stage}", "run.steps=2"))
    assert (out / "adversarial" / "model.safetensors").exists()

    c = cfg("stage=diffusion")
    train, _ = latent_datasets(c)
    rng = np.random.default_rng(0)
    batch = latent_batch(train, rng, 2, torch.device("cpu"))
    assert batch.conds.shape == (2, 3, 4, len(KEYPOINT_NAMES), 2)
    episode, s = train.clips.sample_position(np.random.default_rng(0))  # the batch's 1st clip
    poses = np.asarray(episode.arrays["poses"])[4 * s + 1:4 * s + 13]
    cols = keypoint_columns(read_manifest(root))
    assert np.array_equal(batch.conds[0].reshape(12, -1, 2).numpy(), poses[:, cols])
    model = build_world_model(c)
    assert model.cond.offset.tolist() == [32.0, 24.0] and model.cond.scale.tolist() == [32, 24]
    new, prev = batch.latents[:, :, 1:], batch.latents[:, :, :-1]
    assert model(new, prev, batch.conds, 0.5).shape == new.shape

    # the joints' maps: a stage 1 without them continues with them (entering through zero
    # weights), and the exported world keeps them
    from aapt_world.world import load_world

    maps = tmp_path / "run_maps"
    for stage in ("vae", "latents"):
        shutil.copytree(out / stage, maps / stage)
    sigma = "world.pose_map_sigma=0.6"
    stage1 = out / "diffusion" / "model.safetensors"
    run_stage(cfg("stage=diffusion", "run.steps=2", sigma, f"run.init_from={stage1}", run=maps))
    run_stage(cfg("stage=export", "export.source=diffusion", sigma, run=maps))
    world = load_world(maps / "world-diffusion")
    assert world.generator.condition_config.pose_map_sigma == 0.6
    assert world.generator.pose_map_embed.weight.abs().sum() > 0  # trained from zero

    # the floor anchor: one more point per frame, from poses.npy's floor columns; a stage 1
    # without it continues with it, and the world's env hands it over
    from envs.neural_humanoid import NeuralHumanoidEnv
    from training.dataset import DatasetError

    floor = tmp_path / "run_floor"
    for stage in ("vae", "latents"):
        shutil.copytree(out / stage, floor / stage)
    anchor = ("world.floor_anchor=true", f"world.action_dim={2 * (len(KEYPOINT_NAMES) + 1)}")
    train, _ = latent_datasets(cfg("stage=diffusion", *anchor, run=floor))
    batch = latent_batch(train, np.random.default_rng(0), 2, torch.device("cpu"))
    assert batch.conds.shape == (2, 3, 4, len(KEYPOINT_NAMES) + 1, 2)
    cols = keypoint_columns(read_manifest(root), floor_anchor=True)
    assert np.array_equal(batch.conds[0].reshape(12, -1, 2).numpy(), poses[:, cols])
    with pytest.raises(DatasetError, match=f"world.action_dim={2 * len(cols)}"):
        run_stage(cfg("stage=diffusion", "world.floor_anchor=true", run=floor))
    run_stage(cfg("stage=diffusion", "run.steps=2", sigma, *anchor, f"run.init_from={stage1}",
                  run=floor))
    run_stage(cfg("stage=export", "export.source=diffusion", sigma, *anchor, run=floor))
    world = load_world(floor / "world-diffusion")
    assert world.generator.condition_config.floor_anchor
    env = NeuralHumanoidEnv(world)
    env.reset(seed=0)
    assert env.step(env.action_space.sample())[4]["frames"].shape == (4, 48, 64, 3)


def test_pose_probe_learns_keypoints_from_real_frames(tmp_path) -> None:
    """The probe beats the mean-pose baseline on the frames it trained on (a probe that
    ignored the image could not), saves and reloads to the same predictions."""
    from agents.evaluation.pose_probe import (
        ProbeTrainConfig,
        keypoint_error,
        load_frames,
        load_probe,
        predict,
        train_probe,
    )
    from training.collect import CollectConfig, collect

    root = tmp_path / "humanoid"
    collect(CollectConfig(root=str(root), world="humanoid", num_episodes=2, steps_per_episode=30,
                          workers=1, val_every=2, **SIZE), progress=False)
    out = tmp_path / "probe.safetensors"
    report = train_probe(ProbeTrainConfig(root=str(root), out=str(out), steps=250, minutes=5,
                                          batch_size=16, val_every=50, progress=False))
    assert np.isfinite(report["val_error_px"]) and report["steps"] == 250
    train = load_frames(root, "train")
    probe = load_probe(out)
    pred = predict(probe, train.frames)
    assert pred.shape == train.keypoints.shape
    mean = np.broadcast_to(train.keypoints.mean(0), train.keypoints.shape)
    assert keypoint_error(pred, train.keypoints).mean() < 0.8 * keypoint_error(
        mean, train.keypoints).mean()
    with pytest.raises(ValueError, match="frames must be"):
        probe(torch.zeros(1, 10, 10, 3, dtype=torch.uint8))


def test_neural_humanoid_env_follows_the_real_pose_bookkeeping(tiny_world_factory) -> None:
    """A pose world driven by poses: the same action space and per-frame keypoints as the real
    env (no rendering), 4 generated frames per step, seeded, clear errors."""
    from envs.neural_humanoid import NeuralHumanoidEnv

    world = tiny_world_factory(action_type="pose")
    env = NeuralHumanoidEnv(world)
    real = HumanoidEnv(**SIZE)
    assert env.action_space == real.action_space
    assert env.observation_space.shape == (SIZE["height"], SIZE["width"], 3)
    obs, info = env.reset(seed=0)
    real_obs, _ = real.reset(seed=0)
    assert np.array_equal(info["real_frame"], real_obs) and obs.dtype == np.uint8
    actions = PerformerPolicy()
    actions.reset(np.random.default_rng(0))
    script = [actions.act() for _ in range(3)]

    def run(seed: int) -> list[np.ndarray]:
        env.reset(seed=seed)
        out = []
        for action in script:
            obs, reward, terminated, truncated, info = env.step(action)
            real_info = real.step(action)[4]
            np.testing.assert_allclose(info["keypoints_2d"], real_info["keypoints_2d"],
                                       atol=1e-4)
            assert info["frames"].shape == (4, SIZE["height"], SIZE["width"], 3)
            assert np.array_equal(obs, info["frames"][-1]) and reward == 0.0
            assert not terminated and not truncated
            out.append(info["frames"])
        return out

    real.reset(seed=0)
    first = run(1)
    real.reset(seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(first, run(1), strict=True))
    with pytest.raises(ValueError, match="pose of shape"):
        env.step(np.zeros(5))
    with pytest.raises(ValueError, match="not a pose world"):
        NeuralHumanoidEnv(tiny_world_factory())
    with pytest.raises(ValueError, match="scene must be one of"):
        NeuralHumanoidEnv(world, scene="dolly")


def test_performer_takes_requests() -> None:
    """request(): the viewer's keys switch the motion now, cross-faded, held until the next."""
    p = PerformerPolicy(PerformerConfig(fps=30 * 16))  # 16x finer: steps of 1/120 s
    p.reset(np.random.default_rng(0))
    before = p.script(100)
    p.request("squat", speed=1.5)
    after = p.script(200 * 16)  # 27 s: far past any drawn take length
    assert p.primitive == "squat"
    poses = np.concatenate([before, after])
    assert np.abs(np.diff(poses[:, ROOT_DIM:], axis=0)).max() < 0.15  # no jump at the switch
    with pytest.raises(ValueError, match="unknown primitive"):
        p.request("moonwalk")
    with pytest.raises(ValueError, match="speed"):
        p.request("walk", speed=0)


def test_neural_humanoid_vector_env_batches_what_the_single_env_does(tiny_world_factory
                                                                     ) -> None:
    """One batched step for all bodies: env i seeded s + i draws as a NeuralHumanoidEnv seeded
    s + i (same frames up to float rounding of the batch), truncation autoresets that env in
    the same step with SyncVectorEnv's records, the SB3 adapter takes it, bad batches fail
    before anything moves."""
    from envs.neural_humanoid import NeuralHumanoidEnv, NeuralHumanoidVectorEnv
    from envs.sb3 import NeuralWorldSB3VecEnv

    world = tiny_world_factory(action_type="pose")
    venv = NeuralHumanoidVectorEnv(world, num_envs=2, max_episode_steps=2)
    single = NeuralHumanoidEnv(world)
    performer = PerformerPolicy()
    performer.reset(np.random.default_rng(0))
    script = [performer.act() for _ in range(2)]
    obs, _ = venv.reset(seed=5)
    first, _ = single.reset(seed=6)
    np.testing.assert_allclose(obs[1].astype(int), first.astype(int), atol=2)
    for t, pose in enumerate(script):
        obs, rewards, terminated, truncated, infos = venv.step(np.stack([pose, pose]))
        expect, *_, info = single.step(pose)
        np.testing.assert_allclose(infos["keypoints_2d"][1], info["keypoints_2d"], atol=1e-4)
        assert not terminated.any() and not rewards.any()
        if t == 0:
            np.testing.assert_allclose(obs[1].astype(int), expect.astype(int), atol=2)
    assert truncated.all() and infos["_final_obs"].all()  # the 2-step limit: both restarted
    np.testing.assert_allclose(infos["final_obs"][1].astype(int), expect.astype(int), atol=2)
    assert (venv.episode_steps == 0).all()
    with pytest.raises(ValueError, match="batch of poses of shape"):
        venv.step(np.zeros((3, 23)))
    bad = np.stack(script)
    bad[1, 4] = np.nan
    before = venv.bodies[0]._pose.copy()
    with pytest.raises(ValueError, match="env 1: the action has non-finite"):
        venv.step(bad)
    assert np.array_equal(venv.bodies[0]._pose, before)  # nothing moved
    sb3 = NeuralWorldSB3VecEnv(venv)
    sb3.reset()
    sb3.step_async(np.stack(script))
    assert sb3.step_wait()[0].shape == (2, SIZE["height"], SIZE["width"], 3)
    venv.close()


def test_neural_humanoid_is_registered() -> None:
    """``gym.make("aapt/NeuralHumanoid-v0")`` and its vector form; without a shipped world the
    error says where it looked and what to pass."""
    from envs import DEFAULT_HUMANOID_WORLD

    spec = gym.spec("aapt/NeuralHumanoid-v0")
    assert spec.max_episode_steps == 450 and spec.vector_entry_point
    if not DEFAULT_HUMANOID_WORLD.is_dir():
        with pytest.raises(FileNotFoundError, match="no default humanoid world"):
            gym.make("aapt/NeuralHumanoid-v0")
        return
    env = gym.make("aapt/NeuralHumanoid-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (96, 128, 3)
    env.close()


def test_render_benchmark_reports_each_setting(tmp_path) -> None:
    from training.bench_render import run

    result = run(steps=2, msaa=[0, 2], sizes=["64x48"], json_path=str(tmp_path / "r.json"))
    rows = result["rows"]
    assert [(r["resolution"], r["msaa_samples"]) for r in rows] == [("64x48", 0), ("64x48", 2)]
    assert all(r["frames"] == 8 and r["frames_per_s"] > 0 for r in rows)
    assert json.loads((tmp_path / "r.json").read_text())["rows"] == rows


def test_an_unclosed_env_exits_quietly() -> None:
    """MuJoCo's Renderer.__del__ at interpreter exit used to print a PyOpenGL traceback."""
    import subprocess
    import sys

    code = ("from envs.humanoid import HumanoidEnv\n"
            "e = HumanoidEnv(width=64, height=48)\ne.reset(seed=0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "Exception ignored" not in done.stderr, done.stderr[-800:]


def test_body_masks_are_the_keypoints_box_grown_by_the_margin() -> None:
    from agents.evaluation.pose_following import body_masks

    kp = np.array([[[10.0, 20.0], [30.0, 40.0]]], dtype=np.float32)  # (T=1, K=2, (col, row))
    mask = body_masks(kp, height=96, width=128, margin=2)
    rows, cols = np.nonzero(mask[0])
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (8, 32, 18, 42)


def test_keypoint_columns_keep_the_floor_anchor_apart() -> None:
    from training.dataset import DatasetError, keypoint_columns

    names = list(record_names(JOINTS))
    body = keypoint_columns({"pose_names": names})
    assert len(body) == len(KEYPOINT_NAMES)  # the anchor is not a body keypoint (the probe's)
    with_floor = keypoint_columns({"pose_names": names}, floor_anchor=True)
    assert np.array_equal(with_floor[:-1], body)
    assert with_floor[-1].tolist() == [names.index("floor_col"), names.index("floor_row")]
    older = names[:-2]  # a dataset recorded before the anchor
    assert np.array_equal(keypoint_columns({"pose_names": older}), body)
    with pytest.raises(DatasetError, match="record it again"):
        keypoint_columns({"pose_names": older}, floor_anchor=True)


def test_pose_following_teacher_forcing_starts_each_step_from_the_real_latent(
        tiny_world_factory) -> None:
    """Step 1 is the same free or forced (both from the real start frame); later steps differ
    (forced ones restart from the real previous latent), and match a session fed it by hand."""
    from agents.evaluation.ladder import encode_latents
    from agents.evaluation.pose_following import neural_performance, real_performance

    world = tiny_world_factory(action_type="pose")
    real = real_performance(3, "fixed", SIZE["width"], SIZE["height"], seed=5)
    assert real.floor.shape == (13, 2) and real.conditions(True).shape == (13, 17, 2)
    latents = encode_latents(world, real.frames, "cpu")
    free, _ = neural_performance(world, real, seed=0)
    forced, _ = neural_performance(world, real, seed=0, recycled=latents)
    assert np.array_equal(free[:5], forced[:5]) and not np.array_equal(free[5:], forced[5:])
    session = world.session(1)
    session.reset(torch.from_numpy(real.frames[:1]), seeds=[0])
    conds = torch.from_numpy(real.keypoints[1:]).view(3, 4, 16, 2)
    session.step(conds[None, 0])
    by_hand = session.step(conds[None, 1], latents[:, :, 1])[0].numpy()
    assert np.array_equal(forced[5:9], by_hand)
