"""The vector env's same-step autoreset and the evaluation runner."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from rlagents.environments import SyncVecEnv, evaluate, final_observations, make_env, make_vec_env
from rlagents.errors import UserError


class Countdown(gym.Env):
    """Observation counts down from `start`; the episode terminates at 0 with reward 1 per step."""

    def __init__(self, start: int = 3):
        self.start = start
        self.observation_space = gym.spaces.Box(0, 100, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = self.start
        return np.array([self.t], np.float32), {}

    def step(self, action):
        self.t -= 1
        return np.array([self.t], np.float32), 1.0, self.t == 0, False, {}


def test_same_step_autoreset_returns_reset_obs_and_keeps_final_obs():
    envs = SyncVecEnv([lambda: Countdown(2), lambda: Countdown(3)])
    obs, _ = envs.reset(seed=0)
    assert obs[:, 0].tolist() == [2, 3]
    obs, _, term, _, infos = envs.step(np.zeros(2, int))
    assert obs[:, 0].tolist() == [1, 2] and not infos
    obs, rew, term, trunc, infos = envs.step(np.zeros(2, int))
    assert term.tolist() == [True, False] and infos["_final_obs"].tolist() == [True, False]
    assert obs[:, 0].tolist() == [2, 1]  # env 0 already reset
    real_next = final_observations(obs, term | trunc, infos)
    assert real_next[:, 0].tolist() == [0, 1]


def test_returned_obs_are_not_overwritten_by_later_steps():
    envs = SyncVecEnv([lambda: Countdown(5)])
    first, _ = envs.reset()
    envs.step(np.zeros(1, int))
    assert first[0, 0] == 5


def test_evaluate_runs_an_exact_number_of_episodes_per_slot():
    envs = SyncVecEnv([lambda: Countdown(2), lambda: Countdown(7)])
    returns, lengths = evaluate(lambda o: np.zeros(len(o), int), envs, 5, seed=0)
    # slot 0 runs 3 episodes of length 2, slot 1 runs 2 of length 7: no bias towards short episodes
    assert sorted(lengths.tolist()) == [2, 2, 2, 7, 7] and returns.sum() == 20


def test_evaluation_is_reproducible_for_a_seed():
    envs = make_vec_env("CartPole-v1", 4)
    policy = lambda o: (o[:, 2] > 0).astype(np.int64)  # noqa: E731  (push towards the pole's lean)
    a, _ = evaluate(policy, envs, 8, seed=11)
    b, _ = evaluate(policy, envs, 8, seed=11)
    assert np.array_equal(a, b) and a.mean() > 30


def test_unknown_env_names_close_matches():
    with pytest.raises(UserError, match="unknown env 'CartPol-v1'; did you mean: CartPole-v1"):
        make_env("CartPol-v1")


class Loop(gym.Env):
    """Never terminates: a greedy policy that loops forever in an env without a time limit."""

    observation_space = gym.spaces.Discrete(1)
    action_space = gym.spaces.Discrete(1)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        return 0, -1.0, False, False, {}


def test_evaluation_of_an_env_without_time_limit_ends_at_the_step_cap():
    gym.register("rlagents-test/Loop-v0", entry_point=Loop)
    try:
        envs = make_vec_env("rlagents-test/Loop-v0", 2, step_cap=50)
        returns, lengths = evaluate(lambda o: np.zeros(len(o), int), envs, 2, seed=0)
        assert lengths.tolist() == [50, 50] and returns.tolist() == [-50.0, -50.0]
        assert make_vec_env("CartPole-v1", 1, step_cap=50).envs[0].spec.max_episode_steps == 500  # kept
    finally:
        del gym.registry["rlagents-test/Loop-v0"]
