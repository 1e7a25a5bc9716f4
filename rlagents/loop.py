"""The one training loop: it steps the envs, evaluates, logs, checkpoints and shows progress for every agent.

`train` wires small pieces together (docs/guide/loop.md shows how): `LoopState` holds every counter and is
what a checkpoint saves; `EpisodeStats` keeps the returns of running and finished episodes; `Schedule` says
when the next log, evaluation, checkpoint and progress update are due; `Session` runs those events and the
evaluation record shared by periodic and final evaluations, and tells the `LoopListener`s (TensorBoard, a
Python callback, later video or experiment trackers) at each log and evaluation event. A driver steps the
envs and reports every vector step to the one `on_step` path: `step_envs` (ours, the default) or an agent's
own `drive` (SB3's). The per-step path does only what every step needs; everything else waits for an event.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import random
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlagents import obs as batches
from rlagents.agents import Agent
from rlagents.agents.base import StepCallback
from rlagents.checkpoint import (BEST, CHECKPOINT_DIR, FINAL, atomic_write_json, library_versions, save_checkpoint,
                                 step_checkpoints)
from rlagents.config import ResolvedConfig, config_sha256
from rlagents.environments import evaluate, final_observations
from rlagents.errors import CheckpointError, TrainingFault
from rlagents.masks import final_masks, illegal_count
from rlagents.progress import TrainingProgress
from rlagents.safeload import clip, shown
from rlagents.state_check import LOAD_ERRORS, check_state, load_agent_state

EVAL_SEED_OFFSET = 1_000_003  # eval episodes never share seeds with training envs
PROGRESS_EVERY_S = 0.25
RUNNING, COMPLETED, STOPPED, INTERRUPTED, FAILED = "running", "completed", "stopped", "interrupted", "failed"

#: `callback(step, metrics)`: see `train`; returning False stops the run.
Callback = Callable[[int, dict[str, Any]], "bool | None"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class LoopState:
    """The loop's counters: the only holder of them, saved in every checkpoint so that `--resume` carries on
    where it stopped."""

    step: int = 0
    episodes: int = 0
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    solved_at_step: int | None = None
    solved_at_time: float | None = None
    eval_time: float = 0.0
    train_time: float = 0.0  # training seconds of the sessions before this one (resumed runs)
    best_eval: float | None = None
    sessions: int = 1
    #: the next log/evaluation/checkpoint steps (`Schedule`), so that a run stopped before its events at a
    #: step (a signal, an interrupted evaluation) runs them on resume; empty in older checkpoints
    schedule: dict[str, int] = field(default_factory=dict)
    illegal_actions: int = 0  # training actions that the env's action masks forbid (envs with masks only)


def global_rng_state() -> dict[str, Any]:
    """States of the process-wide RNGs (Python, NumPy, torch), as checkpointable arrays and lists."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": keys.astype(np.int64), "pos": int(pos), "has_gauss": int(has_gauss),
                      "gauss": float(gauss)}}


def set_global_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
    n = state["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"]).astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


def check_session(record: dict[str, Any], path: Path | str) -> None:
    """Refuse (CheckpointError naming checkpoint `path`) a checkpoint's loop and RNG state that a resume
    cannot use: unknown or mistyped LoopState fields and evaluation records, RNG states of the wrong shape or
    type."""
    where = f"checkpoint {path}"
    loop = record.get("loop")
    if not isinstance(loop, dict):
        raise CheckpointError(f"{where}: its loop state must be a mapping, got {shown(loop)}")
    unknown = sorted(set(loop) - set(_LOOP_TYPES))
    if unknown:
        raise CheckpointError(f"{where}: unknown loop state {', '.join(shown(k) for k in unknown[:5])}")
    _check_fields(loop, _LOOP_TYPES, f"{where}: loop state")
    evaluations = loop.get("evaluations", [])
    if not isinstance(evaluations, list):
        raise CheckpointError(f"{where}: loop state: evaluations must be a list, got {shown(evaluations)}")
    for i, evaluation in enumerate(evaluations):
        if not isinstance(evaluation, dict):
            raise CheckpointError(f"{where}: loop state: evaluations.{i} must be a mapping, got {shown(evaluation)}")
        _check_fields(evaluation, _EVALUATION_TYPES, f"{where}: loop state: evaluations.{i}", required=True)
        if not all(_is_number(r) for r in evaluation["returns"]) or not evaluation["returns"]:
            raise CheckpointError(f"{where}: loop state: evaluations.{i}.returns must be a list of numbers")
    schedule = loop.get("schedule", {})
    unknown = sorted(set(schedule) - set(_SCHEDULE_TYPES))
    if unknown:
        raise CheckpointError(f"{where}: unknown loop state schedule.{shown(unknown[0])}")
    _check_fields(schedule, _SCHEDULE_TYPES, f"{where}: loop state: schedule")
    check_state(record.get("rng"), global_rng_state(), where=f"{where}: RNG state")


# types of the loop state's fields as a checkpoint's JSON holds them (None: may be null); evaluation results
# may be NaN or infinite (an env may return such rewards): they are records, not state
_LOOP_TYPES = {"step": (int,), "episodes": (int,), "sessions": (int,), "eval_time": (float,), "train_time": (float,),
               "solved_at_step": (int, None), "solved_at_time": (float, None), "best_eval": (float, None),
               "evaluations": (list,), "schedule": (dict,), "illegal_actions": (int,)}
_SCHEDULE_TYPES = {"log": (int,), "eval": (int,), "checkpoint": (int,)}
_EVALUATION_TYPES = {"step": (int,), "train_time_s": (float,), "return_mean": (float,), "return_std": (float,),
                     "length_mean": (float,), "returns": (list,)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_fields(values: dict[str, Any], types: dict[str, tuple], where: str, required: bool = False) -> None:
    for key, allowed in types.items():
        if key not in values:
            if required:
                raise CheckpointError(f"{where} has no {key}")
            continue
        value = values[key]
        if value is None and None in allowed:
            continue
        if int in allowed and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise CheckpointError(f"{where}: {key} must be a non-negative integer, got {shown(value)}")
        if float in allowed and not _is_number(value):
            raise CheckpointError(f"{where}: {key} must be a number, got {shown(value)}")
        if list in allowed and not isinstance(value, list):
            raise CheckpointError(f"{where}: {key} must be a list, got {shown(value)}")
        if dict in allowed and not isinstance(value, dict):
            raise CheckpointError(f"{where}: {key} must be a mapping, got {shown(value)}")


def restore_session(agent: Agent, record: dict[str, Any], path: Path | str) -> LoopState:
    """Load a training checkpoint's agent, loop and RNG state (checked first); returns the loop state of
    the new session. Anything that does not fit is a CheckpointError naming `path`, never a traceback."""
    check_session(record, path)
    load_agent_state(agent, record.get("agent"), path)
    try:
        state = LoopState(**record["loop"])
        set_global_rng_state(record["rng"])
    except LOAD_ERRORS as exc:
        raise CheckpointError(f"checkpoint {path}: its loop or RNG state cannot be restored "
                              f"({clip(str(exc), 200)})") from None
    state.sessions += 1
    return state


def resume_seed(seed: int, step: int) -> int:
    """Seed for the envs of a resumed session: differs per resume point, same for the same point."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def nonfinite_entries(state: dict[str, Any], recorded: Collection[str]) -> list[str]:
    """Key paths of an agent's `state_dict` holding NaN or inf floats, outside its `recorded` experience keys
    (the values `state_check` refuses to load)."""
    bad = []
    stack: list[tuple[Any, str]] = [(value, key) for key, value in state.items() if key not in recorded]
    while stack:
        value, key = stack.pop()
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(key)
        elif isinstance(value, np.ndarray):
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                bad.append(key)
        elif isinstance(value, float):
            if not math.isfinite(value):
                bad.append(key)
        elif isinstance(value, dict):
            stack.extend((item, f"{key}.{k}") for k, item in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((item, f"{key}.{i}") for i, item in enumerate(value))
    return sorted(bad)


@dataclass
class Run:
    """A validated run, ready to train: built by the CLI before anything is written to disk."""

    agent_name: str
    env_id: str
    seed: int
    device: torch.device
    config: ResolvedConfig
    agent: Agent
    envs: gym.vector.VectorEnv
    eval_envs: gym.vector.VectorEnv
    run_dir: Path
    progress: bool = True
    progress_sink: Callable[[int, float, float | None, float | None], None] | None = None  # instead of the bar
    listeners: list[LoopListener] = field(default_factory=list)  # told about events, after TensorBoard

    def save(self, name: str, state: LoopState, reason: str, in_flight: dict[str, Any] | None = None) -> None:
        """Write checkpoint `name`: agent, loop state, global RNGs and the episodes in flight (`in_flight`,
        see `train`), with metadata (atomic files)."""
        agent_state = self.agent.state_dict()
        # e.g. an infinite gradient behind a finite loss, or NaN rewards in a planner's model: keep the last
        # good checkpoint instead (what `state_check` would refuse to load is never saved)
        bad = self.agent.nonfinite_parameters() or nonfinite_entries(agent_state, self.agent.recorded_state)
        if bad:
            raise TrainingFault(f"non-finite weights ({', '.join(bad[:3])}{', …' if len(bad) > 3 else ''}) at env "
                                f"step {state.step}: not saved; the last good checkpoint is kept (check rewards and "
                                f"observations for NaN/inf, or lower lr)")
        meta = self.checkpoint_meta(state.step, state.episodes)
        meta["reason"] = reason
        record = {"agent": agent_state, "loop": dataclasses.asdict(state), "rng": global_rng_state()}
        if in_flight is not None:
            record["in_flight"] = in_flight
        save_checkpoint(self.run_dir / CHECKPOINT_DIR, name, record, meta)
        if name.startswith("step_"):  # keep only the newest `keep_checkpoints` periodic ones
            for old in step_checkpoints(self.run_dir)[: -self.config.train.keep_checkpoints]:
                old.with_suffix(".safetensors").unlink(missing_ok=True)
                old.unlink(missing_ok=True)

    def checkpoint_meta(self, step: int, episodes: int) -> dict[str, Any]:
        return {"agent": self.agent_name, "env": self.env_id, "seed": self.seed, "step": step,
                "episodes": episodes,
                "observation_space": repr(self.envs.single_observation_space),
                "action_space": repr(self.envs.single_action_space),
                "config": {"train": dataclasses.asdict(self.config.train),
                           "agent": dataclasses.asdict(self.config.agent)},
                "config_sha256": config_sha256(self.config.train, self.config.agent, self.seed)}


class LoopListener:
    """Told by the loop about its events; subclass and override what you need. The loop's hook points:
    `start` once per session, `on_event` at every log and evaluation event, `end` once with the outcome."""

    def start(self, run: Run, state: LoopState, resumed: bool) -> None:
        """Training (re)starts at `state.step`."""

    def on_event(self, step: int, metrics: dict[str, Any]) -> bool | None:
        """A log and/or evaluation event at `step`. `metrics` has `step`, `episodes`, `train_time_s`, every
        scalar logged (tags with a `/`, e.g. `charts/episode_return`, `losses/td_loss`, `eval/return_mean`),
        and at an evaluation the record itself under `evaluation` (`return_mean`, `returns`, …). Return False
        to stop the run (with a resumable checkpoint); the final evaluation's answer is ignored."""
        return None

    def end(self, status: str, summary: dict[str, Any] | None) -> None:
        """The session ended with `status` (completed, stopped, interrupted, failed); `summary` is the run's
        summary when it completed."""

    def during_evaluation(self, step: int, policy: Callable[..., np.ndarray]) -> dict[str, Any] | None:
        """Inside each evaluation, so that its seconds count as evaluation, not training, time (e.g. recording
        a video of `policy(obs, masks)`, the greedy policy); what it returns joins the evaluation record."""
        return None


class TensorBoardLog(LoopListener):
    """Every scalar of every event, the hyperparameter table, and the final hparams, in the run directory."""

    def start(self, run: Run, state: LoopState, resumed: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when training

        self.run = run
        with writing("the TensorBoard log", run.run_dir):
            # everything at the checkpoint step itself was logged before the checkpoint was written: keep it
            self.writer = SummaryWriter(log_dir=str(run.run_dir), purge_step=state.step + 1 if resumed else None)
            if not resumed:
                self.writer.add_text("hyperparameters", _markdown_table(run), 0)

    def on_event(self, step: int, metrics: dict[str, Any]) -> None:
        with writing("the TensorBoard log", self.run.run_dir):
            for tag, value in metrics.items():
                if "/" in tag:
                    self.writer.add_scalar(tag, value, step)

    def end(self, status: str, summary: dict[str, Any] | None) -> None:
        if status == FAILED:  # best effort: the fault being reported may be this writer's full disk
            with suppress(Exception):
                self.writer.close()
            return
        with writing("the TensorBoard log", self.run.run_dir):
            if summary is not None:
                step = summary["total_steps"]
                self.writer.add_scalar("charts/steps_per_s", summary["env_steps_per_s"], step)
                self.writer.add_hparams(_hparams(self.run), {"hparam/eval_return_mean": summary["eval_return_mean"]},
                                        run_name=".", global_step=step)
            self.writer.close()


class CallbackListener(LoopListener):
    """A Python callback (`train(callback=…)`, `rlagents.train(callback=…)`) as a listener."""

    def __init__(self, callback: Callback):
        self.callback = callback

    def on_event(self, step: int, metrics: dict[str, Any]) -> bool | None:
        return self.callback(step, metrics)


class EpisodeStats:
    """Return and length of each env's running episode, and of the episodes finished since the last log (the
    window) and recently (the progress bar's mean). `returns` is updated in place every step; lengths are
    counted from the step at which each episode began (`starts`), so they cost nothing per step."""

    def __init__(self, n_envs: int, step: int):
        self.n_envs = n_envs
        self.returns = np.zeros(n_envs)
        self.starts = np.full(n_envs, step, dtype=np.int64)  # env step at which each running episode began
        self.window_returns: list[float] = []
        self.window_lengths: list[int] = []
        self.recent_returns: deque[float] = deque(maxlen=100)

    def lengths(self, step: int) -> np.ndarray:
        return (step - self.starts) // self.n_envs

    def end(self, done: np.ndarray, step: int) -> int:
        """Close the episodes of the envs in mask `done` at env step `step`; returns how many ended."""
        lengths = self.lengths(step)
        for i in np.flatnonzero(done):
            self.window_returns.append(float(self.returns[i]))
            self.window_lengths.append(int(lengths[i]))
            self.recent_returns.append(float(self.returns[i]))
        self.returns[done] = 0.0
        self.starts[done] = step
        return int(done.sum())

    def take_window(self) -> dict[str, float]:
        """Mean return and length of the episodes finished since the last call, as scalars to log."""
        scalars = {}
        if self.window_returns:
            scalars = {"charts/episode_return": float(np.mean(self.window_returns)),
                       "charts/episode_length": float(np.mean(self.window_lengths))}
        self.window_returns.clear()
        self.window_lengths.clear()
        return scalars

    def recent_mean(self) -> float | None:
        return float(np.mean(self.recent_returns)) if self.recent_returns else None

    def snapshot(self, step: int) -> dict[str, Any]:
        return {"ep_return": self.returns.copy(), "ep_length": self.lengths(step),
                "window_returns": list(self.window_returns), "window_lengths": list(self.window_lengths),
                "recent_returns": list(self.recent_returns)}

    def restore(self, saved: dict[str, Any], restored: np.ndarray, step: int) -> None:
        """Take a snapshot's values back; running episodes only for the envs in mask `restored`."""
        self.window_returns.extend(float(r) for r in saved["window_returns"])
        self.window_lengths.extend(int(n) for n in saved["window_lengths"])
        self.recent_returns.extend(float(r) for r in saved["recent_returns"])
        self.returns[restored] = np.asarray(saved["ep_return"])[restored]
        self.starts[restored] = step - np.asarray(saved["ep_length"], dtype=np.int64)[restored] * self.n_envs


class Schedule:
    """The env steps at which the next log, evaluation, checkpoint and progress update are due, and the
    earliest of them (`next_event`: the one number the per-step path compares against)."""

    def __init__(self, cfg, step: int, saved: dict[str, int], n_envs: int):
        self.cfg = cfg
        self.log = saved.get("log", _after(step, cfg.log_every))
        self.eval = saved.get("eval", _after(step, cfg.eval_every) if cfg.eval_every > 0 else cfg.steps)
        self.checkpoint = saved.get("checkpoint", _after(step, cfg.checkpoint_every)
                                    if cfg.checkpoint_every > 0 else cfg.steps + 1)
        self.progress_interval = max(n_envs, 64)
        self.progress = step + self.progress_interval
        self.next_event = 0
        self.update()

    def saved(self) -> dict[str, int]:
        return {"log": self.log, "eval": self.eval, "checkpoint": self.checkpoint}

    def logged(self, step: int) -> None:
        self.log += self.cfg.log_every * max(1, (step - self.log) // self.cfg.log_every + 1)

    def evaluated(self) -> None:
        self.eval = self.eval + self.cfg.eval_every if self.cfg.eval_every > 0 else self.cfg.steps

    def checkpointed(self) -> None:
        self.checkpoint += self.cfg.checkpoint_every

    def update(self) -> None:
        self.next_event = min(self.log, self.eval, self.checkpoint, self.progress)


def _after(step: int, every: int) -> int:
    """The first multiple of `every` past `step`."""
    return (step // every + 1) * every


@contextmanager
def writing(what: str, where: Path) -> Iterator[None]:
    """Turn a full disk while writing `what` into a TrainingFault saying where space ran out."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise TrainingFault(f"no space left on the device of {where} while writing {what} "
                            f"({exc.strerror or exc})") from exc


class StopSignals:
    """SIGINT and SIGTERM ask training to stop at its next event; during an evaluation (which may take long)
    they stop it at once by raising KeyboardInterrupt, and a second SIGINT does so anywhere (then, mid-step,
    no checkpoint is written: the state may be half-updated). Installed for a whole session, until the final
    state is saved (main thread only)."""

    def __init__(self):
        self.requested: list[int] = []
        self.interruptible = False
        self.holding = False
        self.torn = False  # an interrupt landed mid-step: the in-memory state is no resume point
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self.previous.items():
            signal.signal(sig, old)

    def _handler(self, signum, frame) -> None:
        again = bool(self.requested)
        self.requested.append(signum)
        if not self.holding and (self.interruptible or (again and signum == signal.SIGINT)):
            self.torn = not self.interruptible
            raise KeyboardInterrupt

    def hold(self) -> None:
        """From now on signals never interrupt (the session is saving its last state)."""
        self.holding = True

    @contextmanager
    def interruptible_here(self) -> Iterator[None]:
        """A block that a signal interrupts at once (KeyboardInterrupt), one already received included."""
        if self.requested:
            raise KeyboardInterrupt
        self.interruptible = True
        try:
            yield
        finally:
            self.interruptible = False


class Session:
    """One training session of a run (a fresh start or a resume): the events and evaluations around the
    driver's stepping, the checkpoints, and the summary. `train` puts it together."""

    def __init__(self, run: Run, state: LoopState, listeners: list[LoopListener], signals: StopSignals):
        self.run, self.state, self.listeners, self.signals = run, state, listeners, signals
        self.cfg = run.config.train
        self.n_envs = run.envs.num_envs
        self.stats = EpisodeStats(self.n_envs, state.step)
        self.schedule = Schedule(self.cfg, state.step, state.schedule, self.n_envs)
        self.status = RUNNING
        self.obs: Any = None  # the training envs' current observations (kept by the driver, for checkpoints)
        spec = run.envs.spec
        self.threshold = spec.reward_threshold if spec is not None else None
        self.progress = TrainingProgress(f"{run.agent_name} {run.env_id} s{run.seed}", self.cfg.steps,
                                         run.progress, sink=run.progress_sink)
        # agents that drive the envs themselves (SB3's) restart their episodes on resume anyway
        self.recordable = getattr(run.envs, "record_episodes", False) and not run.agent.drives_env
        self.start = self.last_progress_time = time.perf_counter()
        self.last_progress_step = state.step
        self.eval_seconds = 0.0  # evaluation seconds of this session (state.eval_time holds all sessions')

    # ------------------------------------------------------------------ the per-step path
    def step_callback(self) -> StepCallback:
        """The one per-step bookkeeping path, for our driver and for agents that drive the envs: count the
        vector step, add the rewards to the running episodes, close ended ones, and run the events when due.
        Returns False when training must stop. (A closure, and episode lengths counted from their start step:
        the least work per step.)"""
        state, returns, n_envs, limit = self.state, self.stats.returns, self.n_envs, self.cfg.steps
        schedule, stats, events = self.schedule, self.stats, self.events

        def on_step(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                    done: np.ndarray | None) -> bool:
            nonlocal returns  # updated in place (the name keeps its array)
            state.step = step = state.step + n_envs
            returns += rewards
            if done is not None:  # rare: an episode ended (`done` is the mask of envs whose did)
                state.episodes += stats.end(done, step)
            if step < schedule.next_event:
                return step < limit
            return events() and state.step < limit

        return on_step

    # ------------------------------------------------------------------ events
    def train_seconds(self) -> float:
        return self.state.train_time + time.perf_counter() - self.start - self.eval_seconds

    def events(self) -> bool:
        """Progress, logging, evaluation and checkpoints due at the current step; False when training must
        stop (a signal, or a listener asked)."""
        if self.signals.requested:  # stop here, between steps, where the agent's state is consistent
            self.status = INTERRUPTED
            return False
        step, schedule = self.state.step, self.schedule
        if step >= schedule.progress:
            self.show_progress()
        metrics: dict[str, Any] = {}
        if step >= schedule.log:
            metrics.update(self.stats.take_window())
            metrics["charts/steps_per_s"] = step / max(self.train_seconds(), 1e-9)
            metrics.update(self.run.agent.metrics())
            if getattr(self.run.envs, "masked", False):
                metrics["charts/illegal_actions"] = self.state.illegal_actions
            schedule.logged(step)
        if step >= schedule.eval:
            metrics["evaluation"] = self.evaluation()
        if metrics and not self.notify(metrics):
            self.status = STOPPED  # the checkpoint is written when the session ends
        if step >= schedule.checkpoint:
            schedule.checkpointed()
            if self.status == RUNNING:
                self.save(f"step_{step:012d}", "periodic")
        schedule.update()
        return self.status == RUNNING

    def show_progress(self) -> None:
        self.schedule.progress = self.state.step + self.schedule.progress_interval
        now = time.perf_counter()
        if now - self.last_progress_time >= PROGRESS_EVERY_S:
            speed = (self.state.step - self.last_progress_step) / (now - self.last_progress_time)
            self.last_progress_time, self.last_progress_step = now, self.state.step
            evaluations = self.state.evaluations
            self.progress.update(self.state.step, speed, self.stats.recent_mean(),
                                 evaluations[-1]["return_mean"] if evaluations else None)

    def notify(self, metrics: dict[str, Any]) -> bool:
        """Tell every listener about an event at the current step; False when one of them asks to stop."""
        state = self.state
        metrics = {"step": state.step, "episodes": state.episodes, "train_time_s": round(self.train_seconds(), 3),
                   **metrics}
        if "evaluation" in metrics:
            record = metrics["evaluation"]
            metrics.update({"eval/return_mean": record["return_mean"], "eval/return_std": record["return_std"],
                            "eval/length_mean": record["length_mean"]})
            if "illegal_actions" in record:
                metrics["eval/illegal_actions"] = record["illegal_actions"]
            if "success_rate" in record:  # the env reports info["is_success"] at episode ends
                metrics["eval/success_rate"] = record["success_rate"]
        answers = [listener.on_event(state.step, metrics) for listener in self.listeners]
        return not any(answer is False for answer in answers)

    def evaluation(self) -> dict[str, Any]:
        """Evaluate the greedy policy now: the one evaluation record of periodic and final evaluations (added
        to the state, solved step, best checkpoint). A signal interrupts it at once (KeyboardInterrupt)."""
        run, state, cfg = self.run, self.state, self.cfg
        train_time = self.train_seconds()
        t0 = time.perf_counter()
        counts: dict[str, Any] = {}  # illegal actions (envs with action masks), and what listeners add
        try:
            with self.signals.interruptible_here():
                returns, lengths = evaluate(run.agent.greedy, run.eval_envs, cfg.eval_episodes,
                                            run.seed + EVAL_SEED_OFFSET, counts, reset=run.agent.reset_memory)
                for listener in self.listeners:
                    counts.update(listener.during_evaluation(state.step, run.agent.greedy) or {})
        finally:  # an interrupted evaluation's seconds are not training seconds either
            seconds = time.perf_counter() - t0
            self.eval_seconds += seconds
            state.eval_time += seconds
        self.schedule.evaluated()
        record = {"step": state.step, "train_time_s": round(train_time, 3), "return_mean": float(returns.mean()),
                  "return_std": float(returns.std()), "length_mean": float(lengths.mean()), **counts,
                  "returns": [float(r) for r in returns]}
        state.evaluations.append(record)
        if state.solved_at_step is None and self.threshold is not None and record["return_mean"] >= self.threshold:
            state.solved_at_step, state.solved_at_time = state.step, train_time
        if state.best_eval is None or record["return_mean"] > state.best_eval:
            state.best_eval = record["return_mean"]
            self.save(BEST, "best evaluation")
        return record

    # ------------------------------------------------------------------ checkpoints
    def save(self, name: str, reason: str, in_flight: bool = True) -> None:
        state = dataclasses.replace(self.state, train_time=self.train_seconds(), schedule=self.schedule.saved())
        with writing(f"checkpoint {name}", self.run.run_dir / CHECKPOINT_DIR):
            self.run.save(name, state, reason, self.in_flight() if in_flight else None)

    def in_flight(self) -> dict[str, Any] | None:
        """The running episodes and the not-yet-logged statistics, for an exact resume."""
        if not self.recordable:
            return None
        return {"envs": self.run.envs.episode_snapshot(), "obs": self.obs, **self.stats.snapshot(self.state.step)}

    def restore_in_flight(self, saved: dict[str, Any] | None) -> None:
        """Rebuild the episodes a checkpoint had in flight (see `train`) into `obs` and the episode
        statistics. Envs that cannot be rebuilt start new episodes, seeded from the resume point."""
        run, envs = self.run, self.run.envs
        fallback_seed = resume_seed(run.seed, self.state.step)
        if saved is None or not getattr(envs, "record_episodes", False):
            self.obs, _ = envs.reset(seed=fallback_seed)
            restored = np.zeros(envs.num_envs, dtype=bool)
        else:
            self.obs, restored = envs.restore_episodes(saved["envs"], saved["obs"], fallback_seed)
            self.stats.restore(saved, restored, self.state.step)
        if not restored.all():
            run.agent.drop_episodes(np.flatnonzero(~restored))
            if saved is not None:
                print(f"resume: {int((~restored).sum())} of {envs.num_envs} envs could not replay their episode "
                      f"exactly; they start new ones, so this run will not match an uninterrupted one exactly",
                      file=sys.stderr)

    # ------------------------------------------------------------------ the end
    def finish(self) -> dict[str, Any]:
        """After the driver: the final evaluation (unless one ran at this step) and checkpoint, and the summary;
        or, when stopped early, a resumable checkpoint and a short summary (written to summary.json when a
        callback stopped the run — status "stopped", `stopped_by` "callback" — not when a signal did)."""
        state = self.state
        if self.status == RUNNING:
            try:
                if not state.evaluations or state.evaluations[-1]["step"] != state.step:
                    self.notify({"evaluation": self.evaluation()})
                self.status = COMPLETED
            except KeyboardInterrupt:  # a signal during the final evaluation: resumable, like any other stop
                self.status = INTERRUPTED
        self.signals.hold()  # from here on a signal waits: the final or resumable state is being saved
        if self.status != COMPLETED:
            if not self.signals.torn:
                self.save(f"step_{state.step:012d}", "stopped by callback" if self.status == STOPPED else self.status)
            # else a second SIGINT stopped it mid-step: the newest checkpoint on disk stays the resume point
            kept = step_checkpoints(self.run.run_dir)
            self.ended(None)
            run = self.run
            stopped = {"agent": run.agent_name, "env": run.env_id, "seed": run.seed, "status": self.status,
                       "total_steps": state.step, "episodes": state.episodes, "run_dir": str(run.run_dir),
                       "checkpoint": str(kept[-1]) if kept else None,
                       "evaluations": [{k: v for k, v in e.items() if k != "returns"} for e in state.evaluations]}
            if self.status == STOPPED:  # a deliberate stop: say so on disk too (a resume overwrites it)
                stopped["stopped_by"] = "callback"
                with writing("summary.json", run.run_dir):
                    atomic_write_json(run.run_dir / "summary.json", stopped)
            return stopped
        train_time = self.train_seconds()
        self.save(FINAL, "end of training", in_flight=False)
        summary = _summary(self.run, state, train_time)
        self.ended(summary)
        with writing("summary.json", self.run.run_dir):
            atomic_write_json(self.run.run_dir / "summary.json", summary)
        return summary

    def ended(self, summary: dict[str, Any] | None) -> None:
        self.progress.close(self.state.step)
        for listener in self.listeners:
            listener.end(self.status, summary)

    def failed(self, fault: TrainingFault) -> TrainingFault:
        """A fault ends the session: no checkpoint is written (the newest on disk is the last good state), the
        summary says "failed" (if the disk takes it). Returns the TrainingFault to raise: for a fault from
        outside the agent (an env that raised, a full disk), one that names the step and that checkpoint."""
        self.status = FAILED
        with suppress(Exception):
            self.ended(None)
        with suppress(OSError):
            atomic_write_json(self.run.run_dir / "summary.json", {
                "agent": self.run.agent_name, "env": self.run.env_id, "seed": self.run.seed, "status": FAILED,
                "total_steps": self.state.step})
        if fault.__cause__ is None:  # the agent's own (non-finite weights): its message says it all
            return fault
        kept = step_checkpoints(self.run.run_dir)
        last = f"the last good checkpoint, {kept[-1]}, is kept" if kept else "no checkpoint was written yet"
        return TrainingFault(f"{fault}; stopped at env step {self.state.step}, {last}")


def step_envs(session: Session, on_step: StepCallback) -> None:
    """Our own driver: act, step, observe, and report each vector step to `on_step` until it says stop."""
    agent, envs = session.run.agent, session.run.envs
    obs = session.obs
    masked_envs = getattr(envs, "masked", False)  # the env gives action masks: illegal actions are counted
    action_start = int(getattr(envs.single_action_space, "start", 0))
    mask_args: dict[str, np.ndarray] = {}  # the masks, for agents that take them (`Agent.masked`)
    while True:
        if masked_envs:
            masks = envs.action_masks()
            mask_args = {"mask": masks} if agent.masked else {}
        actions = agent.act(obs, explore=True, **mask_args)
        if masked_envs:
            session.state.illegal_actions += illegal_count(masks, actions, action_start)
        next_obs, rewards, terminated, truncated, infos = envs.step(actions)
        done = None
        real_next = next_obs
        if "_final_obs" in infos:  # an episode ended: learn from its real last observation
            done = terminated | truncated
            real_next = final_observations(next_obs, done, infos)
        if agent.masked:
            mask_args["next_mask"] = final_masks(envs.action_masks(), terminated | truncated, infos)
        agent.observe(obs, actions, rewards, real_next, terminated, truncated, **mask_args)
        session.obs = obs = next_obs
        if not on_step(rewards, terminated, truncated, done):
            return


def train(run: Run, resume: dict[str, Any] | None = None, callback: Callback | None = None, *,
          resume_from: str = "the checkpoint") -> dict[str, Any]:
    """Train `run.agent` for the configured number of env steps; returns the summary written to disk.

    `resume` is a checkpoint's state (agent, loop, RNGs, episodes in flight) to continue from: the agent and
    the counters carry on, TensorBoard drops whatever the stopped session logged after that checkpoint, and
    the episodes that were running are rebuilt by replaying their recorded actions (`SyncVecEnv.
    restore_episodes`), so a resumed run continues exactly as the uninterrupted one would. An env that cannot
    be replayed exactly starts a new episode, seeded from the resume point, and the agent drops its partial
    data for it. SIGINT and SIGTERM stop training cleanly with a resumable checkpoint, up to the final save.
    `resume_from` names the checkpoint in errors: a state that does not fit is a CheckpointError.

    `callback(step, metrics)` is called at every log and evaluation event (`LoopListener.on_event` says what
    `metrics` holds); returning False stops the run like a signal does (a resumable checkpoint; the returned
    summary's status is "stopped", `stopped_by` "callback").
    """
    state = LoopState()
    if resume is not None:
        state = restore_session(run.agent, resume, resume_from)
    listeners = [TensorBoardLog(), *run.listeners, *([CallbackListener(callback)] if callback else [])]
    for listener in listeners:
        listener.start(run, state, resumed=resume is not None)
    with StopSignals() as signals:
        session = Session(run, state, listeners, signals)
        try:
            if resume is None:
                session.obs, _ = run.envs.reset(seed=run.seed)
            else:
                try:
                    session.restore_in_flight(resume.get("in_flight"))
                    if not batches.fits(session.obs, run.envs.observation_space):
                        raise ValueError("the observations it holds do not have the envs' shapes")
                except LOAD_ERRORS as exc:
                    session.status = FAILED
                    session.ended(None)  # closes TensorBoard's writer, whose thread would write on
                    raise CheckpointError(f"checkpoint {resume_from}: its episodes in flight cannot be restored "
                                          f"({clip(str(exc), 200)})") from None
            on_step = session.step_callback()
            # events left due by a stopped session (a signal at an event step, an interrupted evaluation) first
            keep_going = state.step < session.schedule.next_event or session.events()
            if keep_going and state.step < session.cfg.steps:
                if run.agent.drives_env:  # e.g. the SB3 reference agents: their library steps our envs
                    run.agent.drive(run.envs, session.obs, session.cfg.steps - state.step, on_step)
                else:
                    step_envs(session, on_step)
        except KeyboardInterrupt:
            session.status = INTERRUPTED
        except TrainingFault as fault:  # NaN weights, an env that raised, a full disk
            raise session.failed(fault) from None
        try:
            return session.finish()
        except TrainingFault as fault:
            raise session.failed(fault) from None


def _summary(run: Run, state: LoopState, train_time: float) -> dict[str, Any]:
    final = state.evaluations[-1]
    spec = run.envs.spec
    summary = {
        "agent": run.agent_name, "env": run.env_id, "seed": run.seed, "status": COMPLETED,
        "total_steps": state.step, "episodes": state.episodes,
        "wall_time_s": round(train_time + state.eval_time, 3),
        "train_time_s": round(train_time, 3),
        "eval_time_s": round(state.eval_time, 3),
        "env_steps_per_s": round(state.step / max(train_time, 1e-9), 1),
        "eval_return_mean": final["return_mean"], "eval_return_std": final["return_std"],
        "eval_episodes": len(final["returns"]),
        "reward_threshold": spec.reward_threshold if spec is not None else None,
        "solved_at_step": state.solved_at_step,
        "solved_at_time_s": None if state.solved_at_time is None else round(state.solved_at_time, 3),
        "evaluations": [{k: v for k, v in e.items() if k != "returns"} for e in state.evaluations],
        "final_eval_returns": final["returns"],
        "device": str(run.device), "versions": library_versions(), "sessions": state.sessions,
    }
    if "success_rate" in final:  # goal envs (info["is_success"]): the final evaluation's fraction of successes
        summary["eval_success_rate"] = final["success_rate"]
    costs = {key: value for key, value in run.agent.costs().items() if value is not None}
    if costs:  # comparable costs, which the compare report tabulates
        summary["costs"] = costs
    summary.update(run.agent.summary_extras())
    if getattr(run.envs, "masked", False):  # actions the env's masks forbid: in training, and in the final evaluation
        summary["illegal_actions"] = {"train": state.illegal_actions, "final_eval": final.get("illegal_actions", 0),
                                      "masked_agent": run.agent.masked}
    return summary


def _hparams(run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {"agent": run.agent_name, "env": run.env_id, "seed": run.seed}
    for section in (run.config.train, run.config.agent):
        for key, value in dataclasses.asdict(section).items():
            out[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return out


def _markdown_table(run: Run) -> str:
    rows = "\n".join(f"|{k}|{v}|" for k, v in _hparams(run).items())
    return f"|param|value|\n|-|-|\n{rows}"
