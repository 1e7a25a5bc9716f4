"""The Python API: `rlagents.train/resume/load/evaluate/compare` give what the CLIs give, bit for bit, and a
loaded policy acts as the training loop's greedy evaluation did."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import rlagents
from rlagents.checkpoint import read_checkpoint
from rlagents.evaluate import main as evaluate_main
from rlagents.loop import EVAL_SEED_OFFSET
from rlagents.train import main as train_main

STEPS, SEED = 1200, 2
CONFIG = {"learning_starts": 200, "eval_every": 600, "eval_episodes": 4, "checkpoint_every": 600, "log_every": 300,
          "checkpoint_replay": True}  # the replay buffer in checkpoints: a resumed run continues exactly
CLI_CONFIG = [arg for key, value in CONFIG.items() for arg in ("--set", f"{key}={value}")]


class Corridor(gym.Env):
    """Three cells; action 1 walks right, and reaching the right end pays 1 (an env registered nowhere)."""

    def __init__(self, size: int = 3):
        self.size = size
        self.observation_space = gym.spaces.Discrete(size)
        self.action_space = gym.spaces.Discrete(2)
        self.pos = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return self.pos, {}

    def step(self, action):
        self.pos = max(0, self.pos + (1 if int(action) == 1 else -1))
        done = self.pos == self.size - 1
        return self.pos, 1.0 if done else -0.1, done, False, {}


def make_corridor(size: int = 3) -> gym.Env:
    return gym.wrappers.TimeLimit(Corridor(size), 20)


def timeless(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary without what depends on the clock or on how many sessions it took."""
    drop = ("time", "per_s", "costs", "sessions", "versions")
    if isinstance(summary, dict):
        return {k: timeless(v) for k, v in summary.items() if not any(d in k for d in drop)}
    if isinstance(summary, list):
        return [timeless(v) for v in summary]
    return summary


def test_api_and_cli_give_bit_identical_runs_and_a_stopped_run_resumes_to_the_same(tmp_path: Path):
    cli_dir = tmp_path / "cli"
    assert train_main(["--agent", "dqn", "--env", "CartPole-v1", "--seed", str(SEED), "--steps", str(STEPS),
                       *CLI_CONFIG, "--no-progress", "--run-dir", str(cli_dir)]) == 0
    cli = json.loads((cli_dir / "summary.json").read_text())

    whole = rlagents.train("dqn", "CartPole-v1", seed=SEED, steps=STEPS, config=CONFIG, run_dir=tmp_path / "api")
    assert whole.status == "completed" and whole.run_dir == tmp_path / "api"
    assert timeless(whole.summary) == timeless(cli)
    assert whole.final_return == cli["eval_return_mean"] and whole.solved_at_step == cli["solved_at_step"]
    assert whole.train_seconds > 0 and not whole.untuned

    events: list[int] = []
    stopped = rlagents.train("dqn", "CartPole-v1", seed=SEED, steps=STEPS, config=CONFIG,
                             run_dir=tmp_path / "stopped", callback=lambda step, m: events.append(step) or step < 600)
    assert stopped.status == "stopped" and stopped.summary["total_steps"] == 600 and events == [300, 600]
    resumed = rlagents.resume(stopped.run_dir)
    assert resumed.status == "completed" and resumed.summary["sessions"] == 2
    assert timeless(resumed.summary) == timeless(cli)


def test_load_acts_as_the_loops_greedy_evaluation(short_dqn_run: Path, capsys):
    """Single observations through `policy.act`, episode by episode, replay the run's final evaluation: each
    evaluation slot i plays one episode seeded seed + EVAL_SEED_OFFSET + i with the agent's greedy actions."""
    summary = json.loads((short_dqn_run / "summary.json").read_text())
    policy = rlagents.load(short_dqn_run)
    returns = []
    for i in range(summary["eval_episodes"]):
        env = gym.make("CartPole-v1")
        obs, _ = env.reset(seed=summary["seed"] + EVAL_SEED_OFFSET + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
            total += reward
            done = terminated or truncated
        returns.append(total)
    assert sorted(returns) == sorted(summary["final_eval_returns"])  # the run lists them as they finished

    batch = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    assert policy.act(batch).tolist() == [policy.act(o) for o in batch]  # a batch acts as its rows do

    stats = policy.evaluate()  # the run's own evaluation, as `python -m rlagents.evaluate` prints it
    assert (stats.mean, stats.std, stats.episodes) == (summary["eval_return_mean"], summary["eval_return_std"], 4)
    other = rlagents.evaluate(short_dqn_run / "checkpoints" / "final.json", episodes=6, seed=123)
    assert evaluate_main([str(short_dqn_run), "--episodes", "6", "--seed", "123"]) == 0
    assert f"return {other.mean:.2f} ± {other.std:.2f} over 6 episodes" in capsys.readouterr().out
    same = rlagents.load(short_dqn_run / "checkpoints" / "final.safetensors").evaluate(6, 123)
    assert same.returns.tolist() == other.returns.tolist()


def test_a_factory_env_is_recorded_by_its_import_path_and_rebuilt(tmp_path: Path):
    result = rlagents.train("qlearning", make_corridor, steps=600, env_kwargs={"size": 4},
                            config={"eval_episodes": 5, "eval_envs": 5}, run_dir=tmp_path / "run")
    assert result.untuned  # qlearning's config has no entry for this env: its default: settings
    assert result.final_return == pytest.approx(0.8)  # learned the shortest walk: two -0.1 steps, then 1
    text = (tmp_path / "run" / "config.yaml").read_text()
    assert f"env: {__name__}:make_corridor" in text and "size: 4" in text
    policy = rlagents.load(tmp_path / "run")  # rebuilt from the recorded import path and kwargs
    assert policy.act(0) == 1 and policy.act(np.array([0, 1, 2])).tolist() == [1, 1, 1]
    assert policy.evaluate().mean == pytest.approx(0.8)


def test_a_factory_that_cannot_be_imported_again_is_named(tmp_path: Path):
    def local_corridor() -> gym.Env:
        return make_corridor(3)

    with pytest.warns(UserWarning, match="cannot be imported again"):
        rlagents.train("qlearning", local_corridor, steps=300, config={"eval_episodes": 2}, run_dir=tmp_path / "run")
    with pytest.raises(rlagents.UserError, match="cannot be imported again.*rlagents.load"):
        rlagents.load(tmp_path / "run")
    assert rlagents.load(tmp_path / "run", env=local_corridor).act(1) in (0, 1)  # given again, it rebuilds
    with pytest.raises(rlagents.UserError, match="not the env of run"):
        rlagents.load(tmp_path / "run", env="CartPole-v1")


@pytest.mark.parametrize("call, error, needle", [
    (lambda d: rlagents.train("nope", "CartPole-v1", run_dir=d), rlagents.UserError, "unknown agent 'nope'"),
    (lambda d: rlagents.train("dqn", "CartPol-v1", run_dir=d), rlagents.UserError, "did you mean: CartPole-v1"),
    (lambda d: rlagents.train("dqn", "CartPole-v1", config={"lr": -1}, run_dir=d), rlagents.ConfigError, "lr"),
    (lambda d: rlagents.train("dqn", "CartPole-v1", env_kwargs={"x": object()}, run_dir=d), rlagents.UserError,
     "not a plain YAML value"),
    (lambda d: rlagents.train("dqn", "nosuchmodule:Thing-v0", run_dir=d), rlagents.EnvError,
     "import nosuchmodule failed"),
    (lambda d: rlagents.load(d), rlagents.UserError, "run directory not found"),
])
def test_bad_input_raises_user_errors_and_writes_nothing(tmp_path: Path, call, error, needle):
    with pytest.raises(error, match=needle):
        call(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_compare_through_the_api(tmp_path: Path):
    result = rlagents.compare(["qlearning"], f"{__name__}:make_corridor", seeds=2, steps=300,
                              config={"eval_episodes": 2}, env_kwargs={"size": 4}, out=tmp_path / "cmp", workers=1)
    assert [(r["seed"], r["status"]) for r in result.runs] == [(0, "completed"), (1, "completed")]
    assert not result.failed and (result.out / "report.md").is_file()
    for run in result.runs:  # each worker built the env with the kwargs: Discrete(4) observations
        _, meta = read_checkpoint(Path(run["run_dir"]) / "checkpoints" / "final.json")
        assert meta["observation_space"] == "Discrete(4)"


def test_import_rlagents_is_light():
    code = "import sys, rlagents; print('torch' in sys.modules, 'gymnasium' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
