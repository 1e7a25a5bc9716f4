"""Building an agent for an env from a resolved config, and reloading a finished run from its directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch

from rlagents.agents import Agent, agent_class
from rlagents.checkpoint import check_spaces, latest_checkpoint, read_checkpoint
from rlagents.config import ResolvedConfig, read_config_file, resolve
from rlagents.environments import provides_masks
from rlagents.errors import UserError


def build_agent(agent_name: str, config: ResolvedConfig, obs_space: gym.Space, action_space: gym.Space, *,
                n_envs: int, seed: int, device: torch.device, env_masks: bool = False) -> Agent:
    """Check the spaces, then construct the agent (raises UnsupportedSpaceError / ConfigError on bad input).
    `env_masks`: the env gives action masks, which the agent takes if it can and `action_masks` is on."""
    cls = agent_class(agent_name)
    cls.check_spaces(obs_space, action_space, config.agent)
    return cls(config.agent, obs_space, action_space, n_envs=n_envs, total_steps=config.train.steps,
               device=device, seed=seed, action_masks=env_masks and config.train.action_masks)


@dataclass
class LoadedRun:
    """A finished run: its config, names, and the agent restored from a checkpoint."""

    run_dir: Path
    agent_name: str
    env_id: str
    seed: int
    config: ResolvedConfig
    agent: Agent
    checkpoint: Path
    meta: dict


def load_run(run_dir: Path, obs_space_of, *, device: torch.device, checkpoint: Path | None = None) -> LoadedRun:
    """Rebuild the agent of `run_dir` and load its final (or given) checkpoint.

    `obs_space_of(env_id)` returns (observation_space, action_space) of a fresh env, so the caller decides
    how envs are made.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise UserError(f"{run_dir} is not an rlagents run directory (no config.yaml)")
    data = read_config_file(config_file)
    meta = data.get("run") or {}
    agent_name, env_id = meta.get("agent"), meta.get("env")
    if not agent_name or not env_id:
        raise UserError(f"{config_file} has no run: agent/env entry; was it written by rlagents.train?")
    seed = int(meta.get("seed", 0))
    config = resolve(agent_class(agent_name).config_class, data, env_id, {}, source=str(config_file))
    obs_space, action_space = obs_space_of(env_id)
    agent = build_agent(agent_name, config, obs_space, action_space, n_envs=1, seed=seed, device=device,
                        env_masks=provides_masks(env_id))
    path = checkpoint or latest_checkpoint(run_dir)
    state, ckpt_meta = read_checkpoint(path, agent=agent_name, env=env_id)
    check_spaces(ckpt_meta, obs_space, action_space, path)
    try:
        agent.load_state_dict(state["agent"])
    except (KeyError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {path} does not fit this agent's networks: {first}") from None
    return LoadedRun(run_dir, agent_name, env_id, seed, config, agent, path, ckpt_meta)
