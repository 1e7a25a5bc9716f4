"""REINFORCE: reward-to-go and advantage maths, policy log-probabilities, learning, save → load."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlagents.agents.reinforce import ReinforceAgent, ReinforceConfig, rewards_to_go
from rlagents.checkpoint import read_checkpoint, save_checkpoint
from rlagents.config import resolve
from rlagents.errors import ConfigError, UnsupportedSpaceError
from rlagents.evaluate import main as evaluate_main
from rlagents.policies import RunningNorm, explained_variance, normalize, tanh_gaussian_log_prob
from rlagents.train import main as train_main

BOX_OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)


def make(action_space: gym.Space, seed: int = 0, **kw) -> ReinforceAgent:
    cfg = ReinforceConfig(hidden=(16,), episodes_per_update=2, **kw)
    return ReinforceAgent(cfg, BOX_OBS, action_space, n_envs=2, total_steps=1000, device=torch.device("cpu"),
                          seed=seed)


def test_rewards_to_go_by_hand():
    assert rewards_to_go(np.array([1.0, 2.0, 3.0]), 0.5) == pytest.approx([1 + 1 + 0.75, 2 + 1.5, 3.0])


def test_truncated_episode_return_is_cut_or_bootstrapped():
    # cut: the return stops at the time limit; bootstrap: γ^(T−t)·V(s_T) is added at every step
    assert rewards_to_go(np.array([1.0, 1.0]), 0.9) == pytest.approx([1.9, 1.0])
    assert rewards_to_go(np.array([1.0, 1.0]), 0.9, bootstrap=10.0) == pytest.approx([1.9 + 0.81 * 10, 1.0 + 9.0])


def test_advantage_normalisation_and_explained_variance():
    adv = normalize(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert adv.mean().item() == pytest.approx(0.0, abs=1e-6) and adv.std().item() == pytest.approx(1.0, abs=1e-5)
    target = torch.tensor([1.0, 2.0, 3.0])
    assert explained_variance(target, target) == pytest.approx(1.0)
    assert explained_variance(torch.full((3,), 2.0), target) == pytest.approx(0.0)


def test_categorical_log_probs_match_torch_distributions():
    agent = make(gym.spaces.Discrete(4))
    obs = torch.randn(10, 3)
    actions = torch.randint(0, 4, (10,))
    log_prob, entropy = agent.log_prob_and_entropy(obs, actions)
    dist = torch.distributions.Categorical(logits=agent.policy(obs))
    assert torch.allclose(log_prob, dist.log_prob(actions)) and torch.allclose(entropy, dist.entropy())


def test_tanh_gaussian_log_prob_matches_transformed_distribution():
    mean, log_std = torch.randn(6, 2), torch.randn(6, 2) * 0.3
    raw = torch.randn(6, 2)  # moderate |u|: the reference inverts tanh, which loses precision far out
    base = torch.distributions.Normal(mean, log_std.exp())
    squashed = torch.distributions.TransformedDistribution(base, [torch.distributions.TanhTransform()])
    expected = squashed.log_prob(torch.tanh(raw)).sum(-1)
    assert torch.allclose(tanh_gaussian_log_prob(mean, log_std, raw), expected, atol=1e-4)


@pytest.mark.parametrize("squash, log_std", [("tanh", "state"), ("clip", "state"), ("clip", "learned")])
def test_gaussian_policies_log_probs_and_action_bounds(squash, log_std):
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    agent = make(space, squash=squash, log_std=log_std, log_std_init=1.0)
    obs = np.random.default_rng(0).uniform(-1, 1, (500, 3)).astype(np.float32)
    actions = agent.act(obs, explore=True)
    assert np.all(actions >= space.low) and np.all(actions <= space.high)
    out = agent.policy(torch.as_tensor(obs))
    mean = out[:, :2]
    std = agent.policy.log_std.exp() if log_std == "state" else out[:, 2:].clamp(-20, 2).exp()
    raw = torch.as_tensor(agent._last_raw)
    log_prob, _ = agent.log_prob_and_entropy(torch.as_tensor(obs), raw)
    if squash == "clip":  # the log-prob is the unclipped Gaussian's, as in the policy gradient's derivation
        expected = torch.distributions.Normal(mean, std).log_prob(raw).sum(-1)
        assert torch.allclose(log_prob, expected, atol=1e-5)
    greedy = agent.act(obs[:5], explore=False)
    if squash == "clip":
        assert np.allclose(greedy, np.clip(mean[:5].detach().numpy(), space.low, space.high), atol=1e-5)


def test_refuses_spaces_it_cannot_handle():
    with pytest.raises(UnsupportedSpaceError, match="1-D Box actions"):
        ReinforceAgent.check_spaces(BOX_OBS, gym.spaces.Box(-1, 1, (2, 2)), ReinforceConfig())
    with pytest.raises(UnsupportedSpaceError, match="finite Box action bounds"):
        ReinforceAgent.check_spaces(BOX_OBS, gym.spaces.Box(-np.inf, np.inf, (2,)), ReinforceConfig())
    with pytest.raises(UnsupportedSpaceError, match="Discrete or Box actions"):
        ReinforceAgent.check_spaces(BOX_OBS, gym.spaces.MultiBinary(3), ReinforceConfig())


def test_bootstrap_needs_a_value_baseline():
    with pytest.raises(ConfigError, match="bootstrap needs baseline: value"):
        resolve(ReinforceConfig, {}, "X", {"truncation": "bootstrap", "baseline": "none"}, source="t")


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Box(-1.0, 1.0, (2,), np.float32)])
def test_save_load_gives_identical_greedy_actions(space, tmp_path: Path):
    agent = make(space)
    rng = np.random.default_rng(0)
    for t in range(40):  # a few updates' worth of experience so weights move
        obs = rng.uniform(-1, 1, (2, 3)).astype(np.float32)
        actions = agent.act(obs, explore=True)
        done = np.array([t % 5 == 4, t % 7 == 6])
        agent.observe(obs, actions, rng.normal(size=2), obs, done, np.zeros(2, bool))
    assert agent.updates > 0
    path = save_checkpoint(tmp_path, "c", agent.state_dict(), {"agent": "reinforce", "env": "E"})
    fresh = make(space, seed=9)
    fresh.load_state_dict(read_checkpoint(path)[0])
    obs = rng.uniform(-1, 1, (64, 3)).astype(np.float32)
    assert np.array_equal(fresh.act(obs, explore=False), agent.act(obs, explore=False))


@pytest.mark.slow
def test_reinforce_learns_cartpole(tmp_path: Path):
    run_dir = tmp_path / "run"
    assert train_main(["--agent", "reinforce", "--env", "CartPole-v1", "--seed", "0", "--steps", "30000",
                       "--eval-every", "10000", "--run-dir", str(run_dir), "--no-progress"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval_return_mean"] >= 300, summary["evaluations"]


def test_continuous_action_smoke_run_and_evaluate(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    assert train_main(["--agent", "reinforce", "--env", "Pendulum-v1", "--steps", "3200", "--eval-every", "1600",
                       "--eval-episodes", "2", "--run-dir", str(run_dir), "--no-progress"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] == 3200 and summary["reward_threshold"] is None
    assert math.isfinite(summary["eval_return_mean"])
    assert evaluate_main([str(run_dir), "--episodes", "2"]) == 0
    assert "reinforce on Pendulum-v1" in capsys.readouterr().out


def test_running_norm_matches_batch_statistics_and_is_checkpointed(tmp_path: Path):


    data = np.random.default_rng(0).normal(3.0, 2.0, (300, 3))
    norm = RunningNorm((3,))
    for chunk in np.split(data, 6):
        norm.update(chunk)
    assert np.allclose(norm.mean, data.mean(0), atol=1e-3) and np.allclose(norm.var, data.var(0), atol=1e-2)
    agent = make(gym.spaces.Discrete(2), normalize_obs=True)
    obs = data[:2].astype(np.float32)
    agent.observe(obs, agent.act(obs, explore=True), np.zeros(2), obs, np.ones(2, bool), np.zeros(2, bool))
    path = save_checkpoint(tmp_path, "c", agent.state_dict(), {"agent": "reinforce", "env": "E"})
    fresh = make(gym.spaces.Discrete(2), seed=3, normalize_obs=True)
    fresh.load_state_dict(read_checkpoint(path)[0])
    assert np.array_equal(fresh.obs_norm.mean, agent.obs_norm.mean) and fresh.obs_norm.count == agent.obs_norm.count
