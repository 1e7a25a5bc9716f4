"""Micro-benchmark: cost of one DQN gradient step and one greedy action on CartPole-sized inputs."""

import sys
import time

import gymnasium as gym
import numpy as np
import torch

from rlagents.agents.dqn import DQNAgent, DQNConfig
from rlagents.config import build

torch.set_num_threads(1)
overrides = dict(a.split("=", 1) for a in sys.argv[1:])
cfg = build(DQNConfig, overrides, source="cli")
obs_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
agent = DQNAgent(cfg, obs_space, gym.spaces.Discrete(2), n_envs=1, total_steps=100_000,
                 device=torch.device("cpu"), seed=0)
rng = np.random.default_rng(0)
for _ in range(5000):
    agent.buffer.add(rng.normal(size=4), rng.integers(2), 1.0, rng.normal(size=4), False, 0.99)
rounds, per_round = 100, int(overrides.get("gradient_steps", 1))
agent._train(rounds * per_round)
t = time.perf_counter()
for _ in range(rounds * 10):
    agent._train(per_round)
update_us = (time.perf_counter() - t) / (rounds * 10 * per_round) * 1e6
obs = rng.normal(size=(1, 4)).astype(np.float32)
t = time.perf_counter()
for _ in range(1000):
    agent.act(obs, explore=False)
act_us = (time.perf_counter() - t) / 1000 * 1e6
print(f"update {update_us:.0f} us   greedy act {act_us:.0f} us   ({overrides})")
