"""Mapping continuous (Box) observations to one integer state index, so tabular agents can learn on them.

Each dimension is cut into `bins[d]` equal-width bins over [low[d], high[d]]; values beyond the clip range
fall into the first or last bin. The per-dimension bin indices are combined into one index, row-major
(the last dimension varies fastest), so a table with `prod(bins)` rows covers every state.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from rlagents.errors import ConfigError, UnsupportedSpaceError


class Discretiser:
    """Vectorised Box → state-index map with uniform bins per dimension."""

    def __init__(self, bins: Sequence[int], low: Sequence[float], high: Sequence[float]):
        self.bins = np.asarray(bins, dtype=np.int64)
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        if not (len(self.bins) == len(self.low) == len(self.high)):
            raise ConfigError(f"bins, clip_low and clip_high need one entry per dimension; got {len(self.bins)}, "
                              f"{len(self.low)} and {len(self.high)}")
        if (self.bins < 1).any():
            raise ConfigError(f"bins: every dimension needs at least 1 bin, got {tuple(bins)}")
        if not (self.high > self.low).all():
            raise ConfigError(f"clip_high must exceed clip_low in every dimension: {tuple(low)} vs {tuple(high)}")
        self.scale = self.bins / (self.high - self.low)
        self.max_index = self.bins - 1
        # row-major strides: state = Σ index[d] · Π bins[d+1:]
        self.strides = np.concatenate([np.cumprod(self.bins[::-1])[::-1][1:], [1]]).astype(np.int64)
        self.n_states = int(np.prod(self.bins))

    def bin_indices(self, obs: np.ndarray) -> np.ndarray:
        """Per-dimension bin indices of a batch `obs` of shape (n, dims), clipped to the valid bins."""
        idx = np.floor((np.asarray(obs, dtype=np.float64) - self.low) * self.scale).astype(np.int64)
        return np.clip(idx, 0, self.max_index, out=idx)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """State indices (shape (n,)) of a batch of observations (shape (n, dims))."""
        return self.bin_indices(obs) @ self.strides


def discretiser_for(space: gym.spaces.Box, bins: Sequence[int], clip_low: Sequence[float],
                    clip_high: Sequence[float], agent: str) -> Discretiser:
    """A discretiser for `space` from config values; clip ranges default to the space's bounds where finite.

    Raises `UnsupportedSpaceError` saying how to add a discretisation when `bins` is empty, and
    `ConfigError` when a dimension has no finite range to cut.
    """
    if len(space.shape) != 1:
        raise UnsupportedSpaceError(f"{agent} can discretise flat Box observations only, got shape {space.shape}")
    dims = space.shape[0]
    if not bins:
        example = ",".join(["10"] * dims)
        raise UnsupportedSpaceError(
            f"{agent} needs a discrete observation space, got continuous {space}: discretise it with "
            f"--set bins={example} (bins per dimension), plus --set clip_low=... --set clip_high=... for "
            f"unbounded dimensions, or add an entry with bins/clip_low/clip_high for this env to "
            f"configs/{agent}.yaml")
    if len(bins) == 1:
        bins = tuple(bins) * dims
    if len(bins) != dims:
        raise ConfigError(f"bins: {space} has {dims} dimensions, got {len(bins)} bin counts {tuple(bins)}")
    low = np.asarray(clip_low if clip_low else space.low, dtype=np.float64)
    high = np.asarray(clip_high if clip_high else space.high, dtype=np.float64)
    if low.shape != (dims,) or high.shape != (dims,):
        raise ConfigError(f"clip_low/clip_high need {dims} values each for {space}, got {len(low)} and {len(high)}")
    unbounded = [d for d in range(dims) if not (np.isfinite(low[d]) and np.isfinite(high[d]))]
    if unbounded:
        raise ConfigError(f"observation dimensions {unbounded} of {space} are unbounded: give finite ranges "
                          f"with --set clip_low=... --set clip_high=... ({dims} values each)")
    return Discretiser(bins, low, high)
