"""Typed configs: dataclass defaults → `configs/<agent>.yaml` (per-env entries) → `--set KEY=VALUE`.

A config file holds a `default:` entry and one entry per env id, RL-Zoo style (an entry named by a pattern,
such as `ALE/*`, applies to every matching id, below that id's own entry); keys are the fields of the
loop's `TrainConfig` and of the agent's own config dataclass, in one flat namespace. A resolved config file
(written into every run directory) also holds a `run:` entry (agent, env, seed), so
`python -m rlagents.train --config runs/<run>/config.yaml` reproduces that run exactly.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from rlagents.errors import ConfigError, choices
from rlagents.safeload import read_yaml, shown
from rlagents.validate import SEED_MAX

RESERVED_ENTRIES = ("run", "default")
ENV_KWARGS = "env_kwargs"  # a mapping in any entry: constructor kwargs of the env, merged entry by entry
MAX_STEPS = 10**11  # env steps of one run: at 100,000 steps/s, 12 days; at rlagents' usual speeds, decades
MAX_EPISODES = 10**6  # episodes of one evaluation
# libgomp cannot create tens of thousands of threads and the process then segfaults (65,536 did here);
# more threads than cores only slow small networks down
MAX_TORCH_THREADS = 1024
INT_MAX = 2**63 - 1  # torch and NumPy take no larger integer
DEVICES = ("auto", "cpu", "cuda")


def param(default: Any, doc: str, *, low: float | None = None, high: float | None = None,
          low_open: bool = False) -> Any:
    """A config field with a one-line doc and an optional allowed range [low, high] (or (low, high])."""
    meta = {"doc": doc, "low": low, "high": high, "low_open": low_open}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Settings of the training loop, shared by every agent."""

    steps: int = param(100_000, "total env steps (summed over vector envs); at most 1e11, which would take "
                       "years at any speed rlagents reaches", low=1, high=MAX_STEPS)
    n_envs: int = param(1, "number of training envs stepped together", low=1, high=256)
    eval_every: int = param(2_500, "env steps between greedy evaluations (0 = only at the end)", low=0)
    eval_episodes: int = param(20, "episodes per greedy evaluation", low=1, high=MAX_EPISODES)
    eval_envs: int = param(20, "envs stepped together during evaluation (at most eval_episodes)", low=1,
                           high=256)
    log_every: int = param(1_000, "env steps between TensorBoard scalar writes", low=1)
    checkpoint_every: int = param(10_000, "env steps between resumable checkpoints (0 = only the final one)",
                                  low=0)
    keep_checkpoints: int = param(3, "periodic checkpoints kept on disk (the newest ones)", low=1)
    torch_threads: int = param(1, "torch CPU threads; small networks are fastest on one", low=1,
                               high=MAX_TORCH_THREADS)
    action_masks: bool = param(True, "agents that take action masks use the env's, where it gives them "
                               "(false: they ignore them; illegal actions are counted either way)")


# ---------------------------------------------------------------- typing-driven coercion


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert `value` (from YAML or the CLI) to the field type `annotation`, or raise ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {shown(value)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: bad value {shown(value)}; allowed: {choices(args)}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").replace("(", "").replace(")", "")
                     .split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list like 64,64, got {shown(value)}")
        inner = args[0] if args else str
        return tuple(coerce(v.strip() if isinstance(v, str) else v, inner, key) for v in value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{key}: expected true or false, got {shown(value)}")
    if annotation is int:
        return _coerce_int(value, key)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: expected a number, got {shown(value)}")
        try:
            number = float(value.replace("_", "")) if isinstance(value, str) else float(value)
        except (OverflowError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {shown(value)}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {shown(value)}")
        return number
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {shown(value)}")
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {annotation!r}")


def _coerce_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{key}: expected an integer, got {shown(value)}")
    number: float | int
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,100}", value.strip().replace("_", "")):
        number = int(value.strip().replace("_", ""))  # exactly, not through a float
    elif isinstance(value, int):
        number = value
    else:
        try:
            number = float(value.replace("_", "")) if isinstance(value, str) else value
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {shown(value)}") from None
        if not math.isfinite(number) or not number.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {shown(value)}")
    if abs(number) > INT_MAX:  # torch and NumPy overflow (or allocate forever) on larger ones
        raise ConfigError(f"{key}: {shown(value)} is too large; integers may be at most 2**63 - 1")
    return int(number)


def _check_range(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    numbers = value if isinstance(value, tuple) else (value,)
    for number in numbers:
        if not isinstance(number, (int, float)) or isinstance(number, bool):
            continue
        low, high = meta.get("low"), meta.get("high")
        if low is not None and (number <= low if meta.get("low_open") else number < low):
            bound = f"> {_number(low)}" if meta.get("low_open") else f">= {_number(low)}"
            raise ConfigError(f"{key}: bad value {shown(value)}; must be {bound}" +
                              (f" and <= {_number(high)}" if high is not None else ""))
        if high is not None and number > high:
            raise ConfigError(f"{key}: bad value {shown(value)}; must be <= {_number(high)}")


def _number(bound: float) -> str:
    return f"{bound:,}" if isinstance(bound, int) else str(bound)


def field_types(cls: type) -> dict[str, Any]:
    """Field name → resolved type annotation of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def build(cls: type, values: dict[str, Any], *, source: str) -> Any:
    """Create config dataclass `cls` from raw values, coercing and range-checking every field."""
    types_ = field_types(cls)
    kwargs = {}
    metas = {f.name: f.metadata for f in fields(cls)}
    for key, raw in values.items():
        if key not in types_:
            raise ConfigError(f"{source}: unknown key {shown(key)}; valid keys: {choices(sorted(types_), 60)}")
        value = coerce(raw, types_[key], key)
        _check_range(key, value, metas[key])
        kwargs[key] = value
    instance = cls(**kwargs)
    validate = getattr(instance, "validate", None)
    if validate is not None:
        validate()
    return instance


# ---------------------------------------------------------------- files and overrides


@dataclass
class ResolvedConfig:
    """Everything a run needs besides the agent and env names: loop settings and the agent's config."""

    train: TrainConfig
    agent: Any
    run_meta: dict[str, Any]
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    entries: tuple[str, ...] = ()  # the file's entries for this env (beyond `default`); none: untuned


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a config YAML through the bounded safe loader; every entry must be a mapping, and a `run:`
    entry (a run directory's resolved config) must hold well-typed values."""
    data = read_yaml(Path(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of entries (default, <env id>…)")
    for name, entry in data.items():
        if entry is not None and not isinstance(entry, dict):
            raise ConfigError(f"config file {path}: entry {shown(name)} must be a mapping of key: value")
    check_run_entry(data.get("run"), path)
    return data


def check_run_entry(run: dict[str, Any] | None, path: Path) -> None:
    """Refuse a `run:` entry whose agent, env, seed, device or data has the wrong type or range (train,
    evaluate and classify read these values as they are)."""
    for key, value in (run or {}).items():
        if key in ("agent", "env") and not (isinstance(value, str) and value):
            problem = "a non-empty string"
        elif key == "seed" and not (isinstance(value, int) and not isinstance(value, bool)
                                    and 0 <= value <= SEED_MAX):
            problem = f"an integer from 0 to {SEED_MAX:,}"
        elif key == "device" and value not in DEVICES:
            problem = f"one of {', '.join(DEVICES)}"
        elif key == "data" and value is not None and not (isinstance(value, str) and value):
            problem = "a folder name, or null"
        elif key == "env_modules" and not (isinstance(value, list) and all(
                isinstance(m, str) and m and all(p.isidentifier() for p in m.split(".")) for m in value)):
            problem = "a list of module names"
        else:
            continue
        raise ConfigError(f"config file {path}: run: {key} must be {problem}, got {shown(value)}")


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """Parse repeated `--set KEY=VALUE` strings."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {shown(pair)}")
        out[key.strip()] = value.strip()
    return out


def resolve(agent_config_cls: type, data: dict[str, Any], env_id: str, overrides: dict[str, Any],
            *, source: str, env_kwargs: dict[str, Any] | None = None) -> ResolvedConfig:
    """Merge dataclass defaults, the file's `default` and `env_id` entries, then CLI overrides; `env_kwargs`
    entries merge key by key, and `env_kwargs` (from `--env-kwargs`) goes on top of them."""
    from rlagents.envspec import check_env_kwargs

    train_keys = set(field_types(TrainConfig))
    agent_keys = set(field_types(agent_config_cls))
    clash = train_keys & agent_keys
    assert not clash, f"agent config redefines loop keys {clash}"
    names = env_entry_names(data, env_id)
    merged: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}
    for name in ("default", *names):
        entry = dict(data.get(name) or {})
        kwargs.update(check_env_kwargs(entry.pop(ENV_KWARGS, None) or {}, f"{source}: entry {name}"))
        merged.update(entry)
    valid = sorted(train_keys | agent_keys)
    for key in merged:
        if key not in train_keys and key not in agent_keys:
            raise ConfigError(f"{source}: unknown key {shown(key)}; valid keys: {choices(valid + [ENV_KWARGS], 60)}")
    for key in overrides:
        if key not in train_keys and key not in agent_keys:
            raise ConfigError(f"--set: unknown key {shown(key)}; valid keys: {choices(valid, 60)}")
    merged.update(overrides)
    kwargs.update(env_kwargs or {})
    train = build(TrainConfig, {k: v for k, v in merged.items() if k in train_keys}, source=source)
    agent = build(agent_config_cls, {k: v for k, v in merged.items() if k in agent_keys}, source=source)
    return ResolvedConfig(train=train, agent=agent, run_meta=dict(data.get("run") or {}), env_kwargs=kwargs,
                          entries=tuple(names))


def env_entry_names(data: dict[str, Any], env_id: str) -> list[str]:
    """The file's entries that apply to `env_id`, lowest precedence first: matching patterns (`ALE/*`) in
    file order, then the id's own entry. A `module:Id` env also matches entries named by its bare `Id`."""
    ids = [env_id] if ":" not in env_id else [env_id.rpartition(":")[2], env_id]
    patterns = [name for name in data if name not in RESERVED_ENTRIES and name not in ids and is_pattern(name)
                and any(fnmatch.fnmatchcase(i, name) for i in ids)]
    return patterns + [i for i in ids if i in data and i not in RESERVED_ENTRIES]


def is_pattern(name: Any) -> bool:
    """Whether a config entry's name is a shell-style pattern of env ids (`ALE/*`) rather than one id."""
    return isinstance(name, str) and any(ch in name for ch in "*?[")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def dump_resolved(resolved: ResolvedConfig, *, agent: str, env_id: str, seed: int, device: str,
                  env_modules: tuple[str, ...] | list[str] = ()) -> str:
    """YAML text of a fully resolved config; loading it with `--config` reproduces the run."""
    entry = {k: _plain(v) for k, v in dataclasses.asdict(resolved.train).items()}
    entry.update({k: _plain(v) for k, v in dataclasses.asdict(resolved.agent).items()})
    if resolved.env_kwargs:
        entry[ENV_KWARGS] = dict(resolved.env_kwargs)
    run: dict[str, Any] = {"agent": agent, "env": env_id, "seed": seed, "device": device}
    if env_modules:
        run["env_modules"] = list(env_modules)
    doc = {"run": run, "default": entry}
    header = ("# Resolved config of an rlagents run. Reproduce it with:\n"
              "#   python -m rlagents.train --config <this file>\n")
    return header + yaml.safe_dump(doc, sort_keys=False)


# loop settings a resumed run may change: how long it runs and how it is watched, not what it learns
RESUMABLE_KEYS = frozenset({"train.steps", "train.eval_every", "train.eval_episodes", "train.eval_envs",
                            "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                            "train.torch_threads"})


def config_values(train: Any, agent: Any, seed: Any) -> dict[str, Any]:
    """The values a run's config fixes, flat (`seed`, `train.<key>`, `agent.<key>`), as JSON would give them
    back; `train` and `agent` are config dataclasses or the mappings a checkpoint records."""
    flat: dict[str, Any] = {"seed": seed}
    for section, values in (("train", train), ("agent", agent)):
        if dataclasses.is_dataclass(values):
            values = dataclasses.asdict(values)
        for key, value in (values.items() if isinstance(values, dict) else ()):
            flat[f"{section}.{key}"] = value
    return json.loads(json.dumps(flat, default=str))


def config_sha256(train: Any, agent: Any, seed: Any) -> str:
    """SHA-256 of the config values that fix what a run learns (all but `RESUMABLE_KEYS`): recorded in
    every checkpoint, so that `--resume` refuses a run whose config.yaml was edited since."""
    values = {k: v for k, v in config_values(train, agent, seed).items() if k not in RESUMABLE_KEYS}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def describe_fields(cls: type) -> list[tuple[str, str, Any]]:
    """(name, doc, default) of every field of a config dataclass, for `--help-config`."""
    out = []
    for f in fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, f.metadata.get("doc", ""), default))
    return out
