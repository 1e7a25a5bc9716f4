"""The CLI contract: a smoke run per entry point, run-directory contents, and bad input (exit 2, one line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlagents.evaluate import main as evaluate_main
from rlagents.train import main as train_main

SUMMARY_KEYS = {"agent", "env", "seed", "total_steps", "wall_time_s", "env_steps_per_s", "train_time_s",
                "eval_return_mean", "eval_return_std", "eval_episodes", "reward_threshold", "solved_at_step",
                "solved_at_time_s"}


def test_run_directory_contents(short_dqn_run: Path):
    summary = json.loads((short_dqn_run / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["agent"] == "dqn" and summary["env"] == "CartPole-v1" and summary["seed"] == 3
    assert summary["total_steps"] == 1500 and summary["eval_episodes"] == 4
    assert summary["reward_threshold"] == 475.0 and summary["env_steps_per_s"] > 0
    assert [e["step"] for e in summary["evaluations"]] == [750, 1500]
    config = yaml.safe_load((short_dqn_run / "config.yaml").read_text())
    assert config["run"]["agent"] == "dqn" and config["default"]["learning_starts"] == 200
    ckpts = sorted(p.name for p in (short_dqn_run / "checkpoints").iterdir())
    assert ckpts == ["best.json", "best.safetensors", "final.json", "final.safetensors", "step_000000001000.json",
                     "step_000000001000.safetensors"]
    assert list(short_dqn_run.glob("events.out.tfevents.*"))


def test_tensorboard_scalars_are_logged(short_dqn_run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in short_dqn_run.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"charts/episode_return", "charts/episode_length", "losses/td_loss", "charts/epsilon",
            "values/mean_q", "eval/return_mean", "charts/steps_per_s"} <= tags


def test_evaluate_reproduces_the_final_evaluation_and_records_a_gif(short_dqn_run: Path, tmp_path, capsys):
    summary = json.loads((short_dqn_run / "summary.json").read_text())
    gif = tmp_path / "episode.gif"
    assert evaluate_main([str(short_dqn_run), "--video", str(gif)]) == 0
    out = capsys.readouterr().out
    assert f"return {summary['eval_return_mean']:.2f} ± {summary['eval_return_std']:.2f} over 4 episodes" in out
    assert gif.read_bytes()[:6] == b"GIF89a"


def test_config_yaml_reproduces_the_run_exactly(short_dqn_run: Path, tmp_path):
    again = tmp_path / "again"
    assert train_main(["--config", str(short_dqn_run / "config.yaml"), "--run-dir", str(again), "--no-progress"]) == 0
    first = json.loads((short_dqn_run / "summary.json").read_text())
    second = json.loads((again / "summary.json").read_text())
    assert second["final_eval_returns"] == first["final_eval_returns"]
    assert [e["return_mean"] for e in second["evaluations"]] == [e["return_mean"] for e in first["evaluations"]]
    # identical TensorBoard scalars too, apart from the timing ones
    deterministic = ("charts/episode_return", "charts/episode_length", "losses/td_loss", "values/mean_q",
                     "charts/epsilon", "eval/return_mean")
    assert read_scalars(again, deterministic) == read_scalars(short_dqn_run, deterministic)


def read_scalars(run_dir: Path, tags) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in set(tags) & set(acc.Tags()["scalars"]):
            out[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    assert set(out) == set(tags)
    return out


def run_bad(argv, capsys, entry=train_main) -> str:
    with pytest.raises(SystemExit) as exc:
        entry(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, message", [
    (["--agent", "dqm", "--env", "CartPole-v1"], "unknown agent 'dqm'; valid agents: dqn"),
    (["--agent", "dqn", "--env", "CartPol-v1"], "did you mean: CartPole-v1"),
    (["--agent", "dqn", "--env", "CartPole-v1", "--set", "lrr=1"], "unknown key 'lrr'; valid keys:"),
    (["--agent", "dqn", "--env", "CartPole-v1", "--set", "lr=abc"], "lr: expected a number, got 'abc'"),
    (["--agent", "dqn", "--env", "CartPole-v1", "--set", "lr"], "--set expects KEY=VALUE"),
    (["--agent", "dqn", "--env", "CartPole-v1", "--config", "nope.yaml"], "config file not found: nope.yaml"),
    (["--agent", "dqn", "--env", "Pendulum-v1"], "dqn needs a Discrete action space"),
    (["--agent", "dqn", "--env", "CartPole-v1", "--steps", "ten"], "argument --steps: invalid int value"),
    (["--agent", "dqn", "--env", "CartPole-v1", "--n-envs", "0"], "n_envs: bad value 0; must be >= 1"),
    (["--agent", "dqn", "--env", "CartPole-v1", "--device", "tpu"], "argument --device: invalid choice"),
    (["--env", "CartPole-v1"], "--agent is required"),
])
def test_bad_train_input_is_one_line_exit_2_and_writes_nothing(argv, message, capsys, tmp_path):
    run_dir = tmp_path / "run"
    err = run_bad(argv + ["--run-dir", str(run_dir), "--no-progress"], capsys)
    assert message in err
    assert not run_dir.exists()


def test_existing_run_dir_is_never_overwritten(short_dqn_run: Path, capsys):
    before = (short_dqn_run / "summary.json").read_bytes()
    err = run_bad(["--agent", "dqn", "--env", "CartPole-v1", "--run-dir", str(short_dqn_run)], capsys)
    assert "already exists" in err and (short_dqn_run / "summary.json").read_bytes() == before


def test_bad_evaluate_input(short_dqn_run: Path, tmp_path: Path, capsys):
    assert "run directory not found" in run_bad([str(tmp_path / "nope")], capsys, evaluate_main)
    assert "unsupported format '.avi'; valid: .gif, .mp4" in run_bad(
        [str(short_dqn_run), "--video", "x.avi"], capsys, evaluate_main)
    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "config.yaml").write_bytes((short_dqn_run / "config.yaml").read_bytes())
    for suffix in (".json", ".safetensors"):
        (broken / "checkpoints" / f"final{suffix}").write_bytes((short_dqn_run / "checkpoints" / f"final{suffix}").read_bytes())
    (broken / "checkpoints" / "final.safetensors").write_bytes(b"\x00" * 64)
    assert "corrupt (SHA-256 mismatch)" in run_bad([str(broken)], capsys, evaluate_main)


def test_python_dash_m_entry_points_exit_2_without_traceback(tmp_path: Path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    for argv in (["rlagents.train", "--agent", "nope", "--env", "CartPole-v1"], ["rlagents.evaluate", str(tmp_path)]):
        proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_list_agents(capsys):
    assert train_main(["--list-agents"]) == 0
    assert "dqn" in capsys.readouterr().out.split()
