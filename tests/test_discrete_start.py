"""`Discrete` spaces whose values do not start at 0 (`Discrete(3, start=-1)`): the agents whose networks index
actions and one-hot states from 0 (dqn, reinforce, ppo, and SB3's, which ignore `start`) refuse them in one line before training; the tabular
ones (qlearning) map them and send the env only actions of its space."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlagents.train import main as train_main
from tests.test_cli import run_bad

SHIFTED = "tests.test_discrete_start:make_shifted"


class Shifted(gym.Env):
    """A position on -2..2 moved by the action (-1, 0 or +1: `Discrete(3, start=-1)`); reward 1 at +2, which
    ends the episode. Observations are the position, as a Box or as `Discrete(5, start=-2)`. An action outside
    the space raises, as a strict env's would."""

    action_space = gym.spaces.Discrete(3, start=-1)

    def __init__(self, discrete_obs: bool = False):
        self.discrete_obs = discrete_obs
        self.observation_space = (gym.spaces.Discrete(5, start=-2) if discrete_obs
                                  else gym.spaces.Box(-2.0, 2.0, (1,), np.float32))

    def _obs(self):
        return self.x if self.discrete_obs else np.array([self.x], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = 0
        return self._obs(), {}

    def step(self, action):
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action {action} is not in {self.action_space}")
        self.x = int(np.clip(self.x + int(action), -2, 2))
        return self._obs(), float(self.x == 2), self.x == 2, False, {}


def make_shifted(discrete_obs: bool = False) -> gym.Env:
    return gym.wrappers.TimeLimit(Shifted(discrete_obs), max_episode_steps=20)


QUICK = ["--steps", "200", "--eval-every", "200", "--eval-episodes", "2", "--no-progress"]


@pytest.mark.parametrize("agent", ["dqn", "reinforce", "ppo"])
def test_agents_that_index_from_zero_refuse_a_shifted_action_space(agent, tmp_path: Path, capsys):
    err = run_bad(["--agent", agent, "--env", SHIFTED, *QUICK, "--run-dir", str(tmp_path / "run")], capsys)
    assert (f"{agent} needs Discrete spaces that start at 0; the action space is Discrete(3, start=-1) (values "
            f"-1..1)") in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("agent", ["sb3-dqn", "sb3-ppo", "sb3-a2c", "sb3-recurrent-ppo"])
def test_sb3_agents_refuse_shifted_spaces(agent, tmp_path: Path, capsys):
    """SB3 ignores `start`: sb3-ppo acted 0..2 into the env (2 is outside -1..1, -1 never taken) and trained on;
    sb3-dqn's update crashed on the -1 its random exploration drew; a shifted observation crashed one-hot."""
    err = run_bad(["--agent", agent, "--env", SHIFTED, *QUICK, "--run-dir", str(tmp_path / "run")], capsys)
    assert f"{agent} needs Discrete spaces that start at 0; the action space is Discrete(3, start=-1)" in err
    err = run_bad(["--agent", agent, "--env", "tests.test_discrete_start:make_shifted_obs_only", *QUICK,
                   "--run-dir", str(tmp_path / "run")], capsys)
    assert "the observation space is Discrete(5, start=-2) (values -2..2)" in err
    assert not (tmp_path / "run").exists()


def test_a_shifted_discrete_observation_is_refused_too(tmp_path: Path, capsys):
    # its actions relabelled to start at 0, so that only the observation space is shifted
    err = run_bad(["--agent", "dqn", "--env", "tests.test_discrete_start:make_shifted_obs_only", *QUICK,
                   "--run-dir", str(tmp_path / "run")], capsys)
    assert "the observation space is Discrete(5, start=-2) (values -2..2)" in err


def make_shifted_obs_only() -> gym.Env:
    """`Shifted` with Discrete(5, start=-2) observations and its actions relabelled 0..2."""
    env = make_shifted(discrete_obs=True)
    return gym.wrappers.TransformAction(env, lambda a: int(a) - 1, gym.spaces.Discrete(3))


def test_qlearning_maps_a_shifted_action_space(tmp_path: Path):
    """The tabular agent adds the start: the strict env never sees an action outside its space."""
    assert train_main(["--agent", "qlearning", "--env", SHIFTED, "--env-kwargs", "discrete_obs=true", *QUICK,
                       "--run-dir", str(tmp_path / "run")]) == 0
