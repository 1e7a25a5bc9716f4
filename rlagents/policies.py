"""What the policy-gradient family (REINFORCE, PPO) shares: the policy network, its action distributions
(categorical for `Discrete` actions; Gaussian, squashed by tanh or clipped into the bounds, for `Box`
actions), sampling in NumPy, log-probabilities and entropy in torch, running normalisation, and the greedy
policy's export.

Acting goes through NumPy where the network allows (`numpy_mlp_forward`): for the small MLPs these agents
use, torch's per-call dispatch costs more than the arithmetic.

With `recurrent: lstm | gru` the policy is backbone → core → head (`rlagents.recurrent`) and acts in torch:
one `Memory` holds the hidden state of each training env (cleared where `observe` sees an episode end, saved
in checkpoints), another that of greedy play (cleared by `reset_memory`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlagents import obs as batches
from rlagents.agents.base import Agent, require_zero_start
from rlagents.config import param
from rlagents.errors import ExportError, UnsupportedSpaceError
from rlagents.masks import mask_logits, masked_argmax
from rlagents.networks import NetworkConfig, build_core
from rlagents.numpy_mlp import numpy_mlp_forward
from rlagents.recurrent import Memory, RecurrentCore, State, sequence_features

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # bounds of a learned (state-dependent) log standard deviation
SDE_EPS = 1e-6  # added to gSDE's variance, as SB3's StateDependentNoiseDistribution does


@dataclass
class PolicyConfig(NetworkConfig):
    """The acting settings every policy-gradient agent shares (after the shared network settings)."""

    squash: Literal["tanh", "clip"] = param("tanh", "continuous actions: tanh-squash into the bounds, or clip")
    log_std: Literal["state", "learned"] = param("state", "continuous actions: state-independent log-std "
                                                 "parameter, or learned by the policy head")
    log_std_init: float = param(0.0, "initial log standard deviation of Gaussian policies")
    head_init_gain: float = param(0.01, "orthogonal init gain of the policy head: small is a near-uniform "
                                  "start; ~1 starts state-dependent, which explores sparse tasks", low=0.0)
    normalize_obs: bool = param(False, "scale Box observations by a running mean and std (updated from "
                                "training experience, saved in checkpoints)")
    nonfinite: Literal["stop", "skip"] = param("stop", "on a NaN/infinite loss: stop training (the last good "
                                               "checkpoint stays), or skip that batch")


# ---------------------------------------------------------------- pure maths


def normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit variance (left as is for a single element)."""
    if x.numel() < 2:
        return x - x.mean()
    return (x - x.mean()) / (x.std() + eps)


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 − Var[target − predicted] / Var[target]: 1 is perfect, 0 no better than the mean."""
    var = target.var()
    return float("nan") if var.item() == 0 else float(1.0 - (target - predicted).var() / var)


def sde_log_std(features: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """gSDE's per-action log standard deviation: the noise φ(s)·θ with θ_jk ~ N(0, σ_jk²) is Gaussian with
    variance Σ_j φ_j(s)²·σ_jk²; φ is detached (SB3's `learn_features=False`), σ = exp(`log_std`), (F, A)."""
    variance = features.detach() ** 2 @ log_std.exp() ** 2
    return 0.5 * torch.log(variance + SDE_EPS)


def tanh_gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """log π(a) of a = tanh(u), u ~ N(mean, std): Gaussian log-density of u minus log|da/du|, summed."""
    gaussian = torch.distributions.Normal(mean, log_std.exp()).log_prob(raw)
    # log(1 − tanh(u)²) written stably as 2·(log 2 − u − softplus(−2u))
    correction = 2.0 * (math.log(2.0) - raw - nn.functional.softplus(-2.0 * raw))
    return (gaussian - correction).sum(dim=-1)


class RunningNorm:
    """Running mean and variance of observations (Chan et al.'s parallel update), for normalisation."""

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4
        self.clip = clip

    def update(self, batch: np.ndarray) -> None:
        b_mean, b_var, n = batch.mean(axis=0), batch.var(axis=0), len(batch)
        delta, total = b_mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + b_var * n + delta ** 2 * self.count * n / total) / total
        self.count = total

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.clip((obs - self.mean) / np.sqrt(self.var + 1e-8), -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var = np.asarray(state["mean"]), np.asarray(state["var"])
        self.count = float(state["count"])


class Policy(nn.Module):
    """Backbone [+ recurrent core] + linear head; for Gaussian policies also the log-std (a parameter, half
    the head, or with `sde` gSDE's (features × actions) matrix, whose per-state log-std `outputs` appends to
    the head's mean). `forward` is the feed-forward policy's; one with a `core` runs sequences (`sequence`)."""

    def __init__(self, backbone: nn.Module, n_out: int, state_log_std: int | None, log_std_init: float,
                 head_gain: float = 0.01, core: RecurrentCore | None = None, sde: bool = False):
        super().__init__()
        self.backbone = backbone
        if core is not None:  # only then: a feed-forward policy's state_dict keeps its keys
            self.core = core
        self.head = nn.Linear(backbone.features_dim if core is None else core.out_features, n_out)
        nn.init.orthogonal_(self.head.weight, head_gain)
        nn.init.zeros_(self.head.bias)
        self.log_std = nn.Parameter(torch.full((state_log_std,), log_std_init)) if state_log_std else None
        self.sde_log_std = (nn.Parameter(torch.full((self.head.in_features, n_out), log_std_init)) if sde
                            else None)

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return self.outputs(self.backbone(obs))

    def outputs(self, features: torch.Tensor) -> torch.Tensor:
        """The head's outputs on `features`; with gSDE followed by the per-state log-std (`sde_log_std`)."""
        out = self.head(features)
        if self.sde_log_std is None:
            return out
        return torch.cat([out, sde_log_std(features, self.sde_log_std)], dim=-1)

    @property
    def recurrent(self) -> RecurrentCore | None:
        """The recurrent core, or None for a feed-forward policy."""
        return getattr(self, "core", None)

    def sequence(self, obs: Any, state: State, starts: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, State]:
        """Head outputs (T·B, …) of a (T, B) sequence of time-major rows (see `recurrent.sequence_features`)."""
        out, state = sequence_features(self.backbone, self.core, obs, state, starts)
        return self.outputs(out), state


# ---------------------------------------------------------------- the agents' shared acting


class PolicyGradientAgent(Agent):
    """Base of the policy-gradient agents: builds `self.policy` and the observation normaliser, acts (sampling
    in NumPy), computes log-probabilities and entropy, and exports the greedy policy.

    Subclasses build `self.policy` with `_init_policy`, then call `_init_acting`, and own `self.rng`; `act` leaves the
    pre-squash Gaussian samples of continuous actions in `_last_raw` (what the log-probabilities are of).
    """

    config: PolicyConfig

    @classmethod
    def check_spaces(cls, obs_space: gym.Space, action_space: gym.Space, config: Any) -> None:
        if isinstance(action_space, gym.spaces.Box):
            if len(action_space.shape) != 1:
                raise UnsupportedSpaceError(f"{cls.name} needs 1-D Box actions, got shape {action_space.shape}")
            if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
                raise UnsupportedSpaceError(f"{cls.name} needs finite Box action bounds to squash or clip into")
        elif not isinstance(action_space, gym.spaces.Discrete):
            raise UnsupportedSpaceError(f"{cls.name} needs Discrete or Box actions, got {action_space}")
        parts = obs_space.spaces.values() if isinstance(obs_space, gym.spaces.Dict) else [obs_space]
        if not all(isinstance(p, (gym.spaces.Box, gym.spaces.Discrete)) for p in parts):
            raise UnsupportedSpaceError(f"{cls.name} needs a Box or Discrete observation space (or a Dict of "
                                        f"them), got {obs_space}")
        require_zero_start(cls.name, obs_space, action_space)

    def _init_policy(self, backbone: nn.Module) -> Policy:
        """The policy network on `backbone` (and the recurrent core the config asks for): logits for `Discrete`
        actions; for `Box` actions the Gaussian's mean (and, with `log_std: learned`, its log-std as the head's
        second half)."""
        c = self.config
        core = build_core(c, backbone.features_dim)
        self.discrete = isinstance(self.action_space, gym.spaces.Discrete)
        if self.discrete:
            self.n_actions = int(self.action_space.n)
            return Policy(backbone, self.n_actions, None, c.log_std_init, c.head_init_gain, core)
        self.act_dim = int(self.action_space.shape[0])
        self.low = self.action_space.low.astype(np.float32)
        self.high = self.action_space.high.astype(np.float32)
        learned = c.log_std == "learned"
        if getattr(c, "use_sde", False):  # PPO's gSDE: the std is the (features × actions) matrix's
            return Policy(backbone, self.act_dim, None, c.log_std_init, c.head_init_gain, core, sde=True)
        policy = Policy(backbone, self.act_dim * (2 if learned else 1), None if learned else self.act_dim,
                        c.log_std_init, c.head_init_gain, core)
        if learned:
            nn.init.constant_(policy.head.bias[self.act_dim:], c.log_std_init)
        return policy

    def _init_acting(self) -> None:
        """The NumPy forward of `self.policy` (when it is a feed-forward MLP on the CPU), the observation
        normaliser, and for a recurrent policy the memories of training and greedy play."""
        recurrent = self.policy.recurrent is not None
        plain = not recurrent and self.policy.sde_log_std is None  # gSDE acting needs the features too
        self._numpy_policy = numpy_mlp_forward(self.policy.backbone, self.policy.head) if plain else None
        space = self.obs_space
        normalizable = isinstance(space, gym.spaces.Box) and space.dtype != np.uint8
        self.obs_norm = RunningNorm(space.shape) if self.config.normalize_obs and normalizable else None
        self._last_raw: np.ndarray | None = None  # pre-squash Gaussian samples of the last act()
        self.memory: Memory | None = None  # hidden states of the training envs' episodes
        self.greedy_memory: Memory | None = None  # and of greedy play's
        if recurrent:
            self.memory = Memory(self.memory_cores(), self.n_envs)
            self.greedy_memory = Memory(self.memory_cores())
        self._acted_starts: np.ndarray | None = None  # which envs began an episode at the last training act()

    def memory_cores(self) -> dict[str, RecurrentCore]:
        """The recurrent cores whose states acting carries from step to step (a critic's too, in PPO)."""
        return {"policy": self.policy.core}

    def _head(self, obs: np.ndarray, explore: bool = False) -> np.ndarray:
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        return self._forward(obs, explore)

    def _forward(self, obs: Any, explore: bool = False) -> np.ndarray:
        """The policy head's outputs for (already normalised) observations, in NumPy; a recurrent policy steps
        the memory of training (`explore`) or of greedy play."""
        if self._numpy_policy is not None:
            return self._numpy_policy(obs)
        if self.memory is None:
            with torch.inference_mode():
                return self.policy(batches.to_tensor(obs, self.device)).cpu().numpy()
        memory = self.memory if explore else self.greedy_memory
        # no_grad, not inference_mode: the states become the initial states that updates backpropagate from
        with torch.no_grad():
            x = batches.to_tensor(obs, self.device)
            starts = memory.next_starts(batches.batch_len(obs))
            out = self.policy.head(memory.step("policy", self.policy.backbone(x), starts))
            if explore:
                self._acted_starts = starts
                self._step_other_cores(x, memory, starts)
            return out.cpu().numpy()

    def _step_other_cores(self, x: Any, memory: Memory, starts: np.ndarray) -> None:
        """Step the memory's other cores (a separate critic's) along with the policy's."""

    def episodes_ended(self, done: np.ndarray) -> None:
        """The training envs in mask `done` begin new episodes at the next step (their hidden state is cleared)."""
        if self.memory is not None:
            self.memory.begin(done)

    def reset_memory(self, starts: np.ndarray | None = None) -> None:
        if self.greedy_memory is not None:
            self.greedy_memory.begin(starts)

    def drop_episodes(self, envs: np.ndarray) -> None:
        """Episodes restarted on resume begin with a cleared hidden state (subclasses drop their data too)."""
        if self.memory is not None:
            done = np.zeros(self.n_envs, bool)
            done[np.asarray(envs, dtype=np.int64)] = True
            self.memory.begin(done)

    def memory_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """`state` with the training memory added (recurrent policies), for `state_dict`."""
        if self.memory is not None:
            state["memory"] = self.memory.state_dict()
        return state

    def load_memory(self, state: dict[str, Any]) -> None:
        if self.memory is not None and "memory" in state:
            self.memory.load_state_dict(state["memory"])

    def _std(self, out: np.ndarray) -> np.ndarray:
        if self.policy.log_std is not None:
            return np.exp(self.policy.log_std.detach().cpu().numpy())[None].repeat(len(out), 0)
        return np.exp(np.clip(out[:, self.act_dim:], LOG_STD_MIN, LOG_STD_MAX))

    def _to_env(self, raw: np.ndarray) -> np.ndarray:
        if self.config.squash == "tanh":
            return self.low + (np.tanh(raw) + 1.0) * 0.5 * (self.high - self.low)
        return np.clip(raw, self.low, self.high)

    def _actions(self, out: np.ndarray, explore: bool, mask: np.ndarray | None = None) -> np.ndarray:
        """Actions from the policy head's outputs: sampled (`explore`) or greedy (mode, or the mean); discrete
        ones within `mask` (`rlagents.masks`) where given."""
        if self.discrete and mask is not None:
            return self._masked_actions(out, explore, mask)
        if self.discrete:
            if not explore:
                return out.argmax(axis=1)
            logits = out - out.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            u = self.rng.random((len(out), 1))
            return np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), self.n_actions - 1)
        mean = out[:, : self.act_dim]
        if not explore:
            return self._to_env(mean).astype(np.float32)
        raw = mean + self._std(out) * self.rng.standard_normal(mean.shape)
        self._last_raw = raw.astype(np.float32)
        return self._to_env(raw).astype(np.float32)

    def _masked_actions(self, out: np.ndarray, explore: bool, mask: np.ndarray) -> np.ndarray:
        """Discrete actions of the policy restricted to legal actions (illegal logits at `MASKED_LOGIT`).

        Sampling inverts the CDF with u ~ U[0, total) and takes the first action whose cumulative probability
        exceeds u: an action of probability 0 never does, whatever the rounding of the sum."""
        if not explore:
            return masked_argmax(out, mask)
        logits = mask_logits(out, mask)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        cumulative = probs.cumsum(axis=1)
        u = self.rng.random((len(out), 1)) * cumulative[:, -1:]
        return (cumulative <= u).sum(axis=1)

    def act(self, obs: np.ndarray, *, explore: bool, mask: np.ndarray | None = None) -> np.ndarray:
        return self._actions(self._head(obs, explore), explore, mask)

    def export_module(self) -> nn.Module:
        """Greedy policy for `rlagents.export`: [observation normaliser] → policy network → argmax (discrete) or
        the mean squashed or clipped into the bounds (continuous)."""
        from rlagents.graphs import greedy_policy

        if self.policy.recurrent is not None:
            raise ExportError(f"{self.name} with recurrent: {self.config.recurrent} cannot be exported: its action "
                              f"depends on a hidden state carried between steps, which the exported graph (one "
                              f"observation in, one action out) has no input for")

        return greedy_policy(self.policy, self.action_space, squash=self.config.squash, obs_norm=self.obs_norm)

    def log_prob_and_entropy(self, obs: Any, actions: torch.Tensor, masks: torch.Tensor | None = None
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """log π(a|s) and the policy's entropy (for Gaussian-tanh policies, of the pre-squash Gaussian)."""
        return self.distribution_terms(self.policy(obs), actions, masks)

    def distribution_terms(self, out: torch.Tensor, actions: torch.Tensor, masks: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """log π(a|s) and the entropy, from the policy head's outputs `out`; continuous `actions` are the
        pre-squash samples; with action `masks`, of the policy restricted to the legal actions."""
        if self.discrete:
            dist = torch.distributions.Categorical(logits=out if masks is None else mask_logits(out, masks))
            return dist.log_prob(actions.long()), dist.entropy()
        mean = out[:, : self.act_dim]
        if self.policy.log_std is not None:
            log_std = self.policy.log_std.expand_as(mean)
        elif self.policy.sde_log_std is not None:  # gSDE's, unclamped as SB3's
            log_std = out[:, self.act_dim:]
        else:
            log_std = out[:, self.act_dim:].clamp(LOG_STD_MIN, LOG_STD_MAX)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(dim=-1)
        if self.config.squash == "tanh":
            return tanh_gaussian_log_prob(mean, log_std, actions), entropy
        return torch.distributions.Normal(mean, log_std.exp()).log_prob(actions).sum(dim=-1), entropy

    def record(self, metrics: dict[str, float]) -> None:
        """Keep one update's scalars until the loop asks for `metrics()` (subclasses set `_metrics`)."""
        for key, value in metrics.items():
            self._metrics.setdefault(key, []).append(value)

    def metrics(self) -> dict[str, float]:
        """Each recorded scalar's mean since the last call, the update counters and the learning rate."""
        out = {key: float(np.nanmean(values)) for key, values in self._metrics.items() if values}
        out["charts/updates"] = float(self.updates)
        out["charts/skipped_updates"] = float(self.skipped_updates)
        out["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
        self._metrics.clear()
        return out
