"""PPO: GAE, the clipped objective, value clipping and squashed log-probabilities against hand-computed values;
truncation bootstrapping; learning per action type; Dict observations and a pretrained backbone; save → load;
bad config values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import SMALL_CNN

from rlagents.agents.ppo import PPOAgent, PPOConfig, clipped_surrogate, gae, value_loss
from rlagents.checkpoint import read_checkpoint, save_checkpoint
from rlagents.config import resolve
from rlagents.errors import ConfigError
from rlagents.evaluate import main as evaluate_main
from rlagents.policies import sde_log_std
from rlagents.train import main as train_main

BOX_OBS = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)


def make(action_space: gym.Space, seed: int = 0, n_envs: int = 2, **kw) -> PPOAgent:
    kw = {"hidden": (16,), "n_steps": 8, "batch_size": 4, "n_epochs": 2, **kw}
    return PPOAgent(PPOConfig(**kw), BOX_OBS, action_space, n_envs=n_envs, total_steps=1000,
                    device=torch.device("cpu"), seed=seed)


def train(run_dir: Path, *args: str) -> dict:
    assert train_main(["--agent", "ppo", "--run-dir", str(run_dir), "--no-progress", *args]) == 0
    return json.loads((run_dir / "summary.json").read_text())


# ---------------------------------------------------------------- maths by hand


def test_gae_by_hand_with_an_episode_end():
    # one env, three steps; the episode ends after step 1, so step 1 does not look past it
    rewards = np.array([[1.0], [2.0], [3.0]])
    values = np.array([[0.5], [0.4], [0.3]])
    dones = np.array([[0.0], [1.0], [0.0]])
    gamma, lam = 0.9, 0.8
    adv, returns = gae(rewards, values, dones, np.array([0.2]), gamma, lam)
    d2 = 3.0 + 0.9 * 0.2 - 0.3  # the last step bootstraps from last_values
    d1 = 2.0 - 0.4  # episode end: no next value, and no later advantage flows back
    d0 = 1.0 + 0.9 * 0.4 - 0.5
    expected = [d0 + gamma * lam * d1, d1, d2]
    assert adv[:, 0] == pytest.approx(expected)
    assert returns[:, 0] == pytest.approx(np.array(expected) + values[:, 0])


def test_gae_with_lambda_one_is_the_discounted_return_minus_the_value():
    rewards = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])
    values = np.array([[0.3, 0.1], [0.2, 0.7], [0.6, 0.5]])
    dones = np.zeros((3, 2))
    adv, _ = gae(rewards, values, dones, np.array([4.0, 0.0]), 0.5, 1.0)
    assert adv[0] == pytest.approx([1 + 0.5 + 0.25 + 0.125 * 4.0 - 0.3, 0 + 0.5 + 0.5 - 0.1])


def test_truncated_steps_bootstrap_from_the_critic_and_terminated_ones_do_not():
    agent = make(gym.spaces.Discrete(2), n_envs=3, gamma=0.9)
    with torch.no_grad():  # V(s) = 2 everywhere
        agent.net.value_head.weight.zero_()
        agent.net.value_head.bias.fill_(2.0)
    obs = np.zeros((3, 3), np.float32)
    actions = agent.act(obs, explore=True)
    # env 0 hits the time limit, env 1 terminates, env 2 does both (terminal wins)
    agent.observe(obs, actions, np.ones(3), obs, np.array([False, True, True]), np.array([True, False, True]))
    assert agent._rollout["rewards"][0] == pytest.approx([1.0 + 0.9 * 2.0, 1.0, 1.0])
    assert agent._rollout["dones"][0].tolist() == [1.0, 1.0, 1.0]
    cut = make(gym.spaces.Discrete(2), n_envs=1, truncation="cut")
    cut.observe(obs[:1], cut.act(obs[:1], explore=True), np.ones(1), obs[:1], np.array([False]), np.array([True]))
    assert cut._rollout["rewards"][0] == pytest.approx([1.0])


def test_clipped_surrogate_by_hand():
    # ratios 1.5 and 0.5, each with advantage +1 and -1; ε = 0.2
    ratio = torch.tensor([1.5, 0.5, 1.5, 0.5])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, approx_kl, clip_fraction = clipped_surrogate(ratio.log(), torch.zeros(4), adv, 0.2)
    # min(r·A, clip(r)·A): 1.2 (capped gain), 0.5, -1.5, -0.8 (the pessimistic side, never clipped away)
    assert loss.item() == pytest.approx(-(1.2 + 0.5 - 1.5 - 0.8) / 4)
    assert clip_fraction.item() == 1.0
    kl = np.mean([(r - 1) - math.log(r) for r in (1.5, 0.5, 1.5, 0.5)])
    assert approx_kl.item() == pytest.approx(kl)
    unclipped, *_ = clipped_surrogate(torch.zeros(2), torch.zeros(2), torch.tensor([2.0, -1.0]), 0.2)
    assert unclipped.item() == pytest.approx(-0.5)


def test_clipped_surrogate_gradient_vanishes_where_clipped():
    log_prob = torch.tensor([math.log(1.5), math.log(1.1)], requires_grad=True)
    loss, *_ = clipped_surrogate(log_prob, torch.zeros(2), torch.tensor([1.0, 1.0]), 0.2)
    loss.backward()
    assert log_prob.grad.tolist() == pytest.approx([0.0, -1.1 / 2])  # d(−r/2)/d log r = −r/2


def test_value_loss_by_hand_with_and_without_clipping():
    values, old, returns = torch.tensor([3.0, 0.0]), torch.tensor([1.0, 0.5]), torch.tensor([2.5, 0.2])
    assert value_loss(values, old, returns, None).item() == pytest.approx(0.5 * (0.25 + 0.04) / 2)
    # clipped to old ± 0.5: 1.5 (error 1.0, larger than 0.25: kept) and 0.0 (within range: same error)
    assert value_loss(values, old, returns, 0.5).item() == pytest.approx(0.5 * (1.0 + 0.04) / 2)


def test_squashed_log_prob_by_hand():
    space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    agent = make(space, log_std_init=math.log(0.5))
    out = torch.tensor([[0.3]])  # the head's mean
    u = torch.tensor([[0.7]])  # pre-squash sample
    log_prob, entropy = agent.distribution_terms(out, u)
    gaussian = -0.5 * ((0.7 - 0.3) / 0.5) ** 2 - math.log(0.5) - 0.5 * math.log(2 * math.pi)
    assert log_prob.item() == pytest.approx(gaussian - math.log(1 - math.tanh(0.7) ** 2), rel=1e-5)
    assert entropy.item() == pytest.approx(0.5 + 0.5 * math.log(2 * math.pi) + math.log(0.5), rel=1e-5)
    clipped = make(space, log_std_init=math.log(0.5), squash="clip")
    assert clipped.distribution_terms(out, u)[0].item() == pytest.approx(gaussian, rel=1e-5)


def test_continuous_actions_stay_in_bounds_and_greedy_is_the_squashed_mean():
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    agent = make(space, log_std_init=1.0)
    obs = np.random.default_rng(0).uniform(-1, 1, (300, 3)).astype(np.float32)
    actions = agent.act(obs, explore=True)
    assert actions.shape == (300, 2) and np.all(actions >= space.low) and np.all(actions <= space.high)
    mean = agent.policy(torch.as_tensor(obs[:5])).detach().numpy()
    expected = space.low + (np.tanh(mean) + 1) * 0.5 * (space.high - space.low)
    assert np.allclose(agent.act(obs[:5], explore=False), expected, atol=1e-6)


def test_an_update_happens_every_n_steps_and_moves_the_policy():
    agent = make(gym.spaces.Discrete(3), lr=1e-2)
    before = [p.detach().clone() for p in agent.params]
    rng = np.random.default_rng(1)
    for t in range(8):
        obs = rng.uniform(-1, 1, (2, 3)).astype(np.float32)
        actions = agent.act(obs, explore=True)
        assert agent.updates == 0
        agent.observe(obs, actions, rng.normal(size=2), obs, np.array([t == 3, False]), np.zeros(2, bool))
    assert agent.updates == 1 and agent.pos == 0
    assert all(not torch.equal(a, b) for a, b in zip(before, agent.params))
    metrics = agent.metrics()
    assert {"losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
            "losses/clip_fraction", "values/explained_variance", "charts/clip_range"} <= set(metrics)


def test_shared_backbone_has_one_body_and_two_heads():
    agent = make(gym.spaces.Discrete(2), shared_backbone=True)
    assert agent.net.critic_backbone is None
    out, values = agent.net(torch.zeros(4, 3))
    assert out.shape == (4, 2) and values.shape == (4,)


# ---------------------------------------------------------------- config, save/load


@pytest.mark.parametrize("key, value, message", [
    ("batch_size", "0", "batch_size: bad value"), ("n_epochs", "0", "n_epochs: bad value"),
    ("gae_lambda", "1.5", "gae_lambda: bad value"), ("clip_range", "0", "clip_range: bad value"),
    ("clip_range_vf", "-1", "clip_range_vf: bad value"), ("truncation", "maybe", "allowed: bootstrap, cut"),
    ("target_kl", "0", "target_kl: bad value"), ("squash", "sigmoid", "allowed: tanh, clip"),
])
def test_bad_config_values_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        resolve(PPOConfig, {}, "CartPole-v1", {key: value}, source="test")



def test_every_shipped_entry_resolves():
    from rlagents.config import read_config_file

    data = read_config_file(Path(__file__).parents[1] / "configs" / "ppo.yaml")
    entries = [env_id for env_id in data if env_id not in ("default", "run")]
    assert {"LunarLander-v3", "MountainCarContinuous-v0", "DigitLock-v0"} <= set(entries)
    for env_id in entries:
        cfg = resolve(PPOConfig, data, env_id, {}, source="ppo.yaml")
        assert cfg.train.steps > 0 and cfg.agent.batch_size <= cfg.agent.n_steps * cfg.train.n_envs
    assert resolve(PPOConfig, data, "DigitLock-v0", {}, source="ppo.yaml").agent.branch_norm
    with pytest.raises(ConfigError, match="branch_norm"):
        resolve(PPOConfig, data, "DigitLock-v0", {"branch_norm": "maybe"}, source="test")

def test_bad_value_through_the_cli_is_one_line_and_writes_nothing(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--agent", "ppo", "--env", "CartPole-v1", "--run-dir", str(run_dir), "--no-progress",
                    "--set", "gae_lambda=2"])
    code = exit_info.value.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "gae_lambda" in err and not run_dir.exists()


@pytest.mark.parametrize("space", [gym.spaces.Discrete(3), gym.spaces.Box(-1.0, 1.0, (2,), np.float32)])
def test_save_load_gives_identical_greedy_actions_and_normaliser(space, tmp_path: Path):
    agent = make(space, normalize_obs=True, normalize_reward=True)
    rng = np.random.default_rng(0)
    for t in range(21):  # two updates and a rollout in progress
        obs = rng.uniform(-1, 1, (2, 3)).astype(np.float32)
        actions = agent.act(obs, explore=True)
        agent.observe(obs, actions, rng.normal(size=2), obs, np.array([t % 5 == 4, False]), np.zeros(2, bool))
    assert agent.updates == 2 and agent.pos == 5
    path = save_checkpoint(tmp_path, "c", agent.state_dict(), {"agent": "ppo", "env": "E"})
    fresh = make(space, seed=9, normalize_obs=True, normalize_reward=True)
    fresh.load_state_dict(read_checkpoint(path)[0])
    obs = rng.uniform(-3, 3, (64, 3)).astype(np.float32)
    assert np.array_equal(fresh.act(obs, explore=False), agent.act(obs, explore=False))
    assert np.array_equal(fresh.obs_norm.mean, agent.obs_norm.mean) and fresh.pos == 5
    assert fresh.reward_norm.var == agent.reward_norm.var
    assert np.array_equal(fresh._rollout["rewards"], agent._rollout["rewards"])
    single = make(space, n_envs=1, normalize_obs=True, normalize_reward=True)  # as evaluation loads it
    single.load_state_dict(read_checkpoint(path)[0])
    assert single.pos == 0 and np.array_equal(single.act(obs, explore=False), agent.act(obs, explore=False))


# ---------------------------------------------------------------- through the CLI


def test_ppo_learns_cartpole(tmp_path: Path):
    # the default CartPole config, its schedules held constant so that they do not depend on the short budget
    summary = train(tmp_path / "run", "--env", "CartPole-v1", "--seed", "0", "--steps", "20000",
                    "--eval-every", "2000", "--eval-episodes", "5", "--set", "lr_final=null",
                    "--set", "clip_range_final=null")
    assert summary["solved_at_step"] is not None


def test_ppo_learns_a_continuous_task(tmp_path: Path):
    # Pendulum's random policy scores about -1,200 to -1,500; a few thousand steps of PPO swing it up part-way
    summary = train(tmp_path / "run", "--env", "Pendulum-v1", "--seed", "1", "--steps", "40000",
                    "--eval-every", "0", "--eval-episodes", "5")
    assert summary["eval_return_mean"] > -700


def test_dict_observations_and_a_frozen_pretrained_backbone(classifier_run: Path, tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    train(run_dir, "--env", "DigitLock-v0", "--steps", "400", "--n-envs", "2", "--eval-every", "0",
          "--eval-episodes", "4", "--set", "n_steps=50", *SMALL_CNN, "--set", f"backbone={classifier_run}")
    state = read_checkpoint(run_dir / "checkpoints" / "final.json")[0]["agent"]
    pretrained = read_checkpoint(classifier_run / "backbone.json")[0]["backbone"]
    assert state["counters"]["updates"] == 4
    for prefix in ("policy.backbone.branches.image.", "critic_backbone.branches.image."):
        image = {k.removeprefix(prefix): v for k, v in state["net"].items() if k.startswith(prefix)}
        assert set(image) == set(pretrained) and all(torch.equal(image[k], pretrained[k]) for k in pretrained)
    assert evaluate_main([str(run_dir), "--episodes", "3"]) == 0
    assert "return" in capsys.readouterr().out



def test_frozen_branch_features_computed_once_give_the_same_outputs(classifier_run: Path):
    # the update computes a frozen CNN's features once per rollout and feeds them to every minibatch
    from rlagents.digits import sklearn_test_digits

    space = gym.spaces.Dict({"dial": gym.spaces.Discrete(10), "image": gym.spaces.Box(0, 255, (1, 12, 12), np.uint8)})
    config = PPOConfig(backbone=str(classifier_run), cnn_channels=(4, 8, 8), cnn_features=16, branch_norm=True)
    agent = PPOAgent(config, space, gym.spaces.Discrete(3), n_envs=2, total_steps=100, device=torch.device("cpu"),
                     seed=0)
    images = sklearn_test_digits(0)[0][:6]
    obs = {"dial": torch.arange(6), "image": torch.as_tensor(np.array(images))}
    frozen = agent.net.frozen_features(obs)
    assert set(frozen) == {"policy", "critic"} and set(frozen["policy"]) == {"image"}
    out, values = agent.net(obs)
    cached_out, cached_values = agent.net(obs, frozen)
    assert torch.allclose(out, cached_out, atol=1e-6) and torch.allclose(values, cached_values, atol=1e-6)
    unfrozen = PPOAgent(PPOConfig(backbone=str(classifier_run), cnn_channels=(4, 8, 8), cnn_features=16,
                                  freeze_backbone=False), space, gym.spaces.Discrete(3), n_envs=2, total_steps=100,
                        device=torch.device("cpu"), seed=0)
    assert unfrozen.net.frozen_features(obs) == {}  # a fine-tuned CNN changes every step: nothing to keep

def test_discrete_observations(tmp_path: Path):
    summary = train(tmp_path / "run", "--env", "FrozenLake-v1", "--steps", "1000", "--eval-every", "0",
                    "--eval-episodes", "3", "--set", "n_steps=32")
    assert summary["total_steps"] == 1000 and np.isfinite(summary["eval_return_mean"])


# ---------------------------------------------------------------- NumPy learner


@pytest.mark.parametrize("space, extra", [
    (gym.spaces.Discrete(3), {"entropy_coef": 0.05, "clip_range_vf": 0.1}),
    (gym.spaces.Discrete(3), {"activation": "tanh", "hidden": (8, 8)}),
    (gym.spaces.Discrete(3), {"activation": "tanh", "vf_coef": 1.0, "normalize_advantages": False}),
    (gym.spaces.Box(-2.0, 2.0, (2,), np.float32), {"entropy_coef": 0.01, "activation": "tanh"}),
    (gym.spaces.Box(-2.0, 2.0, (2,), np.float32), {"squash": "clip", "clip_range_vf": 0.05}),
])
def test_numpy_gradients_equal_autograds(space, extra):
    agents = {}
    for kind in ("numpy", "torch"):
        torch.manual_seed(0)  # the same initial weights
        agents[kind] = make(space, n_envs=4, learner=kind, log_std_init=-0.3, **extra)
    assert type(agents["numpy"].learner).__name__ == "NumpyLearner"
    assert type(agents["torch"].learner).__name__ == "TorchLearner"
    rng = np.random.default_rng(3)
    obs = rng.uniform(-1, 1, (32, 3)).astype(np.float32)
    actions = (rng.integers(0, 3, 32) if isinstance(space, gym.spaces.Discrete)
               else rng.normal(0, 1, (32, 2)).astype(np.float32))
    advantages, returns = rng.normal(size=32), rng.normal(size=32)
    noise = [torch.as_tensor(rng.normal(0, 0.3, p.shape), dtype=torch.float32) for p in agents["torch"].net.parameters()]
    results, grads = {}, {}
    for kind, agent in agents.items():
        values, _ = agent.learner.start(obs, actions, obs[:4])
        agent.learner.set_targets(advantages, returns)
        with torch.no_grad():  # the policy moves away from the rollout's, so ratios and values get clipped
            for p, n in zip(agent.net.parameters(), noise):
                p += n
        results[kind] = agent.learner.step(np.arange(4, 28), 0.2)
        if kind == "torch":
            agent.learner.loss.backward()
            grads[kind] = {name: p.grad.numpy() for name, p in agent.net.named_parameters()}
        else:
            by_id = {id(p): g for p, g in zip(agent.learner.params, agent.learner.gradients())}
            grads[kind] = {name: by_id[id(p)] for name, p in agent.net.named_parameters()}
    assert 0.0 < results["torch"]["clip_fraction"] < 1.0
    for key, value in results["torch"].items():
        assert results["numpy"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for name, g in grads["torch"].items():
        assert np.allclose(grads["numpy"][name], g, rtol=1e-4, atol=1e-6), name


def test_learner_numpy_is_refused_where_it_does_not_apply():
    with pytest.raises(ConfigError, match="learner numpy"):
        make(gym.spaces.Discrete(2), learner="numpy", shared_backbone=True)
    assert type(make(gym.spaces.Box(-1.0, 1.0, (1,), np.float32), log_std="learned").learner).__name__ == "TorchLearner"


@pytest.mark.parametrize("learner", ["numpy", "torch"])
def test_a2c_mode_is_one_plain_policy_gradient_step_per_rollout(learner):
    agent = make(gym.spaces.Discrete(3), mode="a2c", learner=learner, n_epochs=7, batch_size=2)
    rng = np.random.default_rng(2)
    for t in range(8):
        obs = rng.uniform(-1, 1, (2, 3)).astype(np.float32)
        agent.observe(obs, agent.act(obs, explore=True), rng.normal(size=2), obs, np.zeros(2, bool),
                      np.zeros(2, bool))
    metrics = agent.metrics()
    assert agent.updates == 1 and metrics["losses/clip_fraction"] == 0.0 and metrics["losses/approx_kl"] == 0.0
    assert agent.optimizer.state[agent.params[0]]["step"].item() == 1  # one step, not 7 epochs of minibatches


def test_restarted_episodes_end_at_the_rollouts_last_step():
    agent = make(gym.spaces.Discrete(2), n_envs=3)
    obs = np.zeros((3, 3), np.float32)
    for _ in range(2):
        agent.observe(obs, agent.act(obs, explore=True), np.ones(3), obs, np.zeros(3, bool), np.zeros(3, bool))
    agent.drop_episodes(np.array([1]))  # a resume could not replay env 1's episode: it starts a new one
    assert agent._rollout["dones"][:2].tolist() == [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


# ---------------------------------------------------------------- gSDE


def sde_agent(**kw) -> PPOAgent:
    return make(gym.spaces.Box(-1.0, 1.0, (2,), np.float32), use_sde=True, squash="clip", **kw)


def test_sde_log_prob_by_hand():
    agent = sde_agent(hidden=(3,), log_std_init=math.log(0.5))
    sigma = torch.tensor([[0.5, 1.0], [2.0, 0.5], [1.0, 1.0]])
    with torch.no_grad():
        agent.policy.sde_log_std.copy_(sigma.log())
    phi = torch.tensor([[1.0, -2.0, 0.5]])
    mean = torch.tensor([[0.1, -0.3]])
    out = torch.cat([mean, sde_log_std(phi, agent.policy.sde_log_std)], dim=-1)
    raw = torch.tensor([[0.4, 0.2]])
    log_prob, entropy = agent.distribution_terms(out, raw)
    expected, expected_entropy = 0.0, 0.0
    for k in range(2):  # variance of action k: Σ_j φ_j² σ_jk² (+ SB3's 1e-6)
        var = sum(phi[0, j].item() ** 2 * sigma[j, k].item() ** 2 for j in range(3)) + 1e-6
        expected += -0.5 * (raw[0, k].item() - mean[0, k].item()) ** 2 / var - 0.5 * math.log(2 * math.pi * var)
        expected_entropy += 0.5 + 0.5 * math.log(2 * math.pi * var)
    assert log_prob.item() == pytest.approx(expected, rel=1e-5)
    assert entropy.item() == pytest.approx(expected_entropy, rel=1e-5)
    # the features are detached: the log-probability's gradient reaches σ, not the features
    phi.requires_grad_(True)
    sde_log_std(phi, agent.policy.sde_log_std).sum().backward()
    assert phi.grad is None and agent.policy.sde_log_std.grad is not None


def test_sde_noise_is_constant_between_resamples_and_changes_at_one():
    agent = sde_agent(n_envs=1, n_steps=8, sde_sample_freq=4, log_std_init=0.0)
    obs = np.full((1, 3), 0.5, np.float32)
    noises = []
    for t in range(8):
        actions = agent.act(obs, explore=True)
        noises.append(agent._sde_noise.copy())
        mean = agent.act(obs, explore=False)
        assert not np.array_equal(agent._last_raw, mean)  # the noise is on
        agent.observe(obs, actions, np.zeros(1), obs, np.zeros(1, bool), np.zeros(1, bool))
    assert all(np.array_equal(noises[0], n) for n in noises[:4])
    assert all(np.array_equal(noises[4], n) for n in noises[4:]) and not np.array_equal(noises[0], noises[4])
    # one θ per rollout (-1): the same observation gets the same action all rollout long, a new one next rollout
    agent = sde_agent(n_envs=1, n_steps=4, sde_sample_freq=-1)
    actions = []
    for t in range(5):
        actions.append(agent.act(obs, explore=True).copy())
        if t < 4:
            agent.observe(obs, actions[-1], np.zeros(1), obs, np.zeros(1, bool), np.zeros(1, bool))
    assert all(np.array_equal(actions[0], a) for a in actions[1:4]) and not np.array_equal(actions[0], actions[4])


def test_sde_save_load_keeps_the_noise_and_greedy_play_is_the_mean(tmp_path: Path):
    agent = sde_agent(sde_sample_freq=3)
    rng = np.random.default_rng(0)
    for t in range(13):  # an update and a rollout in progress, between resamples
        obs = rng.uniform(-1, 1, (2, 3)).astype(np.float32)
        agent.observe(obs, agent.act(obs, explore=True), rng.normal(size=2), obs, np.zeros(2, bool), np.zeros(2, bool))
    path = save_checkpoint(tmp_path, "c", agent.state_dict(), {"agent": "ppo", "env": "E"})
    fresh = sde_agent(sde_sample_freq=3, seed=9)
    fresh.load_state_dict(read_checkpoint(path)[0])
    assert np.array_equal(fresh._sde_noise, agent._sde_noise)
    obs = rng.uniform(-1, 1, (2, 3)).astype(np.float32)
    for _ in range(4):  # the same actions, across the next resample (same θ, then the same RNG)
        assert np.array_equal(fresh.act(obs, explore=True), agent.act(obs, explore=True))
        fresh.observe(obs, fresh._last_raw, np.zeros(2), obs, np.zeros(2, bool), np.zeros(2, bool))
        agent.observe(obs, agent._last_raw, np.zeros(2), obs, np.zeros(2, bool), np.zeros(2, bool))
    mean = agent.policy(torch.as_tensor(obs)).detach().numpy()[:, :2]
    assert np.allclose(agent.act(obs, explore=False), np.clip(mean, -1, 1), atol=1e-6)


@pytest.mark.parametrize("key, value, message", [
    ("sde_sample_freq", "0", "sde_sample_freq: bad value 0"), ("sde_sample_freq", "-2", "sde_sample_freq: bad"),
])
def test_bad_sde_values_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        resolve(PPOConfig, {}, "Pendulum-v1", {"use_sde": "true", key: value}, source="test")
    with pytest.raises(ConfigError, match="recurrent"):
        resolve(PPOConfig, {}, "Pendulum-v1", {"use_sde": "true", "recurrent": "lstm"}, source="test")
    with pytest.raises(ConfigError, match="log_std"):
        resolve(PPOConfig, {}, "Pendulum-v1", {"use_sde": "true", "log_std": "learned"}, source="test")


def test_sde_on_discrete_actions_is_one_line_and_writes_nothing(tmp_path: Path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--agent", "ppo", "--env", "CartPole-v1", "--run-dir", str(run_dir), "--no-progress",
                    "--set", "use_sde=true"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "use_sde" in err and "Discrete" in err
    assert not run_dir.exists()
