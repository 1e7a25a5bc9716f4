"""`python -m rlagents.tune --agent qlearning --env MountainCar-v0 --trials 40 --seeds 2`: search an agent's
hyperparameters with Optuna, keep the study in a database, and judge the best config on held-out seeds.

Every trial trains the agent once per seed through the one training loop (an ordinary run directory under
the study folder), the pruner stops poor trials early from the loop's periodic evaluations, and the study
lives in an SQLite file in the study folder (or any database `--storage` names), so running the same
command again continues it and several processes, on one machine or many, can share it. The study folder
ends with `best.yaml` (an entry for `configs/<agent>.yaml`), `report.md` and PNG plots, and a held-out
check: the best config and the current default re-run on seeds no trial used, compared by IQM with 95%
bootstrap intervals and the probability of improvement (rliable).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import math
import multiprocessing
import os
import shlex
import signal
import socket
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlagents import tune_report
from rlagents.agents import agent_class, available_agents
from rlagents.cli import ArgumentParser, default_config_path
from rlagents.config import parse_overrides, read_config_file, resolve
from rlagents.envspec import EnvSpec, check_env_modules, parse_env_kwargs
from rlagents.errors import ConfigError, UserError, choices, cli_entry, one_line
from rlagents.paths import check_output_dir
from rlagents.tune_space import (
    Param,
    load_space,
    parse_space,
    space_path,
    suggest,
)
from rlagents.validate import parse_seeds

OUT_DIR = Path("runs/tune")
OBJECTIVES = {"return": "maximize", "auc": "maximize", "seconds": "minimize"}
UNREACHED_FACTOR = 2.0  # seconds-to-threshold of a run that never reaches it: its training seconds times this
UNCLAIMED_S = 60.0  # a running trial whose process never recorded itself (pid) is lost after this long
HEARTBEAT_S = 30  # trials of a process that stopped beating for GRACE_S are failed by the next process
GRACE_S = 120
SQLITE_TIMEOUT_S = 60  # how long a process waits for another's write lock on a shared SQLite study
STUDY_KEYS = ("agent", "env", "objective", "aggregate", "seeds", "fixed", "threshold", "env_kwargs", "env_modules")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m rlagents.tune", description=__doc__.split("\n\n")[0])
    p.add_argument("--agent", help=f"agent to tune ({', '.join(available_agents())})")
    p.add_argument("--env", help="Gymnasium env id, or package.module:EnvId-v0")
    p.add_argument("--env-module", action="append", default=[], metavar="NAME",
                   help="import this module first, for the env ids it registers (repeatable); every trial and "
                        "held-out run imports it")
    p.add_argument("--env-kwargs", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the env's constructor, the value read as YAML (repeatable); every "
                        "trial and held-out run gets it")
    p.add_argument("--trials", type=int, default=20,
                   help="finished trials the study should hold (completed, pruned or crashed; default 20); a rerun "
                        "runs only the missing ones")
    p.add_argument("--seeds", default="2", help="training seeds of every trial: N (a count: 0..N-1, default 2; "
                   "N >= 1), A-B (0-0 is seed 0 alone) or A,B,C")
    p.add_argument("--aggregate", choices=["mean", "iqm"], default="mean", help="how a trial's seeds combine")
    p.add_argument("--objective", default="return",
                   help="return (final greedy return, default), auc (area under the evaluation curve per step), "
                        "seconds (training seconds to the threshold), or two of them: return,seconds")
    p.add_argument("--threshold", type=float,
                   help="return that counts as reached for `seconds` (default: the env's reward_threshold)")
    p.add_argument("--space", type=Path, help="search space YAML (default: configs/tune/<agent>.yaml)")
    p.add_argument("--fix", action="append", default=[], metavar="KEY=VALUE",
                   help="hold a config key at a value in every trial (also out of the search); repeatable")
    p.add_argument("--steps", type=int, help="env steps per run (the same as --fix steps=N)")
    p.add_argument("--sampler", choices=["tpe", "random"], default="tpe", help="Optuna sampler (default tpe)")
    p.add_argument("--sampler-seed", type=int, help="seed of the sampler (default: random; give each process "
                   "sharing a study a different one)")
    p.add_argument("--pruner", choices=["median", "halving", "none"], default="median",
                   help="stop poor trials early from their periodic evaluations (default median; single objective)")
    p.add_argument("--workers", type=int, default=1, help="trials run in parallel processes (default 1)")
    p.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    p.add_argument("--out", type=Path, help="study folder (default: runs/tune/<env>__<agent>)")
    p.add_argument("--storage", help="database URL of the study (default: sqlite:///<study folder>/study.db); "
                   "any URL Optuna supports (postgresql://, mysql://) lets several machines share one study")
    p.add_argument("--study-name", help="name of the study in the storage (default: <env>__<agent>)")
    p.add_argument("--holdout-seeds", default="1000-1004",
                   help="seeds of the held-out check, best vs default (default 1000-1004; `none` skips it)")
    p.add_argument("--write-config", action="store_true",
                   help="add the best config to configs/<agent>.yaml when it beats the default on the held-out seeds")
    return p


@dataclass
class Settings:
    """Everything a process needs to run trials of one study (picklable, for the worker processes)."""

    agent: str
    env: str
    seeds: list[int]
    objectives: list[str]
    aggregate: str
    threshold: float | None
    fixed: dict[str, str]
    params: list[Param]
    out: Path
    storage: str
    study_name: str
    sampler: str
    sampler_seed: int | None
    pruner: str
    trials: int
    timeout: float | None
    workers: int = 1
    holdout_seeds: list[int] = field(default_factory=list)
    command: str = ""
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # constructor kwargs of the env (--env-kwargs)
    env_modules: list[str] = field(default_factory=list)  # modules imported for the env's id (--env-module)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    def identity(self) -> dict[str, Any]:
        """What a study is about; a rerun that differs in any of it is refused. `env_kwargs` and `env_modules`
        only when given, so studies started before they existed keep their identity."""
        identity = {"agent": self.agent, "env": self.env, "objective": ",".join(self.objectives),
                    "aggregate": self.aggregate, "seeds": self.seeds, "fixed": self.fixed, "threshold": self.threshold}
        if self.env_kwargs:
            identity["env_kwargs"] = self.env_kwargs
        if self.env_modules:
            identity["env_modules"] = self.env_modules
        return identity


# ---------------------------------------------------------------- checking the command


def plan(args, argv: list[str]) -> Settings:
    """Validate every option, the search space and the fixed values; nothing is written."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError("rlagents.tune needs Optuna: pip install -e '.[tune]'") from None
    if not args.agent or not args.env:
        raise UserError(f"--agent and --env are required; valid agents: {choices(available_agents())}")
    cls = agent_class(args.agent)
    objectives = [o.strip() for o in args.objective.split(",") if o.strip()]
    if not 1 <= len(objectives) <= 2 or len(set(objectives)) != len(objectives) or not set(objectives) <= set(OBJECTIVES):
        raise UserError(f"--objective takes one or two of {', '.join(OBJECTIVES)} (e.g. return,seconds), "
                        f"got {args.objective!r}")
    for name, value, low in (("--trials", args.trials, 1), ("--workers", args.workers, 1), ("--steps", args.steps, 1)):
        if value is not None and not low <= value <= 1_000_000:
            raise UserError(f"{name} must be an integer from {low} to 1,000,000, got {value}")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UserError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    seeds = parse_seeds(args.seeds)
    holdout = [] if args.holdout_seeds.strip().lower() == "none" else parse_seeds(args.holdout_seeds, "--holdout-seeds")
    if set(seeds) & set(holdout):
        raise UserError(f"--holdout-seeds must not repeat a tuning seed (--seeds {args.seeds}): shared "
                        f"{sorted(set(seeds) & set(holdout))[:5]}")
    if args.write_config and not holdout:
        raise UserError("--write-config needs the held-out check (drop --holdout-seeds none)")
    env_kwargs = parse_env_kwargs(args.env_kwargs)
    env_modules = list(check_env_modules(args.env_module))
    if args.write_config and env_kwargs:
        raise UserError(f"--write-config with --env-kwargs: the {args.env} entry of configs/{args.agent}.yaml would "
                        f"apply to the env without {', '.join(env_kwargs)}; drop --write-config (the report gives "
                        f"the best entry) or --env-kwargs")

    from rlagents.environments import make_env

    # unknown env: one-line error with close matches; bad kwargs and modules that fail to import too
    probe = make_env(EnvSpec(args.env, {}, tuple(env_modules)), **env_kwargs)
    spaces = probe.observation_space, probe.action_space
    threshold = args.threshold if args.threshold is not None else (
        probe.spec.reward_threshold if probe.spec is not None else None)
    probe.close()
    if "seconds" in objectives and threshold is None:
        raise UserError(f"--objective seconds needs a threshold: {args.env} has no reward_threshold; give --threshold")
    try:
        fixed = parse_overrides(args.fix)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("--set", "--fix")) from None
    if args.steps is not None:
        fixed["steps"] = str(args.steps)
    config_path = default_config_path(args.agent)
    config_data = read_config_file(config_path)
    space_file = args.space or space_path(args.agent)
    raw = load_space(space_file, args.env)
    params = parse_space(raw, cls.config_class, config_data, args.env, fixed, source=str(space_file))
    for probe_config in _space_corners(params, fixed):  # the agent must accept the env with every choice
        cls.check_spaces(*spaces, resolve(cls.config_class, config_data, args.env, probe_config,
                                          source=str(space_file)).agent)

    out = check_output_dir((args.out or OUT_DIR / f"{args.env.replace('/', '-')}__{args.agent}"), "--out").resolve()
    storage = args.storage or f"sqlite:///{out / 'study.db'}"
    return Settings(agent=args.agent, env=args.env, seeds=seeds, objectives=objectives, aggregate=args.aggregate,
                    threshold=threshold, fixed=fixed, params=params, out=out, storage=storage,
                    study_name=args.study_name or f"{args.env}__{args.agent}", sampler=args.sampler,
                    sampler_seed=args.sampler_seed, pruner="none" if len(objectives) > 1 else args.pruner,
                    trials=args.trials, timeout=args.timeout, workers=args.workers, holdout_seeds=holdout,
                    command="python -m rlagents.tune " + " ".join(shlex.quote(a) for a in argv), env_kwargs=env_kwargs,
                    env_modules=env_modules)


def _space_corners(params: list[Param], fixed: dict[str, str]) -> list[dict[str, Any]]:
    """One config per categorical choice (the others at their first), for the agent's space checks."""
    first = {p.key: p.choices[0] for p in params if p.kind == "categorical"}
    corners = [{**fixed, **first}]
    for p in params:
        if p.kind == "categorical":
            corners += [{**fixed, **first, p.key: c} for c in p.choices[1:]]
    return corners


# ---------------------------------------------------------------- the study and its storage


def open_storage(settings: Settings):
    """Optuna's RDB storage at `settings.storage`, with heartbeats (a process that dies mid-trial has its trials
    failed by the next one); a URL that cannot be opened is a UserError."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    sqlite = settings.storage.startswith("sqlite:")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        with _creation_lock(settings.storage):
            storage = optuna.storages.RDBStorage(
                settings.storage, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if sqlite else None,
                heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    except (SQLAlchemyError, ImportError, ValueError, OSError, RuntimeError) as exc:
        raise UserError(f"--storage {settings.storage}: cannot open it: {one_line(exc)[:300]}") from None
    if sqlite:
        _lock_at_begin(storage.engine)
    return storage


def _lock_at_begin(engine) -> None:
    """Make each SQLite transaction take the write lock when it begins (BEGIN IMMEDIATE, SQLAlchemy's recipe for
    pysqlite). Python's sqlite3 begins a transaction only at the first write, so Optuna's read-then-write steps
    are not atomic between processes: two `tune` processes could both take the same enqueued trial; the second
    is refused its run directory (one run per directory) and fails the trial, and the first's tell then raises
    'Cannot tell a FAIL trial' (issue 19)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event below emits BEGIN instead

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners were added


@contextlib.contextmanager
def _creation_lock(storage: str):
    """Serialise the creation of a shared SQLite file's tables (and of the study in it) between processes
    starting together, with a lock file beside the database; other databases handle that themselves."""
    import fcntl

    from sqlalchemy.engine import make_url

    database = make_url(storage).database if storage.startswith("sqlite:") else None
    if not database or database == ":memory:" or not Path(database).parent.is_dir():
        yield
        return
    with open(Path(database).with_name(Path(database).name + ".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_study(settings: Settings, storage=None, worker: int = 0):
    """Create the study or continue it; refuses one that was started for another agent, env or objective.
    Worker k of a command samples with `--sampler-seed` + k, so parallel workers do not propose the same
    configs."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials: our own one-line message instead
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
    storage = storage or open_storage(settings)
    seed = None if settings.sampler_seed is None else settings.sampler_seed + worker
    sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
               if settings.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed))
    pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
              "halving": optuna.pruners.SuccessiveHalvingPruner(),
              "none": optuna.pruners.NopPruner()}[settings.pruner]
    with _creation_lock(settings.storage):
        study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=settings.study_name,
                                    directions=settings.directions, load_if_exists=True)
        identity = settings.identity()
        stored = {k: study.user_attrs[k] for k in STUDY_KEYS if k in study.user_attrs}
        if not stored:
            for key, value in identity.items():
                study.set_user_attr(key, value)
        elif stored != identity:
            differ = [k for k in STUDY_KEYS if stored.get(k) != identity.get(k)]
            raise UserError(f"study {settings.study_name} in {settings.storage} was started with other settings "
                            f"({', '.join(f'{k}: {stored.get(k)}' for k in differ)}); rerun with those, or choose "
                            f"another --study-name or --out")
    return study


def fail_lost_trials(study) -> int:
    """Mark failed the trials left running by a process of this machine that no longer exists (kill -9,
    power loss); trials of other machines are failed by the heartbeat. Returns how many were marked."""
    import optuna
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    lost = 0
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if pid is None:  # killed between Optuna creating the trial and its objective recording who runs it
            started = trial.datetime_start
            if started is None or (now - started).total_seconds() < UNCLAIMED_S:
                continue
            reason = f"no process recorded running it within {UNCLAIMED_S:.0f} s"
        elif trial.user_attrs.get("host") != host or _alive(int(pid)):
            continue
        else:
            reason = f"process {pid} ended while the trial ran"
        study._storage.set_trial_user_attr(trial._trial_id, "lost", reason)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        lost += 1
    return lost


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def counted(trial) -> bool:
    """Trials that use up the `--trials` budget: completed, pruned, or crashed with an error of their own (not
    those lost to Ctrl-C or a killed process, which a rerun replaces)."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def enqueue_default(study, settings: Settings) -> dict[str, Any]:
    """Make a new study's first trial the current default config (the values the space can hold), so the
    sampler starts from a known point and the report shows the default among the trials."""
    cls = agent_class(settings.agent)
    data = read_config_file(default_config_path(settings.agent))
    config = resolve(cls.config_class, data, settings.env, settings.fixed, source="default config")
    values = {**vars(config.train), **vars(config.agent)}
    params = {}
    for p in settings.params:
        value = list(values[p.key]) if isinstance(values[p.key], tuple) else values[p.key]
        if p.kind == "categorical":
            matches = [label for choice, label in zip(p.choices, p.labels()) if choice == value]
            if matches:
                params[p.key] = matches[0]
        elif value is not None and p.low <= value <= p.high:
            params[p.key] = value
    study.enqueue_trial(params, user_attrs={"enqueued": "the current default config"}, skip_if_exists=True)
    return params


# ---------------------------------------------------------------- one trial


def format_value(value: Any) -> str:
    """A config value as `--set` text that `rlagents.config.coerce` reads back exactly."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def run_trial(agent: str, env: str, seed: int, overrides: dict[str, Any], run_dir: Path,
              callback: Callable[[int, dict[str, Any]], bool | None] | None = None,
              env_kwargs: dict[str, Any] | None = None, env_modules: list[str] | tuple[str, ...] = ()
              ) -> dict[str, Any]:
    """Train one run through the Python API (an ordinary run directory) and return its summary; its status is
    `stopped` when `callback` (called at every log and evaluation event) returned False."""
    from rlagents.api import train

    return train(agent, env, seed=seed, config=overrides, env_kwargs=env_kwargs, run_dir=run_dir,
                 callback=callback, env_modules=env_modules).summary


def seed_value(summary: dict[str, Any], objective: str, threshold: float | None) -> float:
    """One run's objective value: final greedy return, step-weighted mean of the evaluation curve (its area per
    env step), or training seconds until an evaluation first reached `threshold`."""
    evaluations = summary["evaluations"]
    if objective == "return":
        return float(summary["eval_return_mean"])
    if objective == "auc":
        steps = np.array([0] + [e["step"] for e in evaluations], dtype=np.float64)
        returns = np.array([e["return_mean"] for e in evaluations])
        return float((returns * np.diff(steps)).sum() / max(steps[-1], 1.0))
    for e in evaluations:
        if e["return_mean"] >= threshold:
            return float(e["train_time_s"])
    return UNREACHED_FACTOR * float(summary["train_time_s"])


def aggregate(values: list[float], how: str) -> float:
    from rlagents.stats import iqm

    return float(np.mean(values)) if how == "mean" else iqm(np.asarray(values))


def objective_function(settings: Settings) -> Callable[[Any], Any]:
    """Optuna's objective: sample a config, train it on every tuning seed, report evaluations to the pruner."""
    import optuna

    def objective(trial: optuna.Trial):
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        values = suggest(trial, settings.params)
        overrides = {**settings.fixed, **values}
        per_seed: dict[str, list[float]] = {o: [] for o in settings.objectives}
        run_dirs = []
        try:
            for index, seed in enumerate(settings.seeds):
                run_dir = settings.out / "trials" / f"trial{trial.number:04d}__s{seed}"
                run_dirs.append(str(run_dir))
                trial.set_user_attr("run_dirs", run_dirs)
                summary = run_trial(settings.agent, settings.env, seed, overrides, run_dir,
                                    _pruning_callback(trial, settings, index), settings.env_kwargs,
                                    settings.env_modules)
                if summary["status"] == "stopped":  # by the pruner
                    trial.set_user_attr("pruned_in_seed", seed)
                    raise optuna.TrialPruned()
                if summary["status"] == "interrupted":  # Ctrl-C: this trial is lost, the study stops
                    trial.set_user_attr("lost", "interrupted (Ctrl-C or SIGTERM)")
                    raise KeyboardInterrupt
                for name in settings.objectives:
                    per_seed[name].append(seed_value(summary, name, settings.threshold))
                trial.set_user_attr("per_seed", per_seed)
                trial.set_user_attr("train_seconds", trial.user_attrs.get("train_seconds", 0.0)
                                    + float(summary["train_time_s"]))
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except Exception as exc:
            message = one_line(exc)[:500] or type(exc).__name__
            trial.set_user_attr("error", message)
            with contextlib.suppress(OSError):
                Path(run_dirs[-1]).mkdir(parents=True, exist_ok=True)
                (Path(run_dirs[-1]) / "error.txt").write_text(traceback.format_exc())
            print(f"trial {trial.number} failed: {message}", file=sys.stderr)
            raise
        result = [aggregate(per_seed[name], settings.aggregate) for name in settings.objectives]
        return result[0] if len(result) == 1 else tuple(result)

    return objective


def _pruning_callback(trial, settings: Settings, seed_index: int):
    """Report each evaluation to the pruner, at a step that counts across the trial's seeds (seed k's
    evaluations come after seed k-1's), and stop the run when the pruner says so."""
    if settings.pruner == "none":
        return None
    offset = seed_index * 10**12  # beyond any run's steps (config.MAX_STEPS is 1e11)

    def callback(step: int, metrics: dict[str, float]) -> bool | None:
        value = metrics.get("eval/return_mean")
        if value is None or not math.isfinite(value):
            return None
        trial.report(float(value), offset + int(step))
        return False if trial.should_prune() else None

    return callback


# ---------------------------------------------------------------- running the study


def optimize(settings: Settings, worker: int = 0) -> None:
    """Run trials until the study holds `settings.trials` counted ones (or the timeout); one process."""
    import optuna

    study = load_study(settings, worker=worker)

    def enough(study: optuna.Study, _trial) -> None:
        finished = sum(counted(t) for t in study.get_trials(deepcopy=False))
        if finished >= settings.trials:
            study.stop()
        print(_trial_line(study, _trial, settings), flush=True)

    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    while sum(counted(t) for t in study.get_trials(deepcopy=False)) < settings.trials:
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            return
        try:
            study.optimize(objective_function(settings), timeout=timeout, catch=(Exception,), callbacks=[enough])
            return
        except ValueError as exc:  # Optuna's tell of a trial that another process failed (heartbeat, lost pid)
            if not str(exc).startswith("Cannot tell a"):
                raise
            print(f"a trial of this process was ended by another process ({exc}); the study goes on",
                  file=sys.stderr, flush=True)


def _trial_line(study, trial, settings: Settings) -> str:
    state = trial.state.name.lower()
    if trial.values is not None:
        shown_values = ", ".join(f"{name} {v:.4g}" for name, v in zip(settings.objectives, trial.values))
    else:
        shown_values = trial.user_attrs.get("error") or trial.user_attrs.get("lost") or ""
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    return f"trial {trial.number} {state}: {shown_values} ({params})"


def _stop_worker(signum: int, frame: Any) -> None:
    """A worker's first SIGINT or SIGTERM outside a training loop ends it like Ctrl-C (Optuna marks the trial
    it was starting failed); later ones are ignored, so they cannot cut that bookkeeping short."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def _worker_main(settings: Settings, worker: int) -> None:
    """A worker process: dies with its parent (so kill -9 of the command stops every trial it started)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    for sig in (signal.SIGINT, signal.SIGTERM):  # outside a trial's loop (which stops at its next event)
        signal.signal(sig, _stop_worker)
    with contextlib.suppress(KeyboardInterrupt):
        optimize(settings, worker)


def run_study(settings: Settings) -> None:
    """Run the trials in this process and `workers - 1` more; all share the study through its storage."""
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_worker_main, args=(settings, i), daemon=True)
               for i in range(1, settings.workers)]
    for process in workers:
        process.start()
    try:
        optimize(settings)
    except KeyboardInterrupt:
        _interrupt(workers)
        raise
    finally:
        for process in workers:
            process.join()


def _interrupt(workers: list[multiprocessing.process.BaseProcess]) -> None:
    """Stop the workers too: a SIGINT sent to this process alone (not to its process group, as a terminal's
    Ctrl-C is) never reached them, and they would run the study to its end. SIGTERM, not a second SIGINT: a
    worker that did get the terminal's Ctrl-C would take a second SIGINT as "stop at once, even mid-step"."""
    for process in workers:
        if process.is_alive() and process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)


# ---------------------------------------------------------------- entry point


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    settings = plan(args, argv)
    if args.storage is None:  # the default database lives in the study folder
        settings.out.mkdir(parents=True, exist_ok=True)
    study = load_study(settings)
    lost = fail_lost_trials(study)
    if lost:
        print(f"{lost} trial(s) left running by a process that no longer exists: marked failed", file=sys.stderr)
    print(f"study {settings.study_name} ({settings.storage}): {sum(counted(t) for t in study.get_trials())} of "
          f"{settings.trials} trials done; folder {settings.out}", flush=True)
    with _creation_lock(settings.storage):  # processes starting together enqueue it once
        if not study.get_trials(deepcopy=False):
            enqueue_default(study, settings)
    t0 = time.perf_counter()
    try:
        run_study(settings)
    except KeyboardInterrupt:
        print("interrupted: trials in flight are marked failed; run the same command to continue the study",
              file=sys.stderr)
        return 130
    study = load_study(settings)
    best, line = tune_report.finish(study, settings, time.perf_counter() - t0, write_config=args.write_config)
    print(line if best is not None else f"error: {line}", file=sys.stdout if best is not None else sys.stderr)
    return 0 if best is not None else 1


if __name__ == "__main__":
    sys.exit(main())
