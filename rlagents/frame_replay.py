"""Replay of frame-stacked observations that stores each frame once (Atari: 84×84 uint8, stacks of 4).

A naive buffer keeps `obs` and `next_obs`, each a stack of 4 frames: 8 copies of every frame. Here each
vector env has its own ring of slots in time order, and a slot holds one frame (the newest of a stack)
plus, when an action was taken from it, that transition's action, reward and terminal flag. A stack is
rebuilt by index from the slot and its predecessors; the next observation is the stack ending one slot
later. An episode of L steps takes L + 1 slots (its last frame has no action); a 1M-slot buffer of 84×84
frames is 7.1 GB.

Episode starts: the env pads the first stack of an episode by repeating its first frame (Gymnasium's
`FrameStackObservation(padding_type="reset")`), so each slot records how many earlier frames of its
episode it may use (`back`, at most stack − 1) and indices are clamped to the episode's first slot. A first
stack that is not padded that way (an episode joined mid-way, e.g. after a resume) is stored whole, as
stack − 1 slots of history before its first transition. When a ring wraps, slots whose frames were
overwritten stop being sampled.
"""

from __future__ import annotations

import numpy as np

from rlagents.replay import Batch, obs_bytes
from rlagents.validate import require_memory


class FrameReplayBuffer:
    """Uniform replay over per-env rings of single frames; `add_batch` takes one vector step at a time.

    An env's `obs` continues its stored episode when the previous step did not end it and it equals the
    stack rebuilt from the newest slot (so a resumed session may continue its episodes or start new ones);
    otherwise it starts a new episode.
    """

    def __init__(self, capacity: int, frame_shape: tuple[int, ...], stack: int, n_envs: int, gamma: float,
                 dtype: np.dtype = np.uint8):
        self.stack, self.n_envs, self.gamma = int(stack), int(n_envs), float(gamma)
        self.ring = int(capacity) // self.n_envs  # slots per env
        if self.ring < 2 * (self.stack + 1):
            raise ValueError(f"replay capacity {capacity} is too small for {n_envs} envs with stacks of {stack}: "
                             f"needs at least {2 * (self.stack + 1) * self.n_envs}")
        self.capacity = self.ring * self.n_envs
        # per slot: the frame, action (8), reward (4), terminal flag (4), back (8), valid (1)
        require_memory(self.capacity * (obs_bytes(frame_shape, dtype) + 25),
                       f"a frame replay buffer of {self.capacity:,} slots", "lower buffer_size (--set buffer_size=N)")
        self.frames = np.zeros((self.capacity, *frame_shape), dtype=dtype)
        self.actions = np.zeros(self.capacity, dtype=np.int64)
        self.rewards = np.zeros(self.capacity, dtype=np.float32)
        self.terminated = np.zeros(self.capacity, dtype=np.float32)
        self.back = np.zeros(self.capacity, dtype=np.int64)  # earlier frames of the episode usable, ≤ stack-1
        self.valid = np.zeros(self.capacity, dtype=bool)  # a sampleable transition starts at this slot
        self.pos = np.zeros(self.n_envs, dtype=np.int64)  # next slot to write, per ring
        self.written = np.zeros(self.n_envs, dtype=np.int64)  # slots ever written, capped at the ring size
        self.open = np.zeros(self.n_envs, dtype=bool)  # the newest slot's frame is the env's current obs
        self.size = 0  # number of valid transitions

    def __len__(self) -> int:
        return self.size

    def _write(self, env: int, frame: np.ndarray, back: int) -> int:
        """Write one frame into env's ring; returns its global slot. Invalidates what the write destroys."""
        local = int(self.pos[env])
        slot = env * self.ring + local
        if self.valid[slot]:
            self.valid[slot] = False
            self.size -= 1
        # slots just after this one (the ring's oldest) may have used the overwritten frame as history
        for k in range(1, self.stack):
            later = env * self.ring + (local + k) % self.ring
            if self.valid[later] and self.back[later] >= k:
                self.valid[later] = False
                self.size -= 1
        self.frames[slot] = frame
        self.back[slot] = back
        self.pos[env] = (local + 1) % self.ring
        self.written[env] = min(self.written[env] + 1, self.ring)
        return slot

    def add_batch(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
                  terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Store one vector step: `obs`, `next_obs` of shape (n_envs, stack, *frame_shape)."""
        for env in range(self.n_envs):
            slot = env * self.ring + (int(self.pos[env]) - 1) % self.ring  # the newest frame of this env
            # One 4-frame comparison per step (~µs, against ~ms for an Atari step) keeps the stacks right
            # whatever the caller does between steps (a resume, say).
            if not (self.open[env] and np.array_equal(self._stacks(np.array([slot]), 0)[0], obs[env])):
                first = obs[env]
                if (first[:-1] == first[-1]).all():  # a new episode, padded by repeating its first frame
                    slot = self._write(env, first[-1], 0)
                else:  # an episode joined mid-way (a resumed one, say): store its whole first stack
                    for k in range(self.stack):
                        slot = self._write(env, first[k], k)
            self.actions[slot] = actions[env]
            self.rewards[slot] = rewards[env]
            self.terminated[slot] = terminated[env]
            self._write(env, next_obs[env][-1], min(int(self.back[slot]) + 1, self.stack - 1))
            self.valid[slot] = True
            self.size += 1
            self.open[env] = not (terminated[env] or truncated[env])

    def _stacks(self, slots: np.ndarray, extra: int) -> np.ndarray:
        """Frames of the stacks ending at global `slots`, plus `extra` frames after each (the next obs')."""
        env, local = np.divmod(slots, self.ring)
        offsets = np.arange(-(self.stack - 1), 1 + extra)
        rel = np.maximum(offsets[None, :], -self.back[slots][:, None])  # clamp to the episode's first slot
        return self.frames[env[:, None] * self.ring + (local[:, None] + rel) % self.ring]

    def _gather(self, slots: np.ndarray) -> Batch:
        """Transitions starting at global `slots`: one gather of stack + 1 frames per transition."""
        frames = self._stacks(slots, 1)
        return Batch(frames[:, :-1], self.actions[slots], self.rewards[slots], frames[:, 1:],
                     self.terminated[slots], np.full(len(slots), self.gamma, dtype=np.float32), slots, None)

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """Sample valid transitions uniformly with replacement (rejection over the slots written)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        ends = np.cumsum(self.written)
        slots = np.empty(0, dtype=np.int64)
        while len(slots) < batch_size:
            draws = rng.integers(0, ends[-1], size=2 * (batch_size - len(slots)))
            env = np.searchsorted(ends, draws, side="right")
            candidates = env * self.ring + draws - (ends[env] - self.written[env])
            slots = np.concatenate([slots, candidates[self.valid[candidates]]])
        return self._gather(slots[:batch_size])

    def state_dict(self) -> dict:
        """All arrays and counters (the whole rings: slot positions matter)."""
        return {"frames": self.frames, "actions": self.actions, "rewards": self.rewards,
                "terminated": self.terminated, "back": self.back, "valid": self.valid, "pos": self.pos,
                "written": self.written, "open": self.open, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        for key in ("frames", "actions", "rewards", "terminated", "back", "valid", "pos", "written", "open"):
            getattr(self, key)[...] = np.asarray(state[key])
        self.size = int(state["size"])
