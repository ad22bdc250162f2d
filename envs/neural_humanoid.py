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
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from aapt_world.constants import FRAMES_PER_STEP, HUMANOID_FPS
from aapt_world.world import World
from envs.humanoid import HUMANOID_SCENES, KEYPOINT_NAMES, HumanoidConfig, HumanoidEnv
from envs.neural import SEED_HIGH, resolve_world


class NeuralHumanoidEnv(gym.Env):
    """A pose world (``world.config.condition.kind == "pose"``) driven by body poses.

    Args:
        world: a ``World`` or a path to a pose world's directory.
        scene: the camera of the real world it was trained on: ``fixed`` or ``orbit``.
        render_mode: ``rgb_array`` (the newest generated frame) or None.
        device: where the models run (default: cpu for a path).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": HUMANOID_FPS // FRAMES_PER_STEP}

    def __init__(self, world: World | str | os.PathLike, scene: str = "fixed",
                 render_mode: str | None = None, device: str | torch.device | None = None
                 ) -> None:
        if world is None:
            raise ValueError("NeuralHumanoidEnv needs world=<a pose world's directory> (no "
                             "humanoid world is shipped yet)")
        if scene not in HUMANOID_SCENES:
            raise ValueError(f"scene must be one of {sorted(HUMANOID_SCENES)}, got {scene!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, "
                             f"got {render_mode!r}")
        self.world = resolve_world(world, device, check=False)
        condition = self.world.config.condition
        if condition.kind != "pose":
            raise ValueError(f"{world} is a {condition.kind!r}-conditioned world, not a pose "
                             f"world: use aapt/NeuralWorld-v0 for it")
        height, width, _ = self.world.frame_shape
        self.body = HumanoidEnv(HumanoidConfig(width=width, height=height,
                                               orbit_deg_per_s=HUMANOID_SCENES[scene]))
        if condition.num_keypoints != len(KEYPOINT_NAMES):
            raise ValueError(f"the world expects {condition.num_keypoints} keypoints per frame, "
                             f"the humanoid has {len(KEYPOINT_NAMES)} ({KEYPOINT_NAMES})")
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
        conds = torch.from_numpy(info["keypoints_2d"])[None].to(self.world.device)
        frames = self.session.step(conds)[0].cpu().numpy()  # (4, H, W, 3)
        self._frame = frames[-1]
        info["frames"] = frames
        return self._frame.copy(), 0.0, False, False, info

    def render(self) -> np.ndarray | None:
        return self._frame.copy() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        self.body.close()
