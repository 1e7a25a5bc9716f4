"""From a `RunSpec` to objects: the agent for an env, a run ready to train (`materialize`), and a finished
run reloaded from its directory (`load_run`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import torch

from rlagents import envspec
from rlagents.agents import Agent, agent_class
from rlagents.checkpoint import check_spaces, latest_checkpoint, read_checkpoint
from rlagents.cli import resolve_device
from rlagents.config import ResolvedConfig
from rlagents.environments import EVAL_STEP_CAP, is_atari, is_project_env, make_env, make_vec_env, provides_masks
from rlagents.environments import check_env as gym_check_env
from rlagents.envspec import EnvSpec
from rlagents.loop import Run, seed_everything
from rlagents.runspec import RunSpec, spec_of_run
from rlagents.state_check import load_agent_state
from rlagents.threads import set_cpu_threads


def build_agent(agent_name: str, config: ResolvedConfig, obs_space: gym.Space, action_space: gym.Space, *,
                n_envs: int, seed: int, device: torch.device, env_masks: bool = False) -> Agent:
    """Check the spaces, then construct the agent (raises UnsupportedSpaceError / ConfigError on bad input).
    `env_masks`: the env gives action masks, which the agent takes if it can and `action_masks` is on."""
    cls = agent_class(agent_name)
    cls.check_spaces(obs_space, action_space, config.agent)
    return cls(config.agent, obs_space, action_space, n_envs=n_envs, total_steps=config.train.steps,
               device=device, seed=seed, action_masks=env_masks and config.train.action_masks)


def materialize(spec: RunSpec, *, progress: bool = True, check_env: bool | None = None) -> Run:
    """Build what `spec` describes: probe the env (import, create, reset, step: each failure is one line),
    make the training and evaluation envs, seed everything and construct the agent. Writes nothing."""
    device = resolve_device(spec.device)
    config = spec.config
    if check_env or (check_env is None and is_project_env(spec.env.name)):
        gym_check_env(spec.env)
    if not is_atari(spec.env.id):  # a separate env, so the run's own envs start untouched
        probe = make_env(spec.env)
        try:
            envspec.probe(probe, spec.env, spec.seed)
        finally:
            probe.close()
    envs = make_vec_env(spec.env, config.train.n_envs, training=True, record_episodes=True)  # resumable episodes
    eval_envs = make_vec_env(spec.env, min(config.train.eval_envs, config.train.eval_episodes),
                             step_cap=EVAL_STEP_CAP)
    set_cpu_threads(config.train.torch_threads)
    seed_everything(spec.seed)
    agent = build_agent(spec.agent, config, envs.single_observation_space, envs.single_action_space,
                        n_envs=envs.num_envs, seed=spec.seed, device=device, env_masks=envs.masked)
    return Run(agent_name=spec.agent, env_id=spec.env.id, seed=spec.seed, device=device, config=config,
               agent=agent, envs=envs, eval_envs=eval_envs, run_dir=spec.run_dir, progress=progress)


@dataclass
class LoadedRun:
    """A finished run: its spec, names, and the agent restored from a checkpoint."""

    run_dir: Path
    agent_name: str
    env_id: str
    seed: int
    config: ResolvedConfig
    agent: Agent
    checkpoint: Path
    meta: dict
    env: EnvSpec  # the env with its kwargs and modules, as the run's config.yaml records it
    observation_space: gym.Space
    action_space: gym.Space


def load_run(run_dir: Path, obs_space_of, *, device: torch.device, checkpoint: Path | None = None,
             spec: RunSpec | None = None) -> LoadedRun:
    """Rebuild the agent of `run_dir` and load its final (or given) checkpoint.

    `obs_space_of(env)` returns (observation_space, action_space) of a fresh env (`env` an `EnvSpec`), so
    the caller decides how envs are made; `spec` is the run's spec if the caller has resolved it already.
    """
    spec = spec or spec_of_run(run_dir)
    obs_space, action_space = obs_space_of(spec.env)
    agent = build_agent(spec.agent, spec.config, obs_space, action_space, n_envs=1, seed=spec.seed, device=device,
                        env_masks=provides_masks(spec.env))
    path = checkpoint or latest_checkpoint(spec.run_dir)
    state, ckpt_meta = read_checkpoint(path, agent=spec.agent, env=spec.env.id)
    check_spaces(ckpt_meta, obs_space, action_space, path)
    load_agent_state(agent, state.get("agent"), path)
    return LoadedRun(spec.run_dir, spec.agent, spec.env.id, spec.seed, spec.config, agent, path, ckpt_meta, spec.env,
                     obs_space, action_space)
