"""One run, resolved once: `RunSpec` holds the agent, the env (`EnvSpec`: id, kwargs, modules), the seed,
the resolved config, the run directory and the device. It is built and validated in one place
(`resolve_spec` for a new run, `spec_of_run` for a run directory's `config.yaml`) and consumed by every entry
point: the train CLI and `--resume`, the Python API, compare's workers (local and Ray receive the spec
itself), evaluate and export. `runs.materialize` turns a spec into a ready `loop.Run`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import gymnasium as gym

from rlagents.agents import agent_class, available_agents
from rlagents.cli import default_config_path
from rlagents.config import DEVICES, ResolvedConfig, dump_resolved, read_config_file, resolve
from rlagents.envspec import EnvSpec, check_env_kwargs, check_env_modules, from_callable
from rlagents.errors import ConfigError, UserError, choices
from rlagents.paths import check_output_dir
from rlagents.runlock import is_empty_run_dir
from rlagents.safeload import shown
from rlagents.validate import check_seed

RUNS_DIR = Path("runs")
EnvLike = str | EnvSpec | Callable[..., gym.Env]


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run, validated: what `config.yaml` records and every entry point reads."""

    agent: str
    env: EnvSpec
    seed: int
    config: ResolvedConfig
    run_dir: Path
    device: str = "auto"
    source: str = ""  # the config file the settings came from

    @property
    def env_id(self) -> str:
        return self.env.id

    @property
    def untuned(self) -> bool:
        """Whether the config file has no entry for this env (it runs on the agent's `default:` settings)."""
        return not self.config.entries

    def config_yaml(self) -> str:
        """The run's `config.yaml`: loading it (`--config`, `--resume`, evaluate) rebuilds this spec."""
        return dump_resolved(self.config, agent=self.agent, env_id=self.env.id, seed=self.seed, device=self.device,
                             env_modules=self.env.modules)


def resolve_spec(agent: str | None = None, env: EnvLike | None = None, *, seed: int | None = None,
                 config_file: Path | str | None = None, overrides: Mapping[str, Any] | None = None,
                 env_kwargs: Mapping[str, Any] | None = None, env_modules: Iterable[str] = (),
                 run_dir: Path | str | None = None, device: str | None = None) -> RunSpec:
    """Validate and resolve a run: names, seed, device, config (file → `default`/env entries → overrides)
    and env (id or factory, kwargs, modules). `config_file` may be a run's `config.yaml`, whose `run:`
    entry supplies whatever is not given here. Raises UserError subclasses; touches nothing on disk."""
    data = read_config_file(Path(config_file)) if config_file is not None else {}
    meta = data.get("run") or {}
    agent = agent or meta.get("agent")
    env = env or meta.get("env")
    if agent is None:
        raise UserError(f"--agent is required; valid agents: {', '.join(available_agents())}")
    if env is None:
        raise UserError("--env is required, e.g. --env CartPole-v1, or --env package.module:EnvId-v0 for an env "
                        "of your own (see --list-envs)")
    cls = agent_class(agent)
    source = Path(config_file) if config_file is not None else default_config_path(agent)
    if config_file is None:
        data = read_config_file(source)
    seed = check_seed(seed if seed is not None else meta.get("seed", 0))
    device = device or meta.get("device", "auto")
    if device not in DEVICES:
        raise UserError(f"device {shown(device)} is not one of {choices(DEVICES)}")
    env_spec = _env_spec(env, meta, env_modules)
    kwargs = {**env_spec.kwargs, **check_env_kwargs(env_kwargs or {}, "env_kwargs")}
    config = resolve(cls.config_class, data, env_spec.id, dict(overrides or {}), source=str(source),
                     env_kwargs=kwargs)
    env_spec = dataclasses.replace(env_spec, kwargs=config.env_kwargs)
    if isinstance(run_dir, str) and not run_dir:  # Path("") would be ".", the working folder
        raise UserError("--run-dir: the path is empty")
    if run_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        run_dir = RUNS_DIR / f"{env_spec.id.replace('/', '-').replace(':', '-')}__{agent}__{seed}__{stamp}"
    return RunSpec(agent, env_spec, seed, config, Path(run_dir), device, str(source))


def _env_spec(env: EnvLike, meta: Mapping[str, Any], modules: Iterable[str]) -> EnvSpec:
    recorded = tuple(meta.get("env_modules") or ()) if env == meta.get("env") else ()
    extra = check_env_modules((*recorded, *modules))
    if isinstance(env, EnvSpec):
        return dataclasses.replace(env, modules=tuple(dict.fromkeys((*env.modules, *extra))))
    if callable(env):
        return dataclasses.replace(from_callable(env), modules=extra)
    if not isinstance(env, str) or not env.strip():
        raise UserError(f"env must be an env id (like CartPole-v1 or package.module:EnvId-v0) or a function "
                        f"returning a gymnasium.Env, got {shown(env)}")
    return EnvSpec(env.strip(), {}, extra)


def spec_of_run(run_dir: Path | str, *, env: EnvLike | None = None, device: str | None = None) -> RunSpec:
    """The spec a run directory's `config.yaml` records (for `--resume`, evaluate, export, `rlagents.load`).
    `env` stands in for an env factory that cannot be imported again (a lambda, a local function)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise UserError(f"{run_dir} is not an rlagents run directory (no config.yaml)")
    meta = read_config_file(config_file).get("run") or {}
    if not meta.get("agent") or not meta.get("env"):
        raise ConfigError(f"{config_file} has no run: agent/env entry; was it written by rlagents.train?")
    if env is not None:
        given = _env_spec(env, {}, meta.get("env_modules") or ())
        if given.id != meta["env"]:
            raise UserError(f"env {given.id!r} is not the env of run {run_dir} ({meta['env']!r})")
        env = given
    return resolve_spec(config_file=config_file, run_dir=run_dir, env=env, device=device)


def check_new_run_dir(spec: RunSpec) -> None:
    """Refuse to train a new run into a folder that cannot be written (`paths.check_output_dir`: a file, a
    device, read-only, a full disk…) or that already holds something (other than a free lock file)."""
    check_output_dir(spec.run_dir, "--run-dir")
    if not is_empty_run_dir(spec.run_dir):
        raise UserError(f"run directory {spec.run_dir} already exists and is not empty; choose another --run-dir")
