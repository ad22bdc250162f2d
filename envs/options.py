"""Constructor options shared by the real source envs (Doom, humanoid)."""

from __future__ import annotations

from typing import Any, TypeVar

C = TypeVar("C")


def configured(config: C, overrides: dict[str, Any], env_name: str) -> C:
    """``config`` with keyword ``overrides`` applied and validated; an unknown key is a
    TypeError naming the env and the key."""
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise TypeError(f"{env_name} got an unknown option {key!r}")
        setattr(config, key, value)
    config.validate()
    return config


def checked_render_mode(render_mode: str | None, metadata: dict[str, Any]) -> str | None:
    if render_mode is not None and render_mode not in metadata["render_modes"]:
        raise ValueError(f"render_mode must be one of {metadata['render_modes']}, "
                         f"got {render_mode!r}")
    return render_mode
