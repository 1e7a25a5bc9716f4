"""Reliability: stopping (SIGTERM, SIGKILL) and resuming runs, checkpoint pruning, resume refusals."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlagents.checkpoint import read_checkpoint, step_checkpoints
from rlagents.train import main as train_main

ARGS = ["--agent", "dqn", "--env", "CartPole-v1", "--seed", "5", "--eval-episodes", "3", "--no-progress",
        "--set", "learning_starts=200"]


def start(run_dir: Path, steps: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rlagents.train", *ARGS, "--steps", str(steps), "--run-dir", str(run_dir), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if step_checkpoints(run_dir):
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint appeared: {proc.poll()} {proc.stderr.read() if proc.stderr else ''}")


def scalar_steps(run_dir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_sigterm_checkpoints_and_resume_completes_the_run(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = start(run_dir, 400_000, "--set", "checkpoint_every=1000", "--eval-every", "2000")
    wait_for_checkpoint(run_dir, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    newest = step_checkpoints(run_dir)[-1]
    state, meta = read_checkpoint(newest, agent="dqn", env="CartPole-v1")
    assert meta["reason"] == "interrupted" and state["loop"]["step"] == meta["step"] > 0
    stopped_at = meta["step"]
    # finish with a shorter budget written into the copy of the config, so the test stays quick
    config = (run_dir / "config.yaml").read_text().replace("steps: 400000", f"steps: {stopped_at + 1500}")
    (run_dir / "config.yaml").write_text(config)
    assert train_main(["--resume", str(run_dir), "--no-progress"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["sessions"] == 2
    assert summary["total_steps"] == stopped_at + 1500
    steps = scalar_steps(run_dir, "charts/episode_return")
    assert steps == sorted(set(steps))  # TensorBoard continues at the right step, without repeats


def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint_that_resumes(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = start(run_dir, 6000, "--set", "checkpoint_every=500", "--eval-every", "0")
    wait_for_checkpoint(run_dir, proc)
    time.sleep(0.3)
    proc.kill()  # SIGKILL: no handler runs; whatever is on disk must be consistent
    proc.communicate(timeout=60)
    if (run_dir / "checkpoints" / "final.json").exists():
        pytest.skip("the run finished before it could be killed")
    for ckpt in step_checkpoints(run_dir):
        read_checkpoint(ckpt, agent="dqn", env="CartPole-v1")  # every listed checkpoint is complete
    # a kill during a write leaves that write's temp file (never a torn checkpoint): resuming removes it
    assert train_main(["--resume", str(run_dir), "--no-progress"]) == 0
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    assert json.loads((run_dir / "summary.json").read_text())["total_steps"] == 6000


def test_resuming_from_the_same_checkpoint_is_deterministic(tmp_path: Path):
    first = tmp_path / "first"
    assert train_main([*ARGS, "--steps", "3000", "--eval-every", "1000", "--run-dir", str(first),
                       "--set", "checkpoint_every=1500", "--set", "keep_checkpoints=5"]) == 0
    results = []
    for name in ("a", "b"):  # two copies stopped at step 1500, resumed independently
        copy = tmp_path / name
        shutil.copytree(first, copy)
        for path in (copy / "checkpoints").glob("*"):
            if not path.name.startswith("step_000000001500"):
                path.unlink()
        (copy / "summary.json").unlink()
        assert train_main(["--resume", str(copy), "--no-progress"]) == 0
        results.append(json.loads((copy / "summary.json").read_text()))
    assert results[0]["final_eval_returns"] == results[1]["final_eval_returns"]
    assert [e["return_mean"] for e in results[0]["evaluations"]] == [e["return_mean"] for e in results[1]["evaluations"]]
    assert results[0]["evaluations"][0] == json.loads((first / "summary.json").read_text())["evaluations"][0]


def test_only_the_newest_periodic_checkpoints_are_kept(tmp_path: Path):
    run_dir = tmp_path / "run"
    assert train_main([*ARGS, "--steps", "1200", "--eval-every", "0", "--run-dir", str(run_dir),
                       "--set", "checkpoint_every=200", "--set", "keep_checkpoints=2"]) == 0
    assert [p.stem for p in step_checkpoints(run_dir)] == ["step_000000001000", "step_000000001200"]
    assert (run_dir / "checkpoints" / "best.json").is_file()


def test_resume_refusals(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    assert train_main([*ARGS, "--steps", "300", "--eval-every", "0", "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    for argv, message in ((["--resume", str(run_dir)], "already finished"),
                          (["--resume", str(run_dir), "--set", "lr=1"], "drop --set"),
                          (["--resume", str(tmp_path / "nope")], "not an rlagents run directory")):
        with pytest.raises(SystemExit) as exc:
            train_main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and err.count("\n") == 1
