"""The one training loop: it steps the envs, evaluates, logs, checkpoints and shows progress for every agent.

The per-step path does only what every step needs (act, step, observe, two counters); episode bookkeeping
runs only when an episode ends, and logging, evaluation, checkpoints and the progress bar share one
"next event" step check.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlagents.agents import Agent
from rlagents.checkpoint import CHECKPOINT_DIR, FINAL, atomic_write_json, library_versions, save_checkpoint
from rlagents.config import ResolvedConfig
from rlagents.environments import evaluate, final_observations, make_vec_env
from rlagents.progress import TrainingProgress

EVAL_SEED_OFFSET = 1_000_003  # eval episodes never share seeds with training envs
PROGRESS_EVERY_S = 0.25


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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

    def checkpoint_meta(self, step: int, episodes: int) -> dict[str, Any]:
        return {"agent": self.agent_name, "env": self.env_id, "seed": self.seed, "step": step,
                "episodes": episodes,
                "observation_space": repr(self.envs.single_observation_space),
                "action_space": repr(self.envs.single_action_space),
                "config": {"train": dataclasses.asdict(self.config.train),
                           "agent": dataclasses.asdict(self.config.agent)}}


def train(run: Run) -> dict[str, Any]:
    """Train `run.agent` for the configured number of env steps; returns the summary written to disk."""
    from torch.utils.tensorboard import SummaryWriter  # slow import: only when training

    cfg = run.config.train
    agent, envs = run.agent, run.envs
    n_envs = envs.num_envs
    spec = envs.spec
    threshold = spec.reward_threshold if spec is not None else None
    writer = SummaryWriter(log_dir=str(run.run_dir))
    writer.add_text("hyperparameters", _markdown_table(run), 0)
    progress = TrainingProgress(f"{run.agent_name} {run.env_id} s{run.seed}", cfg.steps, run.progress)

    def greedy(obs: np.ndarray) -> np.ndarray:
        return agent.act(obs, explore=False)

    ep_return = np.zeros(n_envs)
    ep_length = np.zeros(n_envs, dtype=np.int64)
    window_returns: list[float] = []
    window_lengths: list[int] = []
    recent_returns: deque[float] = deque(maxlen=100)
    episodes = 0
    evaluations: list[dict[str, Any]] = []
    solved_at_step = solved_at_time = None
    eval_time = 0.0
    last_eval_mean = None

    next_log = cfg.log_every
    next_eval = cfg.eval_every if cfg.eval_every > 0 else cfg.steps
    next_ckpt = cfg.checkpoint_every if cfg.checkpoint_every > 0 else cfg.steps + 1
    progress_interval = max(n_envs, 64)
    next_progress = progress_interval
    next_event = min(next_log, next_eval, next_ckpt, next_progress)

    obs, _ = envs.reset(seed=run.seed)
    step = 0
    start = time.perf_counter()
    last_progress_time, last_progress_step = start, 0
    status = "completed"
    try:
        while step < cfg.steps:
            actions = agent.act(obs, explore=True)
            next_obs, rewards, terminated, truncated, infos = envs.step(actions)
            step += n_envs
            ep_return += rewards
            ep_length += 1
            if "_final_obs" in infos:
                done = terminated | truncated
                real_next = final_observations(next_obs, done, infos)
                for i in np.flatnonzero(done):
                    window_returns.append(float(ep_return[i]))
                    window_lengths.append(int(ep_length[i]))
                    recent_returns.append(float(ep_return[i]))
                ep_return[done] = 0.0
                ep_length[done] = 0
                episodes += int(done.sum())
            else:
                real_next = next_obs
            agent.observe(obs, actions, rewards, real_next, terminated, truncated)
            obs = next_obs
            if step < next_event:
                continue

            # ---- periodic events, at most once per `next_event`
            now = time.perf_counter()
            train_time = now - start - eval_time
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
                window_returns.clear()
                window_lengths.clear()
            if step >= next_eval:
                next_eval = next_eval + cfg.eval_every if cfg.eval_every > 0 else cfg.steps
                t0 = time.perf_counter()
                result = _evaluate(run, greedy, step, train_time)
                eval_time += time.perf_counter() - t0
                evaluations.append(result)
                last_eval_mean = result["return_mean"]
                writer.add_scalar("eval/return_mean", result["return_mean"], step)
                writer.add_scalar("eval/return_std", result["return_std"], step)
                writer.add_scalar("eval/length_mean", result["length_mean"], step)
                if solved_at_step is None and threshold is not None and result["return_mean"] >= threshold:
                    solved_at_step, solved_at_time = step, train_time
            if step >= next_ckpt:
                next_ckpt += cfg.checkpoint_every
                save_checkpoint(run.run_dir / CHECKPOINT_DIR, f"step_{step:012d}", agent.state_dict(),
                                run.checkpoint_meta(step, episodes))
            next_event = min(next_log, next_eval, next_ckpt, next_progress)
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        progress.close(step)

    end = time.perf_counter()
    train_time = end - start - eval_time
    if not evaluations or evaluations[-1]["step"] != step:  # the end-of-training evaluation
        t0 = time.perf_counter()
        evaluations.append(_evaluate(run, greedy, step, train_time))
        eval_time += time.perf_counter() - t0
        writer.add_scalar("eval/return_mean", evaluations[-1]["return_mean"], step)
        writer.add_scalar("eval/return_std", evaluations[-1]["return_std"], step)
        if (solved_at_step is None and threshold is not None
                and evaluations[-1]["return_mean"] >= threshold):
            solved_at_step, solved_at_time = step, train_time
    final_name = FINAL if status == "completed" else "interrupted"
    save_checkpoint(run.run_dir / CHECKPOINT_DIR, final_name, agent.state_dict(),
                    run.checkpoint_meta(step, episodes))

    final = evaluations[-1]
    summary = {
        "agent": run.agent_name, "env": run.env_id, "seed": run.seed, "status": status,
        "total_steps": step, "episodes": episodes,
        "wall_time_s": round(time.perf_counter() - start, 3),
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
        "device": str(run.device), "versions": library_versions(),
    }
    writer.add_scalar("charts/steps_per_s", summary["env_steps_per_s"], step)
    writer.add_hparams(_hparams(run), {"hparam/eval_return_mean": final["return_mean"]}, run_name=".",
                       global_step=step)
    writer.close()
    atomic_write_json(run.run_dir / "summary.json", summary)
    return summary


def _evaluate(run: Run, greedy, step: int, train_time: float) -> dict[str, Any]:
    cfg = run.config.train
    returns, lengths = evaluate(greedy, run.eval_envs, cfg.eval_episodes, run.seed + EVAL_SEED_OFFSET)
    return {"step": step, "train_time_s": round(train_time, 3), "return_mean": float(returns.mean()),
            "return_std": float(returns.std()), "length_mean": float(lengths.mean()),
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
