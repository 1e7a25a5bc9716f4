"""Determinism: the same seed and config on CPU give identical returns and TensorBoard scalars, every agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlagents.train import main as train_main

TIMING_TAGS = {"charts/steps_per_s", "timing/plan_ms_per_step"}


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
            if tag not in TIMING_TAGS}


@pytest.mark.parametrize("agent, env, steps", [("dqn", "CartPole-v1", 2000), ("reinforce", "CartPole-v1", 4000),
                                               ("reinforce", "Pendulum-v1", 2000), ("ppo", "Pendulum-v1", 2000),
                                               ("qlearning", "FrozenLake-v1", 5000),
                                               ("qlearning", "CartPole-v1", 3000),
                                               ("planner", "FrozenLake-v1", 3000), ("planner", "CartPole-v1", 600)])
def test_same_seed_same_numbers(agent, env, steps, tmp_path: Path):
    runs = []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        assert train_main(["--agent", agent, "--env", env, "--seed", "7", "--steps", str(steps), "--eval-every",
                           str(steps // 2), "--eval-episodes", "5", "--run-dir", str(run_dir), "--no-progress"]) == 0
        runs.append((json.loads((run_dir / "summary.json").read_text()), scalars(run_dir)))
    (first, first_scalars), (second, second_scalars) = runs
    assert first["final_eval_returns"] == second["final_eval_returns"]
    assert [e["return_mean"] for e in first["evaluations"]] == [e["return_mean"] for e in second["evaluations"]]
    assert first_scalars == second_scalars and "eval/return_mean" in first_scalars
