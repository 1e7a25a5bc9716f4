"""Faults outside the agent during training: an env that raises in `reset`/`step`, and a full disk while
writing a checkpoint, the summary or the TensorBoard log. Each ends with exit 3 and one line saying what
happened (the env, the call and the exception; or where space ran out), the last good checkpoint kept."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlagents.checkpoint
from rlagents.checkpoint import read_checkpoint, step_checkpoints
from rlagents.loop import nonfinite_entries
from rlagents.train import main as train_main


class Faulty(gym.Env):
    """A 1-D walk that raises RuntimeError in `call` ("step" or "reset") once `after` steps have been taken."""

    observation_space = gym.spaces.Box(-5.0, 5.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None, call: str = "step", after: int = 700):
        self.render_mode, self.call, self.after, self.steps = render_mode, call, after, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self.call == "reset" and self.steps >= self.after:
            raise RuntimeError("the simulator lost its licence")
        self.x = 0.0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.steps += 1
        if self.call == "step" and self.steps > self.after:
            raise RuntimeError("the simulator lost its licence")
        self.x = float(np.clip(self.x + (0.5 if action else -0.5), -5, 5))
        return np.array([self.x], np.float32), 1.0, abs(self.x) >= 5, False, {}


@pytest.fixture(scope="module", autouse=True)
def faulty_envs():
    for call in ("step", "reset"):
        gym.register(f"rlagents-test/Faulty{call.title()}-v0", entry_point=Faulty, kwargs={"call": call},
                     max_episode_steps=40)
    yield
    for call in ("step", "reset"):
        del gym.registry[f"rlagents-test/Faulty{call.title()}-v0"]


def train(run_dir: Path, env: str = "CartPole-v1", agent: str = "dqn", steps: int = 1500) -> int:
    try:
        return train_main(["--agent", agent, "--env", env, "--steps", str(steps), "--eval-every", "500",
                           "--eval-episodes", "2", "--run-dir", str(run_dir), "--no-progress", "--set",
                           "checkpoint_every=250", "--set", "log_every=250",
                           *(["--set", "learning_starts=100"] if "dqn" in agent else [])])
    except SystemExit as exc:
        return exc.code


def assert_last_good_checkpoint(run_dir: Path, err: str, step: int) -> None:
    last_good = step_checkpoints(run_dir)[-1]
    _, meta = read_checkpoint(last_good)
    assert meta["step"] == step
    assert f"the last good checkpoint, {last_good}, is kept" in err
    assert not (run_dir / "checkpoints" / "final.json").exists()
    assert not list((run_dir / "checkpoints").glob("*.tmp*"))


@pytest.mark.parametrize("agent", ["dqn", "sb3-dqn"])  # our driver and SB3's
@pytest.mark.parametrize("call", ["step", "reset"])
def test_an_env_that_raises_stops_training_with_one_line(call, agent, tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    assert train(run_dir, f"rlagents-test/Faulty{call.title()}-v0", agent) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: training stopped: env 'rlagents-test/Faulty{call.title()}-v0' (copy 0): step, or "
                          f"the reset after an episode end, raised RuntimeError: the simulator lost its licence; "
                          f"stopped at env step ")
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    failed_at = int(err.split(" stopped at env step ")[1].split(",")[0])
    assert failed_at == 700 if call == "step" else 700 <= failed_at < 740  # the first reset after 700 steps
    assert_last_good_checkpoint(run_dir, err, failed_at // 250 * 250)


def full_disk_after(monkeypatch, writes: int, target: str = "") -> None:
    """Every file write through the atomic path fails with ENOSPC after `writes` of those whose name holds
    `target` have succeeded."""
    real = rlagents.checkpoint.write_temp_file
    done = []

    def write_temp_file(path, data):
        if target in str(path):
            if len(done) >= writes:
                raise OSError(errno.ENOSPC, "No space left on device")
            done.append(path)
        return real(path, data)

    monkeypatch.setattr(rlagents.checkpoint, "write_temp_file", write_temp_file)


def test_a_full_disk_while_checkpointing_keeps_the_last_good_checkpoint(tmp_path: Path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    full_disk_after(monkeypatch, 4, "step_")  # two periodic checkpoints of two files each, then no space
    assert train(run_dir) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: training stopped: no space left on the device of {run_dir / 'checkpoints'} "
                          f"while writing checkpoint step_000000000750 (No space left on device)")
    assert_last_good_checkpoint(run_dir, err, 500)
    monkeypatch.undo()  # space freed: the run resumes from there and completes
    assert train_main(["--resume", str(run_dir), "--no-progress"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_a_full_disk_while_writing_the_summary_says_so(tmp_path: Path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    full_disk_after(monkeypatch, 0, "summary.json")
    assert train(run_dir, steps=600) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"no space left on the device of {run_dir} while writing summary.json" in err
    assert (run_dir / "checkpoints" / "final.json").is_file()  # the trained agent itself was saved


def test_a_full_disk_under_the_tensorboard_log_says_so(tmp_path: Path, monkeypatch, capsys):
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "run"
    real = SummaryWriter.add_scalar

    def add_scalar(self, tag, value, step=None, *args, **kwargs):
        if step is not None and step >= 1000:  # as TensorBoard's writer thread reports it, on the next write
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, tag, value, step, *args, **kwargs)

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    assert train(run_dir) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: training stopped: no space left on the device of {run_dir} while writing the "
                          f"TensorBoard log")
    assert_last_good_checkpoint(run_dir, err, 750)


class NaNRewards(gym.Env):
    """A 5-state chain whose rewards turn NaN after 300 steps (a broken reward function)."""

    observation_space = gym.spaces.Discrete(5)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode, self.total = render_mode, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = 0
        return self.s, {}

    def step(self, action):
        self.total += 1
        self.s = min(4, self.s + 1) if action else max(0, self.s - 1)
        return self.s, float("nan") if self.total > 300 else float(self.s == 4), self.s == 4, False, {}


def test_the_planner_never_saves_a_nonfinite_model(tmp_path: Path, capsys):
    gym.register("rlagents-test/NaNChain-v0", entry_point=NaNRewards, max_episode_steps=20)
    run_dir = tmp_path / "run"
    try:
        assert train(run_dir, "rlagents-test/NaNChain-v0", "planner", steps=1000) == 3
    finally:
        del gym.registry["rlagents-test/NaNChain-v0"]
    err = capsys.readouterr().err  # the planner's own check or the loop's before a checkpoint, whichever first
    assert err.count("\n") == 1 and err.startswith("error: training stopped: non-finite ")
    assert not (run_dir / "checkpoints" / "final.json").exists()
    _, meta = read_checkpoint(step_checkpoints(run_dir)[-1])  # before the rewards turned NaN
    assert meta["step"] == 250


def test_the_loop_finds_nonfinite_values_anywhere_in_an_agent_state_but_recorded_experience():
    """What the loop checks before every checkpoint (whatever an agent's own checks miss)."""
    state = {"q": torch.tensor([1.0, float("nan")]), "table": [np.zeros(2), np.array([np.inf])],
             "nested": {"epsilon": float("nan"), "counts": np.array([1, 2]), "ok": 0.5},
             "replay": {"rewards": np.array([np.nan])}}
    assert nonfinite_entries(state, recorded={"replay"}) == ["nested.epsilon", "q", "table.1"]
    assert nonfinite_entries({"q": torch.ones(2), "steps": 3}, recorded=()) == []
