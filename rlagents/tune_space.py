"""Search spaces of `python -m rlagents.tune`: which config keys a study varies, and over what.

A space file (`configs/tune/<agent>.yaml`, or `--space FILE`) holds a `default:` entry and optional entries
named by env id, which add keys to the default one or replace them. Each key is a field of the loop's
`TrainConfig` or of the agent's config dataclass, with one distribution:

    lr: {log_uniform: [1.0e-4, 1.0e-2]}      # float field, sampled uniformly in log space
    gamma: {uniform: [0.9, 0.999]}           # float field
    n_step: {int: [1, 5]}                    # int field (log_int: the same in log space)
    bins: {categorical: [[10, 10], [20, 20]]} # any field: one of the listed values

Everything is checked before a study starts: the key exists, the distribution suits the field's type, the
range is neither empty nor inverted (nor non-positive in log space), and every bound and choice is a value
the agent's config accepts for this env.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlagents.config import TrainConfig, field_types, read_config_file, resolve
from rlagents.errors import ConfigError, choices
from rlagents.safeload import shown

SPACE_DIR = Path(__file__).resolve().parent.parent / "configs" / "tune"
KINDS = ("uniform", "log_uniform", "int", "log_int", "categorical")
MAX_CHOICES = 1_000


@dataclass(frozen=True)
class Param:
    """One searched key: its distribution kind and either a (low, high) range or the categorical choices."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()

    def labels(self) -> list[Any]:
        """Optuna's categorical choices: plain values as they are, lists and nulls as JSON text."""
        return [_label(c) for c in self.choices]

    def value(self, sampled: Any) -> Any:
        """The config value of what Optuna sampled (a categorical label back to its list, say)."""
        if self.kind != "categorical":
            return sampled
        return self.choices[self.labels().index(sampled)]

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"one of {', '.join(str(_label(c)) for c in self.choices)}"
        return f"{self.kind} [{self.low}, {self.high}]"


def _label(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value)


def space_path(agent: str) -> Path:
    """`configs/tune/<agent>.yaml` in the working directory if present, else the one shipped with rlagents."""
    local = Path("configs") / "tune" / f"{agent}.yaml"
    return local if local.is_file() else SPACE_DIR / f"{agent}.yaml"


def load_space(path: Path, env_id: str) -> dict[str, Any]:
    """The raw `key: {kind: …}` mapping of a space file for `env_id`: its `default:` entry updated by the
    env's own entry."""
    if not Path(path).is_file():
        raise ConfigError(f"search space {path} not found: write one (see docs/guide/tuning.md) or pass --space FILE")
    data = read_config_file(path)
    unknown = [name for name in data if name != "default" and not isinstance(name, str)]
    if unknown:
        raise ConfigError(f"search space {path}: entry names must be env ids, got {shown(unknown[0])}")
    merged = dict(data.get("default") or {})
    merged.update(data.get(env_id) or {})
    return merged


def parse_space(raw: dict[str, Any], agent_config_cls: type, config_data: dict[str, Any], env_id: str,
                fixed: dict[str, Any], *, source: str) -> list[Param]:
    """Check every key of `raw` against the configs (`config_data` is the agent's config file) and return the
    searched parameters; keys in `fixed` (`--fix`) are left out of the search. Raises ConfigError."""
    types_ = {**field_types(TrainConfig), **field_types(agent_config_cls)}
    try:  # the fixed values on their own
        resolve(agent_config_cls, config_data, env_id, fixed, source="--fix")
    except ConfigError as exc:
        raise ConfigError(f"--fix: {str(exc).removeprefix('--set: ')}") from None
    params = []
    for key, spec in raw.items():
        if key not in types_:
            raise ConfigError(f"{source}: unknown key {shown(key)}; valid keys: {choices(sorted(types_), 60)}")
        if key in fixed:
            continue
        param = _parse_param(key, spec, types_[key], source)
        for probe in _probes(param):  # each bound or choice, with the env's config and the fixed values
            try:
                resolve(agent_config_cls, config_data, env_id, {**fixed, key: probe}, source=source)
            except ConfigError as exc:
                raise ConfigError(f"{source}: {key}: {param.describe()} includes {shown(probe)}, which the "
                                  f"config refuses: {exc}") from None
        params.append(param)
    if not params:
        raise ConfigError(f"{source}: nothing left to search (every key is fixed or the space is empty)")
    return params


def _parse_param(key: str, spec: Any, annotation: Any, source: str) -> Param:
    where = f"{source}: {key}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"{where}: expected one distribution such as {{log_uniform: [1.0e-4, 1.0e-2]}}; "
                          f"kinds: {', '.join(KINDS)}; got {shown(spec)}")
    kind, body = next(iter(spec.items()))
    base = _base_type(annotation)
    if kind == "categorical":
        if not isinstance(body, list) or not body or len(body) > MAX_CHOICES:
            raise ConfigError(f"{where}: categorical takes a list of 1 to {MAX_CHOICES:,} values, got {shown(body)}")
        labels = [_label(c) for c in body]
        if len(set(map(repr, labels))) != len(labels):
            raise ConfigError(f"{where}: categorical lists a value twice: {shown(body)}")
        return Param(key, kind, choices=tuple(body))
    allowed = {float: ("uniform", "log_uniform"), int: ("int", "log_int")}.get(base, ())
    if kind not in allowed:
        takes = ", ".join(allowed + ("categorical",))
        raise ConfigError(f"{where}: a {_type_name(annotation)} key cannot take a {kind} distribution; it takes "
                          f"{takes}")
    if (not isinstance(body, list) or len(body) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in body)):
        raise ConfigError(f"{where}: {kind} takes [low, high], two numbers, got {shown(body)}")
    low, high = body
    if base is int and not all(float(b).is_integer() for b in body):
        raise ConfigError(f"{where}: {kind} takes integer bounds, got {shown(body)}")
    if low > high:
        raise ConfigError(f"{where}: inverted range [{low}, {high}]: low must be below high")
    if low == high:
        raise ConfigError(f"{where}: empty range [{low}, {high}]: use --fix {key}={low} to hold a key constant")
    if kind.startswith("log") and low <= 0:
        raise ConfigError(f"{where}: {kind} needs a positive low bound, got [{low}, {high}]")
    cast = int if base is int else float
    return Param(key, kind, cast(low), cast(high))


def _base_type(annotation: Any) -> Any:
    """float for `float` and `float | None`, int for `int` and `int | None`; anything else as it is."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _type_name(annotation: Any) -> str:
    base = _base_type(annotation)
    return base.__name__ if isinstance(base, type) else str(annotation).replace("typing.", "")


def _probes(param: Param) -> list[Any]:
    return list(param.choices) if param.kind == "categorical" else [param.low, param.high]


def suggest(trial: Any, params: list[Param]) -> dict[str, Any]:
    """Sample one config (key → value) for an Optuna trial."""
    out = {}
    for p in params:
        if p.kind == "categorical":
            out[p.key] = p.value(trial.suggest_categorical(p.key, p.labels()))
        elif p.kind in ("int", "log_int"):
            out[p.key] = trial.suggest_int(p.key, int(p.low), int(p.high), log=p.kind == "log_int")
        else:
            out[p.key] = trial.suggest_float(p.key, float(p.low), float(p.high), log=p.kind == "log_uniform")
    return out


def config_values(params: list[Param], sampled: dict[str, Any]) -> dict[str, Any]:
    """A finished trial's Optuna params back to config values (categorical labels to lists, say)."""
    by_key = {p.key: p for p in params}
    return {k: by_key[k].value(v) if k in by_key else v for k, v in sampled.items()}


def fingerprint(params: list[Param]) -> str:
    """Text that identifies a space, stored with a study so that a rerun with another space is refused."""
    return json.dumps([[p.key, p.kind, p.low, p.high, [_label(c) for c in p.choices]] for p in params])
