"""The Python API: train, resume, load, evaluate and compare from a program, as the CLIs do.

```python
import rlagents
result = rlagents.train("dqn", "CartPole-v1", seed=0, steps=40_000, config={"lr": 1e-3})
policy = rlagents.load(result.run_dir)            # or a checkpoint JSON
action = policy.act(obs)                          # one observation or a batch; greedy
stats = policy.evaluate(episodes=20, seed=123)    # the numbers `python -m rlagents.evaluate` prints
```

Every function resolves its run into one `RunSpec` (`rlagents.runspec`), the same one the CLIs build, so the
same seed and config give the same summary through either. Bad input raises a `rlagents.UserError`
subclass (`ConfigError`, `EnvError`, `CheckpointError`, …) whose text is the CLI's one-line message;
a fault during training (a NaN loss, an env that raises mid-run) raises `TrainingFault`, with the last
good checkpoint kept.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rlagents.checkpoint import CHECKPOINT_DIR, atomic_write_text
from rlagents.errors import CheckpointError, UserError
from rlagents.loop import Callback, LoopListener
from rlagents.paths import check_output_dir
from rlagents.resuming import resume_run
from rlagents.runlock import run_lock
from rlagents.runs import materialize
from rlagents.runspec import EnvLike, RunSpec, check_new_run_dir, resolve_spec, spec_of_run


@dataclass(frozen=True)
class TrainResult:
    """What `train` and `resume` return: where the run is and how it went."""

    run_dir: Path
    summary: dict[str, Any]  # the run's summary.json
    status: str  # completed; stopped (the callback returned False) or interrupted (SIGINT/SIGTERM): resumable
    final_return: float | None  # mean return of the final greedy evaluation (None when interrupted)
    solved_at_step: int | None  # first evaluation reaching the env's reward_threshold
    train_seconds: float | None  # training time without evaluations, all sessions
    untuned: bool  # the agent's config file has no entry for this env: it ran on the `default:` settings

    @classmethod
    def of(cls, spec: RunSpec, summary: dict[str, Any]) -> TrainResult:
        return cls(spec.run_dir, summary, summary.get("status", "completed"), summary.get("eval_return_mean"),
                   summary.get("solved_at_step"), summary.get("train_time_s"), spec.untuned)


def train(agent: str, env: EnvLike, seed: int = 0, steps: int | None = None,
          config: Mapping[str, Any] | str | Path | None = None, env_kwargs: Mapping[str, Any] | None = None,
          run_dir: str | Path | None = None, progress: bool = False, callback: Callback | None = None, *,
          env_modules: Iterable[str] = (), device: str | None = None, check_env: bool | None = None
          ) -> TrainResult:
    """Train `agent` on `env` and save the run, as `python -m rlagents.train` does.

    `env` is an env id (`CartPole-v1`, `package.module:EnvId-v0`) or a function returning a `gym.Env`
    (recorded by its import path, so that `load`/`resume` rebuild it; a lambda or local function cannot be
    rebuilt: pass it again as `env=`). `config` is a mapping of config keys (like `--set`) or a config YAML
    file (like `--config`); `env_kwargs` go to the env's constructor; `callback(step, metrics)` is called at
    every log and evaluation event, and returning False stops the run with a resumable checkpoint.
    """
    overrides, config_file = _config_argument(config)
    if steps is not None:
        overrides["steps"] = steps
    spec = resolve_spec(agent, env, seed=seed, config_file=config_file, overrides=overrides, env_kwargs=env_kwargs,
                        env_modules=env_modules, run_dir=run_dir, device=device)
    if not spec.env.rebuildable:
        warnings.warn(f"env factory {spec.env.id} cannot be imported again (a lambda, a local function or one in a "
                      f"script): load, resume and evaluate of {spec.run_dir} need it passed again as env=, and the "
                      f"python -m commands cannot rebuild it; define it at the top level of a module", stacklevel=2)
    return train_spec(spec, progress=progress, callback=callback, check_env=check_env)


def _config_argument(config: Mapping[str, Any] | str | Path | None) -> tuple[dict[str, Any], Path | None]:
    if config is None:
        return {}, None
    if isinstance(config, (str, Path)):
        return {}, Path(config)
    if not isinstance(config, Mapping):
        raise UserError(f"config must be a mapping of config keys or a config file path, got {type(config).__name__}")
    return dict(config), None


def train_spec(spec: RunSpec, *, progress: bool = False, callback: Callback | None = None,
               check_env: bool | None = None, progress_sink: Callable[..., None] | None = None,
               listeners: Sequence[LoopListener] = ()) -> TrainResult:
    """Train a new run from its spec: validate and build everything, then write `config.yaml` and train.
    `listeners` are told about the loop's events too (`--capture-video`, `--track`)."""
    from rlagents.loop import train as train_loop

    check_new_run_dir(spec)
    run = materialize(spec, progress=progress, check_env=check_env)
    run.progress_sink = progress_sink
    run.listeners = list(listeners)
    try:
        with run_lock(spec.run_dir):  # one process at a time in a run directory
            check_new_run_dir(spec)  # again, under the lock: another process may have written it meanwhile
            atomic_write_text(spec.run_dir / "config.yaml",
                              dataclasses.replace(spec, device=str(run.device)).config_yaml())
            summary = train_loop(run, callback=callback)
    finally:
        run.envs.close()
        run.eval_envs.close()
    return TrainResult.of(spec, summary)


def resume(run_dir: str | Path, *, progress: bool = False, callback: Callback | None = None,
           env: EnvLike | None = None) -> TrainResult:
    """Continue a stopped run from its newest checkpoint, with its own config (`--resume RUN_DIR`).
    `env` stands in for an env factory that cannot be imported again."""
    return resume_spec(spec_of_run(run_dir, env=env), progress=progress, callback=callback)


def resume_spec(spec: RunSpec, *, progress: bool = False, callback: Callback | None = None,
                check_env: bool | None = None, listeners: Sequence[LoopListener] = ()) -> TrainResult:
    """Continue the stopped run `spec` describes (see `resume`): `resuming.resume_run`, under the run's lock."""
    check_output_dir(spec.run_dir, "--resume")
    run = materialize(spec, progress=progress, check_env=check_env)
    run.listeners = list(listeners)
    try:
        summary = resume_run(run, callback)
    finally:
        run.envs.close()
        run.eval_envs.close()
    return TrainResult.of(spec, summary)


# ---------------------------------------------------------------- trained policies


@dataclass(frozen=True)
class EvalResult:
    """Returns and lengths of greedy evaluation episodes; `success_rate` (the fraction of episodes whose last
    step reported `info["is_success"]` true) for goal envs, None for envs that do not report it."""

    returns: np.ndarray
    lengths: np.ndarray
    seed: int
    success_rate: float | None = None

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())

    @property
    def episodes(self) -> int:
        return len(self.returns)


class Policy:
    """A trained agent's greedy policy, loaded from a run (`rlagents.load`)."""

    def __init__(self, loaded, spec: RunSpec):
        self._loaded = loaded
        self.spec = spec
        self.agent = loaded.agent
        self.checkpoint: Path = loaded.checkpoint
        self.observation_space: gym.Space = loaded.observation_space
        self.action_space: gym.Space = loaded.action_space

    def act(self, obs: Any) -> Any:
        """Greedy action for one observation, or an array of actions for a batch of them (one per episode).

        An agent with memory (`recurrent`) carries its hidden state from one call to the next: call `reset`
        at every episode start."""
        single = _is_single(obs, self.observation_space)
        batch = _add_batch_axis(obs) if single else _as_batch(obs)
        actions = self.agent.act(batch, explore=False)
        return actions[0] if single else actions

    def reset(self, starts: Any = None) -> None:
        """Begin new episodes: all of them, or those in the bool mask `starts` (one per row of the batches
        `act` gets). Only agents with memory need it; for the others it does nothing."""
        self.agent.reset_memory(None if starts is None else np.asarray(starts, bool).reshape(-1))

    def evaluate(self, episodes: int | None = None, seed: int | None = None) -> EvalResult:
        """Greedy episodes on the run's env: by default the run's own evaluation (`eval_episodes`, its
        evaluation seed), which reproduces its summary; the numbers `python -m rlagents.evaluate` prints."""
        from rlagents.evaluate import evaluate_run

        counts: dict[str, Any] = {}
        returns, lengths, seed = evaluate_run(self._loaded, episodes, seed, counts=counts)
        return EvalResult(returns, lengths, seed, counts.get("success_rate"))

    def __repr__(self) -> str:
        return f"Policy({self.spec.agent} on {self.spec.env.id}, {self.checkpoint})"


def _is_single(obs: Any, space: gym.Space) -> bool:
    if isinstance(space, gym.spaces.Dict):
        key = next(iter(space.spaces))
        return _is_single(obs[key], space.spaces[key])
    return np.ndim(obs) == len(space.shape or ())


def _add_batch_axis(obs: Any) -> Any:
    if isinstance(obs, Mapping):
        return {k: _add_batch_axis(v) for k, v in obs.items()}
    return np.asarray(obs)[None]


def _as_batch(obs: Any) -> Any:
    if isinstance(obs, Mapping):
        return {k: _as_batch(v) for k, v in obs.items()}
    return np.asarray(obs)


def load(path: str | Path, *, env: EnvLike | None = None, device: str = "cpu") -> Policy:
    """The greedy policy of a run directory (its final checkpoint) or of one checkpoint JSON (or its
    `.safetensors`). `env` stands in for an env factory that cannot be imported again."""
    from rlagents.evaluate import spaces_of
    from rlagents.runs import load_run
    from rlagents.cli import resolve_device

    run_dir, checkpoint = locate(path)
    spec = spec_of_run(run_dir, env=env)
    loaded = load_run(run_dir, spaces_of, device=resolve_device(device), checkpoint=checkpoint, spec=spec)
    return Policy(loaded, spec)


def locate(path: str | Path) -> tuple[Path, Path | None]:
    """(run directory, checkpoint or None) of a run directory or a checkpoint file inside one."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        return path, None
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if path.suffix != ".json" or path.parent.name != CHECKPOINT_DIR:
        raise CheckpointError(f"{path} is neither a run directory nor a checkpoint JSON in a run's "
                              f"{CHECKPOINT_DIR}/ folder")
    return path.parent.parent, path


def evaluate(path: str | Path, episodes: int | None = None, seed: int | None = None, *, env: EnvLike | None = None,
             device: str = "cpu") -> EvalResult:
    """`load(path).evaluate(episodes, seed)`: the numbers `python -m rlagents.evaluate PATH` prints."""
    return load(path, env=env, device=device).evaluate(episodes, seed)


# ---------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class CompareResult:
    """What `compare` returns: the output folder (report.md, curves.png, results.json) and every run's record."""

    out: Path
    runs: list[dict[str, Any]]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r.get("status") != "completed"]


def compare(agents: Sequence[str], env: str | Sequence[str], seeds: int | Sequence[int] = 5, steps: int | None = None,
            config: Mapping[str, Any] | None = None, env_kwargs: Mapping[str, Any] | None = None, *,
            env_modules: Iterable[str] = (), out: str | Path | None = None, workers: int | None = None,
            backend: str = "local", progress: bool = False) -> CompareResult:
    """Train every agent × seed (0..seeds-1, or the listed seeds) on `env` in parallel and write the statistical report, as
    `python -m rlagents.compare` does. `config` keys apply to every agent; `agent.key` to one agent."""
    from rlagents import compare as comparing

    envs = [env] if isinstance(env, str) else list(env)
    seed_list = seeds if isinstance(seeds, int) else list(seeds)
    tasks, out_dir = comparing.plan_specs(list(agents), envs, seeds=seed_list, steps=steps, overrides=dict(config or {}),
                                          env_kwargs=env_kwargs, env_modules=tuple(env_modules),
                                          out=Path(out) if out is not None else None)
    runs = comparing.run_all(tasks, out_dir, workers=workers, backend=backend, progress=progress,
                             order=list(agents), command=f"rlagents.compare({', '.join(agents)} on {', '.join(envs)})")
    return CompareResult(out_dir, runs)
