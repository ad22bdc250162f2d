"""The real game seen through a neural world's VAE.

A policy trained in the dream only ever sees frames from the world's decoder: softer edges,
the decoder's palette, no detail finer than a latent pixel. The real game's frames are sharper,
so a dream-trained policy meets them out of distribution (World Models sidestepped this by
giving its controller the VAE's latent). :class:`WorldVAEView` closes that gap at evaluation:
every step's 4 real frames go through the world's causal encoder (posterior mean, as the world
encodes its start frames) and its streaming decoder, exactly as a dream stream decodes its own
latents, and the policy sees the decoded frames. The real frames stay in ``info["real_frames"]``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from aapt_world.session import from_uint8_frames, to_uint8_frames
from aapt_world.vae import StreamState
from aapt_world.world import World


class WorldVAEView(gym.Wrapper):
    """Observations (and ``info["frames"]``) of ``env`` replaced by the frames the world's own
    VAE makes of them; ``env`` must yield the world's frame shape and ``info["frames"]``
    (uint8 (4, H, W, 3) per step, as ``envs.doom.DoomEnv`` does)."""

    def __init__(self, env: gym.Env, world: World) -> None:
        super().__init__(env)
        shape = tuple(env.observation_space.shape or ())
        if shape != world.frame_shape:
            raise ValueError(f"WorldVAEView: the env's frames are {shape} but the world's VAE "
                             f"takes {world.frame_shape}; make the env at the world's size")
        self.vae = world.vae
        param = next(self.vae.parameters())
        self._device, self._dtype = param.device, param.dtype
        self._encode_state: StreamState | None = None
        self._decode_state: StreamState | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        _, info = self.env.reset(seed=seed, options=options)
        self._encode_state = self.vae.init_encode_state(1)
        self._decode_state = self.vae.init_decode_state(1)
        # a stream starts with one frame: the first latent sees frame 0 only
        return self._view(info, self._frames(info)[:1])

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._encode_state is None:
            raise RuntimeError("WorldVAEView: reset() before step()")
        _, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._view(info, self._frames(info))
        return obs, reward, terminated, truncated, info

    @staticmethod
    def _frames(info: dict[str, Any]) -> np.ndarray:
        frames = info.get("frames")
        if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.dtype != np.uint8:
            raise ValueError("WorldVAEView needs info['frames'], uint8 (4, H, W, 3) per step, "
                             f"from the wrapped env; got {type(frames).__name__}")
        return frames

    @torch.inference_mode()
    def _view(self, info: dict[str, Any], frames: np.ndarray
              ) -> tuple[np.ndarray, dict[str, Any]]:
        video = from_uint8_frames(torch.from_numpy(np.ascontiguousarray(frames))
                                  .to(self._device)).to(self._dtype)
        post, self._encode_state = self.vae.encode_step(
            video.transpose(0, 1).unsqueeze(0), self._encode_state)
        decoded, self._decode_state = self.vae.decode_step(post.mode(), self._decode_state)
        seen = to_uint8_frames(decoded[0].transpose(0, 1)).cpu().numpy()  # (4, H, W, 3)
        info["real_frames"] = info["frames"]
        info["frames"] = seen
        return seen[-1].copy(), info
