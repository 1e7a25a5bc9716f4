"""Micro-benchmark: cost of one DQN gradient step and one greedy action on CartPole-sized inputs.

Usage: python benchmarks/dqn_step_cost.py [KEY=VALUE ...]   (DQNConfig overrides, e.g. batch_size=64)
Measures the NumPy hand-written-gradient path (plain MLPs on a CPU) and the autograd path on the same
config, interleaved, one thread each; prints the median of five measurements of each.
"""

import dataclasses
import statistics
import sys
import time

import gymnasium as gym
import numpy as np
import torch

from rlagents.agents.dqn import DQNAgent, DQNConfig
from rlagents.config import build
from rlagents.threads import set_cpu_threads

set_cpu_threads(1)
overrides = dict(a.split("=", 1) for a in sys.argv[1:])
cfg = build(DQNConfig, overrides, source="cli")
obs_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
per_round = int(overrides.get("gradient_steps", 1))


def make_agent(learner: str) -> DQNAgent:
    agent = DQNAgent(dataclasses.replace(cfg, learner=learner), obs_space, gym.spaces.Discrete(2), n_envs=1,
                     total_steps=100_000, device=torch.device("cpu"), seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5000):
        agent.buffer.add(rng.normal(size=4), rng.integers(2), 1.0, rng.normal(size=4), False, 0.99)
    agent._train(100 * per_round)  # warm-up (and the optimizer's state)
    return agent


def update_us(agent: DQNAgent, rounds: int = 300) -> float:
    t = time.perf_counter()
    for _ in range(rounds):
        agent._train(per_round)
    return (time.perf_counter() - t) / (rounds * per_round) * 1e6


agents = {"numpy (hand-written gradients)": make_agent("numpy"), "autograd": make_agent("torch")}
times: dict[str, list[float]] = {name: [] for name in agents}
for _ in range(5):
    for name, agent in agents.items():
        times[name].append(update_us(agent))
obs = np.random.default_rng(1).normal(size=(1, 4)).astype(np.float32)
agent = agents["autograd"]
t = time.perf_counter()
for _ in range(1000):
    agent.act(obs, explore=False)
act_us = (time.perf_counter() - t) / 1000 * 1e6
for name, values in times.items():
    print(f"update via {name:32s} {statistics.median(values):6.0f} us")
print(f"greedy act {act_us:.0f} us   ({overrides or 'DQNConfig defaults'})")
