"""Recurrent DQN (`recurrent: lstm|gru` on dqn): sequence replay with stored state and burn-in, through the
Agent API and the CLI — the learner it picks, save/load with hidden states and replay, bad config values, and
a memory task that recurrent DQN learns and feed-forward DQN provably cannot."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlagents.agents.dqn import DQNAgent, DQNConfig, SequenceLearner
from rlagents.checkpoint import read_checkpoint, save_checkpoint
from rlagents.environments import SyncVecEnv, final_observations
from rlagents.errors import ExportError
from rlagents.sequence_replay import SequenceReplayBuffer
from rlagents.train import main as train_main
from tests.test_cli import run_bad

CUE_ENV = "tests.test_recurrent_dqn:make_cue"


class Cue(gym.Env):
    """A memory task: the first observation shows a cue (±1), then `delay` blank ones, then a query; the
    answer (action 1 for +1, 0 for −1) pays +1, a wrong one −1, and ends the episode. Actions before the
    query do nothing. The query looks the same whatever the cue, so a memoryless policy answers right half of
    the time: its expected return is exactly 0; remembering the cue earns 1."""

    def __init__(self, delay: int = 3):
        self.delay = delay
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        if self.t == 0:
            return np.array([self.cue, 0.0, 0.0], np.float32)
        return np.array([0.0, 1.0, 0.0] if self.t <= self.delay else [0.0, 0.0, 1.0], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue, self.t = float(self.np_random.choice([-1.0, 1.0])), 0
        return self._obs(), {}

    def step(self, action):
        if self.t <= self.delay:
            self.t += 1
            return self._obs(), 0.0, False, False, {}
        return self._obs(), 1.0 if (int(action) == 1) == (self.cue > 0) else -1.0, True, False, {}


def make_cue(delay: int = 3) -> gym.Env:
    return gym.wrappers.TimeLimit(Cue(delay), max_episode_steps=delay + 2)


SMALL = {"recurrent": "lstm", "recurrent_hidden": 16, "hidden": (16,), "sequence_length": 6, "burn_in": 1,
         "sequence_overlap": 3, "batch_size": 8, "learning_starts": 40, "train_every": 2, "n_step": 2,
         "buffer_size": 2000}


def play(agent: DQNAgent, envs: SyncVecEnv, obs, steps: int):
    """`steps` vector steps of training through the Agent API; returns the last observations and the actions."""
    taken = []
    for _ in range(steps):
        actions = agent.act(obs, explore=True)
        nxt, rew, term, trunc, infos = envs.step(actions)
        real = final_observations(nxt, term | trunc, infos) if "_final_obs" in infos else nxt
        agent.observe(obs, actions, rew, real, term, trunc)
        obs = nxt
        taken.append(actions.copy())
    return obs, np.stack(taken)


def cue_agent(seed: int = 0, **overrides) -> tuple[DQNAgent, SyncVecEnv]:
    torch.manual_seed(seed)
    envs = SyncVecEnv([make_cue for _ in range(3)])
    cfg = DQNConfig(**{**SMALL, "checkpoint_replay": True, **overrides})
    agent = DQNAgent(cfg, envs.single_observation_space, envs.single_action_space, n_envs=3, total_steps=600,
                     device=torch.device("cpu"), seed=seed)
    return agent, envs


@pytest.mark.parametrize("learner", ["auto", "torch"])
def test_recurrent_dqn_uses_sequence_replay_and_the_sequence_learner(learner):
    agent, _ = cue_agent(learner=learner)
    assert isinstance(agent.learner, SequenceLearner) and isinstance(agent.buffer, SequenceReplayBuffer)
    assert agent._numpy_scores is None and agent.nstep is None  # n-step returns come from the sequences
    assert agent.buffer.state_dim == 2 * 16  # an LSTM's (h, c)
    with pytest.raises(ExportError, match="hidden state"):
        agent.export_module()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_save_and_load_continue_exactly_with_hidden_states_and_replay(kind, tmp_path: Path):
    """A copy loaded from a checkpoint mid-episode acts, stores and learns exactly as the original goes on."""
    agent, envs = cue_agent(recurrent=kind)
    twin, twin_envs = cue_agent(seed=1, recurrent=kind)
    obs, _ = envs.reset(seed=5)
    twin_envs.reset(seed=5)
    obs, actions = play(agent, envs, obs, 72)  # mid-episode (episodes last 5 steps)
    for a in actions:  # the twin's envs follow the same episodes
        twin_envs.step(a)
    assert agent.updates > 0 and len(agent.buffer) > 0 and not agent.memory.starts.all()
    path = save_checkpoint(tmp_path, "c", agent.state_dict(), {"agent": "dqn", "env": "Cue"})
    twin.load_state_dict(read_checkpoint(path)[0])
    _, ahead = play(agent, envs, obs, 60)
    _, again = play(twin, twin_envs, obs, 60)
    np.testing.assert_array_equal(ahead, again)
    for p, q in zip(agent.q.parameters(), twin.q.parameters()):
        assert torch.equal(p, q)
    for a, b in zip(agent.memory.state("q", 3), twin.memory.state("q", 3)):
        assert torch.equal(a, b)


def test_greedy_memory_is_reset_by_reset_memory_and_kept_apart_from_training():
    agent, envs = cue_agent()
    obs, _ = envs.reset(seed=0)
    obs, _ = play(agent, envs, obs, 5)
    training = [s.clone() for s in agent.memory.state("q", 3)]
    agent.reset_memory()
    first = agent.q.head(agent.greedy_memory.step("q", agent.q.backbone(torch.as_tensor(obs)),
                                                  np.ones(3, bool))).detach()
    agent.reset_memory()
    agent.greedy(obs)
    after_reset = agent.greedy_memory.state("q", 3)
    agent.reset_memory()
    agent.greedy(obs)
    assert all(torch.equal(a, b) for a, b in zip(after_reset, agent.greedy_memory.state("q", 3)))
    assert first.shape == (3, 2)
    assert all(torch.equal(a, b) for a, b in zip(training, agent.memory.state("q", 3)))  # untouched by greedy


@pytest.mark.parametrize("sets, message", [
    (["sequence_length=4", "burn_in=3"], "burn_in (3) must leave at least 2 steps of sequence_length (4)"),
    (["burn_in=5", "sequence_overlap=5"], "sequence_overlap (5) must be at least burn_in + 1 = 6"),
    (["sequence_length=8", "sequence_overlap=8"], "below sequence_length (8)"),
    (["buffer_size=1000", "batch_size=200"], "batch_size (200) counts sequences"),
    (["prioritized=true"], "does not support prioritized"),
    (["learner=numpy"], "does not support learner"),
    (["sequence_length=1"], "sequence_length: bad value 1"),
])
def test_bad_sequence_settings_are_refused_with_exit_2_and_nothing_written(sets, message, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["--agent", "dqn", "--env", "CartPole-v1", "--run-dir", str(run_dir), "--no-progress",
            "--set", "recurrent=lstm"]
    for s in sets:
        args += ["--set", s]
    assert message in run_bad(args, capsys)
    assert not run_dir.exists()


def train_cue(tmp_path: Path, name: str, recurrent: str) -> float:
    run_dir = tmp_path / name
    args = ["--agent", "dqn", "--env", CUE_ENV, "--seed", "0", "--steps", "4000", "--eval-every", "4000",
            "--eval-episodes", "100", "--no-progress", "--run-dir", str(run_dir), "--set", "n_envs=4",
            "--set", f"recurrent={recurrent}", "--set", "recurrent_hidden=32", "--set", "hidden=[32]",
            "--set", "sequence_length=8", "--set", "burn_in=2", "--set", "sequence_overlap=4",
            "--set", "batch_size=16", "--set", "learning_starts=200", "--set", "train_every=4",
            "--set", "n_step=2", "--set", "gamma=0.9", "--set", "lr=3.0e-3", "--set", "tau=0.05",
            "--set", "target_update_every=4", "--set", "epsilon_fraction=0.3", "--set", "epsilon_end=0.02"]
    assert train_main(args) == 0
    return json.loads((run_dir / "summary.json").read_text())["evaluations"][-1]["return_mean"]


@pytest.mark.slow
def test_recurrent_dqn_learns_a_memory_task_feed_forward_dqn_cannot(tmp_path: Path):
    """Cue recall over 3 blank steps: the LSTM answers right nearly always; the same DQN without memory
    (`recurrent=none`, which can do no better than 0 in expectation) stays near 0."""
    assert train_cue(tmp_path, "lstm", "lstm") >= 0.9
    assert train_cue(tmp_path, "none", "none") <= 0.4
