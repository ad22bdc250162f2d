"""The real humanoid world: MuJoCo's humanoid posed kinematically, the pose-conditioned source.

No physics runs: every video frame is exactly the commanded pose (joint angles set, then
``mj_forward``), rendered offscreen (``MUJOCO_GL=osmesa`` on a CPU, ``egl`` where a GPU is).
The model is the humanoid that ships with gymnasium's MuJoCo assets, its checker floor kept so
that motion over the ground is visible.

**Pose layout** (``POSE_DIM`` = 23, float32): ``[x, y, z]`` root position (m), ``[yaw, pitch,
roll]`` root orientation (rad; yaw about the vertical axis, counter-clockwise seen from above),
then the 17 hinge joints in model order (``JOINT_NAMES``, rad). An action is the pose at the
END of the step; the step's ``FRAMES_PER_STEP`` (4) video frames interpolate linearly from the
previous pose (frame j at (j + 1) / 4). Joint angles are clipped to the model's joint ranges,
the root height and tilt to ``ROOT_LOW``/``ROOT_HIGH``; a wrong shape or a non-finite value is
an error that names the offending entries.

**info** per step (and at reset, every slot holding the start): ``frames`` uint8 (4, H, W, 3);
``keypoints_3d`` float32 (4, K, 3) root-relative world positions (m) and ``keypoints_2d``
float32 (4, K, 2) their image projections (x = column, y = row, in pixels) of the
``KEYPOINT_NAMES`` (K = 16: the 13 body origins, head and both hands); ``poses`` float32
(4, 105) the per-frame record a dataset stores (``RECORD_NAMES``): the interpolated, clipped
pose (23), then the 3D keypoints (48, x/y/z per keypoint), the 2D keypoints (32, col/row
per keypoint) and the floor anchor (2, ``floor_col`` / ``floor_row``); ``floor_2d`` float32
(4, 2) that anchor: the floor point under the previous frame's root, seen by this frame's
camera. The camera follows the root, so the keypoints (drawn relative to it) cannot say how
far the floor moved; the anchor can (``condition_keypoints`` appends it for a pose world that
takes it). ``command`` float32 (23,) the step's target pose after clipping.

**Camera**: looks at the root from ``distance`` m, ``elevation`` degrees; its azimuth starts at
``azimuth_deg`` and turns ``orbit_deg_per_s`` (0 = fixed) — a slow orbit shows the body from
every side. It follows the root over the floor.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "osmesa")  # before mujoco is imported: CPU offscreen GL
# OSMesa's llvmpipe rasterizes a 128x96 frame faster in the calling thread than with worker
# threads (their hand-off costs more than the frame: 208 vs 181 frames/s on 2 idle cores), and
# collection workers then do not oversubscribe the cores. Read when the GL context is created.
os.environ.setdefault("LP_NUM_THREADS", "0")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

try:  # optional at import time: Doom-only machines (e.g. the GPU bundle) carry no MuJoCo
    import mujoco
except ImportError:  # pragma: no cover - mujoco is a declared dependency
    mujoco = None
from gymnasium import spaces  # noqa: E402

from aapt_world.constants import FLOOR_ANCHOR, FRAMES_PER_STEP, HUMANOID_FPS  # noqa: E402
from envs.options import checked_render_mode, configured  # noqa: E402

ROOT_NAMES = ("x", "y", "z", "yaw", "pitch", "roll")
ROOT_DIM = len(ROOT_NAMES)
# root limits: position (m) on the floor, height, and orientation (rad); yaw wraps freely
ROOT_LOW = np.array([-50.0, -50.0, 0.3, -np.pi, -0.8, -0.8], dtype=np.float32)
ROOT_HIGH = np.array([50.0, 50.0, 2.0, np.pi, 0.8, 0.8], dtype=np.float32)
STAND_HEIGHT = 1.4  # root (torso) height standing upright with every joint at 0: feet on the floor
KEYPOINT_BODIES = ("torso", "lwaist", "pelvis", "right_thigh", "right_shin", "right_foot",
                   "left_thigh", "left_shin", "left_foot", "right_upper_arm", "right_lower_arm",
                   "left_upper_arm", "left_lower_arm")
KEYPOINT_GEOMS = ("head", "right_hand", "left_hand")
KEYPOINT_NAMES = KEYPOINT_BODIES + KEYPOINT_GEOMS


def humanoid_xml() -> Path:
    """gymnasium's humanoid model file (installed with gymnasium's MuJoCo assets)."""
    import gymnasium.envs.mujoco as gym_mujoco

    return Path(gym_mujoco.__file__).parent / "assets" / "humanoid.xml"


def euler_to_quat(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """MuJoCo quaternion (w, x, y, z) of R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cy, sy = np.cos(yaw / 2), np.sin(yaw / 2)
    cp, sp = np.cos(pitch / 2), np.sin(pitch / 2)
    cr, sr = np.cos(roll / 2), np.sin(roll / 2)
    return np.array([cy * cp * cr + sy * sp * sr, cy * cp * sr - sy * sp * cr,
                     cy * sp * cr + sy * cp * sr, sy * cp * cr - cy * sp * sr])


HUMANOID_SCENES = {"fixed": 0.0, "orbit": 12.0}  # camera orbit speed (deg/s) per scene


@dataclass
class HumanoidConfig:
    width: int = 128
    height: int = 96
    distance: float = 3.0  # camera distance to the root (m)
    elevation: float = -12.0  # degrees; negative looks down on the body
    azimuth_deg: float = 150.0  # 180 looks at the front of a humanoid at yaw 0: 3/4 view
    orbit_deg_per_s: float = 0.0  # camera orbit speed; 0 = fixed
    fps: int = HUMANOID_FPS
    # Multisample anti-aliasing of the offscreen buffer. OSMesa renders it in software: MuJoCo's
    # default 4 samples cost ~3x the frame time, and the frames differ from the 0-sample ones
    # by ~42 dB PSNR (edges only, ~6 % of the pixels), far below any world model's error.
    msaa_samples: int = 0

    def validate(self) -> None:
        if self.width < 16 or self.height < 16 or self.width % 8 or self.height % 8:
            raise ValueError(f"frame size must be multiples of 8 and at least 16x16 (the VAE "
                             f"compresses 8x), got {self.width}x{self.height}")
        if not self.distance > 0:
            raise ValueError(f"distance must be > 0 m, got {self.distance}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.msaa_samples < 0:
            raise ValueError(f"msaa_samples must be >= 0, got {self.msaa_samples}")


def record_names(joint_names: tuple[str, ...]) -> tuple[str, ...]:
    """Column names of the per-frame record (``info["poses"]``, a dataset's poses.npy)."""
    return (ROOT_NAMES + joint_names
            + tuple(f"{k}_{a}" for k in KEYPOINT_NAMES for a in ("x", "y", "z"))
            + tuple(f"{k}_{a}" for k in KEYPOINT_NAMES for a in ("col", "row"))
            + tuple(f"{FLOOR_ANCHOR}_{a}" for a in ("col", "row")))


def condition_keypoints(info: dict[str, Any], floor_anchor: bool) -> np.ndarray:
    """The per-frame 2D points a pose world is conditioned on, float32 (T, K, 2) (a step: T =
    4): the body's keypoints, then (``floor_anchor``) the floor anchor."""
    points = np.asarray(info["keypoints_2d"], dtype=np.float32)
    if not floor_anchor:
        return points
    return np.concatenate([points, np.asarray(info["floor_2d"], np.float32)[:, None]], axis=1)


class HumanoidPoser:
    """The humanoid model, posed and rendered: no Gymnasium API, shared by env and tools."""

    def __init__(self, config: HumanoidConfig) -> None:
        if mujoco is None:
            raise ImportError("the humanoid world needs MuJoCo: pip install mujoco (software "
                              "rendering also needs Debian's libosmesa6, see .ci/system-deps.sh)")
        self.config = config
        self.model = mujoco.MjModel.from_xml_path(str(humanoid_xml()))
        self.model.mat_reflectance[:] = 0.0  # a mirror floor doubles the render cost
        self.model.vis.quality.offsamples = config.msaa_samples  # read by the GL context
        self.data = mujoco.MjData(self.model)
        hinges = [j for j in range(self.model.njnt)
                  if self.model.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE]
        self.joint_names = tuple(self.model.joint(j).name for j in hinges)
        self.qpos_index = np.array([self.model.jnt_qposadr[j] for j in hinges])
        ranges = self.model.jnt_range[hinges].astype(np.float32)
        self.low = np.concatenate([ROOT_LOW, ranges[:, 0]])
        self.high = np.concatenate([ROOT_HIGH, ranges[:, 1]])
        self.body_ids = [self.model.body(n).id for n in KEYPOINT_BODIES]
        self.geom_ids = [self.model.geom(n).id for n in KEYPOINT_GEOMS]
        self.renderer = mujoco.Renderer(self.model, config.height, config.width)
        # free the GL context at exit while PyOpenGL is still importable: MuJoCo's own
        # Renderer.__del__ runs too late then and prints a traceback for an unclosed env
        self._free_gl = weakref.finalize(self, self.renderer.close)
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
            self.renderer.scene.flags[flag] = False
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self.camera.distance, self.camera.elevation = config.distance, config.elevation

    @property
    def pose_dim(self) -> int:
        return ROOT_DIM + len(self.joint_names)

    def rest_pose(self) -> np.ndarray:
        """Standing upright at the origin, arms down: every joint at 0 (clipped into range)."""
        pose = np.zeros(self.pose_dim, np.float32)
        pose[2] = STAND_HEIGHT
        return np.clip(pose, self.low, self.high)

    def clip(self, pose: np.ndarray) -> np.ndarray:
        pose = pose.astype(np.float32, copy=True)
        pose[3] = (pose[3] + np.pi) % (2 * np.pi) - np.pi  # yaw wraps
        return np.clip(pose, self.low, self.high)

    def set_pose(self, pose: np.ndarray) -> None:
        d = self.data
        d.qpos[:3] = pose[:3]
        d.qpos[3:7] = euler_to_quat(*pose[3:6])
        d.qpos[self.qpos_index] = pose[ROOT_DIM:]
        mujoco.mj_kinematics(self.model, d)  # positions only: no dynamics needed to render

    def keypoints(self) -> np.ndarray:
        """(K, 3) world positions of the keypoints in the current pose."""
        return np.concatenate([self.data.xpos[self.body_ids], self.data.geom_xpos[self.geom_ids]])

    def render(self, azimuth_deg: float, draw: bool = True
               ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """The current pose seen by the camera: frame uint8 (H, W, 3) (None when not
        ``draw``n: the keypoints alone are cheap), keypoints 3D relative to the root (K, 3)
        and their projections (K, 2)."""
        self.camera.lookat[:] = (self.data.qpos[0], self.data.qpos[1], 1.0)
        self.camera.azimuth = azimuth_deg
        self.renderer.update_scene(self.data, camera=self.camera)
        frame = self.renderer.render() if draw else None
        points = self.keypoints()
        return frame, (points - self.data.qpos[:3]).astype(np.float32), self.project(points)

    def floor_anchor(self, root_xy: np.ndarray) -> np.ndarray:
        """(2,) where the floor point under ``root_xy`` (a root position on the floor, m) lies
        in the image of the camera last rendered with (column, row pixels)."""
        return self.project(np.array([[root_xy[0], root_xy[1], 0.0]]))[0]

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> image (N, 2) as (column, row) pixels, through the scene's
        OpenGL camera (the frustum MuJoCo rendered with; its width follows the aspect)."""
        cam = self.renderer.scene.camera[0]
        fwd, up = np.asarray(cam.forward), np.asarray(cam.up)
        right = np.cross(fwd, up)
        rel = points - np.asarray(cam.pos)
        z = rel @ fwd
        x_near, y_near = (rel @ right) * cam.frustum_near / z, (rel @ up) * cam.frustum_near / z
        half_h = (cam.frustum_top - cam.frustum_bottom) / 2
        half_w = half_h * self.config.width / self.config.height
        col = (x_near - (cam.frustum_center - half_w)) / (2 * half_w) * self.config.width
        row = (cam.frustum_top - y_near) / (2 * half_h) * self.config.height
        return np.stack([col, row], axis=1).astype(np.float32)

    def close(self) -> None:
        self._free_gl()  # once: later calls do nothing


class HumanoidEnv(gym.Env):
    """MuJoCo's humanoid as a Gymnasium env: action = the next pose, 4 rendered frames per step.

    No reward (0) and no termination: the world is a pose-conditioned video source; episodes
    end by truncation (``max_episode_steps`` of the registration).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": HUMANOID_FPS // FRAMES_PER_STEP}

    def __init__(self, config: HumanoidConfig | None = None, render_mode: str | None = None,
                 **overrides: Any) -> None:
        config = configured(config or HumanoidConfig(), overrides, "HumanoidEnv")
        self.config = config
        self.render_mode = checked_render_mode(render_mode, self.metadata)
        self.poser = HumanoidPoser(config)
        self.action_space = spaces.Box(self.poser.low, self.poser.high, dtype=np.float32)
        self.observation_space = spaces.Box(0, 255, (config.height, config.width, 3), np.uint8)
        self._pose = self.poser.rest_pose()
        self._frame = np.zeros(self.observation_space.shape, np.uint8)
        self._frame_index = 0
        self._azimuth0 = config.azimuth_deg
        self._last_root_xy = self._pose[:2].copy()  # the previous frame's, for the floor anchor

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start standing at the origin (``options={"pose": ...}`` starts from another pose);
        the camera's start azimuth is drawn from the seed when it orbits."""
        super().reset(seed=seed)
        options = dict(options or {})
        pose = options.pop("pose", None)
        if options:
            raise ValueError(f"HumanoidEnv.reset() takes only the option 'pose', got "
                             f"{sorted(options)}")
        self._pose = self.poser.rest_pose() if pose is None else self._checked(pose, "reset pose")
        self._frame_index = 0
        self._azimuth0 = self.config.azimuth_deg
        if self.config.orbit_deg_per_s:
            self._azimuth0 += float(self.np_random.uniform(0, 360))
        self._last_root_xy = self._pose[:2].copy()  # the start frame's anchor: its own root
        frame, info = self._render_frames(self._pose[None])
        info = {k: np.repeat(v, FRAMES_PER_STEP, axis=0) for k, v in info.items()}
        return frame, info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        frame, info = self._advance(action, draw=True)
        return frame, 0.0, False, False, info

    def pose_step(self, action: Any) -> dict[str, Any]:
        """``step`` without drawing: the step's per-frame poses and keypoints (what a neural
        pose world is conditioned on), no ``frames``; the env's state advances the same."""
        return self._advance(action, draw=False)[1]

    def render(self) -> np.ndarray | None:
        return self._frame.copy() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        if getattr(self, "poser", None) is not None:
            self.poser.close()
            self.poser = None

    # -- helpers --------------------------------------------------------------------------

    def _checked(self, pose: Any, what: str) -> np.ndarray:
        arr = np.asarray(pose, dtype=np.float32)
        if arr.shape != (self.poser.pose_dim,):
            raise ValueError(f"{what} must be a pose of shape ({self.poser.pose_dim},) (root "
                             f"{ROOT_NAMES} + joints {self.poser.joint_names}), got shape "
                             f"{arr.shape}")
        bad = ~np.isfinite(arr)
        if bad.any():
            names = ROOT_NAMES + self.poser.joint_names
            raise ValueError(f"{what} has non-finite values at "
                             f"{[names[i] for i in np.flatnonzero(bad)]}")
        return self.poser.clip(arr)

    def _advance(self, action: Any, draw: bool) -> tuple[np.ndarray, dict[str, Any]]:
        target = self._checked(action, "action")
        start = self._pose.copy()
        delta = target - start
        delta[3] = (delta[3] + np.pi) % (2 * np.pi) - np.pi  # turn the short way round
        fractions = (np.arange(FRAMES_PER_STEP, dtype=np.float32) + 1) / FRAMES_PER_STEP
        poses = np.stack([self.poser.clip(start + f * delta) for f in fractions])
        self._pose = poses[-1]
        frame, info = self._render_frames(poses, draw)
        info["command"] = target
        return frame, info

    def _render_frames(self, poses: np.ndarray, draw: bool = True
                       ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        frames, kp3, kp2, floor = [], [], [], []
        for pose in poses:
            self.poser.set_pose(pose)
            azimuth = self._azimuth0 + self.config.orbit_deg_per_s * self._frame_index / \
                self.config.fps
            frame, points_3d, points_2d = self.poser.render(azimuth, draw)
            frames.append(frame)
            kp3.append(points_3d)
            kp2.append(points_2d)
            floor.append(self.poser.floor_anchor(self._last_root_xy))
            self._last_root_xy = pose[:2].copy()
            self._frame_index += 1
        kp3, kp2, floor = np.stack(kp3), np.stack(kp2), np.stack(floor).astype(np.float32)
        record = np.concatenate([poses, kp3.reshape(len(poses), -1),
                                 kp2.reshape(len(poses), -1), floor], axis=1).astype(np.float32)
        info = {"poses": record, "keypoints_3d": kp3, "keypoints_2d": kp2, "floor_2d": floor}
        if draw:
            self._frame = frames[-1]
            info["frames"] = np.stack(frames)
        return self._frame.copy(), info
