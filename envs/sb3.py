"""Stable-Baselines3 ``VecEnv`` adapter over the natively batched neural worlds (Doom-like
``NeuralWorldVectorEnv`` and the pose-driven ``NeuralHumanoidVectorEnv``).

    from stable_baselines3 import PPO
    from envs.sb3 import NeuralWorldSB3VecEnv

    venv = NeuralWorldSB3VecEnv.from_world("runs/doom/world", num_envs=8, max_episode_steps=525)
    PPO("CnnPolicy", venv, n_steps=64).learn(10_000)

SB3's conventions on top of ``NeuralWorldVectorEnv`` (same-step autoreset): ``step_wait``
returns the next episode's first observation for envs that ended, with the final one in
``infos[i]["terminal_observation"]`` and ``infos[i]["TimeLimit.truncated"]`` set when the end was
a truncation only; ``dones = terminated | truncated``. Every info also carries the step's
``frames`` (views into one batched array, no copies) and ``command``, and ended episodes carry
Monitor-style ``infos[i]["episode"] = {"r", "l", "t"}`` so SB3 logs ``ep_rew_mean`` /
``ep_len_mean`` without a ``VecMonitor``. Observations are channels-last uint8 images: SB3 wraps
the adapter in ``VecTransposeImage`` for ``CnnPolicy`` by itself.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from aapt_world.world import World
from envs.doom import DoomConfig, DoomEnv
from envs.neural_humanoid import NeuralHumanoidVectorEnv
from envs.vector import NeuralWorldVectorEnv


class NeuralWorldSB3VecEnv(VecEnv):
    """An SB3 ``VecEnv`` over a ``NeuralWorldVectorEnv`` (one batched forward per step)."""

    def __init__(self, venv: NeuralWorldVectorEnv | NeuralHumanoidVectorEnv) -> None:
        if not isinstance(venv, (NeuralWorldVectorEnv, NeuralHumanoidVectorEnv)):
            raise TypeError(f"expected a NeuralWorldVectorEnv or NeuralHumanoidVectorEnv, got "
                            f"{type(venv).__name__}")
        self.venv = venv
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(venv.num_envs, dtype=np.float64)
        self._lengths = np.zeros(venv.num_envs, dtype=np.int64)
        self._t0 = time.time()
        super().__init__(venv.num_envs, venv.single_observation_space,
                         venv.single_action_space)

    @classmethod
    def from_world(cls, world: World | str | os.PathLike | None, num_envs: int,
                   max_episode_steps: int | None = None, render_mode: str | None = None,
                   device: str | torch.device | None = None,
                   dtype: str | torch.dtype | None = None) -> NeuralWorldSB3VecEnv:
        return cls(NeuralWorldVectorEnv(world, num_envs=num_envs,
                                        max_episode_steps=max_episode_steps,
                                        render_mode=render_mode, device=device, dtype=dtype))

    # -- VecEnv API -------------------------------------------------------------------------

    def reset(self) -> VecEnvObs:
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        obs, infos = self.venv.reset(seed=seeds, options=self._merged_options())
        self.reset_infos = self._split(infos)
        self._returns[:] = 0
        self._lengths[:] = 0
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async()")
        actions, self._actions = self._actions, None
        if isinstance(self.venv.single_action_space, spaces.Discrete):
            actions = actions.reshape(self.num_envs)  # SB3 may hand (n, 1) for Discrete
        obs, rewards, terminated, truncated, infos = self.venv.step(actions)
        dones = terminated | truncated
        self._returns += rewards
        self._lengths += 1
        out = self._split(infos)
        for i in np.flatnonzero(dones):
            info = out[i]
            final = infos["final_info"]
            info.update({key: final[key][i] for key in final
                         if not key.startswith("_") and final[f"_{key}"][i]})
            info["terminal_observation"] = infos["final_obs"][i]
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            info["episode"] = {"r": float(self._returns[i]), "l": int(self._lengths[i]),
                               "t": round(time.time() - self._t0, 6)}
            self._returns[i], self._lengths[i] = 0.0, 0
        return obs, rewards.astype(np.float32), dones, out

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return list(self.venv._obs.copy())

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None,
                   **method_kwargs) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    # -- helpers ----------------------------------------------------------------------------

    def _split(self, infos: dict[str, Any]) -> list[dict[str, Any]]:
        """Gymnasium's batched info dict -> SB3's list of per-env dicts (masked keys only)."""
        out: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key, value in infos.items():
            if key.startswith("_") or key in ("final_obs", "final_info"):
                continue
            mask = infos.get(f"_{key}")
            for i in range(self.num_envs):
                if mask is None or mask[i]:
                    out[i][key] = value[i]
        return out

    def _merged_options(self) -> dict[str, Any] | None:
        """SB3 keeps one options dict per env; the vector env takes one for all."""
        options = self._options
        if all(not o for o in options):
            return None
        if all("frame" in o and set(o) == {"frame"} for o in options):
            return {"frames": np.stack([o["frame"] for o in options])}
        if all(_same_options(o, options[0]) for o in options[1:]):
            return dict(options[0])
        raise ValueError("per-env reset options must be all {'frame': image} or the same dict "
                         f"for every env, got {options}")


def _same_options(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return set(a) == set(b) and all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a)


def real_doom_vec_env(config: DoomConfig, num_envs: int, max_episode_steps: int, seed: int = 0
                      ) -> VecEnv:
    """The REAL game as an SB3 ``VecEnv`` (baselines trained outside the dream): ``num_envs``
    ViZDoom instances in this process, truncated at ``max_episode_steps``, Monitor-wrapped so
    SB3 logs episode returns; channels-last frames at ``config``'s size, as in the dream."""
    from gymnasium.wrappers import TimeLimit
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    def make() -> Monitor:
        return Monitor(TimeLimit(DoomEnv(dataclasses.replace(config)), max_episode_steps))

    venv = DummyVecEnv([make] * num_envs)
    venv.seed(seed)
    return venv
