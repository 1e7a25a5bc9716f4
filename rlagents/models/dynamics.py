"""An ensemble of small MLPs that predicts, from (state, action), the change of state, the reward and the
probability that the episode terminates, trained on the agent's own transitions.

All members run as one batched computation: weights are stacked along a leading member axis and every layer
is one `baddbmm`, so evaluating E members on B inputs costs a few tensor calls, not E Python loops. Inputs and
the regression targets are normalised with statistics of the training data (re-estimated each training round).
"""

from __future__ import annotations

import math
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
