"""Numerical faults: a NaN loss stops training with the last good checkpoint intact, or is skipped."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlagents.checkpoint import read_checkpoint, step_checkpoints
from rlagents.evaluate import main as evaluate_main
from rlagents.train import main as train_main


class NaNAfter(gym.Env):
    """A 1-D random walk whose rewards (or, with `nan_obs`, observations) turn NaN after `clean_steps` steps (a
    broken reward function or sensor); with `discrete`, its observation is the position as a Discrete state."""

    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None, clean_steps: int = 600, nan_obs: bool = False, discrete: bool = False):
        self.render_mode, self.clean_steps, self.total = render_mode, clean_steps, 0
        self.nan_obs, self.discrete = nan_obs, discrete
        self.observation_space = (gym.spaces.Discrete(21, start=-10) if discrete
                                  else gym.spaces.Box(-10.0, 10.0, (1,), np.float32))

    def observation(self, broken: bool = False):
        if self.discrete:
            return int(self.x)
        return np.array([float("nan") if broken else self.x], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0.0
        return self.observation(), {}

    def step(self, action):
        self.total += 1
        self.x = float(np.clip(self.x + (1.0 if action else -1.0), -10, 10))
        broken = self.total > self.clean_steps
        reward = float("nan") if broken and not self.nan_obs else 1.0
        return self.observation(broken and self.nan_obs), reward, abs(self.x) >= 10, False, {}


BROKEN_ENVS = {"rlagents-test/NaNAfter-v0": {}, "rlagents-test/NaNObsAfter-v0": {"nan_obs": True},
               "rlagents-test/NaNAfterDiscrete-v0": {"discrete": True}}


@pytest.fixture(scope="module", autouse=True)
def nan_env():
    for env_id, kwargs in BROKEN_ENVS.items():
        gym.register(env_id, entry_point=NaNAfter, max_episode_steps=50, kwargs=kwargs)
    yield
    for env_id in BROKEN_ENVS:
        del gym.registry[env_id]


PLANNER_QUICK = ["--set", "learning_starts=100", "--set", "train_every=100", "--set", "train_steps=10",
                 "--set", "value_steps=10", "--set", "candidates=8", "--set", "elites=2", "--set", "horizon=4"]


@pytest.mark.parametrize("agent, env, extra", [
    ("dqn", "NaNAfter", ["--set", "learning_starts=100"]),
    ("reinforce", "NaNAfter", ["--set", "episodes_per_update=2"]),
    ("qlearning", "NaNAfter", ["--set", "bins=21"]),
    ("planner", "NaNAfter", PLANNER_QUICK),
    ("planner", "NaNObsAfter", PLANNER_QUICK),
    ("planner", "NaNAfterDiscrete", []),  # the tabular model
])
def test_nan_loss_stops_with_the_last_good_checkpoint_intact(agent, env, extra, tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        train_main(["--agent", agent, "--env", f"rlagents-test/{env}-v0", "--steps", "5000", "--eval-every", "0",
                    "--run-dir", str(run_dir), "--no-progress", "--set", "checkpoint_every=300", *extra])
    err = capsys.readouterr().err
    assert exc.value.code == 3 and err.startswith("error: training stopped: non-finite") and err.count("\n") == 1
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert not (run_dir / "checkpoints" / "final.json").exists()
    last_good = step_checkpoints(run_dir)[-1]
    state, _ = read_checkpoint(last_good)
    if agent == "qlearning":
        assert all(np.isfinite(table).all() for table in state["agent"]["q"])
    elif agent == "planner":
        arrays = ([state["agent"]["q"], state["agent"]["model"]["reward_sums"]] if env.endswith("Discrete")
                  else [t.numpy() for t in state["agent"]["model"]["net"].values()])
        assert all(np.isfinite(a).all() for a in arrays)
    else:
        weights = state["agent"]["q" if agent == "dqn" else "policy"]
        assert all(np.isfinite(t.numpy()).all() for t in weights.values())
    assert evaluate_main([str(run_dir), "--episodes", "2"]) == 0  # the last good checkpoint still evaluates


def test_nonfinite_skip_lets_training_finish(tmp_path: Path):
    run_dir = tmp_path / "run"
    assert train_main(["--agent", "dqn", "--env", "rlagents-test/NaNAfter-v0", "--steps", "1500", "--eval-every",
                       "0", "--run-dir", str(run_dir), "--no-progress", "--set", "learning_starts=100",
                       "--set", "nonfinite=skip"]) == 0
    state, _ = read_checkpoint(run_dir / "checkpoints" / "final.json")
    assert all(np.isfinite(t.numpy()).all() for t in state["agent"]["q"].values())


def test_qlearning_skips_nonfinite_rewards_when_asked(tmp_path: Path):
    run_dir = tmp_path / "run"
    assert train_main(["--agent", "qlearning", "--env", "rlagents-test/NaNAfter-v0", "--steps", "1500",
                       "--eval-every", "0", "--run-dir", str(run_dir), "--no-progress", "--set", "bins=21",
                       "--set", "nonfinite=skip"]) == 0
    state, _ = read_checkpoint(run_dir / "checkpoints" / "final.json")
    assert all(np.isfinite(table).all() for table in state["agent"]["q"])


@pytest.mark.parametrize("env, extra", [("NaNAfter", PLANNER_QUICK), ("NaNObsAfter", PLANNER_QUICK),
                                        ("NaNAfterDiscrete", [])])
def test_planner_skips_nonfinite_transitions_when_asked(env, extra, tmp_path: Path):
    run_dir = tmp_path / "run"
    assert train_main(["--agent", "planner", "--env", f"rlagents-test/{env}-v0", "--steps", "1200", "--eval-every",
                       "0", "--eval-episodes", "2", "--run-dir", str(run_dir), "--no-progress", "--set",
                       "nonfinite=skip", *extra]) == 0
    state, _ = read_checkpoint(run_dir / "checkpoints" / "final.json")
    agent = state["agent"]
    if env.endswith("Discrete"):
        assert np.isfinite(agent["q"]).all() and agent["model"]["visits"].sum() == 600  # the clean steps only
    else:
        assert all(np.isfinite(t.numpy()).all() for t in agent["model"]["net"].values())
        assert agent["buffer"]["size"] == 600 and np.isfinite(agent["buffer"]["next_obs"]).all()


def test_nonfinite_weights_are_never_checkpointed(tmp_path: Path, monkeypatch, capsys):
    """Weights that turn non-finite behind a finite loss (an infinite gradient, say) stop the run at the next
    checkpoint, even under nonfinite=skip, and the last good checkpoint stays the newest."""
    from rlagents.agents.dqn import DQNAgent

    original = DQNAgent._train

    def train_then_break(self, n_updates):
        original(self, n_updates)
        if self.updates == 40:  # fault injection: as if this step's gradient had been infinite
            with torch.no_grad():
                next(self.q.parameters()).fill_(float("inf"))

    monkeypatch.setattr(DQNAgent, "_train", train_then_break)
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        train_main(["--agent", "dqn", "--env", "CartPole-v1", "--steps", "3000", "--eval-every", "0", "--run-dir",
                    str(run_dir), "--no-progress", "--set", "checkpoint_every=400", "--set", "learning_starts=100",
                    "--set", "train_every=8", "--set", "nonfinite=skip"])
    err = capsys.readouterr().err
    assert exc.value.code == 3 and "non-finite weights" in err and err.count("\n") == 1
    newest = step_checkpoints(run_dir)[-1]
    state, meta = read_checkpoint(newest)
    assert meta["step"] <= 100 + 40 * 8 and all(np.isfinite(t.numpy()).all() for t in state["agent"]["q"].values())


def test_replay_buffer_is_checkpointed_when_asked(tmp_path: Path):
    run_dir = tmp_path / "run"
    assert train_main(["--agent", "dqn", "--env", "CartPole-v1", "--steps", "600", "--eval-every", "0",
                       "--run-dir", str(run_dir), "--no-progress", "--set", "checkpoint_replay=true",
                       "--set", "learning_starts=100", "--set", "n_step=1"]) == 0
    state, _ = read_checkpoint(run_dir / "checkpoints" / "final.json")
    assert state["agent"]["replay"]["size"] == 600 and state["agent"]["replay"]["obs"].shape == (600, 4)
