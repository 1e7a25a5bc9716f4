"""Which environment a run trains on, as one value: the env id as written, its constructor kwargs, and the
modules to import first, so that every entry point (train, `--resume`, evaluate, compare, export, the Python
API) rebuilds exactly the same env from a run's `config.yaml`.

Env ids follow Gymnasium's convention: `CartPole-v1` (registered already), `package.module:EnvId-v0` (import
the module, which registers the id), or `package.module:make_env` (a module-level function returning a
`gym.Env`: an env registered nowhere). `--env-module NAME` imports modules that register several ids, like
RL Zoo's `--gym-packages`. Every way an env can fail before training (a module that cannot be imported, an
id its module does not register, a rejected kwarg, a `reset` or `step` that raises) is a one-line
`UserError` naming the env, the call and the exception.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from rlagents.errors import UserError, choices, one_line
from rlagents.safeload import ECHO_CHARS, load_yaml, shown

KWARG_VALUE_TYPES = (str, int, float, bool, type(None))


class EnvError(UserError):
    """An environment cannot be imported, created, reset or stepped."""


@dataclass(frozen=True)
class EnvSpec:
    """An env as a run records it: `id` as written (`CartPole-v1`, `mod:Id-v0`, `mod:make_env`), the kwargs
    passed to `gym.make` (or the factory), and extra modules imported first. `factory` holds a callable given
    to the Python API in this process; it is not recorded (its import path, `id`, is)."""

    id: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    modules: tuple[str, ...] = ()
    factory: Callable[..., gym.Env] | None = field(default=None, compare=False, repr=False)

    @property
    def module(self) -> str | None:
        """The module named in `mod:Id`, or None for a plain id."""
        return self.id.partition(":")[0] if ":" in self.id else None

    @property
    def name(self) -> str:
        """The id without its module: what is looked up in Gymnasium's registry (or the factory's name)."""
        return self.id.rpartition(":")[2]

    @property
    def rebuildable(self) -> bool:
        """Whether another process can rebuild this env from its record alone."""
        return self.factory is None or _importable(self.factory) == self.id

    def creator(self) -> str | Callable[..., gym.Env]:
        """Import what the env needs; returns the registered id to `gym.make`, or the factory to call."""
        if self.factory is not None:
            return self.factory
        for module in self.modules:
            import_env_module(module, f"env {self.id!r}")
        if self.module is None:
            return self.id
        if self.module == "__main__" or "<" in self.name:
            raise EnvError(f"env {self.id!r} was a factory defined in a script, inside a function or as a lambda, "
                           f"which cannot be imported again, so this run's env cannot be rebuilt from its "
                           f"config.yaml: pass the factory again (rlagents.load, rlagents.resume or rlagents.evaluate "
                           f"with env=factory), or define it at the top level of an importable module")
        module = import_env_module(self.module, f"env {self.id!r}")
        if self.name in gym.registry:
            return self.name
        attr = getattr(module, self.name, None)
        if callable(attr) and not isinstance(attr, type(gym)):
            return attr
        raise EnvError(f"env {self.id!r}: module {self.module} registers no env {self.name!r} and defines no "
                       f"function of that name; {registered_by(self.module)}")

    def record(self) -> dict[str, Any]:
        """The `run:` entries of a resolved config that rebuild this env (kwargs go with the config)."""
        out: dict[str, Any] = {"env": self.id}
        if self.modules:
            out["env_modules"] = list(self.modules)
        return out

    def describe_call(self, extra: Mapping[str, Any] | None = None) -> str:
        """`gym.make('Id', k=v)`, or `mod.make_env(k=v)`, for error messages."""
        kwargs = {**self.kwargs, **{k: v for k, v in (extra or {}).items() if v is not None}}
        args = ", ".join(f"{k}={shown(v, 40)}" for k, v in kwargs.items())
        if self.factory is not None or (self.module is not None and self.name not in gym.registry):
            return f"{self.id.replace(':', '.')}({args})"
        return f"gym.make({self.name!r}{', ' + args if args else ''})"


def as_env_spec(env: str | EnvSpec) -> EnvSpec:
    """`env` as an EnvSpec (a plain id gets no kwargs and no extra modules)."""
    return env if isinstance(env, EnvSpec) else EnvSpec(env)


def from_callable(factory: Callable[..., gym.Env], kwargs: Mapping[str, Any] | None = None) -> EnvSpec:
    """The spec of an env factory given to the Python API; its id is its import path `module:qualname`
    (rebuildable elsewhere only when that path leads back to the same function: not a lambda or a local)."""
    path = _importable(factory)
    name = getattr(factory, "__qualname__", None) or type(factory).__name__
    env_id = path or f"{getattr(factory, '__module__', None) or '__main__'}:{name}"
    return EnvSpec(env_id, dict(kwargs or {}), (), factory)


def _importable(factory: Callable[..., Any]) -> str | None:
    module, name = getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)
    if not module or not name or "<" in name or module == "__main__":
        return None
    try:
        found = importlib.import_module(module)
        for part in name.split("."):
            found = getattr(found, part)
    except Exception:  # noqa: BLE001 (any failure means it cannot be found again)
        return None
    return f"{module}:{name}" if found is factory else None


def check_env_modules(names: Iterable[Any]) -> tuple[str, ...]:
    """`names` in order, once each; a name that is not a dotted module name is a one-line UserError."""
    modules = tuple(dict.fromkeys(names))
    for name in modules:
        if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
            raise UserError(f"--env-module {shown(name)} is not a module name (like mypackage.envs)")
    return modules


def import_env_module(name: str, context: str) -> Any:
    """Import `name` (from the current directory or the environment); a failure is a one-line EnvError
    starting with `context` (`env 'mygrid:Line-v0'`, `--env-module`)."""
    if os.getcwd() not in sys.path and "" not in sys.path:  # console scripts do not put the cwd on the path
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or name
        where = "" if missing != name else " (it must be importable from the current directory or the environment)"
        raise EnvError(f"{context}: import {name} failed: ModuleNotFoundError: {one_line(exc)}{where}") from None
    except Exception as exc:  # noqa: BLE001 (a user module can raise anything while importing)
        raise EnvError(f"{context}: import {name} raised {type(exc).__name__}: {one_line(exc)}") from None


def registered_by(module: str) -> str:
    """'it registers: A-v0, B-v0' for the ids whose entry point lives in `module`, or how to register one."""
    ids = []
    for env_id, spec in gym.registry.items():
        entry = spec.entry_point
        where = entry.split(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", "")
        if where == module or where.startswith(module + "."):
            ids.append(env_id)
    if ids:
        return f"it registers: {choices(sorted(ids))}"
    return "it registers no env ids (call gymnasium.register(id=..., entry_point=...) when it is imported)"


# ---------------------------------------------------------------- kwargs


def parse_env_kwargs(pairs: Iterable[str]) -> dict[str, Any]:
    """Parse repeated `--env-kwargs KEY=VALUE`; each value is read as YAML (`false`, `3`, `[4, 4]`, `8x8`)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UserError(f"--env-kwargs expects KEY=VALUE with KEY a Python name, got {shown(pair)}")
        out[key] = load_yaml(text.strip(), f"--env-kwargs {key}", UserError) if text.strip() else None
    return check_env_kwargs(out, "--env-kwargs")


def check_env_kwargs(kwargs: Any, where: str) -> dict[str, Any]:
    """Refuse env kwargs that a run's config.yaml could not record as plain YAML (so could not rebuild)."""
    if not isinstance(kwargs, Mapping):
        raise UserError(f"{where}: env_kwargs must be a mapping of name: value, got {shown(kwargs)}")
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise UserError(f"{where}: env_kwargs key {shown(key)} is not a Python name")
        if not _plain_value(value):
            raise UserError(f"{where}: env_kwargs {key}={shown(value, ECHO_CHARS)} is not a plain YAML value "
                            f"(number, string, bool, null, list or mapping of those), so a run could not "
                            f"record it; pass a factory that builds the object instead")
    return {key: _as_yaml(value) for key, value in kwargs.items()}


def _as_yaml(value: Any) -> Any:
    """Tuples as lists (what a run's config.yaml gives back), so a rebuilt env gets what the first one got."""
    if isinstance(value, (list, tuple)):
        return [_as_yaml(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _as_yaml(v) for k, v in value.items()}
    return value


def _plain_value(value: Any, depth: int = 0) -> bool:
    if depth > 8:
        return False
    if isinstance(value, KWARG_VALUE_TYPES):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain_value(v, depth + 1) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _plain_value(v, depth + 1) for k, v in value.items())
    return False


# ---------------------------------------------------------------- creating and probing


def create(spec: EnvSpec, creator: str | Callable[..., gym.Env], extra: dict[str, Any]) -> gym.Env:
    """Call the env's constructor with the spec's kwargs and `extra` (render_mode, time limit, Atari frame
    skip); whatever the user's code raises becomes a one-line EnvError naming the call."""
    kwargs = {**spec.kwargs, **extra}
    if kwargs.get("render_mode") is None:  # an env that renders nothing need not take the argument
        kwargs.pop("render_mode", None)
    try:
        if isinstance(creator, str):
            # The passive checker wraps every step in extra Python; `--check-env` runs the full checker instead.
            return gym.make(creator, disable_env_checker=True, **kwargs)
        limit = kwargs.pop("max_episode_steps", None)
        env = creator(**kwargs)
        if not isinstance(env, gym.Env):
            raise EnvError(f"env {spec.id!r}: {spec.describe_call(extra)} returned {type(env).__name__}, "
                           f"not a gymnasium.Env")
        return gym.wrappers.TimeLimit(env, limit) if limit is not None else env
    except UserError:
        raise
    except gym.error.DependencyNotInstalled as exc:
        raise EnvError(f"env {spec.id!r} needs an extra package: {missing_dependency_hint(exc)}") from None
    except Exception as exc:  # noqa: BLE001 (a user's env can raise anything from its constructor)
        raise EnvError(f"env {spec.id!r}: {spec.describe_call(extra)} raised {type(exc).__name__}: "
                       f"{one_line(exc)}") from None


# extras of rlagents' pyproject.toml for Gymnasium's optional env families
PROJECT_EXTRAS = {"box2d": "box2d"}


def missing_dependency_hint(exc: Exception) -> str:
    """Gymnasium's message for a missing dependency, pointing at rlagents' own extra where it has one."""
    text = one_line(exc)
    for marker, extra in PROJECT_EXTRAS.items():
        if marker in text.lower():
            first = re.split(r"[,.;]", text)[0]  # Gymnasium's own install line would name its extra, not ours
            return f"{first}. Install it with: pip install -e \".[{extra}]\" (rlagents' {extra} extra)"
    return text


def _python(value: Any) -> Any:
    """NumPy scalars and arrays as Python numbers and lists, for messages (`1`, not `np.int64(1)`)."""
    return value.tolist() if hasattr(value, "tolist") else value


def probe(env: gym.Env, spec: EnvSpec, seed: int) -> None:
    """Reset `env` with `seed` and take one random step, so that an env which raises in `reset` or `step`
    fails before training, with the call and the exception on one line."""
    try:
        env.reset(seed=seed)
    except Exception as exc:  # noqa: BLE001 (a user's env can raise anything)
        raise EnvError(f"env {spec.id!r}: reset(seed={seed}) raised {type(exc).__name__}: {one_line(exc)}") from None
    env.action_space.seed(seed)
    action = env.action_space.sample()
    try:
        env.step(action)
    except Exception as exc:  # noqa: BLE001
        raise EnvError(f"env {spec.id!r}: step({shown(_python(action), 40)}) after reset raised {type(exc).__name__}: "
                       f"{one_line(exc)}") from None
