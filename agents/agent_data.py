"""Record the real game played by a trained agent: the data step of World Models' iterative
loop (train in the dream, play the game, add what the agent met to the world's data).

    aapt-world agent collect --model runs/ppo/model.zip --root data/tc_agent --episodes 200

A dream-trained agent finds the states its dream gets wrong (docs/take_cover_passes.md: a
dream with no side walls flattered the wall hugger 4.5x, and its agent strafed into the wall).
Its own episodes in the game show the world exactly those states. The episodes go through the
same collection plan, resume and format as the scripted players' (``training.collect``), with
the player named ``agent``; ``ROOT/agent.json`` says which model played and how.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3 import PPO

from aapt_world.checkpoint import CheckpointError, atomic_replace
from aapt_world.cli_options import add_threads, apply_threads, command_parser
from aapt_world.constants import DOOM_EPISODE_STEPS
from aapt_world.world import load_world
from agents.ppo import (
    FrameStack,
    load_model,
    model_frame_stack,
    model_scenario,
    model_spec,
    model_world,
)
from envs.actions import action_to_command
from training.collect import CollectConfig, collect

PLAYER = "agent"  # the player name in the episodes' meta
PLAYER_FILE = "agent.json"


@dataclass
class AgentCollectConfig:
    model: str = ""
    root: str = ""
    episodes: int = 200
    seed: int = 0
    deterministic: bool = True
    epsilon: float = 0.0  # chance of a uniformly random action per step (states off its path)
    scenario: str | None = None  # default: the model's world card's, or its real:<scenario>
    doom_map: str = "MAP01"  # Freedoom2 map; a scenario brings its own (one map entry)
    max_steps: int = DOOM_EPISODE_STEPS

    def validate(self) -> None:
        if not Path(self.model).is_file():
            raise FileNotFoundError(f"--model: no file {self.model} (the SB3 zip written by "
                                    "`aapt-world agent train`)")
        if not self.root:
            raise ValueError("--root: the dataset directory to record into is required")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"--epsilon must be in [0, 1], got {self.epsilon}")

    def player(self) -> dict[str, Any]:
        """What ROOT/agent.json records (a resumed collection must agree)."""
        return {"model": str(Path(self.model).resolve()), "deterministic": self.deterministic,
                "epsilon": self.epsilon}


class AgentPlayer:
    """A trained SB3 policy as a collection player: it stacks the real frames as in training
    and turns its discrete action into the continuous command the dataset records."""

    def __init__(self, model: PPO, deterministic: bool, epsilon: float) -> None:
        self.model, self.deterministic, self.epsilon = model, deterministic, epsilon
        self.action_type = model_spec(model)[1]
        self.stack = FrameStack(model_frame_stack(model))
        self.rng = np.random.default_rng(0)

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.stack.reset()

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        action, _ = self.model.predict(self.stack(obs), deterministic=self.deterministic)
        if self.rng.random() < self.epsilon:
            action = self.rng.integers(self.model.action_space.n)  # the episode's seed
        return action_to_command(np.asarray(action).astype(np.int64).reshape(()),
                                 self.action_type)


def _scenario(cfg: AgentCollectConfig) -> str:
    """--scenario, else the real game the model trained in, else its world card's."""
    world = model_world(cfg.model)
    scenario = (cfg.scenario or model_scenario(cfg.model)
                or (load_world(world).source_game()[0] if world is not None else None))
    if not scenario:
        raise ValueError(f"--scenario: cannot tell which game {cfg.model} was trained for (its "
                         "agent.json names no world with a card); pass --scenario")
    return scenario


def collect_agent_episodes(cfg: AgentCollectConfig, progress: bool = True) -> dict[str, Any]:
    """Record ``cfg.episodes`` real episodes of the agent into ``cfg.root`` (resumable)."""
    cfg.validate()
    root = Path(cfg.root)
    player_file = root / PLAYER_FILE
    if player_file.is_file() and json.loads(player_file.read_text()) != cfg.player():
        raise ValueError(f"{cfg.root} was recorded by {player_file.read_text().strip()}, not "
                         f"{cfg.player()}: use another --root")
    model = load_model(cfg.model, device="cpu")
    (height, width, _), action_type = model_spec(model)
    if action_type == "continuous":
        raise ValueError(f"--model {cfg.model} has continuous actions; `agent collect` plays "
                         "discrete-action agents")
    scenario = _scenario(cfg)
    collect_cfg = CollectConfig(root=cfg.root, scenario=scenario, maps=[cfg.doom_map],
                                policies=[PLAYER], num_episodes=cfg.episodes,
                                steps_per_episode=cfg.max_steps, width=width, height=height,
                                seed=cfg.seed, workers=1)
    root.mkdir(parents=True, exist_ok=True)
    atomic_replace(player_file, lambda tmp: Path(tmp).write_text(
        json.dumps(cfg.player(), indent=1) + "\n"))
    summary = collect(collect_cfg, progress=progress, players={
        PLAYER: lambda: AgentPlayer(model, cfg.deterministic, cfg.epsilon)})
    return {**summary, "scenario": scenario, **cfg.player()}


def _parser() -> argparse.ArgumentParser:
    d = AgentCollectConfig()
    p = command_parser("aapt-world agent collect", "record real-game episodes played by a "
                       "trained agent into a dataset (resumable; the scripted players' format)")
    p.add_argument("--model", required=True, help="SB3 zip from `aapt-world agent train`")
    p.add_argument("--root", required=True, help="dataset directory to record into")
    p.add_argument("--episodes", type=int, default=d.episodes, help="episodes in the dataset")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the first episode")
    p.add_argument("--stochastic", dest="deterministic", action="store_false",
                   help="sample the agent's actions instead of taking the most likely")
    p.add_argument("--epsilon", type=float, default=d.epsilon,
                   help="chance of a random action per step")
    p.add_argument("--scenario", help="real game scenario (default: the model's world card's)")
    p.add_argument("--map", dest="doom_map", default=d.doom_map, help="Freedoom2 map")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="steps per episode at most")
    add_threads(p)
    return p


def main(argv: list[str]) -> dict[str, Any]:
    args = vars(_parser().parse_args(argv))
    apply_threads(args.pop("threads"))
    try:
        summary = collect_agent_episodes(AgentCollectConfig(**args))
    except (FileNotFoundError, ValueError, CheckpointError) as err:
        raise SystemExit(f"aapt-world agent collect: error: {err}") from None
    print(json.dumps(summary))
    return summary


__all__ = ["AgentCollectConfig", "AgentPlayer", "collect_agent_episodes", "main"]
