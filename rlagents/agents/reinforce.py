"""REINFORCE (Williams 1992): Monte-Carlo policy gradient with reward-to-go and a learned baseline.

Episodes from all vector envs are collected until `episodes_per_update` have finished, then one gradient
step is taken on the policy (and the value baseline). Categorical policies serve discrete actions;
Gaussian policies, squashed by tanh or clipped to the bounds, serve continuous `Box` actions. Greedy
evaluation uses the mode (discrete) or the mean (continuous).

Truncated episodes: by default the return is cut at the time limit (`truncation: cut`), the plain
Monte-Carlo estimate, which needs no value function and is what REINFORCE is usually taught with; with a
value baseline, `truncation: bootstrap` adds γ^k·V(s_final) so states near a time limit are not
undervalued (the baseline is then a critic as well).

With memory (`recurrent: lstm | gru`) the policy and the value baseline each get a recurrent core, and an
update backpropagates through whole episodes (each from a zero state; the batch's episodes side by side,
padded to the longest). With `truncation: bootstrap` the baseline's core is stepped while acting as well,
so V(s_final) sees the episode's history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlagents import obs as batches
from rlagents.agents.base import nonfinite_loss
from rlagents.config import param
from rlagents.errors import ConfigError
from rlagents.networks import Net, build_backbone, build_core
from rlagents.policies import PolicyConfig, PolicyGradientAgent, explained_variance, normalize
from rlagents.recurrent import Memory, RecurrentCore, episode_features


@dataclass
class ReinforceConfig(PolicyConfig):
    """REINFORCE hyperparameters (after the shared network and acting settings)."""

    gamma: float = param(0.99, "discount factor", low=0.0, high=1.0)
    lr: float = param(1.0e-2, "policy learning rate (Adam)", low=0.0, low_open=True)
    lr_final: float | None = param(None, "policy learning rate at the end, decayed linearly (null = constant)",
                                   low=0.0)
    episodes_per_update: int = param(8, "finished episodes per gradient step", low=1)
    baseline: Literal["value", "none"] = param("value", "learned state-value baseline, or none")
    value_lr: float = param(1.0e-2, "value network learning rate (Adam)", low=0.0, low_open=True)
    value_steps: int = param(1, "value-network gradient steps per update", low=1)
    truncation: Literal["cut", "bootstrap"] = param("cut", "returns at a time limit: cut, or bootstrap "
                                                    "from the value baseline")
    normalize_advantages: bool = param(True, "scale advantages to zero mean, unit variance per batch")
    entropy_coef: float = param(0.0, "entropy bonus weight", low=0.0)
    max_grad_norm: float | None = param(1.0, "gradient norm clip (null = no clipping)", low=0.0, low_open=True)

    def validate(self) -> None:
        super().validate()
        if self.truncation == "bootstrap" and self.baseline != "value":
            raise ConfigError("truncation: bootstrap needs baseline: value (it bootstraps from V)")


def rewards_to_go(rewards: np.ndarray, gamma: float, bootstrap: float = 0.0) -> np.ndarray:
    """G_t = Σ_{k≥t} γ^{k−t} r_k (+ γ^{T−t} · bootstrap) for one episode."""
    out = np.empty(len(rewards), dtype=np.float64)
    running = bootstrap
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


class ReinforceAgent(PolicyGradientAgent):
    """Monte-Carlo policy gradient over vectorised envs, for discrete and continuous actions."""

    name = "reinforce"
    config_class = ReinforceConfig
    recorded_state = frozenset({"trajectories", "batch"})
    takes_masks = True  # acting and log-probabilities within the masks: `PolicyGradientAgent`

    def __init__(self, config: ReinforceConfig, obs_space: gym.Space, action_space: gym.Space, **kwargs: Any):
        super().__init__(config, obs_space, action_space, **kwargs)
        c = config

        def backbone() -> nn.Module:  # policy and value each get their own copy (of the pretrained CNN too)
            return build_backbone(c, obs_space)

        self.policy = self._init_policy(backbone())
        self.policy.to(self.device)
        # a frozen backbone is not trained
        self.policy_params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.policy_params, lr=c.lr)
        self.value: nn.Module | None = None
        if c.baseline == "value":
            vb = backbone()
            core = None if self.policy.recurrent is None else build_core(c, vb.features_dim)
            if core is None:
                self.value = nn.Sequential(vb, nn.Linear(vb.features_dim, 1)).to(self.device)
            else:
                self.value = Net(vb, nn.Linear(core.out_features, 1), core).to(self.device)
            self.value_params = [p for p in self.value.parameters() if p.requires_grad]
            self.value_optimizer = torch.optim.Adam(self.value_params, lr=c.value_lr)
        self._init_acting()
        self.rng = np.random.default_rng(self.seed)

        # per-env trajectories in progress, and finished episodes awaiting an update
        self._traj: list[dict[str, list]] = [self._new_traj() for _ in range(self.n_envs)]
        self._batch: list[dict[str, Any]] = []
        self.steps = 0
        self.updates = 0
        self.skipped_updates = 0
        self._metrics: dict[str, list[float]] = {}

    @staticmethod
    def _new_traj() -> dict[str, list]:
        return {"obs": [], "actions": [], "rewards": []}

    def memory_cores(self) -> dict[str, RecurrentCore]:
        cores = super().memory_cores()
        if self.config.truncation == "bootstrap":  # V(s_final) after the episode so far needs its state
            cores["value"] = self.value.core
        return cores

    def _step_other_cores(self, x: Any, memory: Memory, starts: np.ndarray) -> None:
        if "value" in memory.cores:
            memory.step("value", self.value.backbone(x), starts)

    def _final_value(self, final: Any, env: int) -> float:
        """V of an episode's final observation (normalised, a batch of one) after the episode's steps."""
        obs = batches.to_tensor(final, self.device)
        with torch.no_grad():
            if self.memory is None:
                return float(self.value(obs))
            state = tuple(s[env:env + 1] for s in self.memory.state("value", self.n_envs))
            features, _ = self.value.core.step(self.value.backbone(obs), state, torch.zeros(1, dtype=torch.bool))
            return float(self.value.head(features))

    def _outputs(self, net: nn.Module, obs: Any, lengths: list[int]) -> torch.Tensor:
        """`net`'s head outputs for the batch's episodes (rows one episode after the other)."""
        if self.memory is None:
            return net(obs)
        return net.head(episode_features(net.backbone, net.core, obs, lengths))

    # ------------------------------------------------------------ learning

    def observe(self, obs, actions, rewards, next_obs, terminated, truncated, *, mask=None, next_mask=None) -> None:
        """Append the step to each env's episode (with `mask`, the legal actions it was taken among, which the
        update's log-probabilities use); update once enough episodes have ended."""
        stored_actions = actions if self.discrete else self._last_raw
        if self.obs_norm is not None:
            # episodes are stored raw and normalised at update time with the statistics then current
            self.obs_norm.update(np.asarray(obs, np.float64))
        for i in range(self.n_envs):
            traj = self._traj[i]
            traj["obs"].append(batches.take(obs, i))
            traj["actions"].append(stored_actions[i])
            traj["rewards"].append(float(rewards[i]))
            if mask is not None:
                traj.setdefault("masks", []).append(mask[i])
            if terminated[i] or truncated[i]:
                bootstrap = 0.0
                if truncated[i] and not terminated[i] and self.config.truncation == "bootstrap":
                    final = batches.take(next_obs, slice(i, i + 1))
                    if self.obs_norm is not None:
                        final = self.obs_norm(final)
                    bootstrap = self._final_value(final, i)
                traj["returns"] = rewards_to_go(np.asarray(traj["rewards"]), self.config.gamma, bootstrap)
                self._batch.append(traj)
                self._traj[i] = self._new_traj()
        self.episodes_ended(terminated | truncated)
        self.steps += self.n_envs
        if len(self._batch) >= self.config.episodes_per_update:
            self._update()

    def _update(self) -> None:
        c = self.config
        episodes, self._batch = self._batch, []
        raw_obs = batches.stack([o for ep in episodes for o in ep["obs"]])
        obs = batches.to_tensor(raw_obs if self.obs_norm is None else self.obs_norm(raw_obs), self.device)
        actions = torch.as_tensor(np.stack([a for ep in episodes for a in ep["actions"]]), device=self.device)
        returns = torch.as_tensor(np.concatenate([ep["returns"] for ep in episodes]), dtype=torch.float32,
                                  device=self.device)
        masks = None
        if self.discrete and all("masks" in ep for ep in episodes):
            masks = torch.as_tensor(np.stack([m for ep in episodes for m in ep["masks"]]), device=self.device)
        lengths = [len(ep["rewards"]) for ep in episodes]
        log_prob, entropy = self.distribution_terms(self._outputs(self.policy, obs, lengths), actions, masks)
        metrics: dict[str, float] = {}
        if self.value is not None:
            with torch.no_grad():
                baseline = self._outputs(self.value, obs, lengths).squeeze(1)
            advantages = returns - baseline
            metrics["values/explained_variance"] = explained_variance(baseline, returns)
        else:
            advantages = returns.clone()
        if c.normalize_advantages:
            advantages = normalize(advantages)
        lr_progress = min(1.0, self.steps / max(1, self.total_steps))
        if c.lr_final is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = c.lr + (c.lr_final - c.lr) * lr_progress
        policy_loss = -(log_prob * advantages).mean()
        loss = policy_loss - c.entropy_coef * entropy.mean()
        if nonfinite_loss(loss, "policy loss", c.nonfinite, self.updates + 1, self.steps):
            self.skipped_updates += 1
            return
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = c.max_grad_norm if c.max_grad_norm is not None else float("inf")
        grad_norm = nn.utils.clip_grad_norm_(self.policy_params, clip)
        self.optimizer.step()
        metrics.update({"losses/policy_loss": policy_loss.item(), "losses/entropy": entropy.mean().item(),
                        "losses/grad_norm": float(grad_norm)})
        if self.value is not None:
            for _ in range(c.value_steps):
                value_loss = nn.functional.mse_loss(self._outputs(self.value, obs, lengths).squeeze(1), returns)
                self.value_optimizer.zero_grad(set_to_none=True)
                value_loss.backward()
                nn.utils.clip_grad_norm_(self.value_params, clip)
                self.value_optimizer.step()
            metrics["losses/value_loss"] = value_loss.item()
        self.updates += 1
        self.record(metrics)

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                                 "counters": {"steps": self.steps, "updates": self.updates},
                                 "rng": self.rng.bit_generator.state,
                                 # episodes in flight and finished ones awaiting the next update
                                 "trajectories": [_pack_episode(t) for t in self._traj],
                                 "batch": [_pack_episode(t) for t in self._batch]}
        if self.value is not None:
            state["value"] = self.value.state_dict()
            state["value_optimizer"] = self.value_optimizer.state_dict()
        if self.obs_norm is not None:
            state["obs_norm"] = self.obs_norm.state_dict()
        return self.memory_state(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.value is not None:
            self.value.load_state_dict(state["value"])
            self.value_optimizer.load_state_dict(state["value_optimizer"])
        if self.obs_norm is not None:
            self.obs_norm.load_state_dict(state["obs_norm"])
        self.steps, self.updates = int(state["counters"]["steps"]), int(state["counters"]["updates"])
        self.rng.bit_generator.state = state["rng"]
        self.load_memory(state)
        trajectories = [_unpack_episode(t) for t in state.get("trajectories", [])]
        self._traj = trajectories if len(trajectories) == self.n_envs else [self._new_traj() for _ in self._traj]
        self._batch = [_unpack_episode(t) for t in state.get("batch", [])]

    def drop_episodes(self, envs: np.ndarray) -> None:
        super().drop_episodes(envs)
        for i in envs:
            self._traj[int(i)] = self._new_traj()


def _stack_rows(rows: list) -> Any:
    if rows and isinstance(rows[0], dict):  # Dict observations: one array per key
        return {key: np.stack([row[key] for row in rows]) for key in rows[0]}
    return np.stack(rows) if rows else None


def _unstack_rows(stacked: Any, n: int) -> list:
    if stacked is None:
        return []
    if isinstance(stacked, dict):
        return [{key: value[j] for key, value in stacked.items()} for j in range(n)]
    return list(np.asarray(stacked))


def _pack_episode(traj: dict[str, Any]) -> dict[str, Any]:
    """An episode's lists of rows as stacked arrays (one tensor per field in the checkpoint, not per step)."""
    packed = {"obs": _stack_rows(traj["obs"]), "actions": _stack_rows(traj["actions"]),
              "rewards": np.asarray(traj["rewards"], dtype=np.float64), "length": len(traj["rewards"])}
    if "returns" in traj:
        packed["returns"] = traj["returns"]
    if traj.get("masks"):
        packed["masks"] = np.stack(traj["masks"])
    return packed


def _unpack_episode(packed: dict[str, Any]) -> dict[str, Any]:
    n = int(packed["length"])
    traj = {"obs": _unstack_rows(packed["obs"], n), "actions": _unstack_rows(packed["actions"], n),
            "rewards": [float(r) for r in np.asarray(packed["rewards"])]}
    if "returns" in packed:
        traj["returns"] = np.asarray(packed["returns"])
    if "masks" in packed:
        traj["masks"] = list(np.asarray(packed["masks"], dtype=bool))
    return traj


AGENT = ReinforceAgent
