"""The memory tasks DigitRecall-v0 and CartPoleNoVelocity-v0: registration, Gymnasium's env checker, renders, and
that each hides exactly what it should while keeping the rest of the env it is built on."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers our envs)
from envs.digit_lock import OPEN, TURN_DOWN, TURN_UP
from rlagents.environments import known_env_ids, make_vec_env

MEMORY_ENVS = ["DigitRecall-v0", "CartPoleNoVelocity-v0"]


@pytest.mark.parametrize("env_id, limit, threshold", [("DigitRecall-v0", 30, 0.9),
                                                       ("CartPoleNoVelocity-v0", 500, 475.0)])
def test_registration_matches_the_env_it_is_built_on(env_id, limit, threshold):
    spec = gym.spec(env_id)
    assert spec.max_episode_steps == limit and spec.reward_threshold == threshold
    assert env_id in known_env_ids()


@pytest.mark.parametrize("env_id", MEMORY_ENVS)
def test_passes_gymnasiums_env_checker(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports most problems as warnings
        check_env(gym.make(env_id, render_mode="rgb_array").unwrapped, skip_render_check=False)


@pytest.mark.parametrize("env_id", MEMORY_ENVS)
def test_rgb_array_frames_change_as_the_episode_goes_on(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    first = env.render()
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    env.step(1)
    env.step(1)
    assert env.render().shape == first.shape and not np.array_equal(env.render(), first)


def test_digit_recall_shows_the_digit_only_at_reset_and_is_digit_lock_otherwise():
    recall, lock = gym.make("DigitRecall-v0"), gym.make("DigitLock-v0")
    for seed in range(20):
        obs, _ = recall.reset(seed=seed)
        full, _ = lock.reset(seed=seed)
        assert np.array_equal(obs["image"], full["image"]) and obs["image"].any() and obs["dial"] == full["dial"]
        assert recall.unwrapped.digit == lock.unwrapped.digit
        for action in (TURN_UP, TURN_DOWN, TURN_UP):
            obs, reward, *_ = recall.step(action)
            full, full_reward, *_ = lock.step(action)
            assert not obs["image"].any() and obs["image"].shape == (1, 12, 12) and obs["image"].dtype == np.uint8
            assert obs["dial"] == full["dial"] and reward == full_reward
            assert recall.observation_space.contains(obs)


@pytest.mark.parametrize("env_id", ["DigitRecall-v0", "DigitLock-v0"])
@pytest.mark.parametrize("offset, expected", [(0, 1.0), (4, -1.0)])
def test_opening_rewards_terminates_and_reports_success(env_id, offset, expected):
    env = gym.make(env_id)
    env.reset(seed=5)
    _, _, _, _, info = env.step(TURN_UP)
    assert "is_success" not in info  # only when the lock is tried
    lock = env.unwrapped
    lock.dial = (lock.digit + offset) % 10
    _, reward, terminated, truncated, info = env.step(OPEN)
    assert reward == expected and terminated and not truncated and info["is_success"] == (expected > 0)


def test_show_steps_keeps_the_digit_for_that_many_observations():
    env = gym.make("DigitRecall-v0", show_steps=3)
    obs, _ = env.reset(seed=1)
    shown = [bool(obs["image"].any())]
    for _ in range(4):
        obs, *_ = env.step(TURN_UP)
        shown.append(bool(obs["image"].any()))
    assert shown == [True, True, True, False, False]
    with pytest.raises(ValueError, match="show_steps must be at least 1"):
        gym.make("DigitRecall-v0", show_steps=0)


def test_digit_recall_renders_the_hidden_digit_dimmed():
    env = gym.make("DigitRecall-v0", render_mode="rgb_array", render_scale=10)
    env.reset(seed=2)
    shown = env.render()[:120].astype(int)
    env.step(TURN_UP)
    hidden = env.render()[:120].astype(int)
    assert shown.max() > 200 and 0 < hidden.max() < shown.max() / 2  # still there for a viewer, but dim


def test_digit_recall_truncates_after_30_steps():
    env = gym.make("DigitRecall-v0")
    env.reset(seed=3)
    for step in range(1, 31):
        _, _, terminated, truncated, _ = env.step(TURN_UP)
        assert not terminated and truncated == (step == 30)


def test_digit_recall_in_a_vector_env_shows_each_new_episode_its_digit():
    vec = make_vec_env("DigitRecall-v0", 2)
    obs, _ = vec.reset(seed=0)
    assert obs["image"].reshape(2, -1).any(axis=1).all()
    obs, *_ = vec.step(np.array([TURN_UP, OPEN]))  # env 1 ends; its next episode starts with a digit shown
    assert not obs["image"][0].any() and obs["image"][1].any()


def test_cartpole_no_velocity_is_cartpole_without_the_velocities():
    partial, full = gym.make("CartPoleNoVelocity-v0"), gym.make("CartPole-v1")
    assert partial.observation_space.shape == (2,)
    assert np.array_equal(partial.observation_space.high, full.observation_space.high[[0, 2]])
    obs, _ = partial.reset(seed=4)
    target, _ = full.reset(seed=4)
    rng = np.random.default_rng(0)
    done = False
    while not done:
        assert np.array_equal(obs, target[[0, 2]]) and partial.observation_space.contains(obs)
        action = int(rng.integers(2))
        obs, reward, terminated, truncated, _ = partial.step(action)
        target, full_reward, full_terminated, full_truncated, _ = full.step(action)
        assert (reward, terminated, truncated) == (full_reward, full_terminated, full_truncated)
        done = terminated or truncated
