"""`python -m rlagents.compare --agents dqn,sb3-dqn --env CartPole-v1 --seeds 5`: train every agent × seed
through the one training loop, in parallel worker processes (or as Ray tasks), and write a statistical
report (`report.md`), the learning curves (`curves.png`) and every run's summary (`results.json`).

Every run is a `RunSpec` resolved and validated here, before anything runs, and handed to a worker (a local
process or a Ray task), which trains it exactly as `python -m rlagents.train --agent A --env E --seed S
--run-dir OUT/runs/E__A__sS` would: its TensorBoard logs, checkpoints and summary are those of any single
run, and all runs' logs sit under one folder: `tensorboard --logdir OUT`.

An agent may be listed as a variant, `AGENT@NAME` (e.g. `--agents ppo,ppo@memoryless --set
ppo@memoryless.recurrent=none`): the same agent under another name, with its own `--set` keys, reported as a
row of its own.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue as queue_module
import shlex
import socket
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rlagents import report
from rlagents import _entry_module
from rlagents.agents import agent_class, available_agents
from rlagents.cli import ArgumentParser, output_dir_arg
from rlagents.envspec import parse_env_kwargs
from rlagents.errors import UserError, choices, cli_entry
from rlagents.paths import check_output_dir
from rlagents.runspec import RunSpec, resolve_spec
from rlagents.safeload import shown
from rlagents.validate import check_count, check_seed, parse_seeds

OUT_DIR = Path("runs/compare")
MAX_RUNS = 10_000  # agents × envs × seeds of one comparison
MAX_WORKERS = 1_024  # worker processes
BACKENDS = ("local", "ray")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m rlagents.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", help=f"comma-separated agents ({', '.join(available_agents())}); AGENT@NAME is "
                   "a variant of AGENT with its own --set keys (AGENT@NAME.KEY=VALUE), reported as its own row")
    p.add_argument("--env", help="Gymnasium env id, or package.module:EnvId-v0 (comma-separated for several)")
    p.add_argument("--env-module", action="append", default=[], metavar="NAME",
                   help="import this module first, for the env ids it registers (repeatable)")
    p.add_argument("--env-kwargs", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the env's constructor, the value read as YAML (repeatable)")
    p.add_argument("--seeds", default="5",
                   help="seeds: N (a count: 0..N-1, default 5; N >= 1), A-B (a range, e.g. 100-104; 0-0 is seed 0 "
                   "alone) or A,B,C (e.g. 3,7,11), so a comparison can run on seeds a config was not chosen on")
    p.add_argument("--steps", type=int, help="env steps per run for every agent (default: each agent's config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="[AGENT.]KEY=VALUE",
                   help="override a config key of one agent (AGENT.KEY=VALUE) or of all (KEY=VALUE); repeatable")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)),
                   help="parallel runs (default: CPU count); each uses one torch thread")
    p.add_argument("--out", type=output_dir_arg("--out"), help="output folder (default: runs/compare/<time>)")
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local worker processes, or Ray tasks of one CPU each (pip install -e .[ray])")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--from", dest="from_dirs", nargs="+", type=Path, metavar="DIR",
                   help="rebuild the report from finished run or comparison folders, without training")
    p.add_argument("--no-progress", action="store_true", help="no live display (one line per finished run)")
    return p


@dataclass
class Task:
    """One training run of the comparison: its resolved spec (which says where it writes) and the name it is
    reported under (the agent, or a variant `AGENT@NAME`)."""

    spec: RunSpec
    name: str = ""

    @property
    def agent(self) -> str:
        return self.name or self.spec.agent

    @property
    def env(self) -> str:
        return self.spec.env.id

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def run_dir(self) -> Path:
        return self.spec.run_dir

    @property
    def label(self) -> str:
        return f"{self.agent} {self.env} s{self.seed}"

    @property
    def key(self) -> str:
        """What tells this run from every other: its run directory (tasks built outside `plan_specs`, like
        tune's held-out runs, may share agent, env and seed)."""
        return str(self.run_dir)


def plan(args) -> tuple[list[Task], Path]:
    """Validate every option and resolve each run's spec before anything runs; returns the runs."""
    if not args.agents or not args.env:
        raise UserError(f"--agents and --env are required (or --from DIR); valid agents: "
                        f"{choices(available_agents())}")
    check_count(args.workers, "--workers", high=MAX_WORKERS)
    overrides: dict[str, Any] = {}
    for pair in args.overrides:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UserError(f"--set expects [AGENT.]KEY=VALUE, got {pair!r}")
        overrides[key.strip()] = value.strip()
    return plan_specs([a.strip() for a in args.agents.split(",") if a.strip()],
                      [e.strip() for e in args.env.split(",") if e.strip()], seeds=parse_seeds(args.seeds),
                      steps=args.steps,
                      overrides=overrides, env_kwargs=parse_env_kwargs(args.env_kwargs),
                      env_modules=tuple(args.env_module), out=args.out)


def plan_specs(agents: list[str], envs: list[str], *, seeds: int | list[int], steps: int | None,
               overrides: dict[str, Any],
               env_kwargs: Mapping[str, Any] | None = None, env_modules: tuple[str, ...] = (),
               out: Path | None = None) -> tuple[list[Task], Path]:
    """Every agent × env × seed as a validated `RunSpec` (unknown agents, bad keys, spaces an agent cannot
    take, envs that cannot be built: all refused here, in one line); returns the runs and the output folder.
    `overrides` keys are `KEY` (every agent) or `AGENT.KEY` (one agent); `seeds` is a count (0..N-1) or a list."""
    from rlagents.evaluate import spaces_of

    if not agents:
        raise UserError(f"--agents names no agent; valid agents: {choices(available_agents())}")
    if not envs:
        raise UserError("--env names no env, e.g. --env CartPole-v1")
    for agent in agents:
        base_agent, at, variant = agent.partition("@")
        if at and (not variant or not variant.replace("-", "").replace("_", "").isalnum()):
            raise UserError(f"--agents {agent}: a variant is AGENT@NAME, NAME of letters, digits, - and _")
        agent_class(base_agent)  # unknown agent: one-line error with the valid ones
    if len(set(agents)) != len(agents):
        raise UserError(f"--agents lists an agent twice: {','.join(agents)}")
    if len(set(envs)) != len(envs):
        raise UserError(f"--env lists an env twice: {','.join(envs)}")
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = parse_seeds(str(seeds))
    if not isinstance(seeds, list) or not seeds:
        raise UserError(f"--seeds must be a count or a list of seeds, got {shown(seeds)}")
    seeds = [check_seed(s, "--seeds") for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds lists a seed twice: {','.join(map(str, seeds))}")
    if len(agents) * len(envs) * len(seeds) > MAX_RUNS:
        raise UserError(f"{len(agents)} agents × {len(envs)} envs × {len(seeds)} seeds is "
                        f"{len(agents) * len(envs) * len(seeds):,} runs; one comparison runs at most {MAX_RUNS:,}")
    if steps is not None and steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    per_agent: dict[str, dict[str, Any]] = {a: {} for a in agents}
    for key, value in overrides.items():
        target, dot, name = key.partition(".")
        if dot and target not in per_agent:
            raise UserError(f"--set {key}={value}: agent {target!r} is not in --agents ({', '.join(agents)})")
        for agent in [target] if dot else agents:
            per_agent[agent][name if dot else key] = value
    out = check_output_dir(out or OUT_DIR / datetime.now().strftime("%Y%m%d-%H%M%S"), "--out").resolve()
    if (out / "runs").exists() and any((out / "runs").iterdir()):
        raise UserError(f"output folder {out} already holds runs; choose another --out")
    tasks = []
    for env in envs:
        for agent in agents:
            agent_overrides = dict(per_agent[agent], **({"steps": steps} if steps is not None else {}))
            base_agent = agent.partition("@")[0]
            base = resolve_spec(base_agent, env, overrides=agent_overrides, env_kwargs=env_kwargs,
                                env_modules=env_modules, run_dir=out)
            agent_class(base_agent).check_spaces(*spaces_of(base.env), base.config.agent)
            for seed in seeds:
                run_dir = out / "runs" / f"{base.env.id.replace('/', '-').replace(':', '-')}__{agent}__s{seed}"
                tasks.append(Task(dataclasses.replace(base, seed=seed, run_dir=run_dir), agent))
    return tasks, out


# ---------------------------------------------------------------- one run, in a worker


_progress_queue: Any = None


def _init_worker(progress_queue: Any) -> None:
    global _progress_queue
    _progress_queue = progress_queue


def run_task(task: Task, progress_queue: Any = None) -> dict[str, Any]:
    """Train one run in this process with one torch thread; a failure becomes a record with its error."""
    from rlagents.api import train_spec
    from rlagents.errors import TrainingFault
    from rlagents.threads import set_cpu_threads

    set_cpu_threads(1)
    sink_queue = progress_queue if progress_queue is not None else _progress_queue
    key = task.key

    def send(message: tuple) -> None:
        if sink_queue is not None:
            try:
                sink_queue.put_nowait(message)
            except Exception:  # noqa: BLE001, S110 (a full or closed queue must never stop training)
                pass

    send(("start", key, task.spec.config.train.steps))
    record: dict[str, Any] = {"agent": task.agent, "env": task.env, "seed": task.seed, "run_dir": str(task.run_dir)}
    try:
        result = train_spec(task.spec, progress=False, progress_sink=lambda step, speed, ret, ev: send(
            ("progress", key, step, speed, ret, ev)))
        record.update(result.summary)
        record["agent"] = task.agent  # a variant keeps its own name in the report
    except (Exception, SystemExit) as exc:  # noqa: BLE001 (any failure is this run's alone)
        kind = "" if isinstance(exc, (UserError, TrainingFault)) else f"{type(exc).__name__}: "
        record.update(status="failed", error=kind + " ".join(str(exc).split())[:500])
        try:
            task.run_dir.mkdir(parents=True, exist_ok=True)
            (task.run_dir / "error.txt").write_text(traceback.format_exc())
        except OSError:
            pass
    send(("done", key, record.get("status"), record.get("eval_return_mean"), record.get("error")))
    return record


# ---------------------------------------------------------------- live display


class Display:
    """One rich progress line per run (steps, steps/s, recent return, last eval, state), or finished lines."""

    def __init__(self, tasks: list[Task], enabled: bool):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(file=sys.stderr)
        self.enabled = enabled
        self.progress = Progress(TextColumn("{task.description:<28}"), BarColumn(bar_width=14),
                                 TextColumn("{task.completed:>9,.0f} {task.fields[speed]:>6}/s"),
                                 TextColumn("ret {task.fields[ret]:>7} eval {task.fields[eval]:>7}"),
                                 TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
                                 console=self.console, refresh_per_second=4, disable=not enabled)
        self.ids = {t.key: self.progress.add_task(t.label, total=None, start=False, speed="-", ret="-",
                                                  eval="-", state="waiting") for t in tasks}
        self.labels = {t.key: t.label for t in tasks}

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def handle(self, message: tuple) -> None:
        """A worker's ("start" | "progress" | "done", task key, ...) message."""
        kind, key = message[0], message[1]
        task = self.ids.get(key)
        if task is None:
            return
        label = self.labels[key]
        if kind == "start":
            self.progress.start_task(task)  # the elapsed-time column counts from here
            self.progress.update(task, total=message[2] or None, state="running")
        elif kind == "progress":
            _, _, step, speed, ret, ev = message
            self.progress.update(task, completed=step, speed=f"{speed:,.0f}",
                                 ret="-" if ret is None else f"{ret:.1f}", eval="-" if ev is None else f"{ev:.1f}")
        elif kind == "done":
            _, _, status, final, error = message
            self.progress.stop_task(task)
            if status == "completed":
                total = self.progress.tasks[[t.id for t in self.progress.tasks].index(task)].total
                self.progress.update(task, completed=total or 0, eval=f"{final:.1f}", state="[green]done")
                line = f"done    {label}: final eval return {final:.1f}"
            else:
                self.progress.update(task, state=f"[red]{status}")
                line = f"{status or 'failed'}  {label}: {error}"
            self.console.print(line, markup=False, highlight=False)


# ---------------------------------------------------------------- backends


def run_local(tasks: list[Task], workers: int, display: Display) -> list[dict[str, Any]]:
    """Run `tasks` in `workers` spawned processes; a worker that dies fails only the runs it had started."""
    for var in THREAD_VARS:  # one BLAS/OpenMP thread per worker; spawned children inherit this
        os.environ.setdefault(var, "1")
    ctx = multiprocessing.get_context("spawn")  # no fork after torch has started threads
    messages = ctx.Queue()
    results: dict[str, dict[str, Any]] = {}
    started: set[str] = set()
    todo = list(tasks)
    while todo:
        pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx, initializer=_init_worker,
                                   initargs=(messages,))
        futures: dict[Future, Task] = {pool.submit(run_task, t): t for t in todo}
        pending = set(futures)
        broken = False
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(messages, display, started)
            for future in done:
                task = futures[future]
                try:
                    results[task.key] = future.result()
                except BrokenProcessPool:
                    broken = True
        pool.shutdown(wait=True, cancel_futures=True)
        _drain(messages, display, started)
        todo = [t for t in todo if t.key not in results]
        if broken:  # the runs that were running when a worker died fail; the others run in a fresh pool
            for task in [t for t in todo if t.key in started]:
                results[task.key] = {"agent": task.agent, "env": task.env, "seed": task.seed,
                                       "run_dir": str(task.run_dir), "status": "failed",
                                       "error": "worker process died (killed, out of memory or crashed)"}
                display.handle(("done", task.key, "failed", None, results[task.key]["error"]))
            todo = [t for t in todo if t.key not in results]
    return [results[t.key] for t in tasks]


def _drain(messages: Any, display: Display, started: set[str]) -> None:
    while True:
        try:
            message = messages.get_nowait()
        except (queue_module.Empty, OSError, ValueError):
            return
        if message[0] == "start":
            started.add(message[1])
        display.handle(message)


def run_ray(tasks: list[Task], address: str | None, workers: int, display: Display) -> list[dict[str, Any]]:
    """Run `tasks` as Ray tasks of one CPU each on the cluster at `address` (default: a local instance with
    `workers` CPUs). Run directories must be on a filesystem the Ray workers share with this machine."""
    try:
        import ray
        from ray.util.queue import Queue
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install -e '.[ray]'") from None
    if address:
        _check_reachable(address)
    env_vars = {var: "1" for var in THREAD_VARS}
    if "PYTHONPATH" in os.environ:
        env_vars["PYTHONPATH"] = os.environ["PYTHONPATH"]
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR", configure_logging=False,
                     runtime_env={"env_vars": env_vars})
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot connect to the Ray cluster {address or '(local)'}: {exc}") from None
    try:
        messages = Queue()
        remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
        refs = {remote.remote(t, messages): t for t in tasks}
        results: dict[str, dict[str, Any]] = {}
        started: set[str] = set()
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.2)
            for item in messages.get_nowait_batch(messages.qsize()) if messages.qsize() else []:
                if item[0] == "start":
                    started.add(item[1])
                display.handle(item)
            for ref in done:
                task = refs[ref]
                try:
                    results[task.key] = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 (the task's worker died: fail this run only)
                    results[task.key] = {"agent": task.agent, "env": task.env, "seed": task.seed,
                                           "run_dir": str(task.run_dir), "status": "failed",
                                           "error": f"Ray task failed: {' '.join(str(exc).split())[:300]}"}
                    display.handle(("done", task.key, "failed", None, results[task.key]["error"]))
        for item in messages.get_nowait_batch(messages.qsize()) if messages.qsize() else []:
            display.handle(item)
        return [results[t.key] for t in tasks]
    finally:
        if started_here:
            ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a Ray address nothing listens on (ray.init would retry for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray cluster reachable there ({exc}); start one with "
                        f"`ray start --head`, or leave --address out to start a local instance") from None


# ---------------------------------------------------------------- entry point


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = "python -m rlagents.compare " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.from_dirs:
        if args.agents or args.env:
            raise UserError("--from rebuilds a report from finished runs; drop --agents/--env")
        runs = report.load_runs(args.from_dirs)
        out = (args.out or check_output_dir(OUT_DIR / f"report-{datetime.now().strftime('%Y%m%d-%H%M%S')}",
                                            "--out")).resolve()
        out.mkdir(parents=True, exist_ok=True)
        report.write_all(out, runs, command=command, origin=report.load_headers(args.from_dirs))
        print(f"{len(runs)} runs; report: {out / 'report.md'}")
        return 0
    tasks, out = plan(args)
    order = [a.strip() for a in args.agents.split(",")]
    t0 = time.perf_counter()
    runs = run_all(tasks, out, workers=args.workers, backend=args.backend, address=args.address,
                   progress=not args.no_progress, order=order, command=command)
    failed = sum(r.get("status") != "completed" for r in runs)
    print(f"{len(runs)} runs ({failed} failed) in {time.perf_counter() - t0:.0f} s; report: {out / 'report.md'}; "
          f"curves: {out / 'curves.png'}; TensorBoard: tensorboard --logdir {out}")
    return 1 if failed == len(runs) else 0


def run_all(tasks: list[Task], out: Path, *, workers: int | None = None, backend: str = "local",
            address: str | None = None, progress: bool = True, order: list[str] | None = None,
            command: str = "") -> list[dict[str, Any]]:
    """Train `tasks` on `backend` (local processes or Ray) and write the report into `out`; returns every
    run's record (its summary, or its error)."""
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    workers = workers or max(1, os.cpu_count() or 1)
    shared = [key for key, n in Counter(t.key for t in tasks).items() if n > 1]
    if shared:
        raise UserError(f"two runs of the comparison would write to one run directory: {shared[0]}")
    out.mkdir(parents=True, exist_ok=True)
    with Display(tasks, enabled=progress) as display:
        if backend == "ray":
            runs = run_ray(tasks, address, workers, display)
        else:
            runs = run_local(tasks, workers, display)
    report.write_all(out, runs, command=command, order=order)
    return runs


_entry_module(__name__)  # rlagents.compare(...) is the Python API's compare (see rlagents/__init__.py)

if __name__ == "__main__":
    sys.exit(main())
