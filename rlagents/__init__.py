"""rlagents: a reinforcement-learning agent suite with one training loop and many agents.

The Python API (`rlagents.train`, `resume`, `load`, `evaluate`, `compare`; see `rlagents.api`) and the error
classes are imported on first use, so that `import rlagents` stays fast (no torch, no Gymnasium).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# `train`, `evaluate` and `compare` are CLI modules (`python -m rlagents.train`) and API functions at once: see
# `_EntryModule`
ENTRY_MODULES = ("train", "evaluate", "compare")
_LAZY = {
    "resume": "rlagents.api", "load": "rlagents.api", "TrainResult": "rlagents.api", "EvalResult": "rlagents.api",
    "CompareResult": "rlagents.api", "Policy": "rlagents.api",
    "RunSpec": "rlagents.runspec", "EnvSpec": "rlagents.envspec", "EnvError": "rlagents.envspec",
    "UserError": "rlagents.errors", "ConfigError": "rlagents.errors", "CheckpointError": "rlagents.errors",
    "UnsupportedSpaceError": "rlagents.errors", "ExportError": "rlagents.errors", "TrainingFault": "rlagents.errors",
}
__all__ = sorted([*_LAZY, *ENTRY_MODULES])

if TYPE_CHECKING:  # for type checkers and editors; the names load lazily (below)
    from rlagents.api import CompareResult, EvalResult, Policy, TrainResult, compare, evaluate, load, resume, train  # noqa: F401
    from rlagents.envspec import EnvError, EnvSpec  # noqa: F401
    from rlagents.errors import (CheckpointError,  # noqa: F401 ConfigError, ExportError, TrainingFault, UnsupportedSpaceError,
                                 UserError)
    from rlagents.runspec import RunSpec  # noqa: F401


class _EntryModule(types.ModuleType):
    """A CLI module that, called, is the API function of its name: `rlagents.train(...)` is `api.train(...)`.

    Python binds an imported submodule on its package, over any function of the same name, so a plain
    function `rlagents.train` would turn into the module as soon as anything imported `rlagents.train`;
    making the module callable keeps both `from rlagents.train import main` and `rlagents.train(...)` working.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._api_function()(*args, **kwargs)

    def _api_function(self) -> Any:
        return getattr(importlib.import_module("rlagents.api"), self.__name__.rpartition(".")[2])

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self._api_function())


def _entry_module(name: str) -> None:
    """Make module `name` (`rlagents.train`, …) callable as its API function; each CLI module calls this."""
    if name.rpartition(".")[2] in ENTRY_MODULES:
        sys.modules[name].__class__ = _EntryModule


def __getattr__(name: str) -> Any:
    if name in ENTRY_MODULES:
        return importlib.import_module(f"rlagents.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rlagents' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
