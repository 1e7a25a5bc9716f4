"""PPO (Schulman et al. 2017): clipped-surrogate policy optimisation with generalised advantage estimation.

Every vector env runs `n_steps` steps with the current policy; the rollout's advantages come from GAE(λ) over
a learned critic (a separate network, or a value head on the policy's backbone), then `n_epochs` passes of
minibatch gradient steps maximise the clipped surrogate objective plus an entropy bonus, with the critic's
(optionally clipped) squared error. Discrete actions get a categorical policy; `Box` actions a Gaussian,
squashed by tanh or clipped into the bounds (the policy pieces are REINFORCE's, `rlagents.policies`).

Episodes cut by a time limit are bootstrapped from the critic: the truncated step's reward gains γ·V(s_final),
so a time limit is not mistaken for a terminal state. Observations (running mean and std) and rewards
(divided by the running std of the discounted return, as SB3's VecNormalize) can be normalised; the
statistics are checkpointed, and evaluation applies the observation statistics.

Acting runs the policy network in NumPy (small MLPs on a CPU are bound by torch's per-call overhead); the
critic's values and the rollout's log-probabilities are computed once per rollout, in one batched forward.

With memory (`recurrent: lstm | gru`) the policy and a separate critic each get a recurrent core (a shared
backbone shares the policy's). The rollout keeps which envs began an episode at each step and every env's
hidden state before the rollout's first step; minibatches are whole env sequences (`batch_size // n_steps`
envs each), whose states are recomputed from those initial states, so gradients flow through the whole
rollout (backpropagation through time, no stale stored states). GAE and bootstrapping are unchanged. The
NumPy learner has no recurrent layers: recurrent PPO learns through autograd (`learner: torch`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlagents import obs as batches
from rlagents.agents.base import nonfinite_loss
from rlagents.config import param
from rlagents.errors import ConfigError, UnsupportedSpaceError
from rlagents.masks import mask_logits
from rlagents.networks import DictBackbone, build_backbone, build_core, orthogonal_init
from rlagents.numpy_mlp import NumpyMLP, adam_step, numpy_mlp_forward
from rlagents.policies import Policy, PolicyConfig, PolicyGradientAgent, RunningNorm, normalize
from rlagents.recurrent import RecurrentCore, State, sequence_features


@dataclass
class PPOConfig(PolicyConfig):
    """PPO hyperparameters (after the shared network and acting settings)."""

    n_steps: int = param(128, "env steps per vector env per rollout (a rollout is n_steps × n_envs transitions)",
                         low=1, high=1_000_000)
    batch_size: int = param(64, "minibatch size (at most the rollout's size); recurrent: batch_size // n_steps "
                            "whole env sequences (at least one)", low=1)
    n_epochs: int = param(10, "passes over each rollout", low=1, high=10_000)
    gamma: float = param(0.99, "discount factor", low=0.0, high=1.0)
    gae_lambda: float = param(0.95, "GAE λ: 0 is one-step TD advantages, 1 Monte-Carlo returns", low=0.0, high=1.0)
    lr: float = param(3.0e-4, "learning rate (Adam)", low=0.0, low_open=True)
    lr_final: float | None = param(None, "learning rate at the end, decayed linearly (null = constant)", low=0.0)
    adam_eps: float = param(1.0e-5, "Adam epsilon", low=0.0, low_open=True)
    clip_range: float = param(0.2, "clipping of the probability ratio to [1 − ε, 1 + ε]", low=0.0, low_open=True)
    clip_range_final: float | None = param(None, "clip range at the end, decayed linearly (null = constant)",
                                           low=0.0)
    clip_range_vf: float | None = param(None, "clip the critic's change per update to ± this around its "
                                        "rollout values (null = no value clipping)", low=0.0, low_open=True)
    vf_coef: float = param(0.5, "weight of the critic's loss", low=0.0)
    entropy_coef: float = param(0.0, "entropy bonus weight", low=0.0)
    max_grad_norm: float | None = param(0.5, "gradient norm clip (null = no clipping)", low=0.0, low_open=True)
    normalize_advantages: bool = param(True, "scale advantages to zero mean, unit variance per minibatch")
    target_kl: float | None = param(None, "stop a rollout's epochs early once the approximate KL from the "
                                    "rollout policy exceeds 1.5 × this (null = never)", low=0.0, low_open=True)
    shared_backbone: bool = param(False, "the critic is a value head on the policy's backbone (false: its own "
                                  "network)")
    ortho_init: bool = param(True, "orthogonal initialisation of the backbones (gain √2) and of the value head "
                             "(gain 1), as SB3 and CleanRL; a pretrained backbone keeps its weights")
    normalize_reward: bool = param(False, "divide rewards by the running std of the discounted return "
                                   "(statistics saved in checkpoints)")
    mode: Literal["ppo", "a2c"] = param("ppo", "ppo: n_epochs passes of shuffled minibatches on the clipped "
                                        "surrogate; a2c: one gradient step per rollout on all of it (the ratio is "
                                        "then 1, so the loss is A2C's −E[log π·A]; n_epochs, batch_size and "
                                        "target_kl are unused)")
    learner: Literal["auto", "torch", "numpy"] = param(
        "auto", "how gradient steps are computed: numpy (hand-written gradients; MLP actor and separate critic "
        "on a CPU, categorical or state-independent-std Gaussian policies), torch (autograd; every network and "
        "device), auto (numpy where it applies, torch elsewhere)")
    truncation: Literal["bootstrap", "cut"] = param("bootstrap", "an episode cut by a time limit: add γ·V(s_final) "
                                                    "to its last reward, or treat the limit as terminal")
    use_sde: bool = param(False, "continuous actions: generalised state-dependent exploration (gSDE): noise "
                          "φ(s)·θ on the mean, φ the policy's last hidden features, θ ~ N(0, σ²) held between "
                          "resamples, σ a learned (features × actions) matrix starting at exp(log_std_init)")
    sde_sample_freq: int = param(-1, "gSDE: resample θ every this many steps of a rollout (and at its start); "
                                 "-1 = once per rollout", low=-1)

    def validate(self) -> None:
        super().validate()
        if self.sde_sample_freq == 0:
            raise ConfigError("sde_sample_freq: bad value 0: resample gSDE's noise every N >= 1 steps, or -1 "
                              "for once per rollout")
        if self.use_sde and self.recurrent != "none":
            raise ConfigError(f"use_sde: gSDE is for feed-forward policies, got recurrent: {self.recurrent}: set "
                              f"recurrent=none or use_sde=false")
        if self.use_sde and self.log_std != "state":
            raise ConfigError("use_sde: gSDE's std is its own learned matrix, so log_std: learned does not "
                              "apply: set log_std=state or use_sde=false")


# ---------------------------------------------------------------- pure maths


def gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, last_values: np.ndarray, gamma: float,
        lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates and the critic's targets (advantage + value) of a (T, N) rollout.

    `dones[t]` marks episodes that ended after step t (their next value is not used: a time limit's bootstrap
    is already in the reward); `last_values` are V of the observations after the last step."""
    advantages = np.zeros_like(values)
    running = np.zeros_like(last_values)
    next_values = last_values
    for t in range(len(rewards) - 1, -1, -1):
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_values * live - values[t]
        running = delta + gamma * lam * live * running
        advantages[t] = running
        next_values = values[t]
    return advantages, advantages + values


def clipped_surrogate(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                      clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's loss −E[min(r·A, clip(r, 1 − ε, 1 + ε)·A)] with r = π/π_old; also the approximate KL
    E[(r − 1) − log r] and the fraction of clipped ratios (both without gradient)."""
    log_ratio = log_prob - old_log_prob
    ratio = log_ratio.exp()
    loss = -torch.min(ratio * advantages, ratio.clamp(1.0 - clip, 1.0 + clip) * advantages).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_fraction = ((ratio - 1.0).abs() > clip).float().mean()
    return loss, approx_kl, clip_fraction


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               clip: float | None) -> torch.Tensor:
    """½·E[(V − R)²]; with `clip`, the larger of that and the error of V kept within ± clip of `old_values`."""
    error = (values - returns) ** 2
    if clip is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        error = torch.max(error, (clipped - returns) ** 2)
    return 0.5 * error.mean()


def _body(backbone: nn.Module, obs: Any, frozen: dict[str, torch.Tensor] | None) -> torch.Tensor:
    return backbone(obs) if frozen is None else backbone(obs, frozen)


class ActorCritic(nn.Module):
    """The policy (`rlagents.policies.Policy`) and a critic: a value head on its own backbone (and recurrent
    core, `critic_core`, when the policy has one), or on the policy's (`critic_backbone=None`)."""

    def __init__(self, policy: Policy, critic_backbone: nn.Module | None, critic_core: RecurrentCore | None = None):
        super().__init__()
        self.policy = policy
        self.critic_backbone = critic_backbone
        if critic_core is not None:  # only then: a feed-forward critic's state_dict keeps its keys
            self.critic_core = critic_core
        if critic_backbone is None:  # on what the policy's head reads (its core's output, if it has one)
            width = policy.head.in_features
        else:
            width = critic_core.out_features if critic_core is not None else critic_backbone.features_dim
        self.value_head = nn.Linear(width, 1)

    def forward(self, obs: Any, frozen: dict[str, dict[str, torch.Tensor]] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy head's outputs and the values V(s); `frozen` holds the frozen branches' features of `obs`
        where already computed (`frozen_features`)."""
        frozen = frozen or {}
        features = _body(self.policy.backbone, obs, frozen.get("policy"))
        out = self.policy.outputs(features)
        if self.critic_backbone is not None:
            features = _body(self.critic_backbone, obs, frozen.get("critic"))
        return out, self.value_head(features).squeeze(-1)

    def frozen_features(self, obs: Any) -> dict[str, dict[str, torch.Tensor]]:
        """The features of each `Dict` backbone's frozen branches (a frozen pretrained CNN): they do not change
        during an update, so a rollout's are computed once instead of once per minibatch and epoch."""
        frozen = {}
        for name, body in (("policy", self.policy.backbone), ("critic", self.critic_backbone)):
            keys = body.frozen_keys() if isinstance(body, DictBackbone) else []
            if keys:
                with torch.no_grad():
                    frozen[name] = {key: body.branches[key](obs[key]) for key in keys}
        return frozen

    def value(self, obs: Any) -> torch.Tensor:
        backbone = self.critic_backbone if self.critic_backbone is not None else self.policy.backbone
        return self.value_head(backbone(obs)).squeeze(-1)

    def sequence(self, obs: Any, initial: dict[str, State], starts: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, dict[str, State]]:
        """Recurrent networks: the policy head's outputs and the values of a (T, B) sequence of time-major rows
        from the `initial` states (per core, as `memory_cores` names them), and the states after it."""
        features, policy_state = sequence_features(self.policy.backbone, self.policy.core, obs, initial["policy"],
                                                   starts)
        states = {"policy": policy_state}
        if self.critic_backbone is not None:
            critic, states["critic"] = sequence_features(self.critic_backbone, self.critic_core, obs,
                                                         initial["critic"], starts)
        else:
            critic = features
        return self.policy.outputs(features), self.value_head(critic).squeeze(-1), states

    def next_values(self, obs: Any, states: dict[str, State], starts: torch.Tensor) -> torch.Tensor:
        """Recurrent networks: V of one more step `obs` after `states` (rows zeroed first where `starts`)."""
        if self.critic_backbone is not None:
            features, _ = self.critic_core.step(self.critic_backbone(obs), states["critic"], starts)
        else:
            features, _ = self.policy.core.step(self.policy.backbone(obs), states["policy"], starts)
        return self.value_head(features).squeeze(-1)


def _mean(values: np.ndarray) -> float:
    """The mean of a vector as a Python float (np.mean's per-call overhead is ~5 µs; this is ~1 µs)."""
    return float(np.add.reduce(values)) / len(values)


def _mean32(values: np.ndarray) -> np.floating:
    """`values.mean()` of a float vector, bit for bit (NumPy sums pairwise in the array's dtype, then divides in
    float64 and rounds back), without np.mean's per-call overhead."""
    return values.dtype.type(float(np.add.reduce(values)) / len(values))


def _std32(values: np.ndarray) -> np.floating:
    """`values.std(ddof=1)` of a float vector (at least two entries), bit for bit, as `_mean32`."""
    deviations = values - _mean32(values)
    np.multiply(deviations, deviations, out=deviations)
    return np.sqrt(values.dtype.type(float(np.add.reduce(deviations)) / (len(values) - 1)))


# ---------------------------------------------------------------- learners


class TorchLearner:
    """PPO's minibatch gradient steps through autograd: every network (CNN, `Dict`, shared backbone, learned
    log-std) on every device."""

    def __init__(self, agent: PPOAgent):
        self.agent = agent

    def start(self, obs: Any, actions: np.ndarray, next_obs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Take a rollout (its observations and actions, and the observations after it): keep its values and
        log-probabilities under the current policy; return V of the rollout and of `next_obs`."""
        agent = self.agent
        self.obs = batches.to_tensor(obs, agent.device)
        self.actions = torch.as_tensor(actions, device=agent.device)
        masks = agent.rollout_masks()
        self.masks = None if masks is None else torch.as_tensor(masks, device=agent.device)
        next_obs = batches.to_tensor(next_obs, agent.device)
        self.frozen = agent.net.frozen_features(self.obs) if agent.memory is None else {}
        with torch.no_grad():
            if agent.memory is None:
                out, self.values = agent.net(self.obs, self.frozen)
                last = agent.net.value(next_obs)
            else:  # the whole rollout as T × n_envs sequences, from the states its envs had before it
                roll = agent.rollout
                self.starts = torch.as_tensor(roll["starts"], device=agent.device)
                self.initial = {name: tuple(torch.as_tensor(s, device=agent.device) for s in stacked)
                                for name, stacked in roll["initial"].items()}
                out, self.values, states = agent.net.sequence(self.obs, self.initial, self.starts)
                last = agent.net.next_values(next_obs, states, torch.as_tensor(roll["dones"][-1] > 0))
            self.old_log_prob = agent.distribution_terms(out, self.actions, self.masks)[0]
        return self.values.cpu().numpy(), last.cpu().numpy()

    def set_targets(self, advantages: np.ndarray, returns: np.ndarray) -> None:
        self.advantages = torch.as_tensor(advantages, dtype=torch.float32, device=self.agent.device)
        self.returns = torch.as_tensor(returns, dtype=torch.float32, device=self.agent.device)

    def step(self, rows: np.ndarray, clip: float, envs: np.ndarray | None = None) -> dict[str, float] | None:
        """The loss on minibatch `rows` (its gradient is applied by `apply`); None for a non-finite loss under
        `nonfinite: skip`. Recurrent networks: `rows` are the whole sequences of the vector envs `envs`, in
        time-major order, recomputed from those envs' initial states."""
        agent, c = self.agent, self.agent.config
        idx = torch.as_tensor(rows, device=agent.device)
        if envs is None:
            out, values = agent.net(batches.take(self.obs, idx), batches.take(self.frozen, idx))
        else:
            cols = torch.as_tensor(envs, device=agent.device)
            initial = {name: tuple(s[cols] for s in state) for name, state in self.initial.items()}
            out, values, _ = agent.net.sequence(batches.take(self.obs, idx), initial, self.starts[:, cols])
        log_prob, entropy = agent.distribution_terms(out, self.actions[idx],
                                                     None if self.masks is None else self.masks[idx])
        adv = normalize(self.advantages[idx]) if c.normalize_advantages else self.advantages[idx]
        pg_loss, approx_kl, clip_fraction = clipped_surrogate(log_prob, self.old_log_prob[idx], adv, clip)
        v_loss = value_loss(values, self.values[idx], self.returns[idx], c.clip_range_vf)
        entropy = entropy.mean()
        self.loss = pg_loss + c.vf_coef * v_loss - c.entropy_coef * entropy
        if nonfinite_loss(self.loss, "PPO loss", c.nonfinite, agent.updates + 1, agent.steps):
            return None
        return {"policy_loss": pg_loss.item(), "value_loss": v_loss.item(), "entropy": entropy.item(),
                "approx_kl": approx_kl.item(), "clip_fraction": clip_fraction.item()}

    def apply(self, max_grad_norm: float | None) -> float:
        """Step the optimizer on the last `step`'s loss; returns the gradient norm before clipping."""
        agent = self.agent
        agent.optimizer.zero_grad(set_to_none=True)
        self.loss.backward()
        norm = nn.utils.clip_grad_norm_(agent.params, max_grad_norm if max_grad_norm is not None else float("inf"))
        agent.optimizer.step()
        return float(norm)


FLOAT32_MAX = float(np.finfo(np.float32).max)  # a larger loss is inf in float32, as autograd's would be


class NumpyLearner:
    """The same minibatch steps with hand-written gradients in NumPy, for MLP actor and critic networks on a
    CPU (categorical policies, or Gaussian ones with a state-independent log-std).

    A PPO minibatch step through autograd is ~40 small torch ops, each paying torch's dispatch overhead; the
    same maths in NumPy (`rlagents.numpy_mlp`) pays ~1 µs an op, and Adam's fused kernel is called directly
    (`adam_step`), so the optimizer state stays torch's own. Rounding differs from autograd's, not the maths:
    tests/test_ppo.py checks the gradients against autograd's.
    """

    def __init__(self, agent: PPOAgent, actor: NumpyMLP, critic: NumpyMLP):
        self.agent, self.actor, self.critic = agent, actor, critic
        log_std = agent.policy.log_std
        self.log_std = None if log_std is None else log_std.detach().numpy()  # a view: Adam's steps show
        extra = [] if log_std is None else [log_std]
        self.log_std_grad = np.zeros(0 if log_std is None else len(log_std), np.float32)
        self.params = [*actor.parameters, *critic.parameters, *extra]
        self.grads = [*actor.grads, *critic.grads, *([self.log_std_grad] if extra else [])]
        self.grad_tensors = [torch.from_numpy(g) for g in self.grads]
        self.tanh = not agent.discrete and agent.config.squash == "tanh"
        self._arange = np.arange(0)

    @staticmethod
    def build(agent: PPOAgent) -> NumpyLearner | None:
        """The NumPy learner of `agent`'s networks, or None where it does not apply."""
        net = agent.net
        if (net.critic_backbone is None or agent.device.type != "cpu" or agent.memory is not None
                or net.policy.sde_log_std is not None or not all(p.requires_grad for p in net.parameters())
                or (not agent.discrete and agent.config.log_std != "state")):
            return None
        actor = NumpyMLP.of(net.policy.backbone, net.policy.head)
        critic = NumpyMLP.of(net.critic_backbone, net.value_head)
        return None if actor is None or critic is None else NumpyLearner(agent, actor, critic)

    def start(self, obs: Any, actions: np.ndarray, next_obs: Any) -> tuple[np.ndarray, np.ndarray]:
        self.x = self.actor.inputs(obs)
        self.actions = actions
        self.masks = self.agent.rollout_masks()  # legal actions of each step (masked agents), or None
        if self.tanh:  # log|da/du| of the tanh squash: constant per sample, kept in the log-probabilities
            u = actions.astype(np.float32)
            self.correction = (2.0 * (np.log(2.0) - u - np.logaddexp(0.0, -2.0 * u))).sum(axis=1)
        out = self.actor.outputs(self.x)
        if self.masks is not None:  # illegal logits at MASKED_LOGIT: probability 0, and 0 gradient below
            out = mask_logits(out, self.masks)
        self.old_log_prob = self._log_prob(out, actions, self.correction_of(None))[0]
        self.values = self.critic.outputs(self.x)[:, 0]
        return self.values, self.critic.scores(next_obs)[:, 0]

    def correction_of(self, rows: np.ndarray | None) -> np.ndarray | float:
        if not self.tanh:
            return 0.0
        return self.correction if rows is None else self.correction[rows]

    def set_targets(self, advantages: np.ndarray, returns: np.ndarray) -> None:
        self.advantages = advantages.astype(np.float32)
        self.returns = returns.astype(np.float32)

    def _log_prob(self, out: np.ndarray, actions: np.ndarray, correction: np.ndarray | float) -> tuple:
        """log π(a|s), the entropy per row (or one value for a state-independent Gaussian) and what the
        gradient needs."""
        if self.agent.discrete:
            z = out - out.max(axis=1, keepdims=True)
            e = np.exp(z)
            total = e.sum(axis=1, keepdims=True)
            probs = e / total
            log_probs = z - np.log(total)
            entropy = -(probs * log_probs).sum(axis=1)
            return log_probs[np.arange(len(out)), actions], entropy, probs, log_probs
        std = np.exp(self.log_std)
        scaled = (actions - out) / std
        log_prob = (-0.5 * scaled ** 2 - self.log_std - 0.5 * np.log(2 * np.pi)).sum(axis=1) - correction
        entropy = float((0.5 + 0.5 * np.log(2 * np.pi) + self.log_std).sum())
        return log_prob, entropy, scaled, std

    def step(self, rows: np.ndarray, clip: float) -> dict[str, float] | None:
        agent, c = self.agent, self.agent.config
        x, n = self.x[rows], len(rows)
        out, self._actor_acts = self.actor.forward(x)
        if self.masks is not None:
            out = mask_logits(out, self.masks[rows])
        v, self._critic_acts = self.critic.forward(x)
        v = v[:, 0]
        actions = self.actions[rows]
        log_prob, entropy, *terms = self._log_prob(out, actions, self.correction_of(rows))
        adv = self.advantages[rows]
        if c.normalize_advantages:  # as `normalize`: torch's std is the unbiased one
            adv = adv - _mean32(adv)
            if n > 1:
                adv = adv / (_std32(adv) + 1e-8)
        log_ratio = log_prob - self.old_log_prob[rows]
        ratio = np.exp(log_ratio)
        clipped = np.clip(ratio, 1.0 - clip, 1.0 + clip)
        clipped *= adv
        surrogate = ratio * adv
        pg_loss = -_mean(np.minimum(surrogate, clipped, out=clipped))
        # the gradient is zero where the clipped term is the smaller and its ratio is clipped
        flat = ((adv > 0) & (ratio > 1.0 + clip)) | ((adv < 0) & (ratio < 1.0 - clip))
        np.negative(surrogate, out=surrogate)
        surrogate /= n
        surrogate[flat] = 0.0
        grad_log_prob = surrogate.astype(np.float32, copy=False)  # −A·r/n where not clipped, else 0
        v_loss, grad_v = self._value_terms(v, rows)
        mean_entropy = entropy if np.ndim(entropy) == 0 else _mean(entropy)
        loss = pg_loss + c.vf_coef * v_loss - c.entropy_coef * mean_entropy
        if not abs(loss) <= FLOAT32_MAX and nonfinite_loss(torch.tensor(loss), "PPO loss", c.nonfinite,
                                                           agent.updates + 1, agent.steps):
            return None
        if agent.discrete:
            probs, log_probs = terms
            grad_out = probs * -grad_log_prob[:, None]
            grad_out[self._rows(n), actions] += grad_log_prob
            if c.entropy_coef:  # dH/dz = −p·(log p + H)
                grad_out += (c.entropy_coef / n) * probs * (log_probs + entropy[:, None])
        else:
            scaled, std = terms
            grad_out = grad_log_prob[:, None] * scaled / std
            self.log_std_grad[:] = (grad_log_prob[:, None] * (scaled ** 2 - 1.0)).sum(axis=0) - c.entropy_coef
        if c.vf_coef != 1.0:
            grad_v *= c.vf_coef
        self._grad_out = grad_out.astype(np.float32, copy=False)
        self._grad_v = grad_v.astype(np.float32, copy=False)[:, None]
        ratio -= 1.0
        clip_fraction = np.count_nonzero(np.abs(ratio) > clip) / n
        ratio -= log_ratio
        return {"policy_loss": pg_loss, "value_loss": v_loss, "entropy": float(mean_entropy),
                "approx_kl": float(_mean32(ratio)), "clip_fraction": clip_fraction}

    def _rows(self, n: int) -> np.ndarray:
        """0 … n−1 (kept: every full minibatch has the same n)."""
        if len(self._arange) != n:
            self._arange = np.arange(n)
        return self._arange

    def _value_terms(self, v: np.ndarray, rows: np.ndarray) -> tuple[float, np.ndarray]:
        """`value_loss` and its gradient with respect to v."""
        n, clip, returns = len(rows), self.agent.config.clip_range_vf, self.returns[rows]
        error = v - returns
        if clip is None:
            return 0.5 * float(np.dot(error, error)) / n, np.divide(error, n, out=error)
        change = v - self.values[rows]
        clipped = self.values[rows] + np.clip(change, -clip, clip) - returns
        use_clipped = clipped ** 2 > error ** 2
        grad = np.where(use_clipped, clipped * (np.abs(change) <= clip), error)
        return 0.5 * float(np.maximum(error ** 2, clipped ** 2).mean()), grad / n

    def gradients(self) -> list[np.ndarray]:
        """The last `step`'s loss gradients, in `params` order (written into `grads`)."""
        self.actor.backward(self._actor_acts, self._grad_out)
        self.critic.backward(self._critic_acts, self._grad_v)
        return self.grads

    def apply(self, max_grad_norm: float | None) -> float:
        self.gradients()
        norm = math.sqrt(sum(float(np.vdot(g, g)) for g in self.grads))
        if max_grad_norm is not None and norm > max_grad_norm:  # torch's clip_grad_norm_ rule
            scale = max_grad_norm / (norm + 1e-6)
            for g in self.grads:
                g *= scale
        adam_step(self.agent.optimizer, self.params, self.grad_tensors)
        return norm


class PPOAgent(PolicyGradientAgent):
    """Clipped-surrogate PPO with GAE over vectorised envs, for discrete and continuous actions."""

    name = "ppo"
    config_class = PPOConfig
    recorded_state = frozenset({"rollout"})
    takes_masks = True  # acting and log-probabilities within the masks (`PolicyGradientAgent`); rollout["masks"]

    @classmethod
    def check_spaces(cls, obs_space: gym.Space, action_space: gym.Space, config: Any) -> None:
        super().check_spaces(obs_space, action_space, config)
        if getattr(config, "use_sde", False) and not isinstance(action_space, gym.spaces.Box):
            raise UnsupportedSpaceError(f"use_sde: gSDE perturbs continuous actions, got {action_space}: set "
                                        f"use_sde=false")

    def __init__(self, config: PPOConfig, obs_space: gym.Space, action_space: gym.Space, **kwargs: Any):
        super().__init__(config, obs_space, action_space, **kwargs)
        c = config

        def backbone() -> nn.Module:  # policy and critic each get their own copy (of the pretrained CNN too)
            body = build_backbone(c, obs_space)
            if c.ortho_init and c.backbone is None:
                orthogonal_init(body)
            return body

        self.policy = self._init_policy(backbone())
        critic = None if c.shared_backbone else backbone()
        critic_core = None if critic is None or self.policy.recurrent is None else build_core(c, critic.features_dim)
        self.net = ActorCritic(self.policy, critic, critic_core)
        if c.ortho_init:
            nn.init.orthogonal_(self.net.value_head.weight, 1.0)
            nn.init.zeros_(self.net.value_head.bias)
        self.net.to(self.device)
        self.params = [p for p in self.net.parameters() if p.requires_grad]  # a frozen backbone is not trained
        self.optimizer = torch.optim.Adam(self.params, lr=c.lr, eps=c.adam_eps,
                                          fused=self.device.type in ("cpu", "cuda"))
        self._init_acting()
        critic = self.net.critic_backbone if self.net.critic_backbone is not None else self.policy.backbone
        self._numpy_value = None if self.memory is not None else numpy_mlp_forward(critic, self.net.value_head)
        self.learner = self._build_learner()
        self.reward_norm = RunningNorm((1,)) if c.normalize_reward else None
        self._discounted = np.zeros(self.n_envs)  # running discounted returns, for reward normalisation
        self.rng = np.random.default_rng(self.seed)
        self._sde_noise: np.ndarray | None = None  # gSDE's θ per training env, (n_envs, features, actions)
        self._sde_features: np.ndarray | None = None  # φ(s) of the last act()

        self.rollout_size = c.n_steps * self.n_envs
        self._rollout = self._new_rollout()
        self.pos = 0  # vector steps recorded in the rollout in progress
        self._acted_obs: Any = None  # what act() fed the policy (normalised): the rollout stores this
        self._initial: dict[str, np.ndarray] | None = None  # recurrent: the states before the rollout's first act
        self.steps = 0
        self.updates = 0
        self.skipped_updates = 0
        self._update_seconds = 0.0
        self._metrics: dict[str, list[float]] = {}

    def _build_learner(self) -> TorchLearner | NumpyLearner:
        """The `learner` config key's learner; auto takes the NumPy one wherever it applies."""
        numpy_learner = NumpyLearner.build(self) if self.config.learner != "torch" else None
        if numpy_learner is not None:
            return numpy_learner
        if self.config.learner == "numpy":
            raise ConfigError("learner numpy trains feed-forward MLP actors with a separate MLP critic on a CPU "
                              "(categorical, or Gaussian with log_std: state, no gSDE), every layer trained: use learner "
                              "torch (or auto)")
        return TorchLearner(self)

    def _new_rollout(self) -> dict[str, Any]:
        n, t = self.n_envs, self.config.n_steps
        obs_space = self.obs_space
        if self.obs_norm is not None:  # normalised observations are float32
            obs_space = gym.spaces.Box(-np.inf, np.inf, obs_space.shape, np.float32)
        actions = np.zeros(t * n, np.int64) if self.discrete else np.zeros((t * n, self.act_dim), np.float32)
        rollout = {"obs": batches.allocate(obs_space, t * n), "actions": actions,
                   "rewards": np.zeros((t, n), np.float32), "dones": np.zeros((t, n), np.float32)}
        if self.masked:  # the legal actions each step was taken among: the update's log-probabilities use them
            rollout["masks"] = np.ones((t * n, self.n_actions), bool)
        if self.memory is not None:  # the envs that began an episode at each step; the states before step 0
            rollout["starts"] = np.zeros((t, n), bool)
            rollout["initial"] = {name: np.stack([s.cpu().numpy() for s in core.initial_state(n)])
                                  for name, core in self.memory_cores().items()}
        return rollout

    @property
    def rollout(self) -> dict[str, Any]:
        """The rollout in progress (arrays; `_new_rollout` lists them)."""
        return self._rollout

    def rollout_masks(self) -> np.ndarray | None:
        """The rollout's action masks (masked agents), or None."""
        return self._rollout.get("masks")

    def memory_cores(self) -> dict[str, RecurrentCore]:
        cores = super().memory_cores()
        if hasattr(self.net, "critic_core"):
            cores["critic"] = self.net.critic_core
        return cores

    def _step_other_cores(self, x: Any, memory: Any, starts: np.ndarray) -> None:
        if "critic" in memory.cores:
            memory.step("critic", self.net.critic_backbone(x), starts)

    # ------------------------------------------------------------ acting

    def act(self, obs: np.ndarray, *, explore: bool, mask: np.ndarray | None = None) -> np.ndarray:
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        if explore and self.memory is not None and self.pos == 0:  # a rollout begins: keep its initial states
            self._initial = {name: np.stack([s.cpu().numpy() for s in self.memory.state(name, self.n_envs)])
                             for name in self.memory.cores}
        if self.policy.sde_log_std is not None:
            actions = self._sde_actions(obs, explore)
        else:
            actions = self._actions(self._forward(obs, explore), explore, mask)
        if explore:
            self._acted_obs = obs
        return actions

    def _sde_actions(self, obs: Any, explore: bool) -> np.ndarray:
        """gSDE: the mean, plus (`explore`) the noise φ(s)·θ of each env's θ, resampled at the rollout's start
        and every `sde_sample_freq` steps; a batch that is not one row per training env uses env 0's θ."""
        with torch.inference_mode():
            features = self.policy.backbone(batches.to_tensor(obs, self.device))
            mean = self.policy.head(features).cpu().numpy()
        if not explore:
            return self._to_env(mean).astype(np.float32)
        freq = self.config.sde_sample_freq
        if self._sde_noise is None or self.pos == 0 or (freq > 0 and self.pos % freq == 0):
            self.resample_sde_noise()
        phi = features.cpu().numpy()
        theta = self._sde_noise if len(phi) == self.n_envs else self._sde_noise[:1].repeat(len(phi), 0)
        raw = mean + np.einsum("nf,nfa->na", phi, theta)
        self._last_raw = raw.astype(np.float32)
        return self._to_env(raw).astype(np.float32)

    def resample_sde_noise(self) -> None:
        """Draw gSDE's θ for every training env: θ_jk ~ N(0, σ_jk²) with σ = exp(sde_log_std) now."""
        std = self.policy.sde_log_std.detach().exp().cpu().numpy()
        self._sde_noise = (std * self.rng.standard_normal((self.n_envs, *std.shape))).astype(np.float32)

    def _values(self, obs: Any, envs: np.ndarray) -> np.ndarray:
        """V(s) of (normalised) observations, in NumPy; a recurrent critic's after the states of `envs`."""
        if self._numpy_value is not None:
            return self._numpy_value(obs)[:, 0]
        with torch.inference_mode():
            obs = batches.to_tensor(obs, self.device)
            if self.memory is None:
                return self.net.value(obs).cpu().numpy()
            rows = torch.as_tensor(envs, device=self.device)
            states = {name: tuple(s[rows] for s in self.memory.state(name, self.n_envs)) for name in self.memory.cores}
            return self.net.next_values(obs, states, torch.zeros(len(envs), dtype=torch.bool)).cpu().numpy()

    # ------------------------------------------------------------ learning

    def observe(self, obs, actions, rewards, next_obs, terminated, truncated, *, mask=None, next_mask=None) -> None:
        c, t, roll = self.config, self.pos, self._rollout
        rows = slice(t * self.n_envs, (t + 1) * self.n_envs)
        if mask is not None and "masks" in roll:
            roll["masks"][rows] = mask
        if self.memory is not None:
            roll["starts"][t] = self._acted_starts
            if t == 0 and self._initial is not None:
                roll["initial"] = self._initial
        batches.put(roll["obs"], rows, obs if self._acted_obs is None else self._acted_obs)
        roll["actions"][rows] = actions if self.discrete else self._last_raw
        if self.obs_norm is not None:
            self.obs_norm.update(np.asarray(obs, np.float64))
        rewards = np.asarray(rewards, np.float64)
        done = terminated | truncated
        if self.reward_norm is not None:
            self._discounted = self._discounted * c.gamma + rewards
            self.reward_norm.update(self._discounted[:, None])
            rewards = np.clip(rewards / np.sqrt(self.reward_norm.var[0] + 1e-8), -10.0, 10.0)
            self._discounted[done] = 0.0
        cut = truncated & ~terminated
        if c.truncation == "bootstrap" and cut.any():  # the critic stands in for the return after the limit
            envs = np.flatnonzero(cut)
            final = batches.take(next_obs, envs)
            rewards = rewards.copy()
            rewards[cut] += c.gamma * self._values(final if self.obs_norm is None else self.obs_norm(final), envs)
        roll["rewards"][t] = rewards
        roll["dones"][t] = done
        self.episodes_ended(done)
        self._acted_obs = None
        self.pos += 1
        self.steps += self.n_envs
        if self.pos == c.n_steps:
            start = time.perf_counter()
            self._update(next_obs if self.obs_norm is None else self.obs_norm(next_obs))
            self._update_seconds += time.perf_counter() - start
            self.pos = 0

    def _schedule(self, start: float, end: float | None) -> float:
        if end is None:
            return start
        return start + (end - start) * min(1.0, self.steps / max(1, self.total_steps))

    def _update(self, next_obs: Any) -> None:
        c, roll = self.config, self._rollout
        lr, clip = self._schedule(c.lr, c.lr_final), self._schedule(c.clip_range, c.clip_range_final)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        values, last_values = self.learner.start(roll["obs"], roll["actions"], next_obs)
        advantages, returns = gae(roll["rewards"], values.reshape(c.n_steps, self.n_envs), roll["dones"],
                                  last_values, c.gamma, c.gae_lambda)
        self.learner.set_targets(advantages.reshape(-1), returns.reshape(-1))
        var = returns.var()
        metrics = {"values/explained_variance": float("nan") if var == 0 else
                   float(1.0 - (returns.reshape(-1) - values).var() / var), "charts/clip_range": clip}
        stats: dict[str, list[float]] = {}
        a2c = c.mode == "a2c"
        # minibatches of rows; recurrent: of whole env sequences (`units` are then envs)
        units = self.rollout_size if self.memory is None else self.n_envs
        per_unit = 1 if self.memory is None else c.n_steps
        size = units if a2c else max(1, min(c.batch_size // per_unit, units))
        stopped = False
        for _ in range(1 if a2c else c.n_epochs):
            # a2c keeps the rollout's order: the same rows as the old log-probs' pass, so the ratio is exactly 1
            order = np.arange(units) if a2c else self.rng.permutation(units)
            for start in range(0, units, size):
                chunk = order[start:start + size]
                if self.memory is None:
                    result = self.learner.step(chunk, clip)
                else:  # env b's sequence: rows t·n_envs + b, time-major
                    rows = (np.arange(c.n_steps)[:, None] * self.n_envs + chunk[None, :]).reshape(-1)
                    result = self.learner.step(rows, clip, chunk)
                if result is None:  # a non-finite loss under nonfinite: skip
                    self.skipped_updates += 1
                    continue
                if c.target_kl is not None and result["approx_kl"] > 1.5 * c.target_kl:
                    stopped = True  # this minibatch already moved too far from the rollout's policy: no step
                    break
                result["grad_norm"] = self.learner.apply(c.max_grad_norm)
                for key, value in result.items():
                    stats.setdefault(key, []).append(value)
            if stopped:
                break
        self.updates += 1
        metrics.update({f"losses/{key}": float(np.mean(values_)) for key, values_ in stats.items()})
        metrics["charts/early_stops"] = float(stopped)
        self.record(metrics)

    def costs(self) -> dict[str, float]:
        if not self.updates:
            return {}
        return {"update_ms": round(1000 * self._update_seconds / self.updates, 3)}

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                                 "counters": {"steps": self.steps, "updates": self.updates, "pos": self.pos,
                                              "skipped_updates": self.skipped_updates},
                                 "rng": self.rng.bit_generator.state,
                                 "rollout": dict(self._rollout)}  # the rollout in progress (rows < pos)
        if self.obs_norm is not None:
            state["obs_norm"] = self.obs_norm.state_dict()
        if self._sde_noise is not None:  # the θ in use (the rng that draws the next one is saved above)
            state["sde_noise"] = self._sde_noise.copy()
        if self.reward_norm is not None:
            state["reward_norm"] = {**self.reward_norm.state_dict(), "discounted": self._discounted.copy()}
        return self.memory_state(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.obs_norm is not None:
            self.obs_norm.load_state_dict(state["obs_norm"])
        if self.reward_norm is not None:
            self.reward_norm.load_state_dict(state["reward_norm"])
            discounted = np.asarray(state["reward_norm"]["discounted"], np.float64)
            self._discounted = discounted if discounted.shape == (self.n_envs,) else np.zeros(self.n_envs)
        counters = state["counters"]
        self.steps, self.updates = int(counters["steps"]), int(counters["updates"])
        self.skipped_updates = int(counters.get("skipped_updates", 0))
        self.rng.bit_generator.state = state["rng"]
        noise = state.get("sde_noise")
        if self.policy.sde_log_std is not None and noise is not None and np.shape(noise)[0] == self.n_envs:
            self._sde_noise = np.array(noise, np.float32)
        self.load_memory(state)
        rollout = state.get("rollout")
        if rollout is not None and np.shape(rollout["rewards"]) == (self.config.n_steps, self.n_envs):
            self._rollout = {key: _as_arrays(value) for key, value in rollout.items()}
            self.pos = int(counters["pos"])
            self._initial = self._rollout.get("initial")
        else:  # another number of envs (e.g. evaluation): no rollout to continue
            self._rollout, self.pos = self._new_rollout(), 0

    def drop_episodes(self, envs: np.ndarray) -> None:
        super().drop_episodes(envs)
        # their episodes were restarted: the rollout's last step ends them (cut there, no bootstrap)
        if self.pos > 0:
            self._rollout["dones"][self.pos - 1, np.asarray(envs, dtype=np.int64)] = 1.0


def _as_arrays(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _as_arrays(v) for key, v in value.items()}
    return np.array(value)


AGENT = PPOAgent
