"""Recurrent DQN's sequence path (R2D2, Kapturowski et al. 2019): what `DQNAgent` uses when its Q-network has a
recurrent core (`recurrent: lstm|gru`).

`SequenceActing` (mixed into `DQNAgent`) acts with the training envs' and greedy play's hidden states and stores
each step in sequence replay (`rlagents/sequence_replay.py`) with the state it was acted from;
`SequenceLearner` trains on the replayed sequences (stored state, burn-in, n-step targets inside a sequence);
`validate_sequences` checks the config keys this needs. docs/agents/dqn.md "Recurrent DQN" describes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlagents import obs as batches
from rlagents.agents.base import nonfinite_loss
from rlagents.errors import ConfigError
from rlagents.exploration import epsilon_greedy_batch
from rlagents.masks import masked_argmax
from rlagents.networks import Net
from rlagents.recurrent import Memory, State
from rlagents.sequence_replay import SequenceBatch, SequenceReplayBuffer
from rlagents.td import clip_grad_norm, next_state_values

if TYPE_CHECKING:
    from rlagents.agents.dqn import DQNAgent, DQNConfig


def validate_sequences(config: DQNConfig) -> None:
    """What sequence replay (recurrent DQN) needs of `config`'s other keys: `DQNConfig.validate` calls this
    when `recurrent` is not none."""
    length, burn_in, overlap = config.sequence_length, config.burn_in, config.sequence_overlap
    if burn_in > length - 2:
        raise ConfigError(f"burn_in ({burn_in}) must leave at least 2 steps of sequence_length ({length}): a "
                          f"trained step and the one its target bootstraps from; set burn_in <= {length - 2}")
    if not burn_in + 1 <= overlap < length:
        raise ConfigError(f"sequence_overlap ({overlap}) must be at least burn_in + 1 = {burn_in + 1} (so every "
                          f"step is trained on) and below sequence_length ({length})")
    sequences = config.buffer_size // (length - overlap)
    if config.batch_size > sequences:
        raise ConfigError(f"batch_size ({config.batch_size}) counts sequences with recurrent={config.recurrent}: "
                          f"buffer_size {config.buffer_size} holds only {sequences} (one per sequence_length - "
                          f"sequence_overlap = {length - overlap} steps); lower batch_size or raise buffer_size")
    refused = [key for key, bad in (("prioritized", config.prioritized), ("frame_stack", config.frame_stack),
                                    ("learner", config.learner == "numpy")) if bad]
    if refused:
        raise ConfigError(f"recurrent DQN (sequence replay, autograd) does not support {', '.join(refused)}: set "
                          f"prioritized=false, frame_stack=0 and learner=auto or torch, or recurrent=none")


def flat_state(state: State) -> np.ndarray:
    """A core's state as one (batch, k·hidden) float32 array: what sequence replay stores."""
    return torch.cat(state, dim=1).cpu().numpy()


def unflat_state(flat: np.ndarray | torch.Tensor, parts: int, device: torch.device) -> State:
    """Inverse of `flat_state` for a state of `parts` tensors ((h, c) of an LSTM: 2; a GRU's h: 1)."""
    return tuple(torch.as_tensor(flat, device=device).chunk(parts, dim=1))


def distinct_rows(branch: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`branch(x)` computed once per distinct row of `x` when rows repeat a lot (sequences of blank frames, as
    in DigitRecall once the digit is hidden, where this saves most of a frozen CNN's cost)."""
    distinct, inverse = torch.unique(x.reshape(len(x), -1), dim=0, return_inverse=True)
    if 2 * len(distinct) > len(x):
        return branch(x)
    return branch(distinct.reshape(len(distinct), *x.shape[1:]))[inverse]


def time_major(obs: batches.Obs, length: int) -> batches.Obs:
    """(B, L, …) sequence arrays as L·B rows in time-major order (row t·B + b is sequence b's step t)."""
    if isinstance(obs, dict):
        return {key: time_major(value, length) for key, value in obs.items()}
    return np.ascontiguousarray(np.swapaxes(obs, 0, 1)).reshape(length * obs.shape[0], *obs.shape[2:])


class SequenceLearner:
    """Recurrent DQN's gradient steps on replayed sequences (R2D2, Kapturowski et al. 2019).

    Each sequence starts from the hidden state stored when it was played (zero for a sequence that starts an
    episode). The online and the target network each run from it over the whole sequence (the target thus
    recomputes its own state rather than using the online one's); where the sequence starts mid-episode, no
    gradient flows into its first `burn_in` steps, which only refresh the stale stored state, and the loss
    covers the steps after them. A
    target is an n-step return inside the sequence (`rlagents.sequence_replay.nstep_targets`) plus the
    bootstrap step's value: with double DQN the online network (unrolled over the same sequence) picks the
    action and the target network values it.
    """

    def __init__(self, agent: DQNAgent):
        self.agent = agent

    def update_round(self, batch: SequenceBatch, n_updates: int) -> None:
        """`n_updates` gradient steps; sequences [i·B, (i+1)·B) of `batch` are step i's (B = `batch_size`)."""
        size = self.agent.config.batch_size
        for i in range(n_updates):
            rows = slice(i * size, (i + 1) * size)
            self.step(SequenceBatch(*(None if a is None else batches.take(a, rows) for a in batch)))

    def _unroll(self, net: Net, features: torch.Tensor, state: State, starts: torch.Tensor,
                burn_in: int) -> torch.Tensor:
        """Q-values (L, B, A) of `net` over features (L, B, F) from `state`; sequences that do not start an
        episode get no gradient through their first `burn_in` steps (their state is detached after them)."""
        out, state = net.core(features[:burn_in], state, starts[:burn_in]) if burn_in else (None, state)
        if burn_in and torch.is_grad_enabled():
            fresh = starts[0].unsqueeze(1)  # zero initial state: trained from the first step
            state = tuple(torch.where(fresh, s, s.detach()) for s in state)
        rest, _ = net.core(features[burn_in:], state, starts[burn_in:])
        out = rest if out is None else torch.cat([out, rest])
        return net.head(out.reshape(-1, out.shape[-1])).reshape(out.shape[0], out.shape[1], -1)

    def step(self, batch: SequenceBatch) -> None:
        """One gradient step on a batch of sequences."""
        agent, c = self.agent, self.agent.config
        device, burn_in = agent.device, c.burn_in
        n_seq, length = batch.actions.shape
        as_tensor = (lambda a: batches.to_tensor(np.ascontiguousarray(a), device))
        obs = batches.to_tensor(time_major(batch.obs, length), device)
        starts = as_tensor(batch.starts.T)
        state = unflat_state(batch.states, agent.state_parts, device)
        tm = (lambda a: as_tensor(a.T))  # (B, L) arrays as time-major (L, B) tensors
        features = None
        with torch.no_grad():
            if agent.frozen_keys:  # the frozen branches' features serve both networks
                branches = agent.q.backbone.branches
                features = {key: distinct_rows(branches[key], obs[key]) for key in agent.frozen_keys}
            q_target = self._unroll(agent.target, self._features(agent.target, obs, features, length), state,
                                    starts, burn_in)
        q_online = self._unroll(agent.q, self._features(agent.q, obs, features, length), state, starts, burn_in)
        with torch.no_grad():
            masks = None if batch.masks is None else as_tensor(np.swapaxes(batch.masks, 0, 1))
            flat = (lambda q: q.reshape(-1, q.shape[-1]))
            values = next_state_values(flat(q_target), flat(q_online.detach()) if c.double else None,
                                       None if masks is None else flat(masks), c.clipped_double)
            if c.clip_values:
                values = values.clamp(*agent.value_bounds())
            values = values.reshape(length, n_seq)
            trained = tm(batch.trained)
            boot = tm(batch.bootstrap)
            targets = tm(batch.returns) + tm(batch.bootstrap_weights) * values.gather(0, boot)
        q_taken = q_online.gather(2, tm(batch.actions).unsqueeze(2)).squeeze(2)
        loss_fn = nn.functional.smooth_l1_loss if c.loss == "huber" else nn.functional.mse_loss
        weights = trained.float() / trained.sum().clamp(min=1)  # the mean over trained steps
        loss = (loss_fn(q_taken, targets, reduction="none") * weights).sum()
        if nonfinite_loss(loss, "TD loss", c.nonfinite, agent.updates + 1, agent.steps):
            agent.skipped_updates += 1
            return
        for p in agent.params:
            p.grad = None
        loss.backward()
        if c.max_grad_norm is not None:
            clip_grad_norm([p.grad for p in agent.params if p.grad is not None], c.max_grad_norm)
        agent.optimizer.step()
        agent._losses.append(loss.detach())
        agent._q_values.append(q_taken.detach()[trained])
        agent.updates += 1

    @staticmethod
    def _features(net: Net, obs: batches.Obs, frozen: dict[str, torch.Tensor] | None, length: int) -> torch.Tensor:
        """Backbone features of L·B time-major rows, as (L, B, F)."""
        features = net.backbone(obs) if frozen is None else net.backbone(obs, frozen)
        return features.reshape(length, -1, features.shape[-1])


class SequenceActing:
    """Recurrent DQN's acting and storing, mixed into `DQNAgent`: the hidden states of the training envs
    (`memory`) and of greedy play (`greedy_memory`), and sequence replay (`buffer`) fed with the state each
    step was acted from. Uses the agent's `q`, `config`, `n_envs`, `device`, `epsilon`, `steps`, `rng` and
    `n_actions`."""

    def _init_memory(self, obs_space: gym.Space, mask_actions: int) -> None:
        """Recurrent DQN: sequence replay and the hidden states of the training envs and of greedy play."""
        c = self.config
        self.state_parts = len(self.q.core.initial_state(1))  # (h, c) of an LSTM, (h,) of a GRU
        self.memory = Memory({"q": self.q.core}, self.n_envs)  # the training envs' episodes
        self.greedy_memory = Memory({"q": self.q.core})  # greedy play (evaluation), reset by `reset_memory`
        self._acted_states: np.ndarray | None = None  # the training envs' states before the last `act`
        self.buffer = SequenceReplayBuffer(
            c.buffer_size, obs_space, length=c.sequence_length, burn_in=c.burn_in, overlap=c.sequence_overlap,
            n_envs=self.n_envs, state_dim=self.state_parts * self.q.core.out_features, gamma=c.gamma,
            n_step=c.n_step, mask_actions=mask_actions)

    def _recurrent_q(self, obs, memory: Memory) -> np.ndarray:
        """Q-values of one step of the episodes in `memory` (advancing their hidden states)."""
        n = batches.batch_len(obs)
        starts = memory.next_starts(n)
        if memory is self.memory:  # replay stores each sequence's state before its first step
            self._acted_states = flat_state(memory.state("q", n))
        with torch.inference_mode():
            out = memory.step("q", self.q.backbone(batches.to_tensor(obs, self.device)), starts)
            return self.q.head(out).cpu().numpy()

    def _act_recurrent(self, obs, explore: bool, mask: np.ndarray | None) -> np.ndarray:
        """Greedy or ε-greedy actions; every row's hidden state advances, whichever action it takes."""
        q = self._recurrent_q(obs, self.memory if explore else self.greedy_memory)
        greedy = masked_argmax(q, mask) if mask is not None else q.argmax(axis=1)
        if not explore:
            return greedy
        return epsilon_greedy_batch(lambda _: greedy, obs, self.epsilon(self.steps), self.n_actions, self.rng, mask)

    def _store_sequences(self, obs, actions, rewards, next_obs, terminated, truncated, mask, next_mask) -> None:
        """Recurrent DQN: the step goes into the envs' replay streams with the hidden states before and after
        it; envs whose episode ended begin a new one (their state is cleared at the next `act`)."""
        if self._acted_states is None:
            raise RuntimeError("recurrent DQN observes the step its last explore=True act() took")
        after = flat_state(self.memory.state("q", self.n_envs))
        self.buffer.add_batch(obs, actions, rewards, next_obs, terminated, truncated, self._acted_states, after,
                              mask, next_mask)
        self._acted_states = None
        done = np.logical_or(terminated, truncated)
        if done.any():
            self.memory.begin(done)
