"""Run directories: one process at a time (an OS lock, tested with real processes), resuming a run stopped
before its first checkpoint, falling back past a corrupt newest checkpoint, and refusing a resume whose
config.yaml was edited since its checkpoint (issue 15)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from rlagents.checkpoint import read_checkpoint, save_checkpoint, step_checkpoints
from rlagents.classify import main as classify_main
from rlagents.train import main as train_main
from tests.test_determinism import scalars

ARGS = ["--agent", "dqn", "--env", "CartPole-v1", "--seed", "5", "--eval-episodes", "3", "--no-progress",
        "--set", "learning_starts=200"]


def one_line_error(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err[-2000:]
    return err


def start(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlagents.train", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear: exit {proc.poll()}, {proc.stderr.read() if proc.poll() else ''}")


def set_steps(run_dir: Path, steps: int) -> None:
    """Shorten a run by editing its config.yaml: `steps` is one of the keys a resume may change."""
    data = yaml.safe_load((run_dir / "config.yaml").read_text())
    data["default"]["steps"] = steps
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


# ---------------------------------------------------------------- the lock, with real processes


def test_a_run_dir_is_owned_by_one_process_and_a_killed_owner_releases_it(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    owner = start(*ARGS, "--steps", "400000", "--eval-every", "0", "--set", "checkpoint_every=500",
                  "--run-dir", str(run_dir))
    try:
        wait_for(run_dir / "checkpoints" / "step_000000000500.json", owner)
        second = subprocess.run([sys.executable, "-m", "rlagents.train", "--resume", str(run_dir), "--no-progress"],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert second.stderr == (f"error: run directory {run_dir} is in use by another process (pid {owner.pid}); "
                                 f"wait for it to end, or choose another --run-dir\n")
        # classify into the same folder: refused too (it is not empty; the lock is re-checked under the lock)
        err = one_line_error(classify_main, ["--run-dir", str(run_dir), "--no-progress"], capsys)
        assert "already exists and is not empty" in err
        assert owner.poll() is None  # the owner was not disturbed
    finally:
        owner.kill()  # SIGKILL: no handler runs, yet the kernel releases the lock
        owner.communicate(timeout=60)
    stopped_at = read_checkpoint(step_checkpoints(run_dir)[-1])[1]["step"]
    set_steps(run_dir, stopped_at + 500)
    assert train_main(["--resume", str(run_dir), "--no-progress"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["total_steps"] == stopped_at + 500


def test_two_new_runs_into_one_folder_one_wins(tmp_path: Path):
    """Two `train --run-dir X` started together: both find X empty, only one gets its lock and trains."""
    run_dir = tmp_path / "run"
    argv = [*ARGS, "--steps", "3000", "--eval-every", "0", "--run-dir", str(run_dir)]
    procs = [start(*argv) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    err = next(e for p, (_, e) in zip(procs, results) if p.returncode == 2)
    assert err.count("\n") == 1 and ("in use by another process" in err or "already exists and is not empty" in err)
    assert json.loads((run_dir / "summary.json").read_text())["sessions"] == 1


def test_the_lock_is_held_by_an_open_file_and_says_who_holds_it(tmp_path: Path):
    from rlagents.runlock import RunDirBusy, run_lock

    with run_lock(tmp_path) as path:
        assert path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(RunDirBusy, match=rf"in use by another process \(pid {os.getpid()}\)"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released on leaving the block
        pass


# ---------------------------------------------------------------- resuming what a crash left


def test_a_run_killed_before_its_first_checkpoint_starts_afresh_on_resume(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    proc = start(*ARGS, "--steps", "400000", "--eval-every", "1000", "--set", "checkpoint_every=1000000",
                 "--run-dir", str(run_dir))
    try:
        wait_for(run_dir / "checkpoints" / "best.json", proc)  # some TensorBoard events and a best checkpoint
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert not step_checkpoints(run_dir)
    set_steps(run_dir, 2000)
    # before this fix: "no checkpoint to resume from", and `--run-dir` refused the non-empty folder
    assert train_main(["--resume", str(run_dir), "--no-progress"]) == 0
    assert "has no checkpoint yet (it stopped before its first one); starting it afresh" in capsys.readouterr().err
    fresh = tmp_path / "fresh"  # the same config trained from scratch in a new folder
    assert train_main(["--config", str(run_dir / "config.yaml"), "--run-dir", str(fresh), "--no-progress"]) == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (run_dir, fresh))
    assert a["sessions"] == 1 and a["final_eval_returns"] == b["final_eval_returns"]
    assert scalars(run_dir) == scalars(fresh)  # the killed session's TensorBoard events are gone


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A 1,500-step DQN run with periodic checkpoints at 500 and 1,000, rewound to step 1,000 as a kill then
    leaves it; its copy `whole` went on to the end (the reference for an exact resume)."""
    root = tmp_path_factory.mktemp("stopped")
    whole = root / "whole"
    assert train_main([*ARGS, "--steps", "1500", "--eval-every", "500", "--run-dir", str(whole),
                       "--set", "checkpoint_every=500", "--set", "keep_checkpoints=5",
                       "--set", "checkpoint_replay=true"]) == 0  # the replay buffer too: an exact resume
    stopped = root / "stopped"
    shutil.copytree(whole, stopped)
    for name in ("final.json", "final.safetensors", "step_000000001500.json", "step_000000001500.safetensors"):
        (stopped / "checkpoints" / name).unlink()
    (stopped / "summary.json").unlink()
    return stopped


@pytest.fixture
def stopped(stopped_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(stopped_run, tmp_path / "run"))


def corrupt(ckpt: Path, how: str) -> None:
    if how == "bit flip":
        tensors = ckpt.with_suffix(".safetensors")
        data = bytearray(tensors.read_bytes())
        data[-1] ^= 1
        tensors.write_bytes(bytes(data))
    elif how == "truncated json":
        ckpt.write_text(ckpt.read_text()[:100])
    elif how == "missing tensors":
        ckpt.with_suffix(".safetensors").unlink()
    else:  # NaN weights, with a valid SHA-256: caught by the state check, not the file check
        state, meta = read_checkpoint(ckpt)
        for name, weight in state["agent"]["q"].items():
            state["agent"]["q"][name] = torch.full_like(weight, torch.nan)
        meta = {k: v for k, v in meta.items() if k not in ("format_version", "versions", "tensor_file",
                                                           "tensor_sha256")}
        save_checkpoint(ckpt.parent, ckpt.stem, state, meta)


@pytest.mark.parametrize("how", ["bit flip", "truncated json", "missing tensors", "nan weights"])
def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_good_one(stopped: Path, capsys, how):
    newest = step_checkpoints(stopped)[-1]
    assert newest.name == "step_000000001000.json"
    corrupt(newest, how)
    assert train_main(["--resume", str(stopped), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "resume: skipped 1 newer checkpoint (step_000000001000.json: " in err
    assert "resuming from step_000000000500.json (step 500)" in err
    summary = json.loads((stopped / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == 1500 and summary["sessions"] == 2


def test_the_fallback_resumes_exactly_from_the_older_checkpoint(stopped_run: Path, stopped: Path, capsys):
    corrupt(step_checkpoints(stopped)[-1], "bit flip")
    assert train_main(["--resume", str(stopped), "--no-progress"]) == 0
    whole = json.loads((stopped_run.parent / "whole" / "summary.json").read_text())
    resumed = json.loads((stopped / "summary.json").read_text())
    assert resumed["final_eval_returns"] == whole["final_eval_returns"]
    assert [e["return_mean"] for e in resumed["evaluations"]] == [e["return_mean"] for e in whole["evaluations"]]


def test_no_usable_checkpoint_is_one_line(stopped: Path, capsys):
    for ckpt in step_checkpoints(stopped):
        corrupt(ckpt, "bit flip")
    before = sorted(p.name for p in (stopped / "checkpoints").iterdir())
    err = one_line_error(train_main, ["--resume", str(stopped), "--no-progress"], capsys)
    assert f"no usable checkpoint in {stopped / 'checkpoints'} (step_000000001000.json: " in err
    assert "step_000000000500.json: " in err and "SHA-256 mismatch" in err
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == before


def edit_checkpoint(ckpt: Path, change) -> None:
    """Change a checkpoint's state and save it again with a valid SHA-256."""
    state, meta = read_checkpoint(ckpt)
    change(state)
    meta = {k: v for k, v in meta.items() if k not in ("format_version", "versions", "tensor_file", "tensor_sha256")}
    save_checkpoint(ckpt.parent, ckpt.stem, state, meta)


@pytest.mark.parametrize("change, message", [
    (lambda s: s["loop"].update(bogus=1), "unknown loop state 'bogus'"),
    (lambda s: s["loop"].update(step="500"), "loop state: step must be a non-negative integer, got '500'"),
    (lambda s: s["loop"].update(episodes=1.5), "loop state: episodes must be a non-negative integer"),
    (lambda s: s.update(loop=[1, 2]), "its loop state must be a mapping"),
    (lambda s: s["loop"].update(solved_at_time=[]), "loop state: solved_at_time must be a number, got []"),
    (lambda s: s["loop"]["evaluations"][0].update(returns=["x"]), "evaluations.0.returns must be a list of numbers"),
    (lambda s: s["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)), "RNG state: torch has shape (3,)"),
    (lambda s: s["rng"]["numpy"].update(pos="x"), "RNG state: numpy.pos must be an integer"),
    (lambda s: s["rng"]["numpy"].update(keys=s["rng"]["numpy"]["keys"][:5]), "loop or RNG state cannot be restored"),
    (lambda s: s["rng"].update(python=[3, [1, 2], None]), "loop or RNG state cannot be restored"),
    (lambda s: s.update(in_flight={"envs": "x"}), "its episodes in flight cannot be restored"),
])
def test_a_hostile_loop_or_rng_state_is_one_line(stopped: Path, capsys, change, message):
    for ckpt in step_checkpoints(stopped)[:-1]:  # one checkpoint left: nothing to fall back to
        ckpt.unlink()
        ckpt.with_suffix(".safetensors").unlink()
    edit_checkpoint(step_checkpoints(stopped)[-1], change)
    assert message in one_line_error(train_main, ["--resume", str(stopped), "--no-progress"], capsys)


# ---------------------------------------------------------------- an edited config.yaml


def edit_config(run_dir: Path, **values) -> None:
    data = yaml.safe_load((run_dir / "config.yaml").read_text())
    for key, value in values.items():
        (data["run"] if key == "seed" else data["default"])[key] = value
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize("values, named", [
    ({"seed": 6}, "seed 5 → 6"),
    ({"lr": 0.01}, "agent.lr 0.003 → 0.01"),
    ({"double": False}, "agent.double True → False"),
    ({"hidden": [64]}, "agent.hidden [128, 128] → [64]"),  # a shape change: was a traceback
    ({"n_envs": 2}, "train.n_envs 1 → 2"),  # another shape change
    ({"lr": 0.01, "gamma": 0.9}, "agent.gamma 0.99 → 0.9, agent.lr 0.003 → 0.01"),
])
def test_resume_refuses_an_edited_config_naming_the_keys(stopped: Path, capsys, values, named):
    edit_config(stopped, **values)
    before = {p.name: p.stat().st_mtime_ns for p in stopped.rglob("*")}
    err = one_line_error(train_main, ["--resume", str(stopped), "--no-progress"], capsys)
    assert f"config.yaml was edited since step_000000001000.json was written ({named})" in err
    assert f"start a new run with --config {stopped / 'config.yaml'}" in err
    after = {p.name: p.stat().st_mtime_ns for p in stopped.rglob("*") if p.name != ".lock"}
    assert after == {k: v for k, v in before.items() if k != ".lock"}  # nothing written


def test_checkpoints_record_the_config_hash_and_run_length_may_change(stopped: Path, capsys):
    from rlagents.config import config_sha256

    _, meta = read_checkpoint(step_checkpoints(stopped)[-1])
    train, agent = meta["config"]["train"], meta["config"]["agent"]
    assert meta["config_sha256"] == config_sha256(train, agent, 5) != config_sha256(train, agent, 6)
    assert config_sha256({**train, "steps": 9}, agent, 5) == meta["config_sha256"]  # a resumable key
    edit_config(stopped, steps=2000, eval_episodes=2)
    assert train_main(["--resume", str(stopped), "--no-progress"]) == 0
    assert "resume: train.eval_episodes 3 → 2, train.steps 1500 → 2000 (changed in config.yaml)" in \
        capsys.readouterr().err
    assert json.loads((stopped / "summary.json").read_text())["total_steps"] == 2000
