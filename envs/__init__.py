"""Gymnasium envs of aapt-world: the real source worlds and (later) the neural worlds.

Registered ids:
- ``aapt/Doom-v0``: Freedoom2 MAP01 without monsters, camera exploration (the default world).
- ``aapt/DoomTakeCover-v0``, ``aapt/DoomHealthGathering-v0``: ViZDoom scenarios with rewards.
"""

from __future__ import annotations

import gymnasium as gym

from envs.actions import FRAMES_PER_STEP

_REAL_DOOM = "envs.doom:DoomEnv"


def _register(env_id: str, entry_point: str, max_episode_steps: int | None, **kwargs) -> None:
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=entry_point, max_episode_steps=max_episode_steps,
                     kwargs=kwargs)


_register("aapt/Doom-v0", _REAL_DOOM, max_episode_steps=2100 // FRAMES_PER_STEP,
          scenario="freedoom2", doom_map="MAP01")
_register("aapt/DoomTakeCover-v0", _REAL_DOOM, max_episode_steps=None,
          scenario="take_cover", nomonsters=False)
_register("aapt/DoomHealthGathering-v0", _REAL_DOOM, max_episode_steps=None,
          scenario="health_gathering", nomonsters=False)
