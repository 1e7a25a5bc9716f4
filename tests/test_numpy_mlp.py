"""The NumPy MLP (`rlagents.numpy_mlp`): its hand-written gradients equal autograd's to float32 precision,
`adam_step` is `Optimizer.step` bit for bit, DQN's NumPy learner trains as its torch learner does, and the
`learner` key chooses between them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlagents.agents.dqn import DQNAgent, DQNConfig
from rlagents.networks import MLPBackbone, Net, QHead
from rlagents.numpy_mlp import NumpyMLP, adam_step, numpy_q_network


def q_net(obs_space: gym.Space, hidden=(32, 16), n_actions=3, dueling=False) -> Net:
    torch.manual_seed(0)
    backbone = MLPBackbone(obs_space, hidden)
    return Net(backbone, QHead(backbone.features_dim, n_actions, dueling))


@pytest.mark.parametrize("obs_space", [gym.spaces.Box(-1, 1, (3, 2), np.float32), gym.spaces.Discrete(7)],
                         ids=["box", "discrete"])
def test_gradients_equal_autograd(obs_space):
    net = q_net(obs_space)
    obs = torch.as_tensor(np.stack([obs_space.sample() for _ in range(50)]))
    actions = torch.randint(0, 3, (50, 1))
    targets = torch.randn(50) * 3
    q_taken = net(obs).gather(1, actions).squeeze(1)
    torch.nn.functional.smooth_l1_loss(q_taken, targets).backward()
    manual = numpy_q_network(net)
    q, activations = manual.forward(manual.inputs(obs.numpy()))
    rows, taken = np.arange(50), actions.numpy().reshape(-1)
    errors = q[rows, taken] - targets.numpy()
    grad_q = np.zeros_like(q)
    grad_q[rows, taken] = np.clip(errors, -1, 1) / 50
    grads = manual.backward(activations, grad_q)
    np.testing.assert_allclose(q, net(obs).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert len(grads) == len(list(net.parameters()))
    for g, p in zip(grads, net.parameters()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert all(g.dtype == np.float32 for g in grads)


def test_clip_gradients_equals_torch_clip_grad_norm():
    net = q_net(gym.spaces.Box(-1, 1, (4,), np.float32))
    manual = numpy_q_network(net)
    rng = np.random.default_rng(0)
    for g, p in zip(manual.grads, net.parameters()):
        g[...] = rng.normal(size=g.shape) * 3
        p.grad = torch.tensor(g)
    expected_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), 2.0)
    assert manual.clip_gradients(2.0) == pytest.approx(float(expected_norm), rel=1e-5)
    for g, p in zip(manual.grads, net.parameters()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-5, atol=1e-7)
    before = [g.copy() for g in manual.grads]
    assert manual.clip_gradients(100.0) < 100.0  # far below the limit: left unchanged
    assert all(np.array_equal(a, b) for a, b in zip(before, manual.grads))


def test_training_runs_blas_on_one_thread(tmp_path):
    """More BLAS threads than one fight torch's OpenMP threads (a 25x slowdown measured at torch_threads=2):
    training pins every BLAS library loaded, whatever was loaded or set before."""
    import scipy.linalg  # noqa: F401 (a second BLAS library, loaded late, as other code may)
    from threadpoolctl import threadpool_info, threadpool_limits

    from rlagents.train import main

    threadpool_limits(2, user_api="blas")
    assert main(["--agent", "dqn", "--env", "CartPole-v1", "--steps", "300", "--run-dir", str(tmp_path / "run"),
                 "--no-progress", "--set", "torch_threads=2"]) == 0
    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert len(blas) >= 2 and all(lib["num_threads"] == 1 for lib in blas)


def test_numpy_applies_only_to_plain_mlp_q_networks():
    box = gym.spaces.Box(-1, 1, (4,), np.float32)
    assert numpy_q_network(q_net(box)) is not None
    assert numpy_q_network(q_net(box, dueling=True)) is None
    assert NumpyMLP.of(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)) is None  # not an MLP backbone


@pytest.mark.parametrize("env, settings, message", [
    ("CartPole-v1", {"learner": "numpy", "prioritized": True}, "learner numpy trains plain Q-networks with uniform"),
    ("CartPole-v1", {"learner": "numpy", "dueling": True}, "learner numpy trains plain Q-networks with uniform"),
    ("DigitLock-v0", {"learner": "numpy"}, ("learner numpy trains plain MLP Q-networks on a CPU with every layer "
                                            "trained; this one is a DictBackbone on cpu")),
    ("CartPole-v1", {"learner": "gpu"}, "learner: "),
    ("CartPole-v1", {"clipped_double": True, "double": False}, "clipped_double clips double DQN's target"),
])
def test_learner_settings_that_cannot_apply_are_refused(tmp_path, capsys, env, settings, message):
    from rlagents.train import main

    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    with pytest.raises(SystemExit) as exc:
        main(["--agent", "dqn", "--env", env, "--steps", "300", "--run-dir", str(tmp_path / "run"), "--no-progress",
              *sets])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("settings, learner", [({}, "NumpyLearner"), ({"learner": "torch"}, "TorchLearner"),
                                               ({"dueling": True}, "TorchLearner"),
                                               ({"prioritized": True}, "TorchLearner")])
def test_learner_auto_takes_numpy_where_it_applies(settings, learner):
    agent = DQNAgent(DQNConfig(**settings), gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2),
                     n_envs=1, total_steps=1_000, device=torch.device("cpu"), seed=0)
    assert type(agent.learner).__name__ == learner


def test_adam_step_equals_optimizer_step():
    torch.manual_seed(0)
    a, b = (torch.nn.Linear(4, 5), torch.nn.Linear(4, 5))
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-2, fused=True)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2, fused=True)
    for _ in range(3):  # the first step creates the state through step(), the rest call the kernel directly
        grads = [torch.randn_like(p) for p in a.parameters()]
        for p, g in zip(a.parameters(), grads):
            p.grad = g.clone()
        opt_a.step()
        adam_step(opt_b, list(b.parameters()), [g.clone() for g in grads])
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert opt_a.state_dict()["state"][0]["step"] == opt_b.state_dict()["state"][0]["step"] == 3


@pytest.mark.parametrize("settings", [{}, {"double": False, "gradient_steps": 4, "loss": "mse", "batch_size": 100},
                                      {"max_grad_norm": None, "n_step": 3}, {"clipped_double": True},
                                      {"clip_values": True, "gamma": 0.5, "lr": 1.0e-2},
                                      {"clip_values": True, "gamma": 0.5, "lr": 1.0e-2, "double": False},
                                      {"terminal_fraction": 0.25, "gradient_steps": 2, "n_step": 3}],
                         ids=["double", "burst-mse", "noclip", "clipped-double", "clip-values", "clip-values-max",
                              "terminal-fraction"])
def test_dqn_manual_updates_equal_autograd_updates(settings):
    """The same agent trained through the manual path and through autograd ends with the same weights, up to
    float32 rounding (the two sum matrix products in different orders)."""
    obs_space, action_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2)
    agents = []
    for learner in ("numpy", "torch"):
        torch.manual_seed(0)
        config = DQNConfig(hidden=(64, 64), learning_starts=100, train_every=4, learner=learner, **settings)
        agent = DQNAgent(config, obs_space, action_space, n_envs=1, total_steps=2_000,
                         device=torch.device("cpu"), seed=0)
        rng = np.random.default_rng(0)
        obs = rng.normal(size=(1, 4)).astype(np.float32)
        for step in range(600):
            next_obs = rng.normal(size=(1, 4)).astype(np.float32)
            agent.observe(obs, agent.act(obs, explore=True), np.array([1.0]), next_obs,
                          np.array([step % 50 == 49]), np.array([False]))
            obs = next_obs
        agents.append(agent)
    manual, autograd = agents
    assert manual.updates == autograd.updates > 100
    for pm, pa in zip(manual.q.parameters(), autograd.q.parameters()):
        torch.testing.assert_close(pm, pa, rtol=1e-5, atol=1e-6)
    metrics_m, metrics_a = manual.metrics(), autograd.metrics()
    assert metrics_m["losses/td_loss"] == pytest.approx(metrics_a["losses/td_loss"], rel=1e-5)
    assert metrics_m["values/mean_q"] == pytest.approx(metrics_a["values/mean_q"], rel=1e-5)


@pytest.mark.parametrize("policy", ["stop", "skip"])
def test_nonfinite_td_errors_inside_a_round(policy):
    """A NaN reward in one step's batch of a multi-step round: `stop` raises naming that step, `skip` drops it."""
    from rlagents.errors import TrainingFault

    torch.manual_seed(0)
    config = DQNConfig(hidden=(16,), batch_size=8, buffer_size=64, learning_starts=0, nonfinite=policy)
    agent = DQNAgent(config, gym.spaces.Box(-1, 1, (2,), np.float32), gym.spaces.Discrete(2), n_envs=1,
                     total_steps=1_000, device=torch.device("cpu"), seed=0)
    for k in range(64):
        agent.buffer.add(np.zeros(2, np.float32), 0, float("nan") if k == 5 else 1.0, np.zeros(2, np.float32),
                         False, 0.99)
    agent._train(3)  # first round: the fused Adam's state is created through step()
    good = [p.clone() for p in agent.params]
    if policy == "stop":
        with pytest.raises(TrainingFault, match=r"non-finite TD loss \(nan\) at update \d+"):
            for _ in range(20):  # some round's batches draw row 5
                agent._train(4)
    else:
        for _ in range(20):
            agent._train(4)
        assert agent.skipped_updates > 0 and agent.updates + agent.skipped_updates == 3 + 80
        assert all(torch.isfinite(p).all() for p in agent.params)
        assert not all(torch.equal(p, g) for p, g in zip(agent.params, good))


def test_tanh_backbones_forward_and_backward_as_autograd():
    torch.manual_seed(0)
    backbone = MLPBackbone(gym.spaces.Box(-1.0, 1.0, (5,), np.float32), (16, 8), activation="tanh")
    head = torch.nn.Linear(8, 3)
    mlp = NumpyMLP(backbone, head)
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    out, activations = mlp.forward(mlp.inputs(x))
    expected = head(backbone(torch.as_tensor(x)))
    assert np.allclose(out, expected.detach().numpy(), atol=1e-6)
    expected.sum().backward()
    grads = mlp.backward(activations, np.ones_like(out))
    for g, p in zip(grads, mlp.parameters):
        assert np.allclose(g, p.grad.numpy(), atol=1e-5)
