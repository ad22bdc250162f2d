"""The real Doom world: a Gymnasium env over ViZDoom, the source of training data and ground truth.

One ``step`` holds the action for ``FRAMES_PER_STEP`` (= 4) game tics and renders every tic, so
a step yields the 4 video frames of one latent frame. The observation is the last of them; all
four, and the camera pose of each, are in ``info``:

- ``info["frames"]``: uint8 (4, H, W, 3)
- ``info["poses"]``: float32 (4, 5) camera ``[x, y, z, yaw_deg, pitch_deg]`` per frame, from
  ViZDoom's CAMERA_POSITION_X/Y/Z, CAMERA_ANGLE, CAMERA_PITCH (the rendered viewpoint, so view
  height and bobbing are included). Yaw grows counter-clockwise, pitch is positive looking down.
- ``info["command"]``: float32 (4,) the canonical command the action was mapped to.

``reset`` gives the same shapes, all 4 slots holding the start frame and pose (so vector envs
can stack reset and step infos).

Pitfalls of raw ViZDoom handled here: the terminal tic has no screen (ViZDoom gives ``None`` or
a black frame), so the last rendered frame is repeated; the episode timeout ends a ViZDoom
episode just like a death does, but only death is ``terminated`` — a timeout is ``truncated``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
import vizdoom as vzd
from gymnasium import spaces

from aapt_world.constants import DEFAULT_MAP, DOOM_FPS
from envs.actions import (
    FRAMES_PER_STEP,
    CommandScale,
    action_to_command,
    command_to_buttons,
    make_action_space,
)
from envs.options import checked_render_mode, configured

POSE_DIM = 5
POSE_NAMES = ("x", "y", "z", "yaw_deg", "pitch_deg")
_POSE_VARIABLES = [
    vzd.GameVariable.CAMERA_POSITION_X,
    vzd.GameVariable.CAMERA_POSITION_Y,
    vzd.GameVariable.CAMERA_POSITION_Z,
    vzd.GameVariable.CAMERA_ANGLE,
    vzd.GameVariable.CAMERA_PITCH,
]
_BUTTONS = [
    vzd.Button.MOVE_FORWARD_BACKWARD_DELTA,
    vzd.Button.MOVE_LEFT_RIGHT_DELTA,
    vzd.Button.TURN_LEFT_RIGHT_DELTA,
    vzd.Button.LOOK_UP_DOWN_DELTA,
]
# ViZDoom turns right for positive TURN delta but reports yaw counter-clockwise; LOOK delta
# positive looks up while pitch is positive looking down. Commands follow "right/down positive".
_BUTTON_SIGNS = np.array([1.0, 1.0, 1.0, -1.0], dtype=np.float32)

# ViZDoom's horizontal field of view at its default settings (a pinhole fit of one step's
# turn to the recorded frames peaks here: aapt_world.view_warp)
DOOM_FOV_DEG = 90.0

EXPLORATION_MAPS = ("MAP01", "MAP02", "MAP03", "MAP04", "MAP05", "MAP06", "MAP07", "MAP08")
REWARD_SCENARIOS = (
    "take_cover",
    "health_gathering",
    "health_gathering_supreme",
    "defend_the_center",
    "defend_the_line",
    "my_way_home",
    "basic",
    "deadly_corridor",
)
# ViZDoom ignores input for the first tics of an episode (measured: 7 with ViZDoom 1.3);
# reset() lets them pass so that the first step's action moves the camera like every other.
_SPAWN_TICS = 7


@dataclass
class DoomConfig:
    """What world to run and how frames come out.

    scenario: "freedoom2" for camera exploration of Freedoom2 maps (``doom_map``), or one of
        REWARD_SCENARIOS (ViZDoom's bundled scenarios with rewards and deaths).
    """

    scenario: str = "freedoom2"
    doom_map: str = DEFAULT_MAP
    width: int = 128
    height: int = 96
    action_type: str = "discrete"
    # None: the scenario's own (freedoom2: no monsters, the camera is all that moves; the
    # reward scenarios keep theirs, TakeCover IS its monsters)
    nomonsters: bool | None = None
    episode_timeout_tics: int = 0  # tics of play; 0 keeps the scenario's own (none for freedoom2)
    command_scale: CommandScale = field(default_factory=CommandScale)

    @property
    def monsters_off(self) -> bool:
        return self.scenario == "freedoom2" if self.nomonsters is None else self.nomonsters

    def validate(self) -> None:
        if self.scenario != "freedoom2" and self.scenario not in REWARD_SCENARIOS:
            raise ValueError(
                f"unknown scenario {self.scenario!r}: expected 'freedoom2' or one of "
                f"{REWARD_SCENARIOS}"
            )
        if self.width < 16 or self.height < 16 or self.width % 8 or self.height % 8:
            raise ValueError(
                f"frame size must be multiples of 8 and at least 16x16 (the VAE compresses 8x), "
                f"got {self.width}x{self.height}"
            )
        make_action_space(self.action_type)  # raises on an unknown action type


def _scenario_path(name: str) -> str:
    return os.path.join(vzd.scenarios_path, f"{name}.cfg")


class DoomEnv(gym.Env):
    """ViZDoom as a Gymnasium env with frame skip 4 and per-frame camera poses."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": DOOM_FPS // FRAMES_PER_STEP}

    def __init__(
        self, config: DoomConfig | None = None, render_mode: str | None = None, **overrides: Any
    ) -> None:
        config = configured(config or DoomConfig(), overrides, "DoomEnv")
        self.config = config
        self.render_mode = checked_render_mode(render_mode, self.metadata)
        self.action_space = make_action_space(config.action_type)
        self.observation_space = spaces.Box(
            0, 255, shape=(config.height, config.width, 3), dtype=np.uint8
        )
        self._game = self._make_game(config)
        self._last_frame = np.zeros(self.observation_space.shape, dtype=np.uint8)
        self._last_pose = np.zeros(POSE_DIM, dtype=np.float32)

    @staticmethod
    def _make_game(config: DoomConfig) -> vzd.DoomGame:
        game = vzd.DoomGame()
        game.load_config(_scenario_path(config.scenario))
        if config.scenario == "freedoom2":
            game.set_doom_map(config.doom_map)
        # ViZDoom writes its ini file to the working directory unless told otherwise.
        config_dir = os.path.join(os.path.expanduser("~"), ".cache", "aapt-world")
        os.makedirs(config_dir, exist_ok=True)
        game.set_doom_config_path(os.path.join(config_dir, "_vizdoom.ini"))
        game.set_window_visible(False)
        game.set_sound_enabled(False)
        game.set_screen_resolution(vzd.ScreenResolution.RES_320X240)
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        game.set_render_hud(False)
        game.set_render_crosshair(False)
        game.set_render_weapon(True)
        game.set_render_messages(False)
        game.set_available_buttons(_BUTTONS)
        game.set_available_game_variables(_POSE_VARIABLES)
        game.set_mode(vzd.Mode.PLAYER)
        args = "+freelook 1"
        if config.monsters_off:
            args += " -nomonsters"
        game.add_game_args(args)
        if config.episode_timeout_tics or config.scenario == "freedoom2":
            # counted in tics of play: the spawn tics that reset() skips come on top
            timeout = config.episode_timeout_tics
            game.set_episode_timeout(timeout + _SPAWN_TICS if timeout else 0)
        game.init()
        return game

    # -- Gymnasium API -------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if options:  # the neural worlds take a start "frame"; the real game cannot
            raise ValueError(f"aapt/Doom-v0 reset() takes no options, got {sorted(options)}: "
                             "the real game always starts at its map's spawn (a start 'frame' "
                             "is an option of the neural worlds, aapt/NeuralDoom-v0)")
        super().reset(seed=seed)
        # ViZDoom's own RNG (spawns, item placement) is seeded from ours: same seed, same world.
        self._game.set_seed(int(self.np_random.integers(0, 2**31 - 1)))
        self._game.new_episode()
        self._game.make_action([0.0] * len(_BUTTONS), _SPAWN_TICS)
        frame, pose = self._read_state()
        self._last_frame, self._last_pose = frame, pose
        # Same info shapes as step() (4 frames) so vector envs can batch reset and step infos
        # in one array; at reset all 4 slots hold the start frame.
        info = {"frames": np.repeat(frame[None], FRAMES_PER_STEP, axis=0),
                "poses": np.repeat(pose[None], FRAMES_PER_STEP, axis=0)}
        return frame.copy(), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        command = action_to_command(action, self.config.action_type)
        if self._game.is_episode_finished():
            raise RuntimeError("step() called on a finished episode: call reset() first")
        buttons = command_to_buttons(command * _BUTTON_SIGNS, self.config.command_scale)
        frames = np.empty((FRAMES_PER_STEP, *self.observation_space.shape), dtype=np.uint8)
        poses = np.empty((FRAMES_PER_STEP, POSE_DIM), dtype=np.float32)
        reward = 0.0
        for tic in range(FRAMES_PER_STEP):
            if not self._game.is_episode_finished():
                reward += self._game.make_action(buttons, 1)
            if not self._game.is_episode_finished():
                self._last_frame, self._last_pose = self._read_state()
            # After the episode ends there is no screen: repeat the last real frame (never black).
            frames[tic], poses[tic] = self._last_frame, self._last_pose
        finished = self._game.is_episode_finished()
        terminated = finished and self._game.is_player_dead()
        truncated = finished and not terminated
        info = {"frames": frames, "poses": poses, "command": command}
        return frames[-1].copy(), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self._last_frame.copy()
        return None

    def close(self) -> None:
        if getattr(self, "_game", None) is not None:
            self._game.close()
            self._game = None

    # -- helpers --------------------------------------------------------------------------

    def _read_state(self) -> tuple[np.ndarray, np.ndarray]:
        state = self._game.get_state()
        if state is None:
            return self._last_frame, self._last_pose
        screen = state.screen_buffer
        frame = cv2.resize(
            screen, (self.config.width, self.config.height), interpolation=cv2.INTER_AREA
        )
        pose = np.asarray(state.game_variables, dtype=np.float32)
        return frame, pose
