"""Sequence replay (rlagents/sequence_replay.py) against a naive implementation that keeps every env's whole
slot stream in Python lists: stored sequences, their stored states and episode-start flags, burn-in, n-step
targets and masks, across episode ends, vector envs, ring wrap-around and checkpoints."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from rlagents.checkpoint import read_checkpoint, save_checkpoint
from rlagents.sequence_replay import SequenceReplayBuffer, nstep_targets

GAMMA = 0.9
N_ACTIONS = 3


class Streams:
    """n_envs synthetic envs: each observation is a unique id, episodes end at random (terminated or
    truncated), the recurrent state is random, and masks are random."""

    def __init__(self, n_envs: int, seed: int, end_rate: float = 0.15):
        self.rng = np.random.default_rng(seed)
        self.n_envs, self.end_rate = n_envs, end_rate
        self.next_id = 0
        self.obs = self._ids(n_envs)

    def _ids(self, n: int) -> np.ndarray:
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.float32)
        self.next_id += n
        return np.stack([ids, -ids], axis=1)  # a Box(2) observation

    def step(self) -> dict:
        n, rng = self.n_envs, self.rng
        u = rng.random(n)
        terminated, truncated = u < self.end_rate * 0.6, (u >= self.end_rate * 0.6) & (u < self.end_rate)
        step = {"obs": self.obs, "actions": rng.integers(0, N_ACTIONS, n), "rewards": rng.normal(size=n),
                "next_obs": self._ids(n), "terminated": terminated, "truncated": truncated,
                "states": rng.normal(size=(n, 4)).astype(np.float32),
                "next_states": rng.normal(size=(n, 4)).astype(np.float32),
                "masks": rng.random((n, N_ACTIONS)) < 0.7, "next_masks": rng.random((n, N_ACTIONS)) < 0.7}
        after = step["next_obs"].copy()
        done = np.flatnonzero(terminated | truncated)
        after[done] = self._ids(len(done))  # autoreset: a new episode's first observation
        self.obs = after
        return step


PAD = {"obs": np.zeros(2), "action": 0, "reward": 0.0, "valid": False, "terminal": False, "start": False,
       "mask": np.ones(N_ACTIONS, bool), "state": None}  # a padding slot


class NaiveSequences:
    """Each env's episodes as lists of slot dicts: an episode of n slots (its final observation included) yields
    its slots [k·P, k·P + L) as they complete, then, if slots came after the last of those, [k·P, n) padded."""

    def __init__(self, n_envs: int, length: int, overlap: int):
        self.length, self.period = length, length - overlap
        self.episodes: list[list[dict]] = [[] for _ in range(n_envs)]  # the one in progress, per env
        self.finished: list[list[dict]] = []
        self.sequences: list[list[dict]] = []  # in the order they completed

    def _push(self, env: int, slot: dict) -> None:
        episode = self.episodes[env]
        slot["start"] = not episode
        episode.append(slot)
        n, length, period = len(episode), self.length, self.period
        if n >= length and (n - length) % period == 0:
            self.sequences.append(episode[n - length:])
        if not slot["valid"]:  # the final observation: the padded tail, then a new episode
            k = 0 if n < length else (n - length) // period + 1
            if k == 0 or (k - 1) * period + length < n:
                tail = episode[k * period:]
                self.sequences.append(tail + [PAD] * (length - len(tail)))
            self.finished.append(episode)
            self.episodes[env] = []

    def add(self, s: dict) -> None:
        for env in range(len(self.episodes)):
            self._push(env, {"obs": s["obs"][env], "action": s["actions"][env], "reward": s["rewards"][env],
                             "valid": True, "terminal": False, "state": s["states"][env], "mask": s["masks"][env]})
        for env in np.flatnonzero(s["terminated"] | s["truncated"]):
            self._push(env, {"obs": s["next_obs"][env], "action": 0, "reward": 0.0, "valid": False,
                             "terminal": bool(s["terminated"][env]), "state": s["next_states"][env],
                             "mask": s["next_masks"][env]})


def naive_target(seq: list[dict], t: int, n_step: int, burn_in: int):
    """(return, bootstrap slot, weight) of slot t's target, or None when slot t is not trained: m = min(n,
    steps to the episode's final observation, steps to the last slot); a sequence that starts mid-episode is
    not trained in its first `burn_in` slots."""
    if (t < burn_in and not seq[0]["start"]) or t == len(seq) - 1 or not seq[t]["valid"]:
        return None
    to_end = next(j for j in range(t + 1, len(seq)) if not seq[j]["valid"] or j == len(seq) - 1) - t
    m = min(n_step, to_end)
    ret = sum(GAMMA ** k * seq[t + k]["reward"] for k in range(m))
    return ret, t + m, GAMMA ** m * (0.0 if seq[t + m]["terminal"] else 1.0)


def make(n_envs=3, capacity=400, length=8, burn_in=2, overlap=4, n_step=3, masks=True):
    space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    return SequenceReplayBuffer(capacity, space, length=length, burn_in=burn_in, overlap=overlap, n_envs=n_envs,
                                state_dim=4, gamma=GAMMA, n_step=n_step, mask_actions=N_ACTIONS if masks else 0)


def feed(buffer, naive, streams, steps):
    for _ in range(steps):
        s = streams.step()
        buffer.add_batch(s["obs"], s["actions"], s["rewards"], s["next_obs"], s["terminated"], s["truncated"],
                         s["states"], s["next_states"], s["masks"], s["next_masks"])
        if naive is not None:
            naive.add(s)


def assert_matches(buffer: SequenceReplayBuffer, naive: NaiveSequences, n_step: int):
    """The ring holds the newest `capacity` naive sequences, in ring order, with the same contents and targets."""
    stored = naive.sequences[-buffer.capacity:]
    assert len(buffer) == len(stored)
    first = len(naive.sequences) - len(stored)  # naive index of ring slot 0's sequence, modulo the ring
    batch = buffer.gather(np.arange(len(buffer)))
    for i in range(len(buffer)):
        seq = naive.sequences[first + (i - first) % buffer.capacity] if len(naive.sequences) > buffer.capacity \
            else naive.sequences[i]
        np.testing.assert_array_equal(batch.obs[i], [slot["obs"] for slot in seq])
        np.testing.assert_array_equal(batch.actions[i], [slot["action"] for slot in seq])
        np.testing.assert_array_equal(batch.starts[i], [slot["start"] for slot in seq])
        np.testing.assert_array_equal(batch.masks[i], [slot["mask"] for slot in seq])
        np.testing.assert_array_equal(batch.states[i], seq[0]["state"])  # the stored state of the first slot
        for t in range(buffer.length):
            expected = naive_target(seq, t, n_step, buffer.burn_in)
            assert batch.trained[i, t] == (expected is not None)
            if expected is not None:
                ret, slot, weight = expected
                assert batch.returns[i, t] == pytest.approx(ret, rel=1e-5, abs=1e-5)
                assert batch.bootstrap[i, t] == slot
                assert batch.bootstrap_weights[i, t] == pytest.approx(weight, rel=1e-6)


@pytest.mark.parametrize("length,burn_in,overlap,n_step", [(8, 2, 4, 3), (5, 0, 1, 1), (12, 4, 7, 5), (6, 3, 5, 10)])
def test_sequences_and_targets_match_a_naive_implementation(length, burn_in, overlap, n_step):
    buffer = make(length=length, burn_in=burn_in, overlap=overlap, n_step=n_step)
    naive = NaiveSequences(3, length, overlap)
    streams = Streams(3, seed=length)
    feed(buffer, naive, streams, 60)
    assert 0 < len(buffer) < buffer.capacity
    assert_matches(buffer, naive, n_step)
    feed(buffer, naive, streams, 400)  # wraps the ring
    assert len(naive.sequences) > buffer.capacity
    assert_matches(buffer, naive, n_step)


def test_every_action_step_of_an_episode_is_trained_in_some_sequence():
    """overlap ≥ burn_in + 1 and a padded last sequence per episode: every action slot of every finished
    episode lies in the trained part of some stored sequence, short and long episodes alike."""
    buffer = make(n_envs=2, capacity=10_000, length=8, burn_in=3, overlap=4, masks=False)
    naive = NaiveSequences(2, 8, 4)
    feed(buffer, naive, Streams(2, seed=3, end_rate=0.08), 300)
    batch = buffer.gather(np.arange(len(buffer)))
    trained_ids = {float(batch.obs[i, t, 0]) for i, t in zip(*np.nonzero(batch.trained))}
    expected = {float(slot["obs"][0]) for episode in naive.finished for slot in episode if slot["valid"]}
    assert max(len(e) for e in naive.finished) > 16 and min(len(e) for e in naive.finished) < 4
    assert expected <= trained_ids


def test_nstep_targets_by_hand():
    """One sequence of 6 slots (as the learner sees any (B, L) batch): a terminated episode ends at slot 3 (its
    final observation), a new episode starts at slot 4; γ = 0.5, n = 2, burn-in 1."""
    rewards = np.array([[1.0, 2.0, 4.0, 0.0, 8.0, 16.0]])
    valid = np.array([[1, 1, 1, 0, 1, 1]], dtype=bool)
    terminal = np.array([[0, 0, 0, 1, 0, 0]], dtype=bool)
    starts = np.array([[0, 0, 0, 0, 1, 0]], dtype=bool)
    returns, bootstrap, weights, trained = nstep_targets(rewards, valid, terminal, starts, 0.5, 2, burn_in=1)
    np.testing.assert_array_equal(trained, [[False, True, True, False, True, False]])
    np.testing.assert_allclose(returns, [[0.0, 2.0 + 0.5 * 4.0, 4.0, 0.0, 8.0, 0.0]])
    np.testing.assert_array_equal(bootstrap, [[0, 3, 3, 0, 5, 0]])
    np.testing.assert_allclose(weights, [[0.0, 0.0, 0.0, 0.0, 0.5, 0.0]])  # slot 3 is terminal: no bootstrap
    truncated = nstep_targets(rewards, valid, np.zeros_like(terminal), starts, 0.5, 2, burn_in=1)
    np.testing.assert_allclose(truncated[2], [[0.0, 0.25, 0.5, 0.0, 0.5, 0.0]])  # truncated: bootstrap from it
    at_start = nstep_targets(rewards, valid, terminal, np.roll(starts, 2), 0.5, 2, burn_in=1)
    assert at_start[3][0, 0]  # a sequence that starts an episode has no burn-in: trained from slot 0


def test_checkpoint_round_trip_resumes_exactly(tmp_path):
    buffer, twin = make(), make()
    streams = Streams(3, seed=7)
    feed(buffer, None, streams, 90)
    path = save_checkpoint(tmp_path, "c", {"replay": buffer.state_dict()}, {"agent": "dqn", "env": "E"})
    twin.load_state_dict(read_checkpoint(path)[0]["replay"])
    copy = Streams(3, seed=0)
    copy.rng.bit_generator.state = streams.rng.bit_generator.state
    copy.obs, copy.next_id = streams.obs.copy(), streams.next_id
    feed(buffer, None, streams, 150)  # wraps the ring
    feed(twin, None, copy, 150)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    a, b = buffer.sample(32, rng_a), twin.sample(32, rng_b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    for name in ("count", "ended", "pending_obs", "pending_states", "pending_starts"):
        np.testing.assert_array_equal(getattr(buffer, name), getattr(twin, name))


def test_dropped_envs_start_a_new_episode_and_keep_no_pending_slots():
    buffer = make(masks=False)
    streams = Streams(3, seed=2, end_rate=0.0)
    feed(buffer, None, streams, 3)
    buffer.drop(np.array([1]))
    feed(buffer, None, streams, 8)
    batch = buffer.gather(np.arange(len(buffer)))
    env1 = [i for i in range(len(buffer)) if batch.obs[i, 0, 0] % 3 == 1]
    assert batch.starts[env1[0], 0] and batch.obs[env1[0], 0, 0] == 3 * 3 + 1  # its first slot after the drop


def test_dict_observations_are_stored_per_key():
    space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (1, 3, 3), np.uint8), "dial": gym.spaces.Discrete(10)})
    buffer = SequenceReplayBuffer(100, space, length=4, burn_in=1, overlap=2, n_envs=2, state_dim=2, gamma=0.9)
    for t in range(6):
        obs = {"image": np.full((2, 1, 3, 3), t, np.uint8), "dial": np.array([t, t + 10])}
        buffer.add_batch(obs, np.zeros(2, int), np.ones(2), obs, np.zeros(2, bool), np.zeros(2, bool),
                         np.zeros((2, 2)), np.zeros((2, 2)))
    batch = buffer.gather(np.arange(len(buffer)))
    assert batch.obs["image"].shape == (len(buffer), 4, 1, 3, 3) and batch.obs["image"].dtype == np.uint8
    np.testing.assert_array_equal(batch.obs["dial"][:2], [[0, 1, 2, 3], [10, 11, 12, 13]])


@pytest.mark.parametrize("length,burn_in,overlap,message", [
    (4, 3, 3, "burn_in"), (4, 0, 0, "overlap"), (6, 2, 2, "overlap"), (6, 1, 6, "overlap")])
def test_bad_shapes_are_refused(length, burn_in, overlap, message):
    with pytest.raises(ValueError, match=message):
        make(length=length, burn_in=burn_in, overlap=overlap)
