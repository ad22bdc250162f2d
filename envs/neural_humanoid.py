"""The neural humanoid world as a Gymnasium env: body poses in, generated video out (issue 11).

AAPT's pose showcase: given a first frame and a stream of body poses, generate the person
moving. The action is the same as the real ``aapt/Humanoid-v0``'s (the pose at the end of the
step, 23 values, clipped to the joint ranges), and so is the pose bookkeeping: the step's 4
video frames interpolate from the previous pose, MuJoCo's kinematics (no rendering) turns each
into the 16 2D keypoints the world was trained on, and the generator draws the 4 frames in one
1-NFE step. The start frame is a real render of the start pose (the generator needs one).

observation: the newest generated frame, uint8 (H, W, 3); ``info``: ``frames`` (4, H, W, 3),
``keypoints_2d`` (4, 16, 2) and ``keypoints_3d`` (4, 16, 3) of the commanded body, ``poses``,
``command``; at reset also ``real_frame`` (the render the world started from). No reward and
no termination (episodes end by truncation), as in the real world.

``NeuralHumanoidVectorEnv``: ``num_envs`` bodies (MuJoCo kinematics each, no rendering after
the start frame) drawn by ONE batched generator step, autoreset SAME_STEP with
``SyncVectorEnv``'s conventions (as ``envs.vector.NeuralWorldVectorEnv``); env ``i`` reset with
seed ``s + i`` draws what a ``NeuralHumanoidEnv`` reset with that seed draws.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv

from aapt_world.constants import FRAMES_PER_STEP, HUMANOID_FPS
from aapt_world.world import World
from envs import DEFAULT_HUMANOID_WORLD
from envs.humanoid import (
    HUMANOID_SCENES,
    KEYPOINT_NAMES,
    HumanoidConfig,
    HumanoidEnv,
    condition_keypoints,
)
from envs.neural import SEED_HIGH, resolve_world
from envs.vector import (
    add_final_infos,
    check_vector_args,
    reset_mask,
    seed_list,
    setup_streams,
)

RENDER_MODES = ["rgb_array"]


def pose_world(world: World | str | os.PathLike | None, device: str | torch.device | None
               ) -> World:
    """A pose world (default: the shipped ``worlds/humanoid``) whose keypoints are the
    humanoid's; clear errors for anything else."""
    if world is None:
        if not DEFAULT_HUMANOID_WORLD.is_dir():
            raise FileNotFoundError(f"no default humanoid world at {DEFAULT_HUMANOID_WORLD}: "
                                    "pass world=<a pose world's directory> (training/recipes/"
                                    "humanoid_cpu.sh trains one)")
        world = DEFAULT_HUMANOID_WORLD
    resolved = resolve_world(world, device, check=False)
    condition = resolved.config.condition
    if condition.kind != "pose":
        raise ValueError(f"{world} is a {condition.kind!r}-conditioned world, not a pose "
                         f"world: use aapt/NeuralWorld-v0 for it")
    joints = condition.num_keypoints - int(condition.floor_anchor)
    if joints != len(KEYPOINT_NAMES):
        raise ValueError(f"the world expects {joints} keypoints per frame, the humanoid has "
                         f"{len(KEYPOINT_NAMES)} ({KEYPOINT_NAMES})")
    return resolved


def body_for(world: World, scene: str) -> HumanoidEnv:
    """The real humanoid whose kinematics (and start render) drive ``world`` in ``scene``."""
    if scene not in HUMANOID_SCENES:
        raise ValueError(f"scene must be one of {sorted(HUMANOID_SCENES)}, got {scene!r}")
    height, width, _ = world.frame_shape
    return HumanoidEnv(HumanoidConfig(width=width, height=height,
                                      orbit_deg_per_s=HUMANOID_SCENES[scene]))


class NeuralHumanoidEnv(gym.Env):
    """A pose world (``world.config.condition.kind == "pose"``) driven by body poses.

    Args:
        world: a ``World``, a path to a pose world's directory, or None for the shipped one.
        scene: the camera of the real world it was trained on: ``fixed`` or ``orbit``.
        render_mode: ``rgb_array`` (the newest generated frame) or None.
        device: where the models run (default: cpu for a path).
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": HUMANOID_FPS // FRAMES_PER_STEP}

    def __init__(self, world: World | str | os.PathLike | None = None, scene: str = "fixed",
                 render_mode: str | None = None, device: str | torch.device | None = None
                 ) -> None:
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
        self.world = pose_world(world, device)
        self.body = body_for(self.world, scene)
        height, width, _ = self.world.frame_shape
        self.render_mode = render_mode
        self.action_space = self.body.action_space
        self.observation_space = spaces.Box(0, 255, (height, width, 3), np.uint8)
        self.session = self.world.session(1)
        self._frame = np.zeros(self.observation_space.shape, np.uint8)
        self._started = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start from a real render of the start pose (``options={"pose": ...}``, default:
        standing at the origin); the orbiting camera's start comes from the seed."""
        super().reset(seed=seed)
        body_seed, noise_seed = (int(s) for s in self.np_random.integers(0, SEED_HIGH, 2))
        real, info = self.body.reset(seed=body_seed, options=options)
        decoded = self.session.reset(torch.from_numpy(real[None].copy()), seeds=[noise_seed])
        self._frame = decoded[0].cpu().numpy()
        self._started = True
        info["real_frame"] = real
        info["frames"] = np.repeat(self._frame[None], FRAMES_PER_STEP, axis=0)
        return self._frame.copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("step() called before reset(): call reset() first")
        info = self.body.pose_step(action)  # validates the action, advances the pose
        conds = torch.from_numpy(condition_keypoints(
            info, self.world.config.condition.floor_anchor))[None].to(self.world.device)
        frames = self.session.step(conds)[0].cpu().numpy()  # (4, H, W, 3)
        self._frame = frames[-1]
        info["frames"] = frames
        return self._frame.copy(), 0.0, False, False, info

    def render(self) -> np.ndarray | None:
        return self._frame.copy() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        self.body.close()


class NeuralHumanoidVectorEnv(VectorEnv):
    """``num_envs`` neural humanoids advanced by one batched generator step.

    Args as ``NeuralHumanoidEnv``, plus ``num_envs`` and ``max_episode_steps`` (per-env
    truncation; None: never). ``reset(options=...)``: ``reset_mask`` (bool (num_envs,)) and/or
    ``pose`` (one start pose for the reset envs)."""

    metadata = {"render_modes": RENDER_MODES, "render_fps": HUMANOID_FPS // FRAMES_PER_STEP,
                "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, world: World | str | os.PathLike | None = None, num_envs: int = 1,
                 scene: str = "fixed", max_episode_steps: int | None = None,
                 render_mode: str | None = None, device: str | torch.device | None = None
                 ) -> None:
        check_vector_args(num_envs, max_episode_steps, render_mode, RENDER_MODES)
        self.world = pose_world(world, device)
        self.bodies = [body_for(self.world, scene) for _ in range(int(num_envs))]
        setup_streams(self, self.world, int(num_envs), self.bodies[0].action_space,
                      max_episode_steps, render_mode)

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        pose = options.pop("pose", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}: expected any of "
                             "['pose', 'reset_mask']")
        mask = reset_mask(mask, self.num_envs)
        seeds = seed_list(seed, self.num_envs)
        items = np.flatnonzero(mask)
        for i in items:
            if seeds[i] is not None:
                self._rngs[i] = seeding.np_random(seeds[i])[0]
        obs, info = self._reset_items(items, pose)
        self._obs[items] = obs
        return self._obs.copy(), info

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        poses = np.asarray(actions, dtype=np.float32)
        if poses.shape != self.action_space.shape:
            raise ValueError(f"expected a batch of poses of shape {self.action_space.shape} "
                             f"(one per env), got shape {poses.shape}")
        bad = np.flatnonzero(~np.isfinite(poses).all(1))
        if len(bad):  # checked before any body moves: a failed step changes nothing
            raise ValueError(f"env {int(bad[0])}: the action has non-finite values")
        if not self._started.all():
            raise RuntimeError(f"reset() every env before step(): envs "
                               f"{np.flatnonzero(~self._started).tolist()} never were")
        steps = [body.pose_step(p) for body, p in zip(self.bodies, poses, strict=True)]
        keypoints = np.stack([info["keypoints_2d"] for info in steps])
        floor = self.world.config.condition.floor_anchor
        conds = np.stack([condition_keypoints(info, floor) for info in steps])
        frames = self.session.step(torch.from_numpy(conds).to(self.world.device))
        frames = frames.cpu().numpy()  # ONE batched forward: (B, 4, H, W, 3)
        self.episode_steps += 1
        terminations = np.zeros(self.num_envs, dtype=bool)
        truncations = (self.episode_steps >= self.max_episode_steps
                       if self.max_episode_steps is not None else terminations.copy())
        obs = np.ascontiguousarray(frames[:, -1])
        ones = np.ones(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {"frames": frames, "_frames": ones,
                                 "keypoints_2d": keypoints, "_keypoints_2d": ones.copy()}
        done = np.flatnonzero(truncations)
        if len(done):
            add_final_infos(infos, obs, done, ("frames", "keypoints_2d"))
            reset_obs, _ = self._reset_items(done, None)
            obs[done] = reset_obs
            infos["frames"][done] = reset_obs[:, None]  # the next episode's start frame
            infos["_keypoints_2d"][done] = False
        self._obs = obs
        return obs.copy(), np.zeros(self.num_envs), terminations, truncations, infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode == "rgb_array":
            return tuple(frame.copy() for frame in self._obs)
        return None

    def close(self, **kwargs: Any) -> None:
        for body in self.bodies:
            body.close()

    def _reset_items(self, items: np.ndarray, pose: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Restart envs ``items`` from a real render of their start pose, in one session
        reset; each env draws (body seed, noise seed) as ``NeuralHumanoidEnv.reset`` does."""
        reals, noise_seeds = [], []
        for i in items:
            if self._rngs[i] is None:
                self._rngs[i] = seeding.np_random()[0]
            body_seed, noise_seed = (int(s) for s in self._rngs[i].integers(0, SEED_HIGH, 2))
            real, _ = self.bodies[i].reset(seed=body_seed,
                                           options=None if pose is None else {"pose": pose})
            reals.append(real)
            noise_seeds.append(noise_seed)
        decoded = self.session.reset(torch.from_numpy(np.stack(reals)),
                                     items=torch.as_tensor(items, dtype=torch.long),
                                     seeds=noise_seeds).cpu().numpy()
        self._started[items] = True
        self.episode_steps[items] = 0
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[items] = True
        real_frames = np.zeros((self.num_envs, *self.world.frame_shape), dtype=np.uint8)
        real_frames[items] = np.stack(reals)
        return decoded, {"real_frame": real_frames, "_real_frame": mask}
