"""Observation batches that are arrays, dicts of arrays for `Dict` spaces (one array per key), or tuples of
arrays for `Tuple` spaces (one per element), as Gymnasium's vector envs batch them.

Agents and buffers go through these few functions so that the same code serves `Box`, `Discrete`, `Dict`
and `Tuple` observations; for plain arrays each is one numpy operation. Only `to_tensor` needs torch, and imports
it itself: environments and exported ONNX policies (`rlagents.onnx_policy`) run without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

if TYPE_CHECKING:
    import torch

Obs = Any  # np.ndarray, dict[str, np.ndarray] or tuple[np.ndarray, ...] (nested for nested spaces)


def batch_len(obs: Obs) -> int:
    """Number of rows of a batch."""
    if isinstance(obs, dict):
        return batch_len(next(iter(obs.values())))
    if isinstance(obs, tuple):
        return batch_len(obs[0])
    return len(obs)


def take(obs: Obs, index: Any) -> Obs:
    """Rows `index` (an int, a slice or an index array) of a batch or storage."""
    if isinstance(obs, dict):
        return {key: take(value, index) for key, value in obs.items()}
    if isinstance(obs, (tuple, list)):  # a list: a Tuple batch read back from a checkpoint's JSON
        return tuple(take(value, index) for value in obs)
    return obs[index]


def put(storage: Obs, index: Any, value: Obs) -> None:
    """Write `value` into rows `index` of `storage`."""
    if isinstance(storage, dict):
        for key, array in storage.items():
            put(array, index, value[key])
    elif isinstance(storage, tuple):
        for array, part in zip(storage, value):
            put(array, index, part)
    else:
        storage[index] = value


def stack(rows: list) -> Obs:
    """One batch from a list of single observations (arrays, or dicts of arrays)."""
    if isinstance(rows[0], dict):
        return {key: stack([row[key] for row in rows]) for key in rows[0]}
    if isinstance(rows[0], tuple):
        return tuple(stack([row[i] for row in rows]) for i in range(len(rows[0])))
    return np.stack(rows)


def copy(obs: Obs) -> Obs:
    if isinstance(obs, dict):
        return {key: copy(value) for key, value in obs.items()}
    if isinstance(obs, tuple):
        return tuple(copy(value) for value in obs)
    return obs.copy()


def allocate(space: gym.Space, capacity: int) -> Obs:
    """Zeroed storage for `capacity` observations of `space` (int64 for Discrete, per key for Dict, per
    element for Tuple)."""
    if isinstance(space, gym.spaces.Dict):
        return {key: allocate(sub, capacity) for key, sub in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(allocate(sub, capacity) for sub in space.spaces)
    if isinstance(space, gym.spaces.Discrete):
        return np.zeros(capacity, dtype=np.int64)
    return np.zeros((capacity, *space.shape), dtype=space.dtype)


def to_tensor(obs: Obs, device: torch.device) -> Any:
    """A tensor (or dict of tensors) sharing memory with the numpy batch where the device allows."""
    import torch  # here, not at the top: see the module docstring (once loaded, this is a dict lookup)

    if isinstance(obs, dict):
        return {key: to_tensor(value, device) for key, value in obs.items()}
    if isinstance(obs, torch.Tensor):
        return obs
    return torch.as_tensor(obs, device=device)


def fits(obs: Any, space: gym.Space) -> bool:
    """Whether `obs` has the structure and array shapes of observation space `space` (one observation, or a
    batch for a vector env's batched space); values are not compared with the bounds, which real observations
    may leave. Used on observations read from a checkpoint."""
    if isinstance(space, gym.spaces.Dict):
        return isinstance(obs, dict) and set(obs) == set(space.spaces) and all(
            fits(obs[key], sub) for key, sub in space.spaces.items())
    if isinstance(space, gym.spaces.Tuple):
        return isinstance(obs, (tuple, list)) and len(obs) == len(space.spaces) and all(
            fits(o, sub) for o, sub in zip(obs, space.spaces))
    return space.shape is None or np.shape(obs) == space.shape
