"""Mapping observations to one integer state index, so tabular agents can learn on them: continuous (Box)
observations by binning (`Discretiser`) or by tile coding (`TileCoder`: several offset grids, one state index
per grid), finite structured ones by indexing (`SpaceIndexer`).

Each dimension is cut into `bins[d]` equal-width bins over [low[d], high[d]]; values beyond the clip range
fall into the first or last bin. The per-dimension bin indices are combined into one index, row-major
(the last dimension varies fastest), so a table with `prod(bins)` rows covers every state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

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


class TileCoder:
    """Vectorised Box → one state index per tiling: `tilings` grids of `bins[d]` tiles of equal width per
    dimension over [low[d], high[d]], each shifted against the first by a different fraction of a tile.

    Tiling t is shifted by (t · (2d + 1) mod tilings) / tilings of a tile width in dimension d (the odd,
    asymmetric displacements Sutton & Barto recommend, section 9.5.4), so the tilings' edges interleave. Each
    tiling has one tile more per dimension than `bins` so that the shifted grid still covers the range; the
    tilings' indices are disjoint (tiling t's rows follow tiling t-1's), so `n_states` rows hold them all.
    """

    def __init__(self, bins: Sequence[int], low: Sequence[float], high: Sequence[float], tilings: int):
        self.grid = Discretiser(bins, low, high)  # validates; its bins are the tiles per tiling, unshifted
        if tilings < 2:
            raise ConfigError(f"tilings: tile coding needs at least 2 tilings, got {tilings}")
        self.tilings = int(tilings)
        self.bins = self.grid.bins
        self.low, self.high, self.scale = self.grid.low, self.grid.high, self.grid.scale
        tiles = self.bins + 1
        self.max_index = tiles - 1
        self.strides = np.concatenate([np.cumprod(tiles[::-1])[::-1][1:], [1]]).astype(np.int64)
        self.per_tiling = int(np.prod(tiles))
        self.n_states = self.tilings * self.per_tiling
        dims = np.arange(len(self.bins))
        # offsets in tile widths, (tilings, dims); added to the scaled observation before flooring
        self.offsets = (np.arange(self.tilings)[:, None] * (2 * dims + 1)[None, :] % self.tilings) / self.tilings
        self.bases = np.arange(self.tilings, dtype=np.int64) * self.per_tiling

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """State indices (shape (n, tilings)) of a batch of observations (shape (n, dims))."""
        scaled = (np.asarray(obs, dtype=np.float64) - self.low) * self.scale  # (n, dims), in tile widths
        idx = np.floor(scaled[:, None, :] + self.offsets[None, :, :]).astype(np.int64)  # (n, tilings, dims)
        np.clip(idx, 0, self.max_index, out=idx)
        return idx @ self.strides + self.bases


def discretiser_for(space: gym.spaces.Box, bins: Sequence[int], clip_low: Sequence[float],
                    clip_high: Sequence[float], agent: str, tilings: int = 1) -> Discretiser | TileCoder:
    """A discretiser for `space` from config values (a tile coder with `tilings` > 1); clip ranges default to
    the space's bounds where finite.

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
    return Discretiser(bins, low, high) if tilings <= 1 else TileCoder(bins, low, high, tilings)


class SpaceIndexer:
    """Vectorised map from a finite structured space (`Tuple`, `Dict`, `MultiDiscrete`, `MultiBinary`, nested,
    of discrete parts) to one state index.

    The space is flattened into discrete components in its own order (a Tuple's elements, a Dict's keys,
    a MultiDiscrete's entries row-major); each component `d` takes `sizes[d]` values from `starts[d]`, and
    the state is their row-major mixed-radix number, as `Discretiser` combines bins.
    """

    def __init__(self, space: gym.Space, agent: str):
        names: list[str] = []
        sizes: list[int] = []
        starts: list[int] = []
        _components(space, agent, "", names, sizes, starts)
        self.space = space
        self.names = names
        self.bins = np.asarray(sizes, dtype=np.int64)  # named as Discretiser's, for views of the table
        self.starts = np.asarray(starts, dtype=np.int64)
        self.n_states = math.prod(sizes)  # a Python int: may exceed int64 before the agent refuses it
        if self.n_states >= 2 ** 62:
            raise ConfigError(f"{agent}: {space} has {self.n_states:.3g} states, far too many for a table")
        self.strides = np.asarray([math.prod(sizes[d + 1:]) for d in range(len(sizes))], dtype=np.int64)

    def components(self, obs: Any) -> np.ndarray:
        """Component values (n, components), shifted to start at 0, of a batch of observations: a tuple or
        dict of arrays as vector envs batch them, or an (n, components) array."""
        columns = _columns(obs, self.space)
        return columns - self.starts

    def __call__(self, obs: Any) -> np.ndarray:
        """State indices (shape (n,)) of a batch of observations."""
        return self.components(obs) @ self.strides


def _components(space: gym.Space, agent: str, name: str, names: list[str], sizes: list[int],
                starts: list[int]) -> None:
    """Append the discrete components of `space` (depth first, in the space's order)."""
    if isinstance(space, gym.spaces.Discrete):
        names.append(name or "obs")
        sizes.append(int(space.n))
        starts.append(int(space.start))
    elif isinstance(space, gym.spaces.MultiDiscrete):
        for index in np.ndindex(space.nvec.shape):
            names.append(f"{name}[{','.join(map(str, index))}]")
            sizes.append(int(space.nvec[index]))
            starts.append(int(space.start[index]))
    elif isinstance(space, gym.spaces.MultiBinary):
        for index in np.ndindex(space.shape):
            names.append(f"{name}[{','.join(map(str, index))}]")
            sizes.append(2)
            starts.append(0)
    elif isinstance(space, gym.spaces.Tuple):
        for i, sub in enumerate(space.spaces):
            _components(sub, agent, f"{name}[{i}]", names, sizes, starts)
    elif isinstance(space, gym.spaces.Dict):
        for key, sub in space.spaces.items():
            _components(sub, agent, f"{name}.{key}" if name else str(key), names, sizes, starts)
    else:
        where = f" (at {name})" if name else ""
        raise UnsupportedSpaceError(f"{agent} needs a finite observation space: Discrete, MultiDiscrete, "
                                    f"MultiBinary, or a Tuple/Dict of them; {space}{where} is not")


def _columns(obs: Any, space: gym.Space) -> np.ndarray:
    """The components of a batch of observations of `space` as one int64 array (n, components)."""
    if isinstance(space, gym.spaces.Tuple):
        if isinstance(obs, np.ndarray):  # e.g. np.asarray of one Tuple observation of scalars, batched
            obs = [obs[:, i] for i in range(len(space.spaces))]
        return np.concatenate([_columns(o, s) for o, s in zip(obs, space.spaces)], axis=1)
    if isinstance(space, gym.spaces.Dict):
        return np.concatenate([_columns(obs[key], s) for key, s in space.spaces.items()], axis=1)
    array = np.asarray(obs, dtype=np.int64)
    return array.reshape(len(array), -1)



def finite_states(space: gym.Space, agent: str) -> tuple[int, SpaceIndexer | None]:
    """Number of states of a finite observation space and its indexer (None for `Discrete`, whose states
    are its values minus `start`); raises `UnsupportedSpaceError` for spaces with continuous parts."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n), None
    indexer = SpaceIndexer(space, agent)
    return indexer.n_states, indexer


def is_finite(space: gym.Space) -> bool:
    """Whether `space` is `Discrete` or a structured space whose parts are all discrete."""
    try:
        finite_states(space, "")
    except (UnsupportedSpaceError, ConfigError):
        return False
    return True
