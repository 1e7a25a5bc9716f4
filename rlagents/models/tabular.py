"""A count-based model of a discrete MDP, value iteration over it, and batched Dyna-Q updates.

The model is learned from observed transitions only: visit counts N(s,a), counts of each observed next state
for transitions that did not terminate, termination counts and reward sums. Truncated transitions keep their
next state (the episode was cut, the MDP goes on); terminated ones lead nowhere. Successors are stored
sparsely, as the first K distinct next states seen per pair (K grows when needed), so a value-iteration
sweep costs O(states x actions x K), not O(states² x actions): Taxi has 500 states but K = 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class CountModel:
    """Empirical transition, termination and reward estimates of an MDP with `n_states` x `n_actions`."""

    def __init__(self, n_states: int, n_actions: int, width: int = 1):
        self.n_states, self.n_actions = n_states, n_actions
        self.visits = np.zeros((n_states, n_actions), dtype=np.int64)
        self.successors = np.full((n_states, n_actions, width), -1, dtype=np.int64)  # -1 = empty slot
        self.successor_counts = np.zeros((n_states, n_actions, width), dtype=np.int64)
        self.term_counts = np.zeros((n_states, n_actions), dtype=np.int64)
        self.reward_sums = np.zeros((n_states, n_actions), dtype=np.float64)

    def update(self, s: np.ndarray, a: np.ndarray, r: np.ndarray, s2: np.ndarray, terminated: np.ndarray) -> None:
        """Count a batch of transitions (arrays of equal length)."""
        for si, ai, ri, s2i, ti in zip(s.tolist(), a.tolist(), np.asarray(r).tolist(), s2.tolist(),
                                       np.asarray(terminated).tolist()):
            self.visits[si, ai] += 1
            self.reward_sums[si, ai] += ri
            if ti:
                self.term_counts[si, ai] += 1
                continue
            row = self.successors[si, ai]
            slot = np.flatnonzero((row == s2i) | (row < 0))
            if len(slot) == 0:  # a new successor and no free slot: widen the table
                self._widen()
                row = self.successors[si, ai]
                slot = np.flatnonzero(row < 0)
            k = slot[0]
            row[k] = s2i
            self.successor_counts[si, ai, k] += 1

    def _widen(self) -> None:
        width = self.successors.shape[2]
        pad = ((0, 0), (0, 0), (0, width))
        self.successors = np.pad(self.successors, pad, constant_values=-1)
        self.successor_counts = np.pad(self.successor_counts, pad)

    def estimates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean rewards R[s,a], successor indices [s,a,k], their probabilities [s,a,k]).

        Probabilities of a pair sum to 1 − P(terminate | s,a); unvisited pairs have R = 0 and no successors.
        Empty slots hold index 0 with probability 0."""
        n = np.maximum(self.visits, 1)
        return (self.reward_sums / n, np.maximum(self.successors, 0),
                self.successor_counts / n[:, :, None])

    def dense_transitions(self) -> np.ndarray:
        """P[s,a,s'] as a dense array (for inspection and tests; planning uses the sparse form)."""
        _, succ, probs = self.estimates()
        out = np.zeros((self.n_states, self.n_actions, self.n_states))
        s_idx, a_idx = np.indices(succ.shape[:2])
        for k in range(succ.shape[2]):
            np.add.at(out, (s_idx, a_idx, succ[:, :, k]), probs[:, :, k])
        return out

    def sample_next(self, s: np.ndarray, a: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw next states from the empirical model for visited pairs; returns (next states, terminated)."""
        u = rng.random(len(s)) * self.visits[s, a]  # a uniform draw among the recorded outcomes
        cum = np.cumsum(self.successor_counts[s, a], axis=1)
        k = (cum <= u[:, None]).sum(axis=1)
        terminated = k >= cum.shape[1]  # beyond every recorded successor: one of the terminal outcomes
        succ = self.successors[s, a, np.minimum(k, cum.shape[1] - 1)]
        return np.maximum(succ, 0), terminated | (succ < 0)

    def state_dict(self) -> dict[str, Any]:
        return {"visits": self.visits.copy(), "successors": self.successors.copy(),
                "successor_counts": self.successor_counts.copy(), "term_counts": self.term_counts.copy(),
                "reward_sums": self.reward_sums.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shape = (self.n_states, self.n_actions)
        for key in ("visits", "successors", "successor_counts", "term_counts", "reward_sums"):
            value = np.asarray(state[key])
            if value.shape[:2] != shape:
                raise ValueError(f"checkpoint {key} has shape {value.shape}, this model needs {shape}")
            setattr(self, key, value.astype(getattr(self, key).dtype).copy())


def value_iteration(rewards: np.ndarray, successors: np.ndarray, probs: np.ndarray, gamma: float, *,
                    v0: np.ndarray | None = None, fixed: np.ndarray | None = None,
                    fixed_value: float = 0.0, tol: float = 1e-6, max_sweeps: int = 10_000
                    ) -> tuple[np.ndarray, int]:
    """Q* of the MDP given by R[s,a] and sparse transitions (successors[s,a,k], probs[s,a,k]) by synchronous
    value iteration; returns (Q, sweeps run).

    Probabilities of a pair may sum to less than one: the missing mass terminates (value 0). Pairs where
    `fixed` is true keep `fixed_value` (R-max's optimistic value of an unknown pair). Stops when no state value
    changes by more than `tol`, or after `max_sweeps` (warm-start with `v0` to carry on from a previous plan).
    """
    n_states = rewards.shape[0]
    v = np.zeros(n_states) if v0 is None else v0.astype(np.float64, copy=True)
    q = rewards.copy()
    sweeps = 0
    while sweeps < max_sweeps:
        q = rewards + gamma * np.einsum("sak,sak->sa", probs, v[successors])
        if fixed is not None:
            q[fixed] = fixed_value
        new_v = q.max(axis=1)
        sweeps += 1
        delta = np.abs(new_v - v).max()
        v = new_v
        if delta <= tol:
            break
    return q, sweeps


def dense_to_sparse(transitions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(successors, probs) of a dense P[s,a,s'] in the sparse form `value_iteration` takes."""
    n_states = transitions.shape[2]
    successors = np.broadcast_to(np.arange(n_states), transitions.shape).copy()
    return successors, transitions.astype(np.float64)


def dyna_updates(q: np.ndarray, s: np.ndarray, a: np.ndarray, r: np.ndarray, s2: np.ndarray,
                 terminated: np.ndarray, gamma: float, lr: float) -> float:
    """One batched Q-learning step on transitions (s, a, r, s2, terminated), in place; returns mean |TD error|.

    Duplicate (s,a) pairs in a batch each add their own step (as sequential updates would, to first order)."""
    targets = r + gamma * np.where(terminated, 0.0, q[s2].max(axis=1))
    delta = targets - q[s, a]
    np.add.at(q, (s, a), lr * delta)
    return float(np.abs(delta).mean()) if len(delta) else 0.0
