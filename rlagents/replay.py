"""Experience replay: preallocated numpy storage, prioritized sampling, and n-step return accumulation.

Each stored transition carries its own `discount` (γ^k for a k-step return) and a `terminated` flag, so the
TD target is `reward + discount * (1 - terminated) * V(next_obs)` for 1-step and n-step transitions alike.
Truncated episodes are stored with terminated = 0 and their real final observation: they bootstrap.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import gymnasium as gym
import numpy as np

from rlagents import obs as batches
from rlagents.validate import require_memory


class Batch(NamedTuple):
    """A sampled batch of transitions (numpy arrays) plus what prioritized replay needs."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    discounts: np.ndarray
    indices: np.ndarray
    weights: np.ndarray | None  # importance-sampling weights (prioritized replay only)
    next_masks: np.ndarray | None = None  # legal actions of next_obs (bool, batch × actions), for masked agents


def _count(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=object))  # Python ints: an absurd shape must not overflow int64


def obs_bytes(obs_shape: tuple[int, ...], obs_dtype: np.dtype, obs_space: gym.Space | None = None) -> int:
    """Bytes of one stored observation (of `obs_space` when it is a Dict, stored per key)."""
    if isinstance(obs_space, gym.spaces.Dict):
        return sum(obs_bytes(getattr(sub, "shape", ()) or (), np.int64 if isinstance(sub, gym.spaces.Discrete)
                             else sub.dtype, sub) for sub in obs_space.spaces.values())
    return _count(obs_shape) * np.dtype(obs_dtype).itemsize


class ReplayBuffer:
    """Uniform replay over a ring buffer of fixed capacity, allocated once."""

    extra_bytes = 0  # per transition, beyond the arrays below (prioritized replay's sum tree)

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype,
                 action_shape: tuple[int, ...] = (), action_dtype: np.dtype = np.int64,
                 obs_space: gym.spaces.Dict | None = None, mask_actions: int = 0):
        self.capacity = int(capacity)
        per_transition = (2 * obs_bytes(obs_shape, obs_dtype, obs_space) + 12 + self.extra_bytes
                          + _count(action_shape) * np.dtype(action_dtype).itemsize + mask_actions)
        require_memory(self.capacity * per_transition, f"a replay buffer of {self.capacity:,} transitions",
                       "lower buffer_size (--set buffer_size=N)")
        if obs_space is not None:  # Dict observations: one array per key
            self.obs = batches.allocate(obs_space, self.capacity)
            self.next_obs = batches.allocate(obs_space, self.capacity)
        else:
            self.obs = np.zeros((self.capacity, *obs_shape), dtype=obs_dtype)
            self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros((self.capacity, *action_shape), dtype=action_dtype)
        self.rewards = np.zeros(self.capacity, dtype=np.float32)
        self.terminated = np.zeros(self.capacity, dtype=np.float32)
        self.discounts = np.zeros(self.capacity, dtype=np.float32)
        # action masks of next_obs (`mask_actions` actions; none stored when 0): masked targets max over them
        self.next_masks = np.ones((self.capacity, mask_actions), dtype=bool) if mask_actions else None
        self.pos = 0
        self.size = 0
        self._terminal_slots = np.zeros(0, np.int64)  # `terminal_slots`' cache, valid for the first
        self._terminal_scanned = 0                     # `_terminal_scanned` slots of a buffer that has not wrapped

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward: float, next_obs, terminated: bool, discount: float,
            next_mask: np.ndarray | None = None) -> int:
        """Store one transition; returns its slot."""
        i = self.pos
        if self.next_masks is not None and next_mask is not None:
            self.next_masks[i] = next_mask
        batches.put(self.obs, i, obs)
        self.actions[i] = action
        self.rewards[i] = reward
        batches.put(self.next_obs, i, next_obs)
        self.terminated[i] = terminated
        self.discounts[i] = discount
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        return i

    def add_batch(self, obs, actions, rewards, next_obs, terminated, discounts,
                  next_masks: np.ndarray | None = None) -> np.ndarray:
        """Store a batch of transitions (one per vector env); returns their slots."""
        n = len(rewards)
        idx = (self.pos + np.arange(n)) % self.capacity
        if self.next_masks is not None and next_masks is not None:
            self.next_masks[idx] = next_masks
        batches.put(self.obs, idx, obs)
        self.actions[idx] = actions
        self.rewards[idx] = rewards
        batches.put(self.next_obs, idx, next_obs)
        self.terminated[idx] = terminated
        self.discounts[idx] = discounts
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)
        return idx

    def _gather(self, idx: np.ndarray, weights: np.ndarray | None) -> Batch:
        return Batch(batches.take(self.obs, idx), self.actions[idx], self.rewards[idx],
                     batches.take(self.next_obs, idx), self.terminated[idx], self.discounts[idx], idx, weights,
                     None if self.next_masks is None else self.next_masks[idx])

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """Sample uniformly with replacement."""
        return self._gather(rng.integers(0, self.size, size=batch_size), None)

    def terminal_slots(self) -> np.ndarray:
        """Slots holding terminal transitions. Until the ring wraps, only the slots added since the last call are
        scanned; after, every call scans the whole buffer."""
        if self.size < self.capacity and self._terminal_scanned <= self.size:
            new = np.flatnonzero(self.terminated[self._terminal_scanned:self.size])
            if len(new):
                self._terminal_slots = np.concatenate([self._terminal_slots, new + self._terminal_scanned])
        else:
            self._terminal_slots = np.flatnonzero(self.terminated[:self.size])
        self._terminal_scanned = self.size
        return self._terminal_slots

    def sample_with_terminals(self, batch_size: int, n_batches: int, share: float,
                              rng: np.random.Generator) -> Batch:
        """`n_batches` batches of `batch_size` rows, one after the other, in which terminal transitions make up
        at least `share` on average. While replay holds at least that share of them (or none), this is
        `sample(batch_size * n_batches)`, draw for draw; below it, each batch's first k rows are drawn uniformly
        from the terminal transitions and the other rows uniformly from all of replay, with
        k = round(batch_size · (share − p) / (1 − p)) for p the terminal share of replay (so that
        k + (batch_size − k) · p = share · batch_size)."""
        idx = rng.integers(0, self.size, size=batch_size * n_batches)
        terminals = self.terminal_slots()
        p = len(terminals) / self.size
        rows = round(batch_size * (share - p) / (1.0 - p)) if len(terminals) and p < share else 0
        if rows:
            idx = idx.reshape(n_batches, batch_size)
            idx[:, :rows] = terminals[rng.integers(0, len(terminals), size=(n_batches, rows))]
            idx = idx.reshape(-1)
        return self._gather(idx, None)

    def state_dict(self) -> dict:
        """Arrays and counters, for checkpoints that keep the buffer."""
        n = self.size
        return {"obs": batches.take(self.obs, slice(0, n)), "next_obs": batches.take(self.next_obs, slice(0, n)),
                "actions": self.actions[:n],
                "rewards": self.rewards[:n], "terminated": self.terminated[:n],
                "discounts": self.discounts[:n], "pos": self.pos, "size": n,
                **({"next_masks": self.next_masks[:n]} if self.next_masks is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        n = int(state["size"])
        batches.put(self.obs, slice(0, n), state["obs"])
        batches.put(self.next_obs, slice(0, n), state["next_obs"])
        for key in ("actions", "rewards", "terminated", "discounts"):
            getattr(self, key)[:n] = np.asarray(state[key])
        if self.next_masks is not None and "next_masks" in state:
            self.next_masks[:n] = np.asarray(state["next_masks"], dtype=bool)
        self.pos, self.size = int(state["pos"]), n
        self._terminal_slots, self._terminal_scanned = np.zeros(0, np.int64), 0


class SumTree:
    """Binary tree of priorities over a power-of-two number of leaves; updates and searches are vectorised."""

    def __init__(self, capacity: int):
        self.leaves = 1 << max(0, int(capacity - 1).bit_length())
        self.tree = np.zeros(2 * self.leaves, dtype=np.float64)  # node 1 is the root

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def update(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        pos = np.asarray(indices) + self.leaves
        self.tree[pos] = priorities
        pos = np.unique(pos // 2)
        while pos[0] >= 1:  # every leaf sits at the same depth, so a level is one vector op
            self.tree[pos] = self.tree[2 * pos] + self.tree[2 * pos + 1]
            if pos[0] == 1:
                break
            pos = np.unique(pos // 2)

    def find(self, prefix_sums: np.ndarray) -> np.ndarray:
        """Leaf index for each prefix sum in [0, total)."""
        pos = np.ones(len(prefix_sums), dtype=np.int64)
        prefix = np.asarray(prefix_sums, dtype=np.float64).copy()
        while pos[0] < self.leaves:
            left = 2 * pos
            left_sum = self.tree[left]
            right = prefix >= left_sum
            prefix = np.where(right, prefix - left_sum, prefix)
            pos = np.where(right, left + 1, left)
        return pos - self.leaves

    def priorities(self, indices: np.ndarray) -> np.ndarray:
        return self.tree[np.asarray(indices) + self.leaves]


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritized replay (Schaul et al. 2016): P(i) ∝ p_i^α, IS weights (N·P(i))^-β / max."""

    extra_bytes = 32  # the sum tree: 2 float64 nodes per leaf, up to twice as many leaves as transitions

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype,
                 action_shape: tuple[int, ...] = (), action_dtype: np.dtype = np.int64,
                 alpha: float = 0.6, eps: float = 1e-6, obs_space: gym.spaces.Dict | None = None,
                 mask_actions: int = 0):
        super().__init__(capacity, obs_shape, obs_dtype, action_shape, action_dtype, obs_space, mask_actions)
        self.alpha, self.eps = alpha, eps
        self.tree = SumTree(self.capacity)
        self.max_priority = 1.0

    def add(self, *args, **kwargs) -> int:
        i = super().add(*args, **kwargs)
        self.tree.update(np.array([i]), np.array([self.max_priority ** self.alpha]))
        return i

    def add_batch(self, *args, **kwargs) -> np.ndarray:
        idx = super().add_batch(*args, **kwargs)
        self.tree.update(idx, np.full(len(idx), self.max_priority ** self.alpha))
        return idx

    def sample(self, batch_size: int, rng: np.random.Generator, beta: float = 0.4) -> Batch:
        """Stratified proportional sampling: one draw from each of `batch_size` equal slices of the mass."""
        total = self.tree.total
        bounds = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
        idx = np.minimum(self.tree.find(np.minimum(bounds, np.nextafter(total, 0))), self.size - 1)
        probs = self.tree.priorities(idx) / total
        weights = (self.size * np.maximum(probs, 1e-12)) ** (-beta)
        weights = (weights / weights.max()).astype(np.float32)
        return self._gather(idx, weights)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        priorities = np.abs(td_errors) + self.eps
        self.max_priority = max(self.max_priority, float(priorities.max()))
        self.tree.update(indices, priorities ** self.alpha)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["priorities"] = self.tree.priorities(np.arange(self.size))
        state["max_priority"] = self.max_priority
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.max_priority = float(state["max_priority"])
        if self.size:
            self.tree.update(np.arange(self.size), np.asarray(state["priorities"], dtype=np.float64))


def nstep_return(rewards: np.ndarray | list[float], gamma: float) -> float:
    """Discounted sum Σ_k γ^k r_k of a reward sequence."""
    out = 0.0
    for r in reversed(list(rewards)):
        out = float(r) + gamma * out
    return out


class NStepAccumulator:
    """Turns per-env 1-step transitions into n-step ones.

    Emits (obs_t, a_t, Σ_{k<m} γ^k r_{t+k}, obs_{t+m}, terminated, γ^m, mask of obs_{t+m} or None) once m = n
    steps are known, and at
    an episode end flushes every pending start with the shorter m it has. A terminated flush does not
    bootstrap; a truncated one does, from the real final observation.
    """

    def __init__(self, n_envs: int, n_step: int, gamma: float):
        self.n_step, self.gamma = n_step, gamma
        self.pending: list[deque] = [deque() for _ in range(n_envs)]

    def push(self, env: int, obs, action, reward: float, next_obs, terminated: bool, truncated: bool,
             next_mask: np.ndarray | None = None):
        """Record one step of env `env`; returns the list of finished n-step transitions."""
        queue = self.pending[env]
        queue.append((obs, action, float(reward)))
        out = []
        if terminated or truncated:
            while queue:
                out.append(self._emit(queue, next_obs, terminated, next_mask))
                queue.popleft()
        elif len(queue) == self.n_step:
            out.append(self._emit(queue, next_obs, False, next_mask))
            queue.popleft()
        return out

    def drop(self, env: int) -> None:
        """Forget env `env`'s pending steps (its episode was restarted)."""
        self.pending[env].clear()

    def state_dict(self) -> list[list[list]]:
        """Pending steps per env as [obs, action, reward] lists (at most n - 1 each), for checkpoints."""
        return [[[obs, action, reward] for obs, action, reward in queue] for queue in self.pending]

    def load_state_dict(self, state: list[list[list]]) -> None:
        if len(state) != len(self.pending):  # a different number of envs: their episodes restart anyway
            state = [[] for _ in self.pending]
        self.pending = [deque((obs, action, float(reward)) for obs, action, reward in queue) for queue in state]

    def _emit(self, queue: deque, next_obs, terminated: bool, next_mask: np.ndarray | None):
        obs, action, _ = queue[0]
        rewards = [r for _, _, r in queue]
        return (obs, action, nstep_return(rewards, self.gamma), next_obs, terminated, self.gamma ** len(rewards),
                next_mask)
