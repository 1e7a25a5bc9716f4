"""Exploration strategies (schedules, action statistics, expected values) and the Box discretiser."""

from __future__ import annotations

import math
import random
from collections import Counter

import gymnasium as gym
import numpy as np
import pytest

from rlagents.discretise import Discretiser, discretiser_for
from rlagents.errors import ConfigError, UnsupportedSpaceError
from rlagents.exploration import UCB, Boltzmann, EpsilonGreedy, decay_schedule, epsilon_greedy_batch, softmax

Q = [0.0, 1.0, 0.5, 0.2]
COUNTS = [5, 5, 5, 5]


def test_linear_and_exponential_epsilon_schedules():
    linear = EpsilonGreedy(random.Random(0), 1.0, 0.1, 1000, "linear")
    assert [linear.epsilon(s) for s in (0, 500, 1000, 5000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    assert linear.metrics(500)["charts/epsilon"] == pytest.approx(0.55)
    exponential = EpsilonGreedy(random.Random(0), 1.0, 0.1, 1000, "exponential")
    assert exponential.epsilon(0) == pytest.approx(1.0)
    assert exponential.epsilon(1000) == pytest.approx(0.1 + 0.01 * 0.9)  # 1% of the gap left at the end
    assert exponential.epsilon(500) == pytest.approx(0.1 + 0.1 * 0.9)  # geometric: 10% at half time
    assert exponential.epsilon(100_000) == pytest.approx(0.1)
    assert decay_schedule(1.0, 0.2, 0, "exponential")(1) == pytest.approx(0.2)


def test_epsilon_greedy_statistics():
    eps = EpsilonGreedy(random.Random(0), 0.4, 0.4, 0)
    actions = Counter(eps.choose(Q, COUNTS, 0) for _ in range(20_000))
    assert actions[1] / 20_000 == pytest.approx(0.6 + 0.4 / 4, abs=0.015)
    for a in (0, 2, 3):
        assert actions[a] / 20_000 == pytest.approx(0.1, abs=0.01)
    metrics = eps.metrics(0)
    assert metrics["charts/explore_fraction"] == pytest.approx(0.4 * 3 / 4, abs=0.015)  # random but not greedy
    assert "charts/explore_fraction" not in eps.metrics(0)  # counts reset after each report
    assert eps.expected(Q, COUNTS, 0) == pytest.approx(0.6 * 1.0 + 0.4 * sum(Q) / 4)
    greedy = EpsilonGreedy(random.Random(0), 0.0, 0.0, 0)
    assert {greedy.choose(Q, COUNTS, 0) for _ in range(100)} == {1}


def test_batched_epsilon_greedy():
    calls = []

    def greedy(obs):
        calls.append(len(obs))
        return np.full(len(obs), 2)

    rng = np.random.default_rng(0)
    actions = epsilon_greedy_batch(greedy, np.zeros((10_000, 3)), 0.3, 4, rng)
    assert np.mean(actions == 2) == pytest.approx(0.7 + 0.3 / 4, abs=0.015)
    assert np.mean(actions == 0) == pytest.approx(0.3 / 4, abs=0.01)
    assert epsilon_greedy_batch(greedy, np.zeros((5, 3)), 1.0, 4, rng).shape == (5,)
    assert calls == [10_000]  # when every row explores, the greedy scorer is skipped
    assert epsilon_greedy_batch(greedy, np.zeros((5, 3)), 0.0, 4, rng).tolist() == [2] * 5


def test_boltzmann_samples_the_softmax_and_its_temperature_decays():
    probs = softmax(Q, 0.5)
    assert sum(probs) == pytest.approx(1.0)
    assert probs[1] / probs[0] == pytest.approx(math.exp(2.0))
    assert softmax([1000.0, 0.0], 1.0) == pytest.approx([1.0, 0.0])  # no overflow
    boltz = Boltzmann(random.Random(1), 0.5, 0.5, 0)
    actions = Counter(boltz.choose(Q, COUNTS, 0) for _ in range(20_000))
    for a, p in enumerate(probs):
        assert actions[a] / 20_000 == pytest.approx(p, abs=0.015)
    assert boltz.metrics(0)["charts/explore_fraction"] == pytest.approx(1 - probs[1], abs=0.015)
    assert boltz.expected(Q, COUNTS, 0) == pytest.approx(sum(p * q for p, q in zip(probs, Q)))
    decaying = Boltzmann(random.Random(0), 2.0, 0.01, 100, "exponential")
    assert decaying.metrics(0)["charts/temperature"] == pytest.approx(2.0)
    assert decaying.metrics(100)["charts/temperature"] == pytest.approx(0.01 + 0.01 * 1.99)
    assert {decaying.choose(Q, COUNTS, 10_000) for _ in range(200)} == {1}  # cold: greedy


def test_ucb_tries_every_action_then_adds_a_count_bonus():
    ucb = UCB(random.Random(0), c=1.0)
    assert ucb.choose(Q, [3, 0, 2, 0], 0) == 1
    assert ucb.choose(Q, [0, 3, 2, 1], 0) == 0
    # Q + sqrt(ln 103 / n): the best rarely tried action (2, n = 1) wins over the greedy one (1, n = 100)
    counts = [1, 100, 1, 1]
    bonus = [q + math.sqrt(math.log(103) / n) for q, n in zip(Q, counts)]
    assert ucb.choose(Q, counts, 0) == int(np.argmax(bonus)) == 2
    assert ucb.expected(Q, counts, 0) == Q[2]
    assert UCB(random.Random(0), c=0.0).choose(Q, counts, 0) == 1  # no bonus: greedy
    # of its three choices, the untried action 1 happened to be the greedy one; the other two were not
    assert ucb.metrics(0)["charts/explore_fraction"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------- discretiser


def test_discretiser_bins_edges_and_out_of_range():
    d = Discretiser([4], [0.0], [1.0])
    obs = np.array([[0.0], [0.2499], [0.25], [0.5], [0.9999], [1.0], [-5.0], [7.0]])
    assert d(obs).tolist() == [0, 0, 1, 2, 3, 3, 0, 3]  # the top edge and anything outside go to edge bins


def test_discretiser_combines_dimensions_row_major():
    d = Discretiser([2, 3, 1], [-1.0, 0.0, 5.0], [1.0, 3.0, 6.0])
    assert d.n_states == 6
    obs = np.array([[-1, 0, 5], [-1, 2.5, 5], [0.5, 0.0, 100], [0.5, 2.9, -100]], dtype=np.float32)
    assert d(obs).tolist() == [0, 2, 3, 5]
    assert d.bin_indices(obs).tolist() == [[0, 0, 0], [0, 2, 0], [1, 0, 0], [1, 2, 0]]


def test_discretiser_from_config_and_its_refusals():
    box = gym.spaces.Box(np.array([-1.2, -0.07], np.float32), np.array([0.6, 0.07], np.float32))
    d = discretiser_for(box, (5,), (), (), "qlearning")  # one count for every dimension, the space's bounds
    assert d.bins.tolist() == [5, 5] and d.low == pytest.approx([-1.2, -0.07])
    with pytest.raises(UnsupportedSpaceError, match=r"--set bins=10,10 \(bins per dimension\)"):
        discretiser_for(box, (), (), (), "qlearning")
    unbounded = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    with pytest.raises(ConfigError, match=r"dimensions \[0, 1\] .* are unbounded"):
        discretiser_for(unbounded, (3, 3), (), (), "qlearning")
    with pytest.raises(ConfigError, match="clip_high must exceed clip_low"):
        discretiser_for(unbounded, (3, 3), (1.0, 1.0), (1.0, 2.0), "qlearning")
    with pytest.raises(ConfigError, match="2 values each"):
        discretiser_for(unbounded, (3, 3), (1.0,), (2.0,), "qlearning")
    with pytest.raises(UnsupportedSpaceError, match="flat Box"):
        discretiser_for(gym.spaces.Box(0, 1, (2, 2)), (2,), (), (), "qlearning")
