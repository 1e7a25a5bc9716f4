"""Micro-benchmark: cost of one PPO rollout update and of acting, on CartPole-sized inputs.

Usage: python benchmarks/ppo_update_cost.py [KEY=VALUE ...]   (PPOConfig overrides; default: RL Zoo's CartPole
settings, 8 envs × 32 steps, 20 epochs of one 256-row minibatch). Measures the NumPy learner and the autograd
learner on the same config, interleaved, one thread each, ten rollouts of random transitions each time; prints
the median of five measurements of each.
"""

import dataclasses
import statistics
import sys
import time

import gymnasium as gym
import numpy as np
import torch

from rlagents.agents.ppo import PPOAgent, PPOConfig
from rlagents.config import build
from rlagents.threads import set_cpu_threads

N_ENVS = 8
set_cpu_threads(1)
overrides = {"n_steps": "32", "batch_size": "256", "n_epochs": "20", **dict(a.split("=", 1) for a in sys.argv[1:])}
cfg = build(PPOConfig, overrides, source="cli")
obs_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)


def measure(learner: str) -> tuple[float, float]:
    """(ms per rollout update, µs per act call) over ten rollouts."""
    agent = PPOAgent(dataclasses.replace(cfg, learner=learner), obs_space, gym.spaces.Discrete(2), n_envs=N_ENVS,
                     total_steps=10**6, device=torch.device("cpu"), seed=0)
    obs = np.random.default_rng(0).normal(size=(N_ENVS, 4)).astype(np.float32)
    acting = 0.0
    no = np.zeros(N_ENVS, bool)
    for _ in range(cfg.n_steps * 10):
        start = time.perf_counter()
        actions = agent.act(obs, explore=True)
        acting += time.perf_counter() - start
        agent.observe(obs, actions, np.ones(N_ENVS), obs, no, no)
    return 1000 * agent._update_seconds / agent.updates, 1e6 * acting / (cfg.n_steps * 10)


results: dict[str, list[tuple[float, float]]] = {"numpy": [], "torch": []}
for _ in range(5):
    for learner in results:
        results[learner].append(measure(learner))
for learner, runs in results.items():
    print(f"{learner}: update {statistics.median(r[0] for r in runs):.2f} ms per rollout, "
          f"act {statistics.median(r[1] for r in runs):.1f} µs per call")
