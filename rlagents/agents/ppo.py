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
"""

from __future__ import annotations

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
from rlagents.networks import build_backbone, orthogonal_init
from rlagents.numpy_mlp import numpy_mlp_forward
from rlagents.policies import Policy, PolicyConfig, PolicyGradientAgent, RunningNorm, explained_variance, normalize


@dataclass
class PPOConfig(PolicyConfig):
    """PPO hyperparameters (after the shared network and acting settings)."""

    n_steps: int = param(128, "env steps per vector env per rollout (a rollout is n_steps × n_envs transitions)",
                         low=1, high=1_000_000)
    batch_size: int = param(64, "minibatch size (at most the rollout's size)", low=1)
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
    truncation: Literal["bootstrap", "cut"] = param("bootstrap", "an episode cut by a time limit: add γ·V(s_final) "
                                                    "to its last reward, or treat the limit as terminal")


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


class ActorCritic(nn.Module):
    """The policy (`rlagents.policies.Policy`) and a critic: a value head on its own backbone, or on the
    policy's (`critic_backbone=None`)."""

    def __init__(self, policy: Policy, critic_backbone: nn.Module | None):
        super().__init__()
        self.policy = policy
        self.critic_backbone = critic_backbone
        self.value_head = nn.Linear((critic_backbone or policy.backbone).features_dim, 1)

    def forward(self, obs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy head's outputs and the values V(s)."""
        features = self.policy.backbone(obs)
        out = self.policy.head(features)
        if self.critic_backbone is not None:
            features = self.critic_backbone(obs)
        return out, self.value_head(features).squeeze(-1)

    def value(self, obs: Any) -> torch.Tensor:
        backbone = self.critic_backbone if self.critic_backbone is not None else self.policy.backbone
        return self.value_head(backbone(obs)).squeeze(-1)


class PPOAgent(PolicyGradientAgent):
    """Clipped-surrogate PPO with GAE over vectorised envs, for discrete and continuous actions."""

    name = "ppo"
    config_class = PPOConfig
    recorded_state = frozenset({"rollout"})

    def __init__(self, config: PPOConfig, obs_space: gym.Space, action_space: gym.Space, **kwargs: Any):
        super().__init__(config, obs_space, action_space, **kwargs)
        c = config

        def backbone() -> nn.Module:  # policy and critic each get their own copy (of the pretrained CNN too)
            body = build_backbone(c, obs_space)
            if c.ortho_init and c.backbone is None:
                orthogonal_init(body)
            return body

        self.policy = self._init_policy(backbone())
        self.net = ActorCritic(self.policy, None if c.shared_backbone else backbone())
        if c.ortho_init:
            nn.init.orthogonal_(self.net.value_head.weight, 1.0)
            nn.init.zeros_(self.net.value_head.bias)
        self.net.to(self.device)
        self.params = [p for p in self.net.parameters() if p.requires_grad]  # a frozen backbone is not trained
        self.optimizer = torch.optim.Adam(self.params, lr=c.lr, eps=c.adam_eps,
                                          fused=self.device.type in ("cpu", "cuda"))
        self._init_acting()
        critic = self.net.critic_backbone if self.net.critic_backbone is not None else self.policy.backbone
        self._numpy_value = numpy_mlp_forward(critic, self.net.value_head)
        self.reward_norm = RunningNorm((1,)) if c.normalize_reward else None
        self._discounted = np.zeros(self.n_envs)  # running discounted returns, for reward normalisation
        self.rng = np.random.default_rng(self.seed)

        self.rollout_size = c.n_steps * self.n_envs
        self._rollout = self._new_rollout()
        self.pos = 0  # vector steps recorded in the rollout in progress
        self._acted_obs: Any = None  # what act() fed the policy (normalised): the rollout stores this
        self.steps = 0
        self.updates = 0
        self.skipped_updates = 0
        self._update_seconds = 0.0
        self._metrics: dict[str, list[float]] = {}

    def _new_rollout(self) -> dict[str, Any]:
        n, t = self.n_envs, self.config.n_steps
        obs_space = self.obs_space
        if self.obs_norm is not None:  # normalised observations are float32
            obs_space = gym.spaces.Box(-np.inf, np.inf, obs_space.shape, np.float32)
        actions = np.zeros(t * n, np.int64) if self.discrete else np.zeros((t * n, self.act_dim), np.float32)
        return {"obs": batches.allocate(obs_space, t * n), "actions": actions,
                "rewards": np.zeros((t, n), np.float32), "dones": np.zeros((t, n), np.float32)}

    # ------------------------------------------------------------ acting

    def act(self, obs: np.ndarray, *, explore: bool) -> np.ndarray:
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        actions = self._actions(self._forward(obs), explore)
        if explore:
            self._acted_obs = obs
        return actions

    def _values(self, obs: Any) -> np.ndarray:
        """V(s) of (normalised) observations, in NumPy."""
        if self._numpy_value is not None:
            return self._numpy_value(obs)[:, 0]
        with torch.inference_mode():
            return self.net.value(batches.to_tensor(obs, self.device)).cpu().numpy()

    # ------------------------------------------------------------ learning

    def observe(self, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        c, t, roll = self.config, self.pos, self._rollout
        rows = slice(t * self.n_envs, (t + 1) * self.n_envs)
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
            final = batches.take(next_obs, np.flatnonzero(cut))
            rewards = rewards.copy()
            rewards[cut] += c.gamma * self._values(final if self.obs_norm is None else self.obs_norm(final))
        roll["rewards"][t] = rewards
        roll["dones"][t] = done
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
        obs = batches.to_tensor(roll["obs"], self.device)
        actions = torch.as_tensor(roll["actions"], device=self.device)
        with torch.no_grad():
            out, values = self.net(obs)
            old_log_prob = self.distribution_terms(out, actions)[0]
            last_values = self.net.value(batches.to_tensor(next_obs, self.device))
        values_np = values.cpu().numpy().reshape(c.n_steps, self.n_envs)
        advantages, returns = gae(roll["rewards"], values_np, roll["dones"], last_values.cpu().numpy(), c.gamma,
                                  c.gae_lambda)
        advantages = torch.as_tensor(advantages.reshape(-1), device=self.device)
        returns = torch.as_tensor(returns.reshape(-1), device=self.device)
        metrics = {"values/explained_variance": explained_variance(values, returns),
                   "charts/clip_range": clip}
        stats: dict[str, list[torch.Tensor]] = {"policy_loss": [], "value_loss": [], "entropy": [],
                                                "approx_kl": [], "clip_fraction": []}
        size = min(c.batch_size, self.rollout_size)
        max_norm = c.max_grad_norm if c.max_grad_norm is not None else float("inf")
        stopped = False
        for _ in range(c.n_epochs):
            order = torch.as_tensor(self.rng.permutation(self.rollout_size), device=self.device)
            for start in range(0, self.rollout_size, size):
                idx = order[start:start + size]
                out, new_values = self.net(batches.take(obs, idx))
                log_prob, entropy = self.distribution_terms(out, actions[idx])
                adv = advantages[idx]
                if c.normalize_advantages:
                    adv = normalize(adv)
                pg_loss, approx_kl, clip_fraction = clipped_surrogate(log_prob, old_log_prob[idx], adv, clip)
                v_loss = value_loss(new_values, values[idx], returns[idx], c.clip_range_vf)
                entropy = entropy.mean()
                loss = pg_loss + c.vf_coef * v_loss - c.entropy_coef * entropy
                if nonfinite_loss(loss, "PPO loss", c.nonfinite, self.updates + 1, self.steps):
                    self.skipped_updates += 1
                    continue
                if c.target_kl is not None and approx_kl.item() > 1.5 * c.target_kl:
                    stopped = True  # this minibatch already moved too far from the rollout's policy
                    break
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(self.params, max_norm)
                self.optimizer.step()
                for key, value in (("policy_loss", pg_loss), ("value_loss", v_loss), ("entropy", entropy),
                                   ("approx_kl", approx_kl), ("clip_fraction", clip_fraction)):
                    stats[key].append(value.detach())
                stats.setdefault("grad_norm", []).append(grad_norm.detach())
            if stopped:
                break
        self.updates += 1
        for key, values_ in stats.items():
            if values_:
                metrics[f"losses/{key}"] = float(torch.stack(values_).mean())
        metrics["charts/early_stops"] = float(stopped)
        for key, value in metrics.items():
            self._metrics.setdefault(key, []).append(value)

    def metrics(self) -> dict[str, float]:
        out = {key: float(np.nanmean(values)) for key, values in self._metrics.items() if values}
        out["charts/updates"] = float(self.updates)
        out["charts/skipped_updates"] = float(self.skipped_updates)
        out["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
        self._metrics.clear()
        return out

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
        if self.reward_norm is not None:
            state["reward_norm"] = {**self.reward_norm.state_dict(), "discounted": self._discounted.copy()}
        return state

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
        rollout = state.get("rollout")
        if rollout is not None and np.shape(rollout["rewards"]) == (self.config.n_steps, self.n_envs):
            self._rollout = {key: _as_arrays(value) for key, value in rollout.items()}
            self.pos = int(counters["pos"])
        else:  # another number of envs (e.g. evaluation): no rollout to continue
            self._rollout, self.pos = self._new_rollout(), 0

    def drop_episodes(self, envs: np.ndarray) -> None:
        # their episodes were restarted: the rollout's last step ends them (cut there, no bootstrap)
        if self.pos > 0:
            self._rollout["dones"][self.pos - 1, np.asarray(envs, dtype=np.int64)] = 1.0


def _as_arrays(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _as_arrays(v) for key, v in value.items()}
    return np.array(value)


AGENT = PPOAgent
