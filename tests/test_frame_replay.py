"""The frame replay buffer (each frame stored once, stacks rebuilt by index) against a naive buffer that
stores whole `obs` and `next_obs` stacks: same transitions, across episode ends, vector envs, ring wrap-around
and checkpoints."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from rlagents.checkpoint import read_checkpoint, save_checkpoint
from rlagents.frame_replay import FrameReplayBuffer
from rlagents.replay import ReplayBuffer

STACK = 4


class StackedStreams:
    """n_envs synthetic frame-stacked envs: every frame is a unique id, episodes end at random, and the first
    stack of an episode repeats its first frame (as FrameStackObservation's padding_type="reset" does)."""

    def __init__(self, n_envs: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.next_id = 1
        self.queues = [self._start() for _ in range(n_envs)]

    def _frame(self) -> np.ndarray:
        self.next_id += 1
        return np.array([self.next_id], dtype=np.int64)

    def _start(self) -> deque:
        first = self._frame()
        return deque([first] * STACK, maxlen=STACK)

    def obs(self) -> np.ndarray:
        return np.stack([np.stack(q) for q in self.queues])

    def step(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Returns (real next obs, terminated, truncated, next obs after autoreset)."""
        n = len(self.queues)
        for q in self.queues:
            q.append(self._frame())
        real_next = self.obs()
        u = self.rng.random(n)
        terminated, truncated = u < 0.08, (u >= 0.08) & (u < 0.12)
        for i in np.flatnonzero(terminated | truncated):
            self.queues[i] = self._start()
        return real_next, terminated, truncated, self.obs()


def fill(buffer: FrameReplayBuffer, naive: ReplayBuffer, streams: StackedStreams, steps: int, check_every: int = 0):
    """Feed both buffers the same steps; the action of each transition is its slot in the naive buffer."""
    obs = streams.obs()
    for t in range(steps):
        real_next, terminated, truncated, obs_after = streams.step()
        rewards = streams.rng.normal(size=len(obs)).astype(np.float32)
        ids = naive.add_batch(obs, np.zeros(len(obs)), rewards, real_next, terminated, np.full(len(obs), 0.99))
        naive.actions[ids] = ids
        buffer.add_batch(obs, ids, rewards, real_next, terminated, truncated)
        obs = obs_after
        if check_every and t % check_every == 0:
            check_all_valid(buffer, naive)


def check_all_valid(buffer: FrameReplayBuffer, naive: ReplayBuffer) -> np.ndarray:
    """Every sampleable transition equals the naive buffer's; returns their ids (naive slots)."""
    slots = np.flatnonzero(buffer.valid)
    assert len(slots) == len(buffer)
    got = buffer._gather(slots)
    want = naive._gather(got.actions, None)
    for name in ("obs", "rewards", "next_obs", "terminated"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert np.allclose(got.discounts, 0.99)
    return got.actions


@pytest.mark.parametrize("n_envs", [1, 3])
def test_rebuilt_transitions_equal_the_naive_buffer_through_wraparound(n_envs: int):
    buffer = FrameReplayBuffer(40 * n_envs, (1,), STACK, n_envs, gamma=0.99, dtype=np.int64)
    naive = ReplayBuffer(10_000, (STACK, 1), np.int64)
    streams = StackedStreams(n_envs, seed=n_envs)
    fill(buffer, naive, streams, 400, check_every=7)
    ids = check_all_valid(buffer, naive)
    # what is kept is, per env, the newest transitions without gaps, and nearly a full ring of them
    for env in range(n_envs):
        mine = np.sort(ids[ids % n_envs == env]) if n_envs > 1 else np.sort(ids)
        newest = np.arange(naive.size - n_envs + env, -1, -n_envs)[: len(mine)][::-1]
        assert np.array_equal(mine, newest)
        assert len(mine) >= 40 - 12  # the ring less final frames of episodes and a little history
    batch = buffer.sample(500, np.random.default_rng(0))
    want = naive._gather(batch.actions, None)
    assert np.array_equal(batch.obs, want.obs) and np.array_equal(batch.next_obs, want.next_obs)
    assert np.array_equal(batch.rewards, want.rewards) and np.array_equal(batch.terminated, want.terminated)


def test_sampling_is_uniform_over_valid_transitions():
    buffer = FrameReplayBuffer(60, (1,), STACK, 3, gamma=0.99, dtype=np.int64)
    naive = ReplayBuffer(10_000, (STACK, 1), np.int64)
    fill(buffer, naive, StackedStreams(3, seed=5), 13)  # rings not yet full, of unequal lengths
    counts = np.bincount(buffer.sample(60_000, np.random.default_rng(1)).indices, minlength=buffer.capacity)
    valid = counts[buffer.valid]
    assert (counts[~buffer.valid] == 0).all()
    assert abs(valid.mean() - 60_000 / len(buffer)) < 1e-9 and valid.min() > 0.85 * valid.mean()


def test_each_frame_is_stored_once():
    buffer = FrameReplayBuffer(1_000, (84, 84), STACK, 1, gamma=0.99)
    total = sum(a.nbytes for a in buffer.state_dict().values() if isinstance(a, np.ndarray))
    assert buffer.frames.nbytes == 1_000 * 84 * 84
    assert total < 1.01 * buffer.frames.nbytes  # a 1M-transition buffer: 7.1 GB, not 8 × that


def test_checkpoint_round_trip_and_a_resumed_session_starts_new_episodes(tmp_path):
    buffer = FrameReplayBuffer(60, (1,), STACK, 2, gamma=0.99, dtype=np.int64)
    naive = ReplayBuffer(10_000, (STACK, 1), np.int64)
    streams = StackedStreams(2, seed=3)
    fill(buffer, naive, streams, 50)
    path = save_checkpoint(tmp_path, "c", {"replay": buffer.state_dict()}, {"agent": "dqn", "env": "E"})
    loaded = FrameReplayBuffer(60, (1,), STACK, 2, gamma=0.99, dtype=np.int64)
    loaded.load_state_dict(read_checkpoint(path)[0]["replay"])
    a, b = buffer.sample(64, np.random.default_rng(2)), loaded.sample(64, np.random.default_rng(2))
    assert all(np.array_equal(x, y) for x, y in zip(a[:7], b[:7]))
    # the resumed session's envs start fresh episodes mid-way through the stored ones
    streams.queues = [streams._start() for _ in streams.queues]
    fill(loaded, naive, streams, 30)
    check_all_valid(loaded, naive)


def test_episodes_joined_mid_way_and_continued_after_a_checkpoint(tmp_path):
    """A resumed session may continue its episodes (exact resume) or join others mid-way: stacks stay right."""
    buffer = FrameReplayBuffer(60, (1,), STACK, 2, gamma=0.99, dtype=np.int64)
    naive = ReplayBuffer(10_000, (STACK, 1), np.int64)
    streams = StackedStreams(2, seed=4)
    for _ in range(3):  # episodes already in flight: their first stacks are not padded
        streams.step()
    assert any(not (o[:-1] == o[-1]).all() for o in streams.obs())
    fill(buffer, naive, streams, 40)
    check_all_valid(buffer, naive)
    path = save_checkpoint(tmp_path, "c", {"replay": buffer.state_dict()}, {"agent": "dqn", "env": "E"})
    loaded = FrameReplayBuffer(60, (1,), STACK, 2, gamma=0.99, dtype=np.int64)
    loaded.load_state_dict(read_checkpoint(path)[0]["replay"])
    before, was_open = loaded.pos.copy(), loaded.open.copy()
    fill(loaded, naive, streams, 1)  # the same episodes go on: one new frame each, no new history slots
    assert was_open.any() and ((loaded.pos - before) % loaded.ring)[was_open].tolist() == [1] * was_open.sum()
    fill(loaded, naive, streams, 30, check_every=3)
    check_all_valid(loaded, naive)


def test_real_atari_frames_with_life_losses_and_two_envs():
    from rlagents.environments import final_observations, make_vec_env

    envs = make_vec_env("ALE/Breakout-v5", 2, training=True)  # training: each lost life ends an episode
    buffer = FrameReplayBuffer(2 * 150, (84, 84), STACK, 2, gamma=0.99)
    naive = ReplayBuffer(1_000, (STACK, 84, 84), np.uint8)
    rng = np.random.default_rng(0)
    obs, _ = envs.reset(seed=0)
    ends = 0
    for _ in range(250):
        actions = rng.integers(0, envs.single_action_space.n, size=2)
        next_obs, rewards, terminated, truncated, infos = envs.step(actions)
        done = terminated | truncated
        real_next = final_observations(next_obs, done, infos) if done.any() else next_obs
        ids = naive.add_batch(obs, actions, rewards, real_next, terminated, np.full(2, 0.99))
        naive.actions[ids] = ids
        buffer.add_batch(obs, ids, rewards, real_next, terminated, truncated)
        ends += int(done.sum())
        obs = next_obs
    envs.close()
    assert ends >= 2  # lives were lost, so episode boundaries were crossed
    assert len(check_all_valid(buffer, naive)) > 250
