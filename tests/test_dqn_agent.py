"""DQN through the Agent API: CNN Q-networks on uint8 images, vector envs, and target updates."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlagents.agents.dqn import DQNAgent, DQNConfig
from rlagents.environments import SyncVecEnv, final_observations
from rlagents.networks import ConvBackbone
from rlagents.replay import ReplayBuffer
from rlagents.train import main as train_main


class BrightSide(gym.Env):
    """A one-step image task: an 8×8 uint8 image is bright on the left or the right half; choosing that
    side pays +1, the other −1. Learnable only by looking at the pixels."""

    def __init__(self, channel_last: bool = False):
        shape = (8, 8, 1) if channel_last else (1, 8, 8)
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.channel_last = channel_last

    def _image(self):
        img = np.zeros((8, 8), np.uint8)
        img[:, self.side * 4:(self.side + 1) * 4] = 255
        return img[:, :, None] if self.channel_last else img[None]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.side = int(self.np_random.integers(2))
        return self._image(), {}

    def step(self, action):
        return self._image(), 1.0 if action == self.side else -1.0, True, False, {}


@pytest.mark.parametrize("channel_last", [False, True])
def test_dqn_with_a_cnn_learns_from_uint8_pixels(channel_last):
    torch.manual_seed(0)
    envs = SyncVecEnv([lambda: BrightSide(channel_last) for _ in range(4)])
    cfg = DQNConfig(cnn_channels=(4, 8, 8), cnn_features=32, learning_starts=64, batch_size=32, train_every=4,
                    target_update_every=100, epsilon_fraction=0.5, lr=1e-3)
    agent = DQNAgent(cfg, envs.single_observation_space, envs.single_action_space, n_envs=4, total_steps=2000,
                     device=torch.device("cpu"), seed=0)
    assert isinstance(agent.q.backbone, ConvBackbone) and agent.buffer.obs.dtype == np.uint8
    obs, _ = envs.reset(seed=0)
    for _ in range(500):
        actions = agent.act(obs, explore=True)
        nxt, rew, term, trunc, infos = envs.step(actions)
        real = final_observations(nxt, term | trunc, infos) if "_final_obs" in infos else nxt
        agent.observe(obs, actions, rew, real, term, trunc)
        obs = nxt
    test = np.stack([BrightSide(channel_last).reset(seed=s)[0] for s in range(64)])
    sides = np.array([0 if t.reshape(8, 8)[0, 0] == 255 else 1 for t in test])
    assert (agent.act(test, explore=False) == sides).mean() == 1.0


def test_training_with_several_envs_and_every_switch(tmp_path: Path):
    run_dir = tmp_path / "run"
    argv = ["--agent", "dqn", "--env", "CartPole-v1", "--steps", "900", "--n-envs", "3", "--eval-every", "300",
            "--eval-episodes", "3", "--run-dir", str(run_dir), "--no-progress"]
    for pair in ("learning_starts=100", "dueling=true", "prioritized=true", "n_step=3", "tau=0.1",
                 "target_update_every=4", "batch_size=16"):
        argv += ["--set", pair]
    assert train_main(argv) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] == 900 and summary["episodes"] > 0
    assert [e["step"] for e in summary["evaluations"]] == [300, 600, 900]


def test_soft_updates_owed_over_several_periods_compound():
    cfg = DQNConfig(hidden=(4,), tau=0.5)
    agent = DQNAgent(cfg, gym.spaces.Box(-1, 1, (2,), np.float32), gym.spaces.Discrete(2), n_envs=1,
                     total_steps=10, device=torch.device("cpu"), seed=0)
    with torch.no_grad():
        for p in agent.q.parameters():
            p.fill_(1.0)
        for p in agent.target.parameters():
            p.fill_(0.0)
    agent._update_target(periods=2)  # two periods of tau = 0.5 close 75% of the gap
    assert all(torch.allclose(p, torch.full_like(p, 0.75)) for p in agent.target.parameters())


def test_tau_final_anneals_the_soft_update_rate():
    cfg = DQNConfig(hidden=(4,), tau=0.5, tau_final=0.1)
    agent = DQNAgent(cfg, gym.spaces.Box(-1, 1, (2,), np.float32), gym.spaces.Discrete(2), n_envs=1,
                     total_steps=100, device=torch.device("cpu"), seed=0)
    agent.steps = 100  # the end of training: tau has reached tau_final
    with torch.no_grad():
        for p in agent.q.parameters():
            p.fill_(1.0)
        for p in agent.target.parameters():
            p.fill_(0.0)
    agent._update_target()
    assert all(torch.allclose(p, torch.full_like(p, 0.1)) for p in agent.target.parameters())
    assert agent.tau(0) == 0.5 and agent.tau(50) == pytest.approx(0.3)


@pytest.mark.parametrize("pair", [("tau=1.0", "tau_final=0.1"), ("tau=0.1", "tau_final=1.0")])
def test_tau_final_needs_soft_updates(tmp_path: Path, capsys, pair):
    with pytest.raises(SystemExit) as exc:
        train_main(["--agent", "dqn", "--env", "CartPole-v1", "--run-dir", str(tmp_path / "run"), "--no-progress",
                    "--set", pair[0], "--set", pair[1]])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "tau_final" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()



def tiny_agent(**settings) -> DQNAgent:
    cfg = DQNConfig(hidden=(4,), batch_size=8, learning_starts=0, train_every=1000, **settings)
    return DQNAgent(cfg, gym.spaces.Box(-1, 1, (2,), np.float32), gym.spaces.Discrete(2), n_envs=2,
                    total_steps=1000, device=torch.device("cpu"), seed=0)


def observe_rewards(agent: DQNAgent, reward_pairs) -> None:
    obs, no = np.zeros((2, 2), np.float32), np.array([False, False])
    for rewards in reward_pairs:
        agent.act(obs, explore=True)  # recurrent DQN stores the hidden state its act() left
        agent.observe(obs, np.array([0, 1]), np.array(rewards), obs, no, no)


RECURRENT = {"recurrent": "gru", "recurrent_hidden": 4, "sequence_length": 4, "burn_in": 1, "sequence_overlap": 2}


@pytest.mark.parametrize("learner", ["numpy", "torch", "sequence"])
@pytest.mark.parametrize("double", [True, False])
def test_clip_values_bounds_bootstrapped_values_by_the_rewards_seen(learner, double):
    """Rewards seen in [−1, 2] with γ = 0.5 allow returns in [−2, 4]: a Q-network that says 1000 everywhere
    bootstraps from 4 with clip_values (TD errors 1000 − (r + 0.5·4)), from 1000 without (1000 − (r + 500)).
    `sequence` is recurrent DQN's learner (sequence replay)."""
    errors = {}
    for clip in (True, False):
        kind = {"learner": learner} if learner != "sequence" else RECURRENT
        agent = tiny_agent(gamma=0.5, lr=1e-9, double=double, clip_values=clip, loss="mse", **kind)
        assert type(agent.learner).__name__ == {"numpy": "NumpyLearner", "torch": "TorchLearner",
                                                "sequence": "SequenceLearner"}[learner]
        with torch.no_grad():
            for net in (agent.q, agent.target):
                for p in net.parameters():
                    p.zero_()
                net.head.advantage.bias.fill_(1000.0)
        observe_rewards(agent, [[2.0, -1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 2.0]] * 3)
        agent._train(1)
        errors[clip] = np.sqrt(agent.metrics()["losses/td_loss"])  # root mean square TD error
    assert 996.0 <= errors[True] <= 999.0
    assert 498.0 <= errors[False] <= 501.0


def test_value_bounds_follow_the_finite_rewards_seen_and_survive_a_checkpoint():
    agent = tiny_agent(gamma=0.9, clip_values=True)
    assert agent.value_bounds() == (0.0, 0.0)
    observe_rewards(agent, [[0.5, float("nan")], [float("inf"), 0.25]])  # non-finite rewards are not seen
    assert agent.value_bounds() == pytest.approx((0.0, 5.0))
    observe_rewards(agent, [[-2.0, 0.0]])
    assert agent.value_bounds() == pytest.approx((-20.0, 5.0))
    resumed = tiny_agent(gamma=0.9, clip_values=True)
    resumed.load_state_dict(agent.state_dict())
    assert resumed.value_bounds() == agent.value_bounds()
    undiscounted = tiny_agent(gamma=1.0, clip_values=True)
    observe_rewards(undiscounted, [[1.0, 1.0]])
    assert undiscounted.value_bounds() == (0.0, np.inf)
    assert "reward_range" not in tiny_agent().state_dict()  # off: checkpoints as before


def filled_buffer(capacity: int, n: int, terminal_every: int) -> ReplayBuffer:
    """A replay buffer of `n` 1-d transitions added in order (obs = the add's index), every `terminal_every`-th
    one terminal."""
    buffer = ReplayBuffer(capacity, (1,), np.float32)
    for i in range(n):
        buffer.add(np.array([i], np.float32), 0, 0.0, np.array([i], np.float32), (i + 1) % terminal_every == 0, 0.9)
    return buffer


def test_terminal_slots_follow_adds_wraps_and_loads():
    buffer = ReplayBuffer(10, (1,), np.float32)
    for i in range(25):  # the ring wraps twice: evicted terminal transitions must leave the slots
        buffer.add(np.array([i], np.float32), 0, 0.0, np.array([i], np.float32), i % 4 == 3, 0.9)
        assert buffer.terminal_slots().tolist() == np.flatnonzero(buffer.terminated[:buffer.size]).tolist()
    assert sorted(buffer.obs[buffer.terminal_slots(), 0].tolist()) == [15.0, 19.0, 23.0]
    young = filled_buffer(100, 20, 5)
    assert young.terminal_slots().tolist() == [4, 9, 14, 19]
    young.load_state_dict(filled_buffer(100, 12, 3).state_dict())
    assert young.terminal_slots().tolist() == [2, 5, 8, 11]


def test_sample_with_terminals_tops_each_batch_up_to_the_share():
    buffer = filled_buffer(1000, 1000, 10)  # 10% of replay is terminal, at slots 9, 19, ..., 999
    # share 0.5 of batches of 9: k = round(9 · (0.5 − 0.1) / (1 − 0.1)) = 4 rows from terminal transitions
    batch = buffer.sample_with_terminals(9, 50, 0.5, np.random.default_rng(0))
    terminal, slots = batch.terminated.reshape(50, 9), batch.indices.reshape(50, 9)
    assert len(batch.indices) == 450 and (terminal[:, :4] == 1).all()
    assert set(slots[:, :4].ravel().tolist()) <= set(range(9, 1000, 10))
    assert 0.05 < terminal[:, 4:].mean() < 0.15  # the other rows are uniform: about 10% terminal
    assert len(set(slots[:, 4:].ravel().tolist())) > 200  # 250 draws from 1,000 slots: ~221 distinct
    assert 0.45 < batch.terminated.mean() < 0.55
    # replay holds the share already (10% ≥ 5%), or no terminal transition: exactly `sample`, draw for draw
    for full, share in ((buffer, 0.05), (filled_buffer(1000, 50, 100), 0.5)):
        topped = full.sample_with_terminals(8, 10, share, np.random.default_rng(3))
        assert topped.indices.tolist() == full.sample(80, np.random.default_rng(3)).indices.tolist()


def test_terminal_fraction_feeds_the_learner_that_share_of_terminal_rows():
    agent = tiny_agent(terminal_fraction=0.5, gradient_steps=3)  # batch_size 8
    seen = []
    agent.learner.update_round = lambda batch, n: seen.append((batch, n))
    obs, no = np.zeros((2, 2), np.float32), np.array([False, False])
    for step in range(40):  # 4 of 80 transitions terminal: k = round(8 · (0.5 − 0.05) / 0.95) = 4
        terminated = np.array([step % 10 == 9, False])
        agent.observe(obs, agent.act(obs, explore=True), np.ones(2), obs, terminated, no)
    agent._train(3)
    (batch, n), = seen
    assert n == 3 and batch.terminated.reshape(3, 8)[:, :4].all()


def test_terminal_fraction_leaves_prioritized_replay_as_it_is():
    """Prioritized replay samples by priority: terminal_fraction does not change what it trains on."""
    weights = []
    for share in (0.0, 0.5):
        torch.manual_seed(0)
        agent = tiny_agent(terminal_fraction=share, prioritized=True, gradient_steps=3)
        obs, no = np.zeros((2, 2), np.float32), np.array([False, False])
        for step in range(40):
            agent.observe(obs, agent.act(obs, explore=True), np.ones(2), obs, np.array([step % 10 == 9, False]), no)
        agent._train(3)
        weights.append([p.detach().clone() for p in agent.q.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
