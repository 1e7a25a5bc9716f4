"""Greedy policies as torch modules, from raw observations to actions: what `rlagents.export` turns into ONNX.

An agent's `export_module()` composes these pieces around its own networks. Each piece repeats, with torch
ops that export to ONNX, exactly what the agent does in NumPy when it acts greedily (same dtypes, same order
of operations), so the exported graph picks the same actions; `rlagents.export` checks that before it writes
a file. Observations arrive as the env gives them (uint8 pixels, float64 vectors, int64 discrete states):
any scaling happens inside the networks or here.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlagents.discretise import TileCoder

# the agents' `RunningNorm` (REINFORCE's, PPO's) divides by sqrt(var + this); the export check catches a drift
NORM_EPS = 1e-8


class Argmax(nn.Module):
    """Index of the largest score per row (the first one on ties, as NumPy's and ONNX's argmax), plus an offset
    for action spaces that start elsewhere than 0."""

    def __init__(self, offset: int = 0):
        super().__init__()
        self.offset = int(offset)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        actions = scores.argmax(dim=1)
        return actions + self.offset if self.offset else actions


class MaskedArgmax(nn.Module):
    """A discrete greedy policy (`scores` module, then `Argmax`) restricted to legal actions, as masked agents act
    (`rlagents.masks`): illegal scores become −inf before the argmax, and a row without any legal action counts
    every action legal. The mask is the graph's `action_mask` input (masks from the env's info) or the
    observation's `mask_key` entry (masks in a `Dict` observation)."""

    def __init__(self, scores: nn.Module, offset: int = 0, mask_key: str | None = None):
        super().__init__()
        self.scores = scores
        self.offset = int(offset)
        self.mask_key = mask_key

    def forward(self, obs, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.mask_key is not None:
            mask = obs[self.mask_key]
        legal = mask != 0
        legal = legal | ~legal.any(dim=1, keepdim=True)
        scores = self.scores(obs)
        actions = torch.where(legal, scores, torch.full_like(scores, -torch.inf)).argmax(dim=1)
        return actions + self.offset if self.offset else actions


def with_action_mask(policy: nn.Module, mask_key: str | None) -> MaskedArgmax:
    """`policy` (an `nn.Sequential` ending in `Argmax`, as every discrete agent's `export_module`) with its argmax
    restricted to legal actions (`MaskedArgmax`)."""
    if not (isinstance(policy, nn.Sequential) and isinstance(policy[-1], Argmax)):
        raise TypeError(f"cannot add an action mask to {type(policy).__name__}: expected scores then Argmax")
    return MaskedArgmax(nn.Sequential(*policy[:-1]), policy[-1].offset, mask_key)


class Normalise(nn.Module):
    """`(obs − mean) / sqrt(var + eps)` clipped to ±clip, in float64 like the agents' running normalisers (ours
    and SB3's VecNormalize), then float32."""

    def __init__(self, mean: np.ndarray, var: np.ndarray, clip: float, eps: float = NORM_EPS):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float64)))
        self.register_buffer("std", torch.as_tensor(np.sqrt(np.asarray(var, np.float64) + eps)))
        self.clip = float(clip)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs.double() - self.mean) / self.std).clamp(-self.clip, self.clip).float()


class BoundedMean(nn.Module):
    """A Gaussian policy's greedy action: the mean part of the head's output, squashed by tanh into the action
    bounds (`low + (tanh(u) + 1) · 0.5 · (high − low)`) or clipped to them."""

    def __init__(self, act_dim: int, low: np.ndarray, high: np.ndarray, squash: str):
        super().__init__()
        if squash not in ("tanh", "clip"):
            raise ValueError(f"squash must be tanh or clip, got {squash!r}")
        self.act_dim = int(act_dim)
        self.squash = squash
        self.register_buffer("low", torch.as_tensor(np.asarray(low, np.float32)))
        self.register_buffer("high", torch.as_tensor(np.asarray(high, np.float32)))
        self.register_buffer("span", torch.as_tensor(np.asarray(high, np.float32) - np.asarray(low, np.float32)))

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        mean = out[:, : self.act_dim]
        if self.squash == "tanh":
            return self.low + (torch.tanh(mean) + 1.0) * 0.5 * self.span
        return torch.minimum(torch.maximum(mean, self.low), self.high)


class Discretise(nn.Module):
    """Box observations → one table row, as `rlagents.discretise.Discretiser` computes it: bins of equal width
    over [low, high] per dimension (in float64), out-of-range values in the edge bins, indices combined
    row-major."""

    def __init__(self, low: np.ndarray, scale: np.ndarray, max_index: np.ndarray, strides: np.ndarray):
        super().__init__()
        self.register_buffer("low", torch.as_tensor(np.asarray(low, np.float64)))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, np.float64)))
        self.register_buffer("max_index", torch.as_tensor(np.asarray(max_index, np.int64)))
        self.register_buffer("strides", torch.as_tensor(np.asarray(strides, np.int64)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.reshape(obs.shape[0], -1).double()
        index = torch.floor((x - self.low) * self.scale).long()
        index = torch.minimum(torch.maximum(index, torch.zeros_like(index)), self.max_index)
        return (index * self.strides).sum(dim=1)


class TiledValues(nn.Module):
    """Box observations → action values under tile coding, as `rlagents.discretise.TileCoder` and the tabular
    agent compute them: per tiling, the shifted grid's tile (in float64), and the tiles' table rows summed in
    tiling order (the agent's order, so the sums are the same to the bit)."""

    def __init__(self, coder: TileCoder, table: np.ndarray):
        super().__init__()
        self.register_buffer("low", torch.as_tensor(np.asarray(coder.low, np.float64)))
        self.register_buffer("scale", torch.as_tensor(np.asarray(coder.scale, np.float64)))
        self.register_buffer("offsets", torch.as_tensor(np.asarray(coder.offsets, np.float64)))
        self.register_buffer("max_index", torch.as_tensor(np.asarray(coder.max_index, np.int64)))
        self.register_buffer("strides", torch.as_tensor(np.asarray(coder.strides, np.int64)))
        self.register_buffer("bases", torch.as_tensor(np.asarray(coder.bases, np.int64)))
        self.register_buffer("table", torch.as_tensor(np.ascontiguousarray(table, np.float64)))
        self.tilings = int(coder.tilings)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        scaled = (obs.reshape(obs.shape[0], -1).double() - self.low) * self.scale
        index = torch.floor(scaled.unsqueeze(1) + self.offsets).long()  # (n, tilings, dims)
        index = torch.minimum(torch.maximum(index, torch.zeros_like(index)), self.max_index)
        rows = (index * self.strides).sum(dim=2) + self.bases  # (n, tilings)
        values = self.table.index_select(0, rows[:, 0])
        for t in range(1, self.tilings):
            values = values + self.table.index_select(0, rows[:, t])
        return values


class Shift(nn.Module):
    """Discrete observations → table rows: `obs − start` as int64 (spaces that start elsewhere than 0)."""

    def __init__(self, start: int = 0):
        super().__init__()
        self.start = int(start)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        states = obs.long().reshape(-1)
        return states - self.start if self.start else states


class TableLookup(nn.Module):
    """The rows of a value table (states × actions, float64) for a batch of state indices."""

    def __init__(self, table: np.ndarray):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(np.ascontiguousarray(table, np.float64)))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.table.index_select(0, states)


def table_policy(table: np.ndarray, *, discretiser=None, obs_start: int = 0, action_start: int = 0) -> nn.Module:
    """The greedy policy of a value table: observation → row (a `Discretiser`'s bins, or the discrete state
    shifted by `obs_start`; a `TileCoder`'s tiles, their rows summed) → the row's argmax (+ `action_start`)."""
    if isinstance(discretiser, TileCoder):  # the table's rows are tiles, summed per state
        return nn.Sequential(TiledValues(discretiser, table), Argmax(action_start))
    if discretiser is not None:
        rows: nn.Module = Discretise(discretiser.low, discretiser.scale, discretiser.max_index, discretiser.strides)
    else:
        rows = Shift(obs_start)
    return nn.Sequential(rows, TableLookup(table), Argmax(action_start))


def greedy_policy(network: nn.Module, action_space: gym.Space, *, squash: str = "tanh", obs_norm=None) -> nn.Module:
    """A policy-gradient agent's greedy policy: [its running observation normaliser (anything with `mean`,
    `var` and `clip`)] → `network` (observations → head outputs) → argmax for `Discrete` actions, or the mean
    squashed (`squash="tanh"`) or clipped into the bounds of `Box` actions."""
    pieces = [] if obs_norm is None else [Normalise(obs_norm.mean, obs_norm.var, obs_norm.clip)]
    pieces.append(network)
    if isinstance(action_space, gym.spaces.Discrete):
        pieces.append(Argmax())  # as the agents act: the policy's index, whatever the space's start
    else:
        pieces.append(BoundedMean(int(action_space.shape[0]), action_space.low, action_space.high, squash))
    return nn.Sequential(*pieces)
