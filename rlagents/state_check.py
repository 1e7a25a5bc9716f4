"""Does a checkpoint's state fit an agent? Checked once here, so no agent's `load_state_dict` repeats it.

A freshly built agent's own `state_dict()` is the reference: wherever it has a tensor or array, the loaded
state must have one of the same kind of dtype (floating, integer, bool) — an int32 table where floats are
expected is refused — and, for torch tensors (network weights, whose sizes the config fixes), the same
shape (NumPy arrays' shapes may follow the data, as a replay buffer's do, or the number of envs; an agent's
loader checks those it relies on); wherever it has a number, string or mapping, the loaded value must be one
too. Every floating value
outside the agent's `recorded_state` keys (recorded experience, which may hold what the env returned and NaN
markers) must be finite, so all-NaN or infinite weights never load. Lengths of lists are not compared:
per-env lists follow the number of envs, which evaluation changes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlagents.errors import CheckpointError
from rlagents.safeload import clip, shown

_KINDS = {"f": "floating", "i": "integer", "u": "integer", "b": "bool", "c": "complex"}
LOAD_ERRORS = (KeyError, IndexError, TypeError, ValueError, RuntimeError, OverflowError, AttributeError)


def _kind(array: torch.Tensor | np.ndarray) -> str:
    if isinstance(array, torch.Tensor):
        if array.dtype == torch.bool:
            return "bool"
        if array.dtype.is_floating_point:
            return "floating"
        return "complex" if array.dtype.is_complex else "integer"
    return _KINDS.get(array.dtype.kind, str(array.dtype))


def _finite(array: torch.Tensor | np.ndarray) -> bool:
    if isinstance(array, torch.Tensor):
        return bool(torch.isfinite(array).all())
    return bool(np.isfinite(array).all())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_state(loaded: Any, reference: Any, *, where: str, recorded: Collection[str] = ()) -> None:
    """Raise CheckpointError (naming `where` and the key path) where `loaded` does not fit `reference`;
    `recorded` lists top-level keys whose floating values may be non-finite."""
    stack = [(loaded, reference, "", False)]
    while stack:
        value, ref, key, free = stack.pop()
        here = f"{where}: {clip(key, 120) or 'the state'}"
        if isinstance(value, (torch.Tensor, np.ndarray)):
            if not free and _kind(value) in ("floating", "complex") and not _finite(value):
                raise CheckpointError(f"{here} holds NaN or infinite values")
        elif isinstance(value, float) and not free and not np.isfinite(value):
            raise CheckpointError(f"{here} is {value}, not a finite number")
        if ref is None:
            pass  # optional or not yet known (a fresh agent has not seen it): only the checks above
        elif isinstance(ref, (torch.Tensor, np.ndarray)):
            _check_array(value, ref, here)
        elif isinstance(ref, (bool, np.bool_)):
            if not isinstance(value, (bool, np.bool_)):
                raise CheckpointError(f"{here} must be true or false, got {shown(value)}")
        elif isinstance(ref, (int, np.integer)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise CheckpointError(f"{here} must be an integer, got {shown(value)}")
        elif isinstance(ref, (float, np.floating)):
            if not _is_number(value):
                raise CheckpointError(f"{here} must be a number, got {shown(value)}")
        elif isinstance(ref, str):
            if not isinstance(value, str):
                raise CheckpointError(f"{here} must be a string, got {shown(value)}")
        elif isinstance(ref, Mapping):
            if not isinstance(value, Mapping):
                raise CheckpointError(f"{here} must be a mapping, got {shown(value)}")
        elif isinstance(ref, (list, tuple)):
            if not isinstance(value, (list, tuple)):
                raise CheckpointError(f"{here} must be a list, got {shown(value)}")
        stack.extend(_children(value, ref, key, recorded, free))


def _check_array(value: Any, ref: torch.Tensor | np.ndarray, here: str) -> None:
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        raise CheckpointError(f"{here} must be an array, got {shown(value)}")
    if _kind(value) != _kind(ref):
        raise CheckpointError(f"{here} has dtype {value.dtype}; expected {_kind(ref)} values ({ref.dtype})")
    if isinstance(ref, torch.Tensor) and tuple(value.shape) != tuple(ref.shape):
        raise CheckpointError(f"{here} has shape {tuple(value.shape)}; expected {tuple(ref.shape)}")


def _children(value: Any, ref: Any, key: str, recorded: Collection[str], free: bool):
    """(child value, child reference or None, key path, may be non-finite) of the containers in `value`."""
    if isinstance(value, Mapping):
        refs = ref if isinstance(ref, Mapping) else {}
        for name, child in value.items():
            path = f"{key}.{name}" if key else str(name)
            yield child, refs.get(name), path, free or (not key and name in recorded)
    elif isinstance(value, (list, tuple)):
        refs = ref if isinstance(ref, (list, tuple)) else ()
        for i, child in enumerate(value):
            yield child, refs[i] if i < len(refs) else None, f"{key}.{i}" if key else str(i), free


def load_agent_state(agent: Any, state: Any, path: Path | str) -> None:
    """Check `state` (a checkpoint's `state["agent"]`) against `agent.state_dict()`, then load it; anything
    that does not fit is a CheckpointError naming the checkpoint, never a traceback."""
    where = f"checkpoint {path} does not fit this agent"
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{where}: its state must be a mapping, got {shown(state)}")
    check_state(state, agent.state_dict(), where=where, recorded=getattr(agent, "recorded_state", ()))
    try:
        agent.load_state_dict(state)
    except LOAD_ERRORS as exc:
        raise CheckpointError(f"{where}: {_first_line(exc)}") from None


def load_module_state(module: nn.Module, state: Any, path: Path | str, what: str = "weights",
                      into: str = "this network") -> None:
    """`module.load_state_dict(state)` after the same checks (finite floats, dtypes, shapes)."""
    where = f"{what} {path} does not fit {into}"
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{where}: expected a mapping of tensors, got {shown(state)}")
    check_state(state, module.state_dict(), where=where)
    try:
        module.load_state_dict(state)
    except LOAD_ERRORS as exc:
        raise CheckpointError(f"{where}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError):
        return f"missing key {text}"
    return clip(text.splitlines()[0], 200) if text else type(exc).__name__
