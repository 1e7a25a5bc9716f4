"""The training callback: called at log and evaluation events; returning False stops the run resumably."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rlagents.checkpoint import read_checkpoint, step_checkpoints
from rlagents.api import train_spec
from rlagents.train import build_parser, spec_from_args
from rlagents.train import main as train_main
from tests.test_determinism import scalars

ARGS = ["--agent", "dqn", "--env", "CartPole-v1", "--seed", "4", "--steps", "2400", "--eval-every", "800",
        "--eval-episodes", "4", "--no-progress", "--set", "learning_starts=300", "--set", "log_every=400",
        "--set", "checkpoint_every=1200", "--set", "checkpoint_replay=true"]


def test_a_callback_stops_a_run_that_resumes_to_the_uninterrupted_result(tmp_path: Path):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert train_main([*ARGS, "--run-dir", str(whole)]) == 0
    calls: list[tuple[int, dict[str, Any]]] = []

    def stop_at_first_evaluation(step: int, metrics: dict[str, Any]) -> bool | None:
        calls.append((step, metrics))
        return "evaluation" not in metrics

    summary = train_spec(spec_from_args(build_parser().parse_args([*ARGS, "--run-dir", str(stopped)])),
                         callback=stop_at_first_evaluation).summary
    assert summary["status"] == "stopped" and summary["stopped_by"] == "callback"
    assert summary["total_steps"] == 800 and [step for step, _ in calls] == [400, 800]
    log, evaluation = calls[0][1], calls[1][1]
    assert log["step"] == 400 and "charts/steps_per_s" in log and "evaluation" not in log
    assert evaluation["evaluation"]["step"] == 800 and len(evaluation["evaluation"]["returns"]) == 4
    assert evaluation["eval/return_mean"] == evaluation["evaluation"]["return_mean"]
    assert {"episodes", "train_time_s", "losses/td_loss"} <= evaluation.keys()
    newest = step_checkpoints(stopped)[-1]
    _, meta = read_checkpoint(newest, agent="dqn", env="CartPole-v1")
    assert meta["reason"] == "stopped by callback" and meta["step"] == 800
    assert not (stopped / "checkpoints" / "final.json").exists()
    on_disk = json.loads((stopped / "summary.json").read_text())  # how it stopped, for whoever finds the run
    assert on_disk == summary and on_disk["checkpoint"] == str(newest)
    assert (on_disk["agent"], on_disk["env"], on_disk["seed"]) == ("dqn", "CartPole-v1", 4)

    time.sleep(1.1)  # TensorBoard orders event files by their creation second (see test_exact_resume)
    assert train_main(["--resume", str(stopped), "--no-progress"]) == 0
    a = json.loads((whole / "summary.json").read_text())
    b = json.loads((stopped / "summary.json").read_text())
    assert b["status"] == "completed" and b["sessions"] == 2
    assert [e["return_mean"] for e in a["evaluations"]] == [e["return_mean"] for e in b["evaluations"]]
    assert a["final_eval_returns"] == b["final_eval_returns"] and a["episodes"] == b["episodes"]
    assert scalars(whole) == scalars(stopped)


def test_a_callback_stops_an_agent_that_drives_the_envs_itself(tmp_path: Path):
    run_dir = tmp_path / "sb3"
    args = ["--agent", "sb3-a2c", "--env", "CartPole-v1", "--steps", "2000", "--eval-every", "500",
            "--eval-episodes", "2", "--no-progress", "--set", "log_every=250", "--run-dir", str(run_dir)]
    steps: list[int] = []
    summary = train_spec(spec_from_args(build_parser().parse_args(args)),
                         callback=lambda step, metrics: steps.append(step) or step < 500).summary
    # its 8 envs step 8 at a time: the events fall on the first vector step past 250 and 500
    assert summary["status"] == "stopped" and len(steps) == 2 and summary["total_steps"] == steps[-1] == 504
    assert [e["step"] for e in summary["evaluations"]] == [504]
    assert read_checkpoint(step_checkpoints(run_dir)[-1])[1]["reason"] == "stopped by callback"
    assert train_main(["--resume", str(run_dir), "--no-progress"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["total_steps"] == 2000
