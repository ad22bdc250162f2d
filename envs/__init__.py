"""Gymnasium envs of aapt-world: the real source worlds and the neural worlds.

Registered ids:
- ``aapt/Doom-v0``: Freedoom2 MAP01 without monsters, camera exploration (the default world).
- ``aapt/DoomTakeCover-v0``, ``aapt/DoomHealthGathering-v0``: ViZDoom scenarios with rewards
  and deaths (TakeCover: Discrete(3) noop / strafe left / strafe right, 2100 tics at most).
- ``aapt/NeuralDoom-v0``: the neural Doom world (``envs.neural.NeuralWorldEnv``), by default
  the trained world shipped at ``DEFAULT_WORLD``; ``world=<path to a world directory>`` picks
  another. ``gym.make_vec("aapt/NeuralDoom-v0", num_envs=8)`` gives the natively batched
  ``envs.vector.NeuralWorldVectorEnv`` (one generator forward per step for all envs).
- ``aapt/Humanoid-v0``: MuJoCo's humanoid posed kinematically (``envs.humanoid``): the action
  is the next body pose, the observation its render; 60 s episodes (truncation only).
- ``aapt/NeuralDoomTakeCover-v0``: the neural TakeCover world shipped at
  ``DEFAULT_TAKE_COVER_WORLD`` (noop / strafe left / right; rewards and deaths from its learned
  heads), for agents trained in the dream and scored in ``aapt/DoomTakeCover-v0``.
- ``aapt/NeuralHumanoid-v0``: the neural humanoid (``envs.neural_humanoid``): body poses in,
  generated video out, by default the pose world shipped at ``DEFAULT_HUMANOID_WORLD``;
  ``gym.make_vec(..., num_envs=N)`` gives ``NeuralHumanoidVectorEnv`` (one batched step).
- ``aapt/NeuralWorld-v0``: any neural world, ``world=<directory>`` required, e.g. one trained
  on your own game (``aapt-world record``): it keeps that game's action space. No time limit
  (pass ``max_episode_steps``).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym

from aapt_world.constants import DEFAULT_MAP, DOOM_EPISODE_STEPS, HUMANOID_EPISODE_STEPS
from envs.actions import SCENARIO_ACTION_TYPES

# The default neural Doom world, shipped in the repo (fp16, see its MODEL_CARD.md).
DEFAULT_WORLD = Path(__file__).parents[1] / "worlds" / "doom"
# The TakeCover dream (issue 12): agents train in it and are scored in the real scenario.
DEFAULT_TAKE_COVER_WORLD = Path(__file__).parents[1] / "worlds" / "take_cover"
# The default pose world (MuJoCo humanoid driven by body poses), shipped the same way.
DEFAULT_HUMANOID_WORLD = Path(__file__).parents[1] / "worlds" / "humanoid"

_REAL_DOOM = "envs.doom:DoomEnv"


def _register(env_id: str, entry_point: str, max_episode_steps: int | None,
              vector_entry_point: str | None = None, **kwargs) -> None:
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=entry_point, max_episode_steps=max_episode_steps,
                     vector_entry_point=vector_entry_point, kwargs=kwargs)


_register("aapt/Doom-v0", _REAL_DOOM, max_episode_steps=DOOM_EPISODE_STEPS,
          scenario="freedoom2", doom_map=DEFAULT_MAP)
# TakeCover with its own actions (noop / strafe left / right); episodes capped at 2100 tics as
# in World Models' evaluation (the return is the tics survived: living reward 1 per tic)
_register("aapt/DoomTakeCover-v0", _REAL_DOOM, max_episode_steps=DOOM_EPISODE_STEPS,
          scenario="take_cover", action_type=SCENARIO_ACTION_TYPES["take_cover"])
_register("aapt/DoomHealthGathering-v0", _REAL_DOOM, max_episode_steps=None,
          scenario="health_gathering")
_register("aapt/Humanoid-v0", "envs.humanoid:HumanoidEnv",
          max_episode_steps=HUMANOID_EPISODE_STEPS)
_register("aapt/NeuralDoom-v0", "envs.neural:NeuralWorldEnv",
          max_episode_steps=DOOM_EPISODE_STEPS,
          vector_entry_point="envs.vector:NeuralWorldVectorEnv")
_register("aapt/NeuralDoomTakeCover-v0", "envs.neural:NeuralWorldEnv",
          max_episode_steps=DOOM_EPISODE_STEPS,
          vector_entry_point="envs.vector:NeuralWorldVectorEnv",
          world=str(DEFAULT_TAKE_COVER_WORLD))
_register("aapt/NeuralHumanoid-v0", "envs.neural_humanoid:NeuralHumanoidEnv",
          max_episode_steps=HUMANOID_EPISODE_STEPS,
          vector_entry_point="envs.neural_humanoid:NeuralHumanoidVectorEnv")
_register("aapt/NeuralWorld-v0", "envs.neural:make_neural_world", max_episode_steps=None,
          vector_entry_point="envs.vector:make_neural_world_vector")
