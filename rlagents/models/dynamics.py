"""An ensemble of small MLPs that predicts, from (state, action), the change of state, the reward and the
probability that the episode terminates, trained on the agent's own transitions.

All members run as one batched computation: weights are stacked along a leading member axis and every layer
is one `baddbmm`, so evaluating E members on B inputs costs a few tensor calls, not E Python loops. Inputs and
the regression targets are normalised with statistics of the training data (re-estimated each training round).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class EnsembleMLP(nn.Module):
    """`members` independent MLPs evaluated together: input (E, B, in) → output (E, B, out)."""

    def __init__(self, members: int, in_dim: int, out_dim: int, hidden: tuple[int, ...], generator: torch.Generator):
        super().__init__()
        sizes = (in_dim, *hidden, out_dim)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)  # PyTorch's nn.Linear initialisation, per member
            w = (torch.rand(members, fan_in, fan_out, generator=generator) * 2 - 1) * bound
            b = (torch.rand(members, 1, fan_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = torch.nn.functional.silu(x)
        return x


class Normaliser:
    """Mean and standard deviation of a feature vector, estimated from data; std floored to avoid blow-ups."""

    def __init__(self, dim: int):
        self.mean = torch.zeros(dim)
        self.std = torch.ones(dim)

    def fit(self, x: torch.Tensor, min_std: float = 1e-4) -> None:
        self.mean = x.mean(dim=0)
        self.std = x.std(dim=0).clamp_min(min_std) if len(x) > 1 else torch.ones_like(self.mean)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.clone(), "std": self.std.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.std = state["mean"].clone().float(), state["std"].clone().float()


class DynamicsEnsemble:
    """The learned model: (s, a features) → (Δs, r, P(terminated)), with normalisation and training.

    `action_dim` is the width of the action features (one-hot for discrete actions, scaled to [-1, 1] for
    continuous ones). Head losses: MSE on normalised Δs and reward, binary cross-entropy on termination.
    """

    def __init__(self, obs_dim: int, action_dim: int, *, members: int, hidden: tuple[int, ...], lr: float,
                 weight_decay: float, generator: torch.Generator):
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.net = EnsembleMLP(members, obs_dim + action_dim, obs_dim + 2, hidden, generator)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        self.in_norm = Normaliser(obs_dim + action_dim)
        self.delta_norm = Normaliser(obs_dim)
        self.reward_norm = Normaliser(1)
        self.generator = generator
        self.members = members

    # ------------------------------------------------------------ prediction

    def predict(self, obs: torch.Tensor, action_features: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-member predictions for inputs of shape (E, B, ·): next state, reward, P(terminated).

        Pass the same batch to every member by expanding a (B, ·) tensor to (E, B, ·)."""
        x = (torch.cat([obs, action_features], dim=-1) - self.in_norm.mean) / self.in_norm.std
        out = self.net(x)
        d = self.obs_dim
        next_obs = obs + out[..., :d] * self.delta_norm.std + self.delta_norm.mean
        reward = out[..., d] * self.reward_norm.std[0] + self.reward_norm.mean[0]
        return next_obs, reward, torch.sigmoid(out[..., d + 1])

    def rollout_net(self) -> "RolloutNet":
        """A frozen copy of the ensemble with the normalisers folded into its weights, for fast planning."""
        return RolloutNet(self)

    # ------------------------------------------------------------ training

    def fit_normalisers(self, obs: torch.Tensor, action_features: torch.Tensor, next_obs: torch.Tensor,
                        rewards: torch.Tensor) -> None:
        self.in_norm.fit(torch.cat([obs, action_features], dim=1))
        self.delta_norm.fit(next_obs - obs)
        self.reward_norm.fit(rewards[:, None])

    def losses(self, obs: torch.Tensor, action_features: torch.Tensor, next_obs: torch.Tensor,
               rewards: torch.Tensor, terminated: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-head losses (each a mean over members and rows) for inputs of shape (E, B, ·) or (B, ·)."""
        if obs.dim() == 2:
            obs, action_features, next_obs, rewards, terminated = (
                t.expand(self.members, *t.shape) for t in (obs, action_features, next_obs, rewards, terminated))
        x = (torch.cat([obs, action_features], dim=-1) - self.in_norm.mean) / self.in_norm.std
        out = self.net(x)
        d = self.obs_dim
        delta_target = (next_obs - obs - self.delta_norm.mean) / self.delta_norm.std
        reward_target = (rewards - self.reward_norm.mean[0]) / self.reward_norm.std[0]
        return {"dynamics": nn.functional.mse_loss(out[..., :d], delta_target),
                "reward": nn.functional.mse_loss(out[..., d], reward_target),
                "termination": nn.functional.binary_cross_entropy_with_logits(out[..., d + 1], terminated)}

    def train_steps(self, data: tuple[torch.Tensor, ...], steps: int, batch_size: int) -> dict[str, float]:
        """`steps` Adam steps; every member draws its own minibatches (with replacement), so members differ
        in data as well as initialisation. Returns the mean training loss per head."""
        n = len(data[0])
        totals = {"dynamics": 0.0, "reward": 0.0, "termination": 0.0}
        index = torch.randint(n, (steps, self.members, batch_size), generator=self.generator)
        sums = None
        for i in range(steps):
            batch = [t[index[i]] for t in data]  # (E, batch, ·)
            heads = self.losses(*batch)
            loss = heads["dynamics"] + heads["reward"] + heads["termination"]
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            stacked = torch.stack([h.detach() for h in heads.values()])
            sums = stacked if sums is None else sums + stacked
        if sums is not None:
            totals = dict(zip(totals, (sums / steps).tolist()))
        return totals

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "in_norm": self.in_norm.state_dict(), "delta_norm": self.delta_norm.state_dict(),
                "reward_norm": self.reward_norm.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.in_norm.load_state_dict(state["in_norm"])
        self.delta_norm.load_state_dict(state["delta_norm"])
        self.reward_norm.load_state_dict(state["reward_norm"])


class RolloutNet:
    """The ensemble rearranged for many-step rollouts in normalised state space, with fewest tensor calls.

    Folding the normalisers into the weights turns one model step into: first layer (state part; the action
    part is precomputed for the whole horizon at once), the hidden layers, and a last layer whose outputs are
    directly the normalised state change, the reward and the logit of *not* terminating.
    """

    def __init__(self, model: DynamicsEnsemble):
        with torch.no_grad():
            d = model.obs_dim
            ws = [w.detach().clone() for w in model.net.weights]
            bs = [b.detach().clone() for b in model.net.biases]
            in_mean, in_std = model.in_norm.mean, model.in_norm.std
            self.state_mean, self.state_std = in_mean[:d].clone(), in_std[:d].clone()
            first = ws[0]
            self.w_state = first[:, :d]  # (E, d, h)
            # action rows take normalised action features: fold (a − mean)/std into the weights and bias
            self.w_action = first[:, d:] / in_std[d:, None]
            self.b_first = bs[0] - ((in_mean[d:] / in_std[d:]) @ first[:, d:])[:, None]  # (E, 1, h)
            self.hidden = list(zip(ws[1:-1], bs[1:-1]))
            w_last, b_last = ws[-1].clone(), bs[-1].clone()
            scale = torch.cat([model.delta_norm.std / self.state_std, model.reward_norm.std, -torch.ones(1)])
            shift = torch.cat([model.delta_norm.mean / self.state_std, model.reward_norm.mean, torch.zeros(1)])
            self.w_last = w_last * scale
            self.b_last = b_last * scale + shift
        self.obs_dim = d
        self.members = model.members

    def action_part(self, features: torch.Tensor) -> torch.Tensor:
        """First-layer contribution (H, E, R, h) of action features (H, R, A), bias included; step-major so
        that each step's slice is contiguous."""
        h, r, a = features.shape
        out = torch.matmul(features.reshape(1, h * r, a), self.w_action) + self.b_first
        return out.reshape(self.members, h, r, -1).transpose(0, 1).contiguous()

    def step(self, state: torch.Tensor, action_part: torch.Tensor) -> torch.Tensor:
        """One model step of every member: normalised states (E, R, d) and the action part (E, R, h) of one
        step → (E, R, d + 2): the normalised state change, the reward and the logit of not terminating."""
        silu = torch.nn.functional.silu
        x = silu(torch.baddbmm(action_part, state, self.w_state))
        for w, b in self.hidden:
            x = silu(torch.baddbmm(b, x, w))
        return torch.baddbmm(self.b_last, x, self.w_last)

    def one_step_backups(self, states: torch.Tensor, features: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every member's one-step prediction for K alternative actions of each state: normalised states
        (R, d) and action features (K, R, A) → rewards (K, E, R), P(not terminated) (K, E, R) and normalised
        next states (K, E, R, d)."""
        k, r, _ = features.shape
        e, d = self.members, self.obs_dim
        part = self.action_part(features).transpose(0, 1).reshape(e, k * r, -1)  # (E, K·R, h)
        state = states.repeat(k, 1).expand(e, k * r, d)
        out = self.step(state, part)
        nxt = (state + out[..., :d]).reshape(e, k, r, d).transpose(0, 1)
        return (out[..., d].reshape(e, k, r).transpose(0, 1), torch.sigmoid(out[..., d + 1]).reshape(e, k, r)
                .transpose(0, 1), nxt)

    def returns(self, obs: torch.Tensor, action_part: torch.Tensor, discounts: torch.Tensor,
                value: "ValueNet | None" = None, final_discount: float = 0.0, novelty: float = 0.0) -> torch.Tensor:
        """Discounted predicted returns (E, R) from states (R, d), each member following its own trajectory;
        rewards are weighted by the predicted probability of not having terminated before them. With `value`,
        the value of the last state, discounted by `final_discount`, is added for the steps beyond. With
        `novelty` > 0, every step also earns `novelty` times the members' disagreement about its state change
        (their std, in units of the state's std, averaged over dimensions): a bonus for where the model is
        unsure, which directs exploration to what it has not seen."""
        horizon, e, r, _ = action_part.shape
        state = ((obs - self.state_mean) / self.state_std).expand(e, r, self.obs_dim)
        total = torch.zeros(e, r)
        alive = torch.ones(e, r)
        d = self.obs_dim
        for t in range(horizon):
            out = self.step(state, action_part[t])
            state = state + out[..., :d]
            reward = out[..., d]
            if novelty and e > 1:
                reward = reward + novelty * out[..., :d].std(dim=0).mean(dim=-1)
            total.addcmul_(alive, reward, value=float(discounts[t]))
            alive = alive * torch.sigmoid(out[..., d + 1])
        if value is not None:
            total.addcmul_(alive, value(state), value=final_discount)
        return total


Backups = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


class ValueNet(nn.Module):
    """V(s) of the data's policy, fitted by TD on real transitions, used as MPC's value beyond the horizon.

    It takes normalised states (the dynamics model's normaliser) and outputs values in units of
    `scale` = (|mean reward| + reward std) / (1 − γ), so its targets stay of order one on any env."""

    def __init__(self, obs_dim: int, hidden: tuple[int, ...], lr: float, generator: torch.Generator):
        super().__init__()
        self.net = EnsembleMLP(1, obs_dim, 1, hidden, generator)
        self.target = EnsembleMLP(1, obs_dim, 1, hidden, generator)
        self.target.load_state_dict(self.net.state_dict())
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.scale = 1.0
        self.low, self.high = -1e9, 1e9
        self.generator = generator

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Values of normalised states (..., d), in reward units, clamped to what the rewards seen allow (a
        net extrapolating to unvisited states must not promise more than any return seen could give)."""
        shape = states.shape[:-1]
        v = self.net(states.reshape(1, -1, states.shape[-1])).reshape(shape)
        return v.clamp(self.low, self.high) * self.scale

    def fit(self, states: torch.Tensor, rewards: torch.Tensor, next_states: torch.Tensor, terminated: torch.Tensor,
            gamma: float, reward_mean: float, reward_std: float, steps: int, batch_size: int,
            target_every: int, backups: Backups | None = None) -> float:
        """`steps` TD(0) regression steps on normalised transitions; the target net is copied every
        `target_every` steps. Returns the mean TD loss (in scaled units).

        Without `backups` the targets are the data's own (r + γ V(s')): V of the policies that collected
        it. With `backups(rows)` → (rewards (K, E, B), P(not terminated) (K, E, B), next states (K, E, B, d),
        valid (K, B)), the learned model's predictions for K other actions of those rows, each target is the
        best of the data's target and the members' most pessimistic backup of every valid alternative: V of
        the greedy policy one step ahead (fitted value iteration, the model filling in the actions not
        taken)."""
        horizon = 1.0 / (1.0 - gamma) if gamma < 1.0 else 1e3
        self.scale = (abs(reward_mean) + reward_std) * horizon
        # any discounted return lies between min(0, r_min) and max(0, r_max) times 1 / (1 − γ)
        self.low = min(0.0, float(rewards.min())) * horizon / self.scale
        self.high = max(0.0, float(rewards.max())) * horizon / self.scale
        n = len(states)
        index = torch.randint(n, (steps, batch_size), generator=self.generator)
        total = torch.zeros(())
        for i in range(steps):
            rows = index[i]
            with torch.no_grad():
                nxt = self.target(next_states[rows][None])[0, :, 0]
                if backups is not None:  # clamped like `forward`, or the maximum feeds on values out of range
                    nxt = nxt.clamp(self.low, self.high)
                target = rewards[rows] / self.scale + gamma * (1.0 - terminated[rows]) * nxt
                if backups is not None:
                    target = torch.maximum(target, self._best_backup(backups(rows), gamma))
            pred = self.net(states[rows][None])[0, :, 0]
            loss = nn.functional.mse_loss(pred, target)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += loss.detach()
            if (i + 1) % target_every == 0:
                self.target.load_state_dict(self.net.state_dict())
        self.target.load_state_dict(self.net.state_dict())
        return float(total) / max(steps, 1)

    def _best_backup(self, backup: tuple[torch.Tensor, ...], gamma: float) -> torch.Tensor:
        """The best valid alternative's backup (B,) in scaled units, −inf where none is valid. Each alternative
        is worth its lowest backup over the members, so that the maximum over actions does not turn the model's
        errors into optimism (with the members' mean, seed 0 of Acrobot-v1 valued its start states at about
        −40 where its greedy policy needed ~100 steps). The target net's values of predicted states are clamped
        like `forward`'s."""
        rewards, alive, nxt, valid = backup
        k, e, b, d = nxt.shape
        v = self.target(nxt.reshape(1, -1, d)).reshape(k, e, b).clamp(self.low, self.high)
        q = (rewards / self.scale + gamma * alive * v).min(dim=1).values  # (K, B): the most pessimistic member
        return q.masked_fill(~valid, -torch.inf).max(dim=0).values

    def state_dict_all(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scale": self.scale, "low": self.low, "high": self.high}

    def load_state_dict_all(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scale, self.low, self.high = float(state["scale"]), float(state["low"]), float(state["high"])
