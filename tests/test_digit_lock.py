"""DigitLock-v0: registration, Gymnasium's env checker, seeding, and the reward and episode-end rules."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers DigitLock-v0)
from envs.digit_lock import OPEN, TURN_DOWN, TURN_UP
from rlagents.digits import canvas_space, sklearn_test_digits
from rlagents.environments import make_env, make_vec_env


def make(**kwargs) -> gym.Env:
    return gym.make("DigitLock-v0", **kwargs)


def test_registration():
    spec = gym.spec("DigitLock-v0")
    assert spec.max_episode_steps == 30 and spec.reward_threshold == 0.9
    from rlagents.environments import known_env_ids

    assert "DigitLock-v0" in known_env_ids()


def test_passes_gymnasiums_env_checker():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports most problems as warnings
        check_env(make(render_mode="rgb_array").unwrapped, skip_render_check=False)


def test_observation_is_the_classifiers_canvas():
    env = make()
    obs, _ = env.reset(seed=0)
    assert env.observation_space["image"] == canvas_space()
    assert obs["image"].shape == (1, 12, 12) and obs["image"].dtype == np.uint8
    assert env.observation_space.contains(obs)
    images, labels = sklearn_test_digits(0)
    lock = env.unwrapped
    assert np.array_equal(obs["image"], images[lock.index]) and lock.digit == labels[lock.index]


def test_same_seed_same_episodes_and_digits_vary():
    a, b = make(), make()
    seen = set()
    for seed in range(40):
        oa, _ = a.reset(seed=seed)
        ob, _ = b.reset(seed=seed)
        assert np.array_equal(oa["image"], ob["image"]) and oa["dial"] == ob["dial"]
        seen.add((a.unwrapped.digit, int(oa["dial"])))
    assert len({d for d, _ in seen}) >= 8 and len({p for _, p in seen}) >= 8


def test_turns_wrap_around_and_cost():
    env = make()
    env.reset(seed=1)
    lock = env.unwrapped
    lock.dial = 9
    obs, reward, terminated, truncated, _ = env.step(TURN_UP)
    assert obs["dial"] == 0 and reward == pytest.approx(-0.01) and not terminated and not truncated
    obs, reward, *_ = env.step(TURN_DOWN)
    assert obs["dial"] == 9 and reward == pytest.approx(-0.01)


@pytest.mark.parametrize("offset, expected", [(0, 1.0), (3, -1.0)])
def test_opening_rewards_and_terminates(offset, expected):
    env = make()
    env.reset(seed=2)
    lock = env.unwrapped
    lock.dial = (lock.digit + offset) % 10
    _, reward, terminated, truncated, _ = env.step(OPEN)
    assert reward == expected and terminated and not truncated


def test_truncated_after_30_steps():
    env = make()
    env.reset(seed=3)
    for step in range(1, 31):
        _, _, terminated, truncated, _ = env.step(TURN_UP)
        assert not terminated and truncated == (step == 30)


def test_digits_come_only_from_the_classifiers_test_split():
    from rlagents.digits import load_sklearn_digits, split_indices

    data = load_sklearn_digits()
    split = split_indices(data.labels, 0)
    env = make()
    assert np.array_equal(env.unwrapped.images, data.images[split.test])
    assert np.array_equal(env.unwrapped.labels, data.labels[split.test])
    test_keys = {data.images[i].tobytes() for i in split.test}
    for seed in range(50):
        obs, _ = env.reset(seed=seed)
        assert obs["image"].tobytes() in test_keys


def test_rgb_array_render():
    env = make(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.shape[1] == 240
    dial_before = env.unwrapped.dial
    env.step(TURN_UP)
    assert not np.array_equal(env.render(), frame)  # the lit cell moved
    assert dial_before != env.unwrapped.dial


def test_vector_env_stacks_dict_observations():
    vec = make_vec_env("DigitLock-v0", 3)
    obs, _ = vec.reset(seed=0)
    assert obs["image"].shape == (3, 1, 12, 12) and obs["dial"].shape == (3,)
    obs, reward, terminated, truncated, _ = vec.step(np.array([OPEN, OPEN, OPEN]))
    assert terminated.all() and set(np.abs(reward)) <= {1.0}
    assert make_env("DigitLock-v0").spec.id == "DigitLock-v0"
