"""Sequence replay for recurrent Q-learning in the style of R2D2 (Kapturowski et al. 2019).

Each episode of each vector env is a run of *slots*. A slot holds an observation and, when an action was
taken from it, that action and its reward (`valid`); the episode's last observation gets a slot of its own
with no action (`valid` false, `terminal` when the episode terminated rather than being truncated), so the
network sees it with the right hidden state and a truncated episode bootstraps from it.

An episode is cut into sequences of `length` slots, consecutive ones sharing `overlap` slots; its last
sequence ends with the final observation and is padded (slots that are not `valid`, never trained). A
sequence never spans two episodes, so the first sequence of every episode starts at the episode's first slot
(`starts`) from a zero state, exactly the state the acting network had; a later one starts from the state the
acting network had before its first slot (R2D2's *stored state*), which is stale by the time it is replayed:
a learner runs the network from it over the first `burn_in` slots without gradients, to refresh it, and
trains on the slots after them. Sequences that start an episode need no burn-in and are trained from slot 0.

Targets are n-step returns that stay inside the sequence: from slot t, m = min(n, steps to the episode's
end, steps to the sequence's last slot) rewards, then the value of slot t + m weighted γ^m (0 past a
terminal). The last slot of a sequence has no successor to bootstrap from and is not trained;
`overlap ≥ burn_in + 1` makes every step of an episode trained in some sequence.
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np

from rlagents import obs as batches
from rlagents.replay import obs_bytes
from rlagents.validate import require_memory


class SequenceBatch(NamedTuple):
    """Sampled sequences, batch-major: (B, L, …) arrays, and per-sequence (B, …) ones."""

    obs: batches.Obs  # (B, L, *obs_shape); per key for Dict spaces
    actions: np.ndarray  # (B, L) int64 (0 where no action was taken)
    starts: np.ndarray  # (B, L) bool: the slot begins an episode (reset the recurrent state before it)
    returns: np.ndarray  # (B, L) float32: discounted sum of the m rewards of each slot's n-step target
    bootstrap: np.ndarray  # (B, L) int64: the slot (t + m) whose value completes the target
    bootstrap_weights: np.ndarray  # (B, L) float32: γ^m, or 0 where slot t + m is terminal
    trained: np.ndarray  # (B, L) bool: the loss applies (an action slot with a target, past any burn-in)
    states: np.ndarray  # (B, state_dim) float32: the recurrent state before slot 0, as stored when acting
    indices: np.ndarray  # (B,) stored sequence numbers
    masks: np.ndarray | None = None  # (B, L, actions) bool: legal actions at each slot (masked agents)


def nstep_targets(rewards: np.ndarray, valid: np.ndarray, terminal: np.ndarray, starts: np.ndarray, gamma: float,
                  n_step: int, burn_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n-step targets inside sequences (B, L): returns, bootstrap slot, bootstrap weight, trained mask.

    The target of slot t is `returns[t] + bootstrap_weights[t] · V(bootstrap[t])`: m rewards from t, where m
    stops at n, at the episode's final observation (a slot with `valid` false; weight 0 when it is `terminal`)
    and at the sequence's last slot. Slots without an action, the last slot, and the first `burn_in` slots of
    sequences that do not start an episode (`starts[:, 0]` false) are not trained (their entries are 0).
    """
    n_seq, length = rewards.shape
    t = np.arange(length)
    returns = np.zeros((n_seq, length), dtype=np.float64)
    bootstrap = np.zeros((n_seq, length), dtype=np.int64)
    weights = np.zeros((n_seq, length), dtype=np.float64)
    active = valid.astype(bool)  # still summing rewards: slots t + k so far were action slots
    active[:, -1] = False
    trained = np.zeros((n_seq, length), dtype=bool)
    for k in range(n_step):
        if not active.any():
            break
        nxt = np.minimum(t + k + 1, length - 1)  # the slot after t + k (t + k < L − 1 wherever active)
        returns += np.where(active, gamma ** k * rewards[:, np.minimum(t + k, length - 1)], 0.0)
        stop = active & ((t + k + 1 >= length - 1)[None, :] | ~valid[:, nxt].astype(bool) | (k == n_step - 1))
        bootstrap = np.where(stop, nxt[None, :], bootstrap)
        weights = np.where(stop, gamma ** (k + 1) * (1.0 - terminal[:, nxt]), weights)
        trained |= stop
        active &= ~stop
    trained &= (t >= burn_in)[None, :] | starts[:, :1].astype(bool)
    keep = trained.astype(np.float64)
    return ((returns * keep).astype(np.float32), bootstrap * trained, (weights * keep).astype(np.float32),
            trained)


def _allocate(space: gym.Space, rows: int, length: int) -> batches.Obs:
    """Zeroed (rows, length, *shape) storage for observations of `space` (per key for Dict)."""
    flat = batches.allocate(space, rows * length)
    return _reshape(flat, (rows, length))


def _reshape(obs: batches.Obs, lead: tuple[int, ...]) -> batches.Obs:
    if isinstance(obs, dict):
        return {key: _reshape(value, lead) for key, value in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_reshape(value, lead) for value in obs)
    return obs.reshape(*lead, *obs.shape[1:])


def _zero_tail(obs: batches.Obs, row: int, start: int) -> None:
    """Zero the observations of sequence `row` from slot `start` on (a padded sequence's padding)."""
    if isinstance(obs, dict):
        for value in obs.values():
            _zero_tail(value, row, start)
    elif isinstance(obs, tuple):
        for value in obs:
            _zero_tail(value, row, start)
    else:
        obs[row, start:] = 0


class SequenceReplayBuffer:
    """Uniform replay of fixed-length sequences cut from per-env slot streams (module docstring).

    `capacity` counts transitions, as DQN's `buffer_size` does: the ring holds `capacity // (length −
    overlap)` sequences, each adding `length − overlap` new slots. `state_dim` is the width of the flattened
    recurrent state stored with each sequence.
    """

    _SLOT_ARRAYS = ("actions", "rewards", "valid", "terminal", "starts")

    def __init__(self, capacity: int, obs_space: gym.Space, *, length: int, burn_in: int, overlap: int,
                 n_envs: int, state_dim: int, gamma: float, n_step: int = 1, mask_actions: int = 0):
        if not 0 <= burn_in <= length - 2:
            raise ValueError(f"burn_in ({burn_in}) must leave at least 2 slots of a sequence of {length} (a trained "
                             f"step and the value it bootstraps from): at most {length - 2}")
        if not burn_in + 1 <= overlap < length:
            raise ValueError(f"overlap ({overlap}) must be at least burn_in + 1 = {burn_in + 1} (so every step is "
                             f"trained in some sequence) and below the sequence length {length}")
        self.length, self.burn_in, self.overlap = int(length), int(burn_in), int(overlap)
        self.n_envs, self.state_dim, self.gamma, self.n_step = int(n_envs), int(state_dim), float(gamma), int(n_step)
        self.capacity = max(1, int(capacity) // (self.length - self.overlap))  # sequences
        slot_bytes = obs_bytes(getattr(obs_space, "shape", ()) or (), getattr(obs_space, "dtype", np.int64),
                               obs_space) + 15 + mask_actions
        rows = self.capacity + self.n_envs  # stored sequences and each env's pending slots
        require_memory(rows * (self.length * slot_bytes + 4 * self.state_dim * self.length),
                       f"a sequence replay buffer of {self.capacity:,} sequences of {self.length}",
                       "lower buffer_size (--set buffer_size=N) or sequence_length")
        self.obs = _allocate(obs_space, self.capacity, self.length)
        self.pending_obs = _allocate(obs_space, self.n_envs, self.length)
        for prefix, rows_ in (("", self.capacity), ("pending_", self.n_envs)):
            setattr(self, f"{prefix}actions", np.zeros((rows_, self.length), dtype=np.int64))
            setattr(self, f"{prefix}rewards", np.zeros((rows_, self.length), dtype=np.float32))
            for flag in ("valid", "terminal", "starts"):
                setattr(self, f"{prefix}{flag}", np.zeros((rows_, self.length), dtype=bool))
        self.masks = np.ones((self.capacity, self.length, mask_actions), dtype=bool) if mask_actions else None
        self.pending_masks = np.ones((self.n_envs, self.length, mask_actions), dtype=bool) if mask_actions else None
        self.states = np.zeros((self.capacity, self.state_dim), dtype=np.float32)
        self.pending_states = np.zeros((self.n_envs, self.length, self.state_dim), dtype=np.float32)
        self.count = np.zeros(self.n_envs, dtype=np.int64)  # pending slots per env
        self.unsent = np.zeros(self.n_envs, dtype=np.int64)  # of which not in a stored sequence yet
        self.ended = np.ones(self.n_envs, dtype=bool)  # the env's next slot begins an episode
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add_batch(self, obs, actions: np.ndarray, rewards: np.ndarray, next_obs, terminated: np.ndarray,
                  truncated: np.ndarray, states: np.ndarray, next_states: np.ndarray,
                  masks: np.ndarray | None = None, next_masks: np.ndarray | None = None) -> None:
        """Store one vector step. `states` is each env's recurrent state before acting on `obs`, `next_states`
        the state after it (the one an episode's final observation `next_obs` would be processed with);
        `masks`/`next_masks` the legal actions of `obs`/`next_obs` (masked agents)."""
        envs = np.arange(self.n_envs)
        self._append(envs, obs, actions, rewards, True, False, states, masks)
        done = np.flatnonzero(np.logical_or(terminated, truncated))
        for env in done:  # the final observation gets a slot without an action; the last sequence is padded
            one = done[done == env]
            self._append(one, batches.take(next_obs, one), 0, 0.0, False, np.asarray(terminated)[one],
                         np.asarray(next_states)[one], None if next_masks is None else next_masks[one])
            if self.unsent[env]:
                self._emit(int(env))
            self.count[env] = self.unsent[env] = 0  # the next episode starts a new sequence

    def _append(self, envs: np.ndarray, obs, actions, rewards, valid: bool, terminal, states: np.ndarray,
                masks: np.ndarray | None) -> None:
        slot = (envs, self.count[envs])
        batches.put(self.pending_obs, slot, obs)
        self.pending_actions[slot] = actions
        self.pending_rewards[slot] = rewards
        self.pending_valid[slot] = valid
        self.pending_terminal[slot] = terminal
        self.pending_starts[slot] = self.ended[envs]
        self.pending_states[slot] = states
        if self.pending_masks is not None:
            self.pending_masks[slot] = True if masks is None else masks
        self.ended[envs] = not valid  # after an episode's final observation, the next slot begins one
        self.count[envs] += 1
        self.unsent[envs] += 1
        for env in envs[self.count[envs] == self.length]:
            self._emit(int(env))

    def _emit(self, env: int) -> None:
        """Store env's pending sequence (padded past its `count` slots), then keep its last `overlap` slots as
        the next one's start."""
        i, keep, length, count = self.pos, self.overlap, self.length, int(self.count[env])
        batches.put(self.obs, i, batches.take(self.pending_obs, env))
        for name in self._SLOT_ARRAYS + (("masks",) if self.masks is not None else ()):
            getattr(self, name)[i] = getattr(self, f"pending_{name}")[env]
            getattr(self, name)[i, count:] = 0 if name != "masks" else True  # padding: no action, no start
        _zero_tail(self.obs, i, count)
        self.states[i] = self.pending_states[env, 0]
        self.unsent[env] = 0
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        shift = (env, slice(0, keep))
        batches.put(self.pending_obs, shift, batches.take(self.pending_obs, (env, slice(length - keep, length))))
        for name in self._SLOT_ARRAYS + ("states",) + (("masks",) if self.masks is not None else ()):
            pending = getattr(self, f"pending_{name}")
            pending[shift] = pending[env, length - keep:].copy()
        self.count[env] = keep

    def drop(self, envs: np.ndarray) -> None:
        """Forget the pending slots of `envs` (their episodes were restarted); their next slot begins one."""
        self.count[envs] = self.unsent[envs] = 0
        self.ended[envs] = True

    def sample(self, batch_size: int, rng: np.random.Generator) -> SequenceBatch:
        """Sample stored sequences uniformly with replacement, with their n-step targets."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty sequence replay buffer")
        return self.gather(rng.integers(0, self.size, size=batch_size))

    def gather(self, idx: np.ndarray) -> SequenceBatch:
        """The stored sequences `idx` as a batch."""
        returns, bootstrap, weights, trained = nstep_targets(self.rewards[idx], self.valid[idx], self.terminal[idx],
                                                             self.starts[idx], self.gamma, self.n_step, self.burn_in)
        return SequenceBatch(batches.take(self.obs, idx), self.actions[idx], self.starts[idx], returns, bootstrap,
                             weights, trained, self.states[idx], idx,
                             None if self.masks is None else self.masks[idx])

    def state_dict(self) -> dict:
        """Stored sequences, each env's pending slots and the counters, for checkpoints (an exact resume)."""
        n = self.size
        names = self._SLOT_ARRAYS + ("states",) + (("masks",) if self.masks is not None else ())
        return {"obs": batches.take(self.obs, slice(0, n)), **{name: getattr(self, name)[:n] for name in names},
                "pending_obs": self.pending_obs,
                **{f"pending_{name}": getattr(self, f"pending_{name}") for name in names},
                "count": self.count, "unsent": self.unsent, "ended": self.ended, "pos": self.pos, "size": n}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`; pending slots of a different number of envs are dropped (their episodes
        restart anyway)."""
        n = int(state["size"])
        names = self._SLOT_ARRAYS + ("states",) + (("masks",) if self.masks is not None else ())
        if n > self.capacity or np.shape(state["actions"])[1:] != (self.length,):
            raise ValueError(f"the stored sequence replay ({n} sequences of {np.shape(state['actions'])[1:]}) does "
                             f"not fit this buffer ({self.capacity} sequences of {self.length})")
        batches.put(self.obs, slice(0, n), state["obs"])
        for name in names:
            getattr(self, name)[:n] = np.asarray(state[name])
        self.pos, self.size = int(state["pos"]), n
        if np.shape(state["count"]) != (self.n_envs,):
            self.drop(np.arange(self.n_envs))
            return
        batches.put(self.pending_obs, slice(None), state["pending_obs"])
        for name in names:
            getattr(self, f"pending_{name}")[...] = np.asarray(state[f"pending_{name}"])
        self.count[...] = np.asarray(state["count"])
        self.unsent[...] = np.asarray(state["unsent"])
        self.ended[...] = np.asarray(state["ended"], dtype=bool)
