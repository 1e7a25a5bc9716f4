"""DQN (Mnih et al. 2015) with the common improvements as config switches.

Target network (hard or soft updates), preallocated replay, Huber loss, gradient clipping and a linear
epsilon schedule; double DQN, dueling heads, n-step returns and prioritized replay are switches. Q-networks
are a shared backbone (MLP or CNN, chosen from the observation space) plus a Q head.

Gradient steps are a learner's (`learner` config key): `TorchLearner` (autograd; every network, replay and
device) or `NumpyLearner` (hand-written NumPy gradients for plain MLP Q-networks with uniform replay on a CPU,
about twice as fast); both have `update_round(batch, n_updates)`. With a recurrent core (`recurrent: lstm|gru`)
replay stores sequences (`rlagents/sequence_replay.py`, R2D2's stored state and burn-in): acting with hidden states,
storing sequences and `SequenceLearner`'s training on them are in `rlagents/sequence_learner.py`. The TD maths
(targets, next-state values, loss, gradient clip) is in `rlagents/td.py`. docs/agents/dqn.md describes the agent.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlagents import obs as batches
from rlagents.agents.base import Agent, nonfinite_loss, require_zero_start
from rlagents.config import param
from rlagents.errors import ConfigError, ExportError, UnsupportedSpaceError
from rlagents.exploration import epsilon_greedy_batch
from rlagents.frame_replay import FrameReplayBuffer
from rlagents.masks import masked_argmax
from rlagents.networks import (
    MAX_WIDTH,
    DictBackbone,
    Net,
    NetworkConfig,
    QHead,
    build_backbone,
    build_core,
)
from rlagents.numpy_mlp import NumpyMLP, adam_step, numpy_greedy_scores, numpy_q_network
from rlagents.replay import (
    Batch,
    NStepAccumulator,
    PrioritizedReplayBuffer,
    ReplayBuffer,
)
from rlagents.schedules import LinearSchedule
from rlagents.sequence_learner import (
    SequenceActing,
    SequenceLearner,
    validate_sequences,
)
from rlagents.sequence_replay import SequenceReplayBuffer
from rlagents.td import (
    bootstrap_weights,
    clip_grad_norm,
    next_state_values,
    td_loss,
    td_targets,
)


@dataclass
class DQNConfig(NetworkConfig):
    """DQN hyperparameters (after the shared network settings). Step counts are env steps summed over vector
    envs."""

    hidden: tuple[int, ...] = param((128, 128), "MLP hidden layer widths", low=1, high=MAX_WIDTH)
    dueling: bool = param(False, "dueling value/advantage head")
    head_hidden: tuple[int, ...] = param((), "ReLU layers between the features (the recurrent core's output, or the "
                                         "backbone's) and the Q head; R2D2 has one after its LSTM", low=1,
                                         high=MAX_WIDTH)
    double: bool = param(True, "double DQN targets (online net picks, target net values)")
    clipped_double: bool = param(False, "with double DQN, bootstrap from the smaller of the target and the online "
                                 "net's value of the online net's pick (clipped double Q)")
    clip_values: bool = param(False, "clip bootstrapped values V(s') to the discounted returns the rewards seen "
                              "so far allow: [min(0, r_min), max(0, r_max)] / (1 - gamma)")
    n_step: int = param(1, "n-step returns", low=1, high=100)
    prioritized: bool = param(False, "proportional prioritized replay")
    terminal_fraction: float = param(0.0, "least share of terminal transitions in each batch of uniform replay: "
                                     "while a smaller share of replay is terminal, batches top it up with terminal "
                                     "transitions (0: off; prioritized, frame and sequence replay ignore it)",
                                     low=0.0, high=1.0)
    per_alpha: float = param(0.6, "prioritization exponent", low=0.0, high=1.0)
    per_beta: float = param(0.4, "initial importance-sampling exponent (annealed to 1)", low=0.0, high=1.0)
    per_eps: float = param(1.0e-6, "added to |TD error| so no priority is zero", low=0.0, low_open=True)
    gamma: float = param(0.99, "discount factor", low=0.0, high=1.0)
    lr: float = param(1.0e-3, "Adam learning rate", low=0.0, low_open=True)
    lr_final: float | None = param(None, "learning rate at the end, decayed linearly (null = constant)", low=0.0)
    adam_eps: float = param(1.0e-8, "Adam epsilon", low=0.0, low_open=True)
    batch_size: int = param(64, "transitions per gradient step", low=1)
    buffer_size: int = param(100_000, "replay capacity in transitions", low=1)
    learning_starts: int = param(1_000, "env steps of experience before the first update", low=0)
    train_every: int = param(4, "env steps between training rounds", low=1)
    gradient_steps: int = param(1, "gradient steps per training round", low=1)
    target_update_every: int = param(1_000, "env steps between target network updates", low=1)
    tau: float = param(1.0, "target update rate: 1 copies (hard), <1 is Polyak averaging (soft)",
                       low=0.0, high=1.0, low_open=True)
    tau_final: float | None = param(None, "soft target update rate at the end, annealed linearly from tau "
                                    "(null = constant)", low=0.0, high=1.0, low_open=True)
    tau_fraction: float = param(1.0, "fraction of training over which tau anneals to tau_final", low=0.0,
                                high=1.0)
    epsilon_start: float = param(1.0, "initial exploration rate", low=0.0, high=1.0)
    epsilon_end: float = param(0.05, "final exploration rate", low=0.0, high=1.0)
    epsilon_fraction: float = param(0.1, "fraction of training over which epsilon decays", low=0.0, high=1.0)
    loss: Literal["huber", "mse"] = param("huber", "TD loss")
    max_grad_norm: float | None = param(10.0, "gradient norm clip (null = no clipping)", low=0.0, low_open=True)
    nonfinite: Literal["stop", "skip"] = param("stop", "on a NaN/infinite loss: stop training (the last good "
                                               "checkpoint stays), or skip that batch")
    checkpoint_replay: bool = param(False, "save the replay buffer in checkpoints, so --resume keeps it")
    frame_stack: int = param(0, "observations are stacks of this many frames (Atari: 4): replay stores each "
                             "frame once and rebuilds stacks by index (0: store whole observations)", low=0)
    learner: Literal["auto", "torch", "numpy"] = param(
        "auto", "how gradient steps are computed: numpy (hand-written gradients, ~2x faster; plain MLP "
        "Q-networks with uniform replay on a CPU), torch (autograd; every network, replay and device), auto "
        "(numpy where it applies, torch elsewhere)")
    sequence_length: int = param(20, "recurrent: env steps per stored replay sequence, burn-in included (batch_size "
                                 "then counts sequences)", low=2, high=100_000)
    burn_in: int = param(5, "recurrent: first steps of each sequence that only refresh its stored hidden state (no "
                         "loss)", low=0, high=100_000)
    sequence_overlap: int = param(10, "recurrent: steps shared by consecutive sequences of an env (at least "
                                  "burn_in + 1, so every step is trained on)", low=0, high=100_000)

    def validate(self) -> None:
        super().validate()
        if self.batch_size > self.buffer_size:
            raise ConfigError(f"batch_size ({self.batch_size}) must not exceed buffer_size ({self.buffer_size})")
        if self.tau_final is not None and max(self.tau, self.tau_final) >= 1.0:
            raise ConfigError(f"tau_final anneals soft target updates: tau ({self.tau}) and tau_final "
                              f"({self.tau_final}) must both be below 1 (or set tau_final: null)")
        if self.frame_stack and (self.n_step > 1 or self.prioritized):
            raise ConfigError("frame_stack replay supports 1-step uniform replay only: set n_step=1 and "
                              "prioritized=false, or frame_stack=0")
        if self.clipped_double and not self.double:
            raise ConfigError("clipped_double clips double DQN's target: set double=true, or clipped_double=false")
        if self.learner == "numpy" and (self.prioritized or self.dueling):
            raise ConfigError("learner numpy trains plain Q-networks with uniform replay: set prioritized=false "
                              "and dueling=false, or learner torch (or auto)")
        if self.recurrent != "none":
            validate_sequences(self)


# ---------------------------------------------------------------- learners


class TorchLearner:
    """DQN's gradient steps through autograd: every network (MLP, CNN, Dict, dueling), replay and device.

    A learner trains its agent's online network (`agent.q`, `agent.optimizer`) from batches the agent samples,
    and counts and logs its steps in the agent (`updates`, `skipped_updates`, losses and Q-values for
    `metrics`); the agent owns acting, replay, the schedules and the target network's updates.
    """

    def __init__(self, agent: DQNAgent):
        self.agent = agent

    def update_round(self, batch: Batch, n_updates: int) -> None:
        """`n_updates` gradient steps; rows [i·B, (i+1)·B) of `batch` are step i's (B = `batch_size`). The
        arrays are converted to tensors once for the whole round."""
        size, device = self.agent.config.batch_size, self.agent.device
        tensors = [batches.to_tensor(a, device) for a in batch[:6]]
        masks = None if batch.next_masks is None else batches.to_tensor(batch.next_masks, device)
        for i in range(n_updates):
            rows = slice(i * size, (i + 1) * size)
            weights = None if batch.weights is None else batch.weights[rows]
            self.step(Batch(*(batches.take(t, rows) for t in tensors), indices=batch.indices[rows], weights=weights,
                            next_masks=None if masks is None else masks[rows]))

    def step(self, batch: Batch) -> None:
        """One gradient step on `batch`."""
        agent, c = self.agent, self.agent.config
        as_tensor = (lambda a: batches.to_tensor(a, agent.device))
        obs, next_obs = as_tensor(batch.obs), as_tensor(batch.next_obs)
        actions = as_tensor(batch.actions).long().unsqueeze(1)
        features = next_features = None
        with torch.no_grad():
            if agent.frozen_keys:
                branches = agent.q.backbone.branches
                features = {key: branches[key](obs[key]) for key in agent.frozen_keys}
                next_features = {key: branches[key](next_obs[key]) for key in agent.frozen_keys}
            next_q_online = agent.q(next_obs, next_features) if c.double else None
            next_masks = None if batch.next_masks is None else as_tensor(batch.next_masks)  # masked agents
            next_values = next_state_values(agent.target(next_obs, next_features), next_q_online, next_masks,
                                            c.clipped_double)
            if c.clip_values:
                next_values = next_values.clamp(*agent.value_bounds())
            targets = td_targets(as_tensor(batch.rewards), next_values, as_tensor(batch.terminated),
                                 as_tensor(batch.discounts))
        q_taken = agent.q(obs, features).gather(1, actions).squeeze(1)
        loss_fn = nn.functional.smooth_l1_loss if c.loss == "huber" else nn.functional.mse_loss
        if batch.weights is not None:  # importance-sampling weights of prioritized replay
            loss = (loss_fn(q_taken, targets, reduction="none") * as_tensor(batch.weights)).mean()
        else:
            loss = loss_fn(q_taken, targets)
        if nonfinite_loss(loss, "TD loss", c.nonfinite, agent.updates + 1, agent.steps):
            agent.skipped_updates += 1
            return
        for p in agent.params:  # cheaper than optimizer.zero_grad(), which sits behind a dynamo guard
            p.grad = None
        loss.backward()
        if c.max_grad_norm is not None:
            clip_grad_norm([p.grad for p in agent.params if p.grad is not None], c.max_grad_norm)
        agent.optimizer.step()
        if isinstance(agent.buffer, PrioritizedReplayBuffer):
            agent.buffer.update_priorities(batch.indices, (targets - q_taken).detach().cpu().numpy())
        # Reduced only when logged: no extra tensor ops per update.
        agent._losses.append(loss.detach())
        agent._q_values.append(q_taken.detach())
        agent.updates += 1


class NumpyLearner:
    """`TorchLearner`'s gradient steps for a plain MLP Q-network with uniform replay on a CPU, in NumPy with
    hand-written gradients (`NumpyMLP`): autograd's maths (to float32 rounding) at about half the cost per
    step. On a GPU the per-op overhead this saves is hidden behind asynchronous kernel launches.

    What does not change during a round is computed once for all its steps: the target network's Q(s', ·)
    (the target is only updated between rounds) and, without double DQN, the TD targets. With double DQN
    each step runs the online network once over its s and s' rows together.
    """

    def __init__(self, agent: DQNAgent, online: NumpyMLP, target: NumpyMLP):
        self.agent, self.online, self.target = agent, online, target

    def update_round(self, batch: Batch, n_updates: int) -> None:
        """`n_updates` gradient steps; rows [i·B, (i+1)·B) of `batch` are step i's (B = `batch_size`)."""
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite values are reported by the round
            self._round(batch, n_updates)

    def _round(self, batch: Batch, n_updates: int) -> None:
        agent, c, size = self.agent, self.agent.config, self.agent.config.batch_size
        online = self.online
        x = online.inputs(batch.obs)
        next_x = online.inputs(batch.next_obs)
        actions = batch.actions.astype(np.int64, copy=False).reshape(-1)
        weights = bootstrap_weights(batch.terminated, batch.discounts)
        next_q_target = self.target.outputs(next_x)
        next_masks = batch.next_masks  # legal actions of s' (masked agents), which targets max over
        bounds = agent.value_bounds() if c.clip_values else None
        if c.double:  # [s rows; s' rows] of each step, contiguous
            width = x.shape[1]
            pairs = np.stack([x.reshape(n_updates, size, width), next_x.reshape(n_updates, size, width)],
                             axis=1).reshape(n_updates, 2 * size, width)
        else:
            best = next_q_target.max(axis=1) if next_masks is None else np.where(next_masks, next_q_target,
                                                                                -np.inf).max(axis=1)
            if c.clip_values:
                best = np.clip(best, *bounds)
            all_targets = batch.rewards + weights * best
        check_each = c.nonfinite == "skip"  # "stop" checks once per round: nothing is saved after a failure
        rows_of_step = np.arange(size)
        scale = 1.0 / size
        grad_q = np.zeros((size, agent.n_actions), np.float32)
        round_errors = []
        for i in range(n_updates):
            rows = slice(i * size, (i + 1) * size)
            if c.double:
                q_both, activations = online.forward(pairs[i])
                q, activations = q_both[:size], [a[:size] for a in activations]
                best_next = masked_argmax(q_both[size:], None if next_masks is None else next_masks[rows])
                next_values = next_q_target[rows][rows_of_step, best_next]
                if c.clipped_double:
                    next_values = np.minimum(next_values, q_both[size:][rows_of_step, best_next])
                if c.clip_values:
                    next_values = np.clip(next_values, *bounds)
                targets = batch.rewards[rows] + weights[rows] * next_values
            else:
                q, activations = online.forward(x[rows])
                targets = all_targets[rows]
            taken = actions[rows]
            q_taken = q[rows_of_step, taken]
            errors = q_taken - targets
            if check_each and self._nonfinite(errors):
                continue
            # d(mean loss)/d(q_taken) as smooth_l1_loss / mse_loss backward compute it; only the taken action's
            # Q-value gets a gradient
            grad_q.fill(0.0)
            huber = c.loss == "huber"
            grad_q[rows_of_step, taken] = np.clip(errors, -1.0, 1.0) * scale if huber else errors * (2.0 * scale)
            online.backward(activations, grad_q)
            if c.max_grad_norm is not None:
                online.clip_gradients(c.max_grad_norm)
            adam_step(agent.optimizer, agent.params, online.grad_tensors)
            round_errors.append(errors)
            agent._q_values.append(torch.from_numpy(q_taken))
            agent.updates += 1
        if not check_each and round_errors:
            stacked = np.stack(round_errors)
            if not np.isfinite(stacked.sum()):
                first_bad = int(np.flatnonzero(~np.isfinite(stacked).all(axis=1))[0])
                agent.updates -= len(round_errors) - first_bad  # the message names the failing step
                self._nonfinite(round_errors[first_bad])
        agent._errors.extend(round_errors)

    def _nonfinite(self, errors: np.ndarray) -> bool:
        """Whether TD errors (hence the loss) are non-finite: raises under nonfinite=stop, counts a skip else."""
        agent = self.agent
        if np.isfinite(errors.sum()):
            return False
        nonfinite_loss(td_loss(torch.from_numpy(errors), agent.config.loss), "TD loss", agent.config.nonfinite,
                       agent.updates + 1, agent.steps)  # raises under "stop"
        agent.skipped_updates += 1
        return True


def q_head(features_dim: int, n_actions: int, dueling: bool, hidden: tuple[int, ...]) -> nn.Module:
    """The Q head, after `hidden` ReLU layers when there are any."""
    if not hidden:
        return QHead(features_dim, n_actions, dueling)
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(features_dim, width), nn.ReLU()]
        features_dim = width
    return nn.Sequential(*layers, QHead(features_dim, n_actions, dueling))




class DQNAgent(SequenceActing, Agent):
    """Deep Q-learning for discrete actions over vector, discrete or image observations."""

    name = "dqn"
    config_class = DQNConfig
    recorded_state = frozenset({"replay", "nstep"})
    takes_masks = True

    @classmethod
    def check_spaces(cls, obs_space: gym.Space, action_space: gym.Space, config: DQNConfig) -> None:
        if not isinstance(action_space, gym.spaces.Discrete):
            raise UnsupportedSpaceError(
                f"dqn needs a Discrete action space, got {action_space}: DQN takes the max over a finite "
                f"set of actions (use reinforce for continuous actions)")
        parts = obs_space.spaces.values() if isinstance(obs_space, gym.spaces.Dict) else [obs_space]
        if not all(isinstance(p, (gym.spaces.Box, gym.spaces.Discrete)) for p in parts):
            raise UnsupportedSpaceError(f"dqn needs Box or Discrete observations (or a Dict of them), got {obs_space}")
        require_zero_start(cls.name, obs_space, action_space)

    def __init__(self, config: DQNConfig, obs_space: gym.Space, action_space: gym.spaces.Discrete, **kwargs: Any):
        super().__init__(config, obs_space, action_space, **kwargs)
        c = config
        self.n_actions = int(action_space.n)
        backbone = build_backbone(c, obs_space)
        core = build_core(c, backbone.features_dim)
        self.recurrent = core is not None
        head_in = backbone.features_dim if core is None else core.out_features
        self.q = Net(backbone, q_head(head_in, self.n_actions, c.dueling, c.head_hidden), core).to(self.device)
        self.target = copy.deepcopy(self.q).requires_grad_(False)
        self.params = [p for p in self.q.parameters() if p.requires_grad]  # a frozen backbone is not trained
        target_named = dict(self.target.named_parameters())  # the target's counterparts of the trained params
        self.target_params = [target_named[n] for n, p in self.q.named_parameters() if p.requires_grad]
        # Dict branches without trainable weights (a frozen pretrained CNN) are the same in the online and the
        # target network: `_update` computes their features once per batch, without autograd, for both.
        self.frozen_keys = backbone.frozen_keys() if isinstance(backbone, DictBackbone) else []
        # fast acting on CPU; None for CNNs, GPUs and recurrent networks
        self._numpy_scores = None if self.recurrent else numpy_greedy_scores(self.q)
        self.learner = self._build_learner()
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(self.params, lr=c.lr, eps=c.adam_eps, fused=fused)
        self.lr_schedule = LinearSchedule(c.lr, c.lr if c.lr_final is None else c.lr_final, self.total_steps)
        self.epsilon = LinearSchedule(c.epsilon_start, c.epsilon_end, int(c.epsilon_fraction * self.total_steps))
        self.beta = LinearSchedule(c.per_beta, 1.0, self.total_steps)
        self.tau = LinearSchedule(c.tau, c.tau if c.tau_final is None else c.tau_final,
                                  int(c.tau_fraction * self.total_steps))

        dict_space = obs_space if isinstance(obs_space, gym.spaces.Dict) else None
        obs_shape = () if isinstance(obs_space, (gym.spaces.Discrete, gym.spaces.Dict)) else tuple(obs_space.shape)
        obs_dtype = obs_space.dtype if isinstance(obs_space, gym.spaces.Box) else np.int64
        mask_actions = self.n_actions if self.masked else 0  # replay keeps next states' masks for the targets
        if self.recurrent:
            self._init_memory(obs_space, mask_actions)
        elif c.frame_stack:
            if self.masked:
                raise ConfigError("frame_stack replay does not store action masks: set frame_stack=0 (or "
                                  "action_masks=false to ignore the env's masks)")
            if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) >= 2
                    and obs_space.shape[0] == c.frame_stack):
                raise ConfigError(f"frame_stack {c.frame_stack}: observations must be stacks of that many frames "
                                  f"(stack axis first), got {obs_space}")
            try:
                self.buffer: ReplayBuffer | FrameReplayBuffer = FrameReplayBuffer(
                    c.buffer_size, tuple(obs_space.shape[1:]), c.frame_stack, self.n_envs, c.gamma, obs_space.dtype)
            except ValueError as exc:
                raise ConfigError(f"buffer_size: {exc}") from None
        elif c.prioritized:
            self.buffer = PrioritizedReplayBuffer(c.buffer_size, obs_shape, obs_dtype,
                                                                alpha=c.per_alpha, eps=c.per_eps,
                                                                obs_space=dict_space, mask_actions=mask_actions)
        else:
            self.buffer = ReplayBuffer(c.buffer_size, obs_shape, obs_dtype, obs_space=dict_space,
                                       mask_actions=mask_actions)
        # recurrent: n-step returns are computed inside the replayed sequences
        self.nstep = NStepAccumulator(self.n_envs, c.n_step, c.gamma) if c.n_step > 1 and not self.recurrent else None
        self.gammas = np.full(self.n_envs, c.gamma, dtype=np.float32)
        self.rng = np.random.default_rng(self.seed)

        self.steps = 0
        self.updates = 0
        self.skipped_updates = 0
        self.reward_range = [0.0, 0.0]  # min(0, smallest) and max(0, largest) finite reward seen (clip_values)
        self.next_train = max(c.learning_starts, c.train_every)
        self.next_target = c.target_update_every
        self._target_synced_at = -1  # `updates` at the last hard target copy (-1: none yet this session)
        self._losses: list[torch.Tensor] = []
        self._errors: list[np.ndarray] = []  # TD errors of NumPy updates: their loss is reduced when logged
        self._q_values: list[torch.Tensor] = []

    def _build_learner(self) -> TorchLearner | NumpyLearner | SequenceLearner:
        """The `learner` config key's learner; auto takes the NumPy one wherever it applies."""
        choice = self.config.learner
        if self.recurrent:  # `validate` refused learner numpy
            return SequenceLearner(self)
        trained = all(p.requires_grad for p in self.q.parameters())  # NumpyMLP computes every layer's gradient
        online = numpy_q_network(self.q) if choice != "torch" and trained and not self.config.prioritized else None
        if online is not None:
            return NumpyLearner(self, online, numpy_q_network(self.target))
        if choice == "numpy":
            raise ConfigError(f"learner numpy trains plain MLP Q-networks on a CPU with every layer trained; this "
                              f"one is a {type(self.q.backbone).__name__} on {self.device}: use learner torch (or "
                              f"auto)")
        return TorchLearner(self)

    # ------------------------------------------------------------ acting

    def _greedy(self, obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        if self._numpy_scores is not None:
            return masked_argmax(self._numpy_scores(obs), mask)
        with torch.inference_mode():
            q = self.q(batches.to_tensor(obs, self.device))
            if mask is not None:
                return masked_argmax(q.cpu().numpy(), mask)
            return q.argmax(dim=1).cpu().numpy()

    def reset_memory(self, starts: np.ndarray | None = None) -> None:
        if self.recurrent:
            self.greedy_memory.begin(starts)

    def act(self, obs: np.ndarray, *, explore: bool, mask: np.ndarray | None = None) -> np.ndarray:
        if self.recurrent:
            return self._act_recurrent(obs, explore, mask)
        if not explore:
            return self._greedy(obs, mask)
        greedy = self._greedy if mask is None else (lambda o: self._greedy(o, mask))
        return epsilon_greedy_batch(greedy, obs, self.epsilon(self.steps), self.n_actions, self.rng, mask)

    def export_module(self) -> nn.Module:
        """Greedy policy for `rlagents.export`: the online Q-network (MLP, CNN, Dict, dueling), then argmax."""
        from rlagents.graphs import Argmax

        if self.recurrent:
            raise ExportError(f"dqn with recurrent={self.config.recurrent} cannot be exported: its greedy action "
                              f"depends on the hidden state, not on the observation alone")

        return nn.Sequential(self.q, Argmax())

    # ------------------------------------------------------------ learning

    def observe(self, obs, actions, rewards, next_obs, terminated, truncated, *, mask=None, next_mask=None) -> None:
        """Store the transitions (with `next_mask`, the next states' legal actions, which targets max over)
        and train when due."""
        if isinstance(self.buffer, SequenceReplayBuffer):
            self._store_sequences(obs, actions, rewards, next_obs, terminated, truncated, mask, next_mask)
        elif isinstance(self.buffer, FrameReplayBuffer):
            self.buffer.add_batch(obs, actions, rewards, next_obs, terminated, truncated)
        elif self.nstep is not None:
            for i in range(self.n_envs):
                for transition in self.nstep.push(i, batches.take(obs, i), actions[i], rewards[i],
                                                  batches.take(next_obs, i), bool(terminated[i]), bool(truncated[i]),
                                                  None if next_mask is None else next_mask[i]):
                    self.buffer.add(*transition)
        elif self.n_envs == 1:
            self.buffer.add(batches.take(obs, 0), actions[0], rewards[0], batches.take(next_obs, 0), terminated[0],
                            self.config.gamma, None if next_mask is None else next_mask[0])
        else:
            self.buffer.add_batch(obs, actions, rewards, next_obs, terminated, self.gammas, next_mask)
        if self.config.clip_values:
            self._see_rewards(rewards)
        self.steps += self.n_envs
        if self.steps >= self.next_train and len(self.buffer) >= self.config.batch_size:
            rounds = self._intervals_due("next_train", self.config.train_every)
            self._set_lr(self.lr_schedule(self.steps))
            self._train(rounds * self.config.gradient_steps)
        if self.steps >= self.next_target:
            self._update_target(self._intervals_due("next_target", self.config.target_update_every))

    def _see_rewards(self, rewards: np.ndarray) -> None:
        """Widen the range of the rewards seen (it starts at [0, 0]) by `rewards`' finite values."""
        low, high = self.reward_range
        for r in np.asarray(rewards, dtype=np.float64).tolist():  # a few envs: cheaper than array reductions
            if math.isfinite(r):
                low, high = min(low, r), max(high, r)
        self.reward_range = [low, high]

    def value_bounds(self) -> tuple[float, float]:
        """The smallest and largest discounted return the rewards seen so far allow: a return sums γ^k·r_k over
        an episode of any length, so it lies in [min(0, r_min), max(0, r_max)] / (1 − γ) (unbounded at γ = 1)."""
        low, high = self.reward_range
        if self.config.gamma >= 1.0:
            return (-np.inf if low < 0 else 0.0), (np.inf if high > 0 else 0.0)
        scale = 1.0 / (1.0 - self.config.gamma)
        return low * scale, high * scale

    def _intervals_due(self, counter: str, interval: int) -> int:
        """How many `interval`-step periods have ended since `counter`; advances the counter past them."""
        due = (self.steps - getattr(self, counter)) // interval + 1
        setattr(self, counter, getattr(self, counter) + due * interval)
        return due

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _train(self, n_updates: int) -> None:
        """Run `n_updates` gradient steps. With uniform replay, all their batches are drawn at once (one
        gather instead of one per step)."""
        c = self.config
        if isinstance(self.buffer, PrioritizedReplayBuffer):  # priorities change between steps
            for _ in range(n_updates):
                self.learner.update_round(self.buffer.sample(c.batch_size, self.rng, beta=self.beta(self.steps)), 1)
            return
        if c.terminal_fraction and type(self.buffer) is ReplayBuffer:  # uniform transition replay only
            self.learner.update_round(self.buffer.sample_with_terminals(c.batch_size, n_updates,
                                                                        c.terminal_fraction, self.rng), n_updates)
            return
        self.learner.update_round(self.buffer.sample(c.batch_size * n_updates, self.rng), n_updates)

    @torch.no_grad()
    def _update_target(self, periods: int = 1) -> None:
        """Hard copy, or `periods` soft updates at once: θ' ← θ' + (1 − (1 − τ)^periods)(θ − θ')."""
        if self.config.tau >= 1.0:
            # A copy is only needed when the online network changed since the last one (with train_every
            # above target_update_every most copies would repeat the previous one).
            if self.updates != self._target_synced_at:
                torch._foreach_copy_(self.target_params, self.params)
                self._target_synced_at = self.updates
        else:
            weight = 1.0 - (1.0 - self.tau(self.steps)) ** periods
            torch._foreach_lerp_(self.target_params, self.params, weight)

    def metrics(self) -> dict[str, float]:
        out = {"charts/epsilon": self.epsilon(self.steps), "charts/learning_rate": self.optimizer.param_groups[0]["lr"],
               "charts/updates": float(self.updates), "charts/skipped_updates": float(self.skipped_updates)}
        if self._errors:
            self._losses.extend(td_loss(torch.from_numpy(np.stack(self._errors)), self.config.loss).unbind())
            self._errors.clear()
        if self._losses:
            out["losses/td_loss"] = torch.stack(self._losses).mean().item()
            q_values = torch.cat(self._q_values)
            out["values/mean_q"] = q_values.mean().item()
            # above the largest discounted return the env allows, Q-values are diverging (docs/agents/dqn.md)
            out["values/max_q"] = q_values.max().item()
            self._losses.clear()
            self._q_values.clear()
        return out

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"q": self.q.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "counters": {"steps": self.steps, "updates": self.updates, "next_train": self.next_train,
                             "next_target": self.next_target},
                "rng": self.rng.bit_generator.state,
                **({"nstep": self.nstep.state_dict()} if self.nstep is not None else {}),
                **({"reward_range": list(self.reward_range)} if self.config.clip_values else {}),
                **({"memory": self.memory.state_dict()} if self.recurrent else {}),
                **({"replay": self.buffer.state_dict()} if self.config.checkpoint_replay else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q.load_state_dict(state["q"])
        self.target.load_state_dict(state["target"])
        self._target_synced_at = -1
        self.optimizer.load_state_dict(state["optimizer"])
        counters = state["counters"]
        self.steps, self.updates = int(counters["steps"]), int(counters["updates"])
        self.next_train, self.next_target = int(counters["next_train"]), int(counters["next_target"])
        self.rng.bit_generator.state = state["rng"]
        if "reward_range" in state:
            low, high = (float(v) for v in state["reward_range"])
            self.reward_range = [min(low, 0.0), max(high, 0.0)]
        if "replay" in state:
            self.buffer.load_state_dict(state["replay"])
        if self.recurrent and "memory" in state:
            self.memory.load_state_dict(state["memory"])
        if self.nstep is not None and "nstep" in state:
            self.nstep.load_state_dict(state["nstep"])
            if not all(batches.fits(obs, self.obs_space) for queue in self.nstep.pending for obs, _, _ in queue):
                raise ValueError("a pending n-step observation does not have the observation space's shape")

    def drop_episodes(self, envs: np.ndarray) -> None:
        if self.recurrent:
            restarted = np.zeros(self.n_envs, dtype=bool)
            restarted[np.asarray(envs, dtype=np.int64)] = True
            self.memory.begin(restarted)
            self.buffer.drop(np.flatnonzero(restarted))
        if self.nstep is not None:
            for i in envs:
                self.nstep.drop(int(i))


AGENT = DQNAgent
