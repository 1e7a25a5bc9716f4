"""The one training loop: it steps the envs, evaluates, logs, checkpoints and shows progress for every agent.

The per-step path does only what every step needs (act, step, observe, two counters); episode bookkeeping
runs only when an episode ends, and logging, evaluation, checkpoints and the progress bar share one
"next event" step check.
"""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlagents.agents import Agent
from rlagents.checkpoint import (BEST, CHECKPOINT_DIR, FINAL, atomic_write_json, library_versions, save_checkpoint,
                                 step_checkpoints)
from rlagents.config import ResolvedConfig
from rlagents.environments import evaluate, final_observations
from rlagents.errors import TrainingFault
from rlagents.masks import final_masks, illegal_count
from rlagents.progress import TrainingProgress
from rlagents.trackers import Tracker, TrackedWriter
from rlagents.video import capture_video

EVAL_SEED_OFFSET = 1_000_003  # eval episodes never share seeds with training envs
PROGRESS_EVERY_S = 0.25


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class LoopState:
    """The loop's own progress: saved in every checkpoint so that `--resume` carries on where it stopped."""

    step: int = 0
    episodes: int = 0
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    solved_at_step: int | None = None
    solved_at_time: float | None = None
    eval_time: float = 0.0
    train_time: float = 0.0  # training seconds of the sessions before this one (resumed runs)
    best_eval: float | None = None
    sessions: int = 1
    illegal_actions: int = 0  # training actions that the env's action masks forbid (masked envs only)


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


def resume_seed(seed: int, step: int) -> int:
    """Seed for the envs of a resumed session: differs per resume point, same for the same point."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


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
    trackers: list[Tracker] = field(default_factory=list)  # W&B / MLflow runs mirroring TensorBoard
    capture_video: bool = False  # record one greedy episode at each evaluation (RUN_DIR/videos, TensorBoard)

    def save(self, name: str, state: LoopState, reason: str, in_flight: dict[str, Any] | None = None) -> None:
        """Write checkpoint `name`: agent, loop state, global RNGs and the episodes in flight (`in_flight`,
        see `train`), with metadata (atomic files)."""
        bad = self.agent.nonfinite_parameters()
        if bad:  # e.g. an infinite gradient behind a finite loss: keep the last good checkpoint instead
            raise TrainingFault(f"non-finite weights ({', '.join(bad[:3])}{', …' if len(bad) > 3 else ''}) at env "
                                f"step {state.step}: not saved; the last good checkpoint is kept (check rewards and "
                                f"observations for NaN/inf, or lower lr)")
        meta = self.checkpoint_meta(state.step, state.episodes)
        meta["reason"] = reason
        record = {"agent": self.agent.state_dict(), "loop": dataclasses.asdict(state), "rng": global_rng_state()}
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
                           "agent": dataclasses.asdict(self.config.agent)}}


def train(run: Run, resume: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train `run.agent` for the configured number of env steps; returns the summary written to disk.

    `resume` is a checkpoint's state (agent, loop, RNGs, episodes in flight) to continue from: the agent and
    the counters carry on, TensorBoard drops whatever the stopped session logged after that checkpoint, and
    the episodes that were running are rebuilt by replaying their recorded actions (`SyncVecEnv.
    restore_episodes`), so a resumed run continues exactly as the uninterrupted one would. An env that cannot
    be replayed exactly starts a new episode, seeded from the resume point, and the agent drops its partial
    data for it. SIGINT and SIGTERM stop training cleanly with a resumable checkpoint.
    """
    from torch.utils.tensorboard import SummaryWriter  # slow import: only when training

    cfg = run.config.train
    agent, envs = run.agent, run.envs
    n_envs = envs.num_envs
    spec = envs.spec
    threshold = spec.reward_threshold if spec is not None else None
    state = LoopState()
    if resume is not None:
        agent.load_state_dict(resume["agent"])
        state = LoopState(**resume["loop"])
        state.sessions += 1
        set_global_rng_state(resume["rng"])
    # everything at the checkpoint step itself was logged before the checkpoint was written: keep it
    writer = TrackedWriter(SummaryWriter(log_dir=str(run.run_dir),
                                         purge_step=state.step + 1 if resume is not None else None), run.trackers)
    if resume is None:
        writer.add_text("hyperparameters", _markdown_table(run), 0)
    progress = TrainingProgress(f"{run.agent_name} {run.env_id} s{run.seed}", cfg.steps, run.progress,
                                sink=run.progress_sink)

    greedy = agent.greedy  # (obs, masks) for masked envs
    masked_envs = getattr(envs, "masked", False)  # the env gives action masks: illegal actions are counted
    action_start = int(getattr(envs.single_action_space, "start", 0))

    ep_return = np.zeros(n_envs)
    ep_length = np.zeros(n_envs, dtype=np.int64)
    window_returns: list[float] = []
    window_lengths: list[int] = []
    recent_returns: deque[float] = deque(maxlen=100)
    step, episodes = state.step, state.episodes
    evaluations = state.evaluations
    solved_at_step, solved_at_time = state.solved_at_step, state.solved_at_time
    eval_time, earlier_train_time = state.eval_time, state.train_time
    last_eval_mean = evaluations[-1]["return_mean"] if evaluations else None

    def after(every: int) -> int:  # the first multiple of `every` past the current step
        return (step // every + 1) * every

    next_log = after(cfg.log_every)
    next_eval = after(cfg.eval_every) if cfg.eval_every > 0 else cfg.steps
    next_ckpt = after(cfg.checkpoint_every) if cfg.checkpoint_every > 0 else cfg.steps + 1
    progress_interval = max(n_envs, 64)
    next_progress = step + progress_interval
    next_event = min(next_log, next_eval, next_ckpt, next_progress)

    def snapshot() -> LoopState:
        return LoopState(step, episodes, evaluations, solved_at_step, solved_at_time, eval_time,
                         earlier_train_time + time.perf_counter() - start - session_eval_time, state.best_eval,
                         state.sessions, state.illegal_actions)

    # agents that drive the envs themselves (SB3's) restart their episodes on resume anyway
    recordable = getattr(envs, "record_episodes", False) and not agent.drives_env

    def in_flight() -> dict[str, Any] | None:
        """The running episodes and the not-yet-logged statistics, for an exact resume."""
        if not recordable:
            return None
        return {"envs": envs.episode_snapshot(), "obs": obs, "ep_return": ep_return.copy(),
                "ep_length": ep_length.copy(), "window_returns": list(window_returns),
                "window_lengths": list(window_lengths), "recent_returns": list(recent_returns)}

    if resume is None:
        obs, _ = envs.reset(seed=run.seed)
    else:
        obs = _restore_in_flight(run, resume.get("in_flight"), resume_seed(run.seed, step), ep_return, ep_length,
                                 window_returns, window_lengths, recent_returns)
    start = time.perf_counter()
    session_eval_time = 0.0  # evaluation seconds of this session (eval_time holds all sessions')
    last_progress_time, last_progress_step = start, step
    status = "completed"
    stop, restore_signals = _stop_on_signals()

    def end_episodes(done: np.ndarray) -> None:
        """Bookkeeping for the envs whose episodes ended this step (rare, so not on the per-step path)."""
        nonlocal episodes
        for i in np.flatnonzero(done):
            window_returns.append(float(ep_return[i]))
            window_lengths.append(int(ep_length[i]))
            recent_returns.append(float(ep_return[i]))
        ep_return[done] = 0.0
        ep_length[done] = 0
        episodes += int(done.sum())

    def periodic_events() -> bool:
        """Progress, logging, evaluation and checkpoints due at `step`; False when training must stop."""
        nonlocal next_log, next_eval, next_ckpt, next_progress, next_event, last_progress_time
        nonlocal last_progress_step, last_eval_mean, solved_at_step, solved_at_time, session_eval_time
        nonlocal eval_time, status
        if stop:  # SIGINT / SIGTERM: stop here, between steps, where the agent's state is consistent
            status = "interrupted"
            return False
        now = time.perf_counter()
        train_time = earlier_train_time + now - start - session_eval_time
        if step >= next_progress:
            next_progress = step + progress_interval
            if now - last_progress_time >= PROGRESS_EVERY_S:
                speed = (step - last_progress_step) / (now - last_progress_time)
                last_progress_time, last_progress_step = now, step
                progress.update(step, speed, np.mean(recent_returns) if recent_returns else None,
                                last_eval_mean)
        if step >= next_log:
            next_log += cfg.log_every * max(1, (step - next_log) // cfg.log_every + 1)
            _log_training(writer, step, agent, window_returns, window_lengths, step / max(train_time, 1e-9))
            if masked_envs:
                writer.add_scalar("charts/illegal_actions", state.illegal_actions, step)
            window_returns.clear()
            window_lengths.clear()
        if step >= next_eval:
            next_eval = next_eval + cfg.eval_every if cfg.eval_every > 0 else cfg.steps
            t0 = time.perf_counter()
            result = _evaluate(run, greedy, step, train_time)
            if run.capture_video:  # inside the evaluation's time: not counted as training seconds
                capture_video(writer, greedy, run.env_id, run.run_dir, run.seed + EVAL_SEED_OFFSET, step)
            session_eval_time += time.perf_counter() - t0
            eval_time += time.perf_counter() - t0
            evaluations.append(result)
            last_eval_mean = result["return_mean"]
            writer.add_scalar("eval/return_mean", result["return_mean"], step)
            writer.add_scalar("eval/return_std", result["return_std"], step)
            writer.add_scalar("eval/length_mean", result["length_mean"], step)
            if "illegal_actions" in result:
                writer.add_scalar("eval/illegal_actions", result["illegal_actions"], step)
            if solved_at_step is None and threshold is not None and result["return_mean"] >= threshold:
                solved_at_step, solved_at_time = step, train_time
            if state.best_eval is None or result["return_mean"] > state.best_eval:
                state.best_eval = result["return_mean"]
                run.save(BEST, snapshot(), "best evaluation", in_flight())
        if step >= next_ckpt:
            next_ckpt += cfg.checkpoint_every
            run.save(f"step_{step:012d}", snapshot(), "periodic", in_flight())
        next_event = min(next_log, next_eval, next_ckpt, next_progress)
        return True

    def on_step(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> bool:
        """Bookkeeping after one vector step taken by an agent that drives the envs itself."""
        nonlocal step
        step += n_envs
        ep_return[:] += rewards
        ep_length[:] += 1
        done = terminated | truncated
        if done.any():
            end_episodes(done)
        if step < next_event:
            return step < cfg.steps
        return periodic_events() and step < cfg.steps

    try:
        if agent.drives_env:  # e.g. the SB3 reference agents: their library steps our envs
            if step < cfg.steps:
                agent.drive(envs, obs, cfg.steps - step, on_step)
        else:
            mask_args: dict[str, np.ndarray] = {}  # action masks for agents that take them
            while step < cfg.steps:
                if masked_envs:
                    masks = envs.action_masks()
                    mask_args = {"mask": masks} if agent.masked else {}
                actions = agent.act(obs, explore=True, **mask_args)
                if masked_envs:
                    state.illegal_actions += illegal_count(masks, actions, action_start)
                next_obs, rewards, terminated, truncated, infos = envs.step(actions)
                step += n_envs
                ep_return += rewards
                ep_length += 1
                if "_final_obs" in infos:
                    done = terminated | truncated
                    real_next = final_observations(next_obs, done, infos)
                    end_episodes(done)
                else:
                    real_next = next_obs
                if agent.masked:
                    mask_args["next_mask"] = final_masks(envs.action_masks(), terminated | truncated, infos)
                agent.observe(obs, actions, rewards, real_next, terminated, truncated, **mask_args)
                obs = next_obs
                if step < next_event:
                    continue
                if not periodic_events():  # ---- periodic events, at most once per `next_event`
                    break
    except KeyboardInterrupt:
        status = "interrupted"
    except TrainingFault:
        # no checkpoint is written: the newest one on disk is the last good state
        failed = {"agent": run.agent_name, "env": run.env_id, "seed": run.seed, "status": "failed", "total_steps": step}
        writer.finish(failed, "failed")
        writer.close()
        atomic_write_json(run.run_dir / "summary.json", failed)
        raise
    finally:
        progress.close(step)
        restore_signals()

    if status == "interrupted":  # a resumable checkpoint; no end-of-training evaluation
        run.save(f"step_{step:012d}", snapshot(), "interrupted", in_flight())
        stopped = {"status": status, "total_steps": step, "run_dir": str(run.run_dir)}
        writer.finish(stopped, status)
        writer.close()
        return stopped
    train_time = earlier_train_time + time.perf_counter() - start - session_eval_time
    if not evaluations or evaluations[-1]["step"] != step:  # the end-of-training evaluation
        t0 = time.perf_counter()
        evaluations.append(_evaluate(run, greedy, step, train_time))
        if run.capture_video:
            capture_video(writer, greedy, run.env_id, run.run_dir, run.seed + EVAL_SEED_OFFSET, step)
        session_eval_time += time.perf_counter() - t0
        eval_time += time.perf_counter() - t0
        writer.add_scalar("eval/return_mean", evaluations[-1]["return_mean"], step)
        writer.add_scalar("eval/return_std", evaluations[-1]["return_std"], step)
        if (solved_at_step is None and threshold is not None
                and evaluations[-1]["return_mean"] >= threshold):
            solved_at_step, solved_at_time = step, train_time
    run.save(FINAL, snapshot(), "end of training")

    final = evaluations[-1]
    summary = {
        "agent": run.agent_name, "env": run.env_id, "seed": run.seed, "status": status,
        "total_steps": step, "episodes": episodes,
        "wall_time_s": round(train_time + eval_time, 3),
        "train_time_s": round(train_time, 3),
        "eval_time_s": round(eval_time, 3),
        "env_steps_per_s": round(step / max(train_time, 1e-9), 1),
        "eval_return_mean": final["return_mean"], "eval_return_std": final["return_std"],
        "eval_episodes": len(final["returns"]),
        "reward_threshold": threshold,
        "solved_at_step": solved_at_step,
        "solved_at_time_s": None if solved_at_time is None else round(solved_at_time, 3),
        "evaluations": [{k: v for k, v in e.items() if k != "returns"} for e in evaluations],
        "final_eval_returns": final["returns"],
        "device": str(run.device), "versions": library_versions(), "sessions": state.sessions,
    }
    costs = {key: value for key, value in agent.costs().items() if value is not None}
    if costs:  # comparable costs, which the compare report tabulates
        summary["costs"] = costs
    summary.update(agent.summary_extras())
    if masked_envs:  # actions the env's masks forbid: in training (all sessions) and in the final evaluation
        summary["illegal_actions"] = {"train": state.illegal_actions, "final_eval": final.get("illegal_actions", 0),
                                      "masked_agent": agent.masked}
    writer.add_scalar("charts/steps_per_s", summary["env_steps_per_s"], step)
    writer.add_hparams(_hparams(run), {"hparam/eval_return_mean": final["return_mean"]}, run_name=".",
                       global_step=step)
    writer.finish(summary, status)
    writer.close()
    atomic_write_json(run.run_dir / "summary.json", summary)
    return summary


def _restore_in_flight(run: Run, saved: dict[str, Any] | None, fallback_seed: int, ep_return: np.ndarray,
                       ep_length: np.ndarray, window_returns: list[float], window_lengths: list[int],
                       recent_returns: deque[float]) -> Any:
    """Rebuild the episodes a checkpoint had in flight (see `train`); fills the loop's accumulators in place
    and returns the observations to act on. Envs that cannot be rebuilt start new episodes."""
    envs = run.envs
    if saved is None or not getattr(envs, "record_episodes", False):
        obs, _ = envs.reset(seed=fallback_seed)
        restored = np.zeros(envs.num_envs, dtype=bool)
    else:
        obs, restored = envs.restore_episodes(saved["envs"], saved["obs"], fallback_seed)
        window_returns.extend(float(r) for r in saved["window_returns"])
        window_lengths.extend(int(n) for n in saved["window_lengths"])
        recent_returns.extend(float(r) for r in saved["recent_returns"])
        ep_return[restored] = np.asarray(saved["ep_return"])[restored]
        ep_length[restored] = np.asarray(saved["ep_length"])[restored]
    if not restored.all():
        run.agent.drop_episodes(np.flatnonzero(~restored))
        if saved is not None:
            print(f"resume: {int((~restored).sum())} of {envs.num_envs} envs could not replay their episode "
                  f"exactly; they start new ones, so this run will not match an uninterrupted one exactly",
                  file=sys.stderr)
    return obs


def _stop_on_signals() -> tuple[list[int], Any]:
    """SIGINT and SIGTERM ask the loop to stop at its next event (a list that becomes non-empty); a second
    SIGINT interrupts at once. Returns the list and a function restoring the previous handlers."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        return requested, lambda: None

    def handler(signum, frame):
        if requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    return requested, lambda: [signal.signal(sig, old) for sig, old in previous.items()]


def _evaluate(run: Run, greedy, step: int, train_time: float) -> dict[str, Any]:
    cfg = run.config.train
    counts: dict[str, int] = {}
    returns, lengths = evaluate(greedy, run.eval_envs, cfg.eval_episodes, run.seed + EVAL_SEED_OFFSET, counts)
    return {"step": step, "train_time_s": round(train_time, 3), "return_mean": float(returns.mean()),
            "return_std": float(returns.std()), "length_mean": float(lengths.mean()), **counts,
            "returns": [float(r) for r in returns]}


def _log_training(writer, step: int, agent: Agent, returns: list[float], lengths: list[int], speed: float) -> None:
    if returns:
        writer.add_scalar("charts/episode_return", float(np.mean(returns)), step)
        writer.add_scalar("charts/episode_length", float(np.mean(lengths)), step)
    writer.add_scalar("charts/steps_per_s", speed, step)
    for tag, value in agent.metrics().items():
        writer.add_scalar(tag, value, step)


def _hparams(run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {"agent": run.agent_name, "env": run.env_id, "seed": run.seed}
    for section in (run.config.train, run.config.agent):
        for key, value in dataclasses.asdict(section).items():
            out[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return out


def _markdown_table(run: Run) -> str:
    rows = "\n".join(f"|{k}|{v}|" for k, v in _hparams(run).items())
    return f"|param|value|\n|-|-|\n{rows}"
