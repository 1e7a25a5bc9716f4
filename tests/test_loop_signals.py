"""Signals until the final state is saved: SIGTERM or SIGINT during an evaluation (periodic or final) stops
the run at once with a resumable checkpoint and a one-line message, never a traceback; the resumed run ends
as the uninterrupted one. Real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import pytest

from rlagents.checkpoint import read_checkpoint, step_checkpoints
from rlagents.loop import EVAL_SEED_OFFSET
from rlagents.train import main as train_main

MARKER = "RLAGENTS_TEST_SLOW_EVAL"  # a file to create when a slow evaluation starts; unset: nothing is slow
ROOT = Path(__file__).resolve().parents[1]


class SlowEval(gym.Wrapper):
    """A Gymnasium env whose evaluation episodes (seeded from EVAL_SEED_OFFSET on) take 20 ms a step when
    `MARKER` names a file, which it creates then: a long evaluation that a test can signal."""

    def __init__(self, base: str = "CartPole-v1", render_mode=None):
        super().__init__(gym.make(base))
        self.slow = False

    def reset(self, *, seed=None, options=None):
        marker = os.environ.get(MARKER)
        if marker and seed is not None and seed >= EVAL_SEED_OFFSET:
            self.slow = True
            Path(marker).touch()
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        if self.slow:
            time.sleep(0.02)
        return self.env.step(action)


class SlowSteps(gym.Wrapper):
    """CartPole whose training steps take 0.3 s each after the first 400 when `MARKER` names a file, which
    it creates then: a slow step that only a second SIGINT interrupts at once."""

    def __init__(self, render_mode=None):
        super().__init__(gym.make("CartPole-v1"))
        self.steps = 0

    def step(self, action):
        self.steps += 1
        marker = os.environ.get(MARKER)
        if marker and self.steps > 400:
            Path(marker).touch()
            time.sleep(0.3)
        return self.env.step(action)


ENVS = {"dqn": ("rlagents-test/SlowEvalCartPole-v0", "CartPole-v1"),
        "planner": ("rlagents-test/SlowEvalFrozenLake-v0", "FrozenLake-v1")}


def register() -> None:
    for env_id, base in ENVS.values():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=SlowEval, kwargs={"base": base})
    if "rlagents-test/SlowSteps-v0" not in gym.registry:
        gym.register("rlagents-test/SlowSteps-v0", entry_point=SlowSteps)


CHILD = "import sys; from tests.test_loop_signals import register; register(); from rlagents.train import main; " \
        "sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module", autouse=True)
def slow_envs():
    register()
    yield
    for env_id in [*(env_id for env_id, _ in ENVS.values()), "rlagents-test/SlowSteps-v0"]:
        del gym.registry[env_id]


@pytest.mark.parametrize("agent, signum, steps, eval_every", [
    ("dqn", signal.SIGTERM, 1000, 5000),     # during the final evaluation (no periodic one)
    ("dqn", signal.SIGINT, 1000, 5000),
    ("planner", signal.SIGTERM, 1000, 5000),
    ("dqn", signal.SIGTERM, 2000, 1000),     # during the periodic evaluation at step 1000
])
def test_a_signal_during_an_evaluation_leaves_a_resumable_run(agent, signum, steps, eval_every, tmp_path: Path):
    args = ["--agent", agent, "--env", ENVS[agent][0], "--seed", "1", "--steps", str(steps), "--eval-every",
            str(eval_every), "--eval-episodes", "40", "--no-progress", "--set", "log_every=500",
            "--set", "checkpoint_every=500", *(["--set", "learning_starts=200", "--set", "checkpoint_replay=true"]
                                               if agent == "dqn" else [])]
    stopped, whole, marker = tmp_path / "stopped", tmp_path / "whole", tmp_path / "evaluating"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args, "--run-dir", str(stopped)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), MARKER: str(marker)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.count("\n") == 1 and f"--resume {stopped}" in err
    _, meta = read_checkpoint(step_checkpoints(stopped)[-1], agent=agent)
    evaluated_at = min(steps, eval_every)
    assert meta["reason"] == "interrupted" and meta["step"] == evaluated_at
    assert not (stopped / "summary.json").exists() and not (stopped / "checkpoints" / "final.json").exists()

    assert train_main(["--resume", str(stopped), "--no-progress"]) == 0  # not slow here: no MARKER
    assert train_main([*args, "--run-dir", str(whole)]) == 0
    a = json.loads((whole / "summary.json").read_text())
    b = json.loads((stopped / "summary.json").read_text())
    assert b["status"] == "completed" and b["sessions"] == 2 and b["total_steps"] == steps
    assert [e["step"] for e in b["evaluations"]] == [e["step"] for e in a["evaluations"]]
    assert [e["return_mean"] for e in a["evaluations"]] == [e["return_mean"] for e in b["evaluations"]]
    assert a["final_eval_returns"] == b["final_eval_returns"] and a["episodes"] == b["episodes"]


def test_a_second_sigint_mid_step_keeps_the_newest_checkpoint_as_the_resume_point(tmp_path: Path):
    run_dir, marker = tmp_path / "run", tmp_path / "slow"
    args = ["--agent", "dqn", "--env", "rlagents-test/SlowSteps-v0", "--steps", "2000", "--eval-every", "0",
            "--eval-episodes", "2", "--no-progress", "--set", "checkpoint_every=300", "--set", "learning_starts=100",
            "--run-dir", str(run_dir)]
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), MARKER: str(marker)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # would stop at the next event, 64 slow steps away...
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # ...so the user presses Ctrl-C again: at once, mid-step
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    newest = step_checkpoints(run_dir)[-1]
    assert "Traceback" not in err and err.count("\n") == 1 and f"resume point: {newest}." in err
    _, meta = read_checkpoint(newest)
    assert meta["reason"] == "periodic" and meta["step"] == 300  # nothing written from the half-done step
    assert train_main(["--resume", str(run_dir), "--no-progress"]) == 0
