"""Goal envs' success rate: envs whose episodes end with `info["is_success"]` (the Gymnasium-Robotics / SB3
convention) get `eval/success_rate` logged and `eval_success_rate` in summary.json; other envs get neither."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import rlagents
from rlagents.api import train_spec
from rlagents.evaluate import main as evaluate_main
from rlagents.train import build_parser, spec_from_args
from tests.test_determinism import scalars

GOAL_ENV = "tests.test_success_rate:make_goal"


class Goal(gym.Env):
    """One-step episodes: the observation is a cue (±1); the action matching it (1 for +1, 0 for −1) succeeds
    in the episodes the env lets it (half of them, drawn unseen at reset, so the rate is not all or nothing),
    paying 1 and reporting `is_success` True; otherwise the episode pays 0 and reports False."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue = float(self.np_random.choice([-1.0, 1.0]))
        self.possible = bool(self.np_random.random() < 0.5)
        return np.array([self.cue], np.float32), {}

    def step(self, action):
        success = self.possible and (int(action) == 1) == (self.cue > 0)
        return np.array([self.cue], np.float32), float(success), True, False, {"is_success": success}


def make_goal() -> gym.Env:
    return Goal()


def train(run_dir: Path, env: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    args = ["--agent", "dqn", "--env", env, "--seed", "0", "--steps", "600", "--eval-every", "200",
            "--eval-episodes", "40", "--no-progress", "--run-dir", str(run_dir), "--set", "learning_starts=100"]
    events: list[dict[str, Any]] = []
    train_spec(spec_from_args(build_parser().parse_args(args)), callback=lambda step, m: events.append(m))
    return json.loads((run_dir / "summary.json").read_text()), [m for m in events if "evaluation" in m]


def test_success_rate_is_logged_and_summarised_for_an_env_that_reports_it(tmp_path: Path):
    summary, evaluations = train(tmp_path / "goal", GOAL_ENV)
    assert [m["evaluation"]["step"] for m in evaluations] == [200, 400, 600]
    for m in evaluations:  # reward 1 exactly when the episode succeeded
        assert m["eval/success_rate"] == np.mean([r == 1.0 for r in m["evaluation"]["returns"]])
    assert 0.0 < summary["eval_success_rate"] < 1.0
    assert summary["eval_success_rate"] == np.mean([r == 1.0 for r in summary["final_eval_returns"]])
    assert [e["success_rate"] for e in summary["evaluations"]] == [m["eval/success_rate"] for m in evaluations]
    logged = scalars(tmp_path / "goal")["eval/success_rate"]
    assert [step for step, _ in logged] == [200, 400, 600]
    assert np.allclose([v for _, v in logged], [m["eval/success_rate"] for m in evaluations])


def test_no_success_rate_for_an_env_that_does_not_report_it(tmp_path: Path):
    summary, evaluations = train(tmp_path / "cartpole", "CartPole-v1")
    assert "eval_success_rate" not in summary and not any("success_rate" in e for e in summary["evaluations"])
    assert evaluations and not any("eval/success_rate" in m for m in evaluations)
    assert "eval/success_rate" not in scalars(tmp_path / "cartpole")


def test_evaluate_prints_the_success_rate_of_a_goal_env_and_none_for_others(tmp_path: Path, capsys):
    """`python -m rlagents.evaluate RUN_DIR` (and `rlagents.evaluate`) reproduce the final evaluation, success rate
    included, for an env that reports it; a CartPole run prints no success rate."""
    summary, _ = train(tmp_path / "goal", GOAL_ENV)
    capsys.readouterr()
    assert evaluate_main([str(tmp_path / "goal")]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.endswith(f"over 40 episodes (mean length 1.0), success rate {summary['eval_success_rate']:.3f}"), line
    assert rlagents.evaluate(tmp_path / "goal").success_rate == summary["eval_success_rate"]
    assert rlagents.evaluate(tmp_path / "goal", episodes=10, seed=5).success_rate is not None

    train(tmp_path / "cartpole", "CartPole-v1")
    capsys.readouterr()
    assert evaluate_main([str(tmp_path / "cartpole")]) == 0
    assert "success rate" not in capsys.readouterr().out
    assert rlagents.evaluate(tmp_path / "cartpole").success_rate is None
