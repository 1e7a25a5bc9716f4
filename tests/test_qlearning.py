"""The tabular agent: each update rule against hand-computed values and a tiny MDP with a known Q, save → load
identity, refusal messages, and learning on FrozenLake and CliffWalking with fixed seeds."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlagents.agents.qlearning import QLearningAgent, QLearningConfig
from rlagents.checkpoint import read_checkpoint, save_checkpoint
from rlagents.config import build
from rlagents.environments import make_env
from rlagents.evaluate import main as evaluate_main
from rlagents.tabular_views import greedy_path
from rlagents.train import main as train_main

GAMMA = 0.9
# A two-state MDP. s0: a0 → r 0, to s1; a1 → r 1, episode ends. s1: a0 → r 2, ends; a1 → r 0, back to s0.
NEXT = np.array([[1, 0], [0, 0]])
REWARD = np.array([[0.0, 1.0], [2.0, 0.0]])
TERMINAL = np.array([[False, True], [True, False]])
# Q*: Q(s1,a0) = 2, Q(s0,a0) = 0.9·2, Q(s0,a1) = 1, Q(s1,a1) = 0.9·Q(s0,a0)
Q_STAR = np.array([[1.8, 1.0], [2.0, 1.62]])


def policy_q(policy: np.ndarray) -> np.ndarray:
    """Exact Q of a stochastic policy (states x actions probabilities) on the MDP, by a linear solve."""
    n = NEXT.size  # one unknown per (s, a): Q = R + γ · Σ_a' π(a'|s') Q(s', a') where not terminal
    a_matrix = np.eye(n)
    for s in range(2):
        for a in range(2):
            if not TERMINAL[s, a]:
                for a2 in range(2):
                    a_matrix[s * 2 + a, NEXT[s, a] * 2 + a2] -= GAMMA * policy[NEXT[s, a], a2]
    return np.linalg.solve(a_matrix, REWARD.ravel()).reshape(2, 2)


def make_agent(n_envs: int = 1, total_steps: int = 10_000, seed: int = 0, obs_space: gym.Space | None = None,
               **values) -> QLearningAgent:
    cfg = build(QLearningConfig, {"gamma": GAMMA, **values}, source="test")
    return QLearningAgent(cfg, obs_space or gym.spaces.Discrete(2), gym.spaces.Discrete(2), n_envs=n_envs,
                          total_steps=total_steps, device=torch.device("cpu"), seed=seed)


def run_mdp(agent: QLearningAgent, steps: int) -> None:
    n = agent.n_envs
    obs = np.zeros(n, dtype=np.int64)
    never = np.zeros(n, dtype=bool)
    for _ in range(steps // n):
        actions = agent.act(obs, explore=True)
        next_obs, rewards, done = NEXT[obs, actions], REWARD[obs, actions], TERMINAL[obs, actions]
        agent.observe(obs, actions, rewards, next_obs, done, never)
        obs = np.where(done, 0, next_obs)


CONSTANT_EPS = {"epsilon_start": 0.3, "epsilon_end": 0.3, "epsilon_fraction": 0.0}


@pytest.mark.parametrize("update, n_envs", [("qlearning", 1), ("qlearning", 3), ("double", 1)])
def test_off_policy_rules_converge_to_optimal_q(update, n_envs):
    agent = make_agent(n_envs, update=update, lr=0.2, **CONSTANT_EPS)
    run_mdp(agent, 6_000)
    np.testing.assert_allclose(agent.q_table(), Q_STAR, atol=0.01)


@pytest.mark.parametrize("update", ["sarsa", "expected_sarsa"])
def test_on_policy_rules_converge_to_q_of_the_epsilon_greedy_policy(update):
    # With a constant epsilon both learn Q of the epsilon-greedy policy, not Q*: a different, known table.
    policy = np.array([[0.85, 0.15], [0.85, 0.15]])  # greedy action a0 in both states, 0.3 / 2 on the other
    expected = policy_q(policy)
    assert expected.argmax(axis=1).tolist() == [0, 0] and not np.allclose(expected, Q_STAR, atol=0.05)
    agent = make_agent(update=update, lr=1.0, lr_schedule="visits", lr_power=0.8, **CONSTANT_EPS)
    run_mdp(agent, 60_000)
    np.testing.assert_allclose(agent.q_table(), expected, atol=0.03)


@pytest.mark.parametrize("update", ["sarsa", "expected_sarsa"])
def test_on_policy_rules_approach_optimal_q_as_epsilon_goes_to_zero(update):
    # GLIE: with epsilon decayed to 0 the policy's Q becomes Q*. Q(s1,a1) is tried only by exploration, so
    # its last updates saw a small but non-zero epsilon and it lags a little behind; the rest are exact.
    agent = make_agent(update=update, lr=0.1, epsilon_start=1.0, epsilon_end=0.0, epsilon_fraction=1.0,
                       total_steps=20_000)
    run_mdp(agent, 20_000)
    q = agent.q_table()
    np.testing.assert_allclose(q.ravel()[:3], Q_STAR.ravel()[:3], atol=0.01)
    assert q[1, 1] == pytest.approx(Q_STAR[1, 1], abs=0.1)


def one_update(agent: QLearningAgent, s=0, a=0, r=1.0, s2=1, terminated=False, truncated=False) -> float:
    agent.observe(np.array([s]), np.array([a]), np.array([r]), np.array([s2]), np.array([terminated]),
                  np.array([truncated]))
    return agent.q_table()[s, a]


def set_table(agent: QLearningAgent, table) -> None:
    agent.tables = [np.asarray(table, dtype=np.float64).tolist() for _ in agent.tables]
    agent.q = agent.tables[0]


def test_update_targets_by_hand():
    table = [[0.5, 0.0], [3.0, 1.0]]
    agent = make_agent(lr=0.5)
    set_table(agent, table)
    assert one_update(agent) == pytest.approx(0.5 + 0.5 * (1.0 + GAMMA * 3.0 - 0.5))
    set_table(agent, table)
    assert one_update(agent, terminated=True) == pytest.approx(0.5 + 0.5 * (1.0 - 0.5))  # no bootstrap
    set_table(agent, table)
    assert one_update(agent, truncated=True) == pytest.approx(0.5 + 0.5 * (1.0 + GAMMA * 3.0 - 0.5))  # bootstraps

    agent = make_agent(lr=0.5, update="expected_sarsa", epsilon_start=0.2, epsilon_end=0.2)
    set_table(agent, table)
    expected = 0.8 * 3.0 + 0.2 * 2.0  # (1 − ε)·max + ε·mean
    assert one_update(agent) == pytest.approx(0.5 + 0.5 * (1.0 + GAMMA * expected - 0.5))

    agent = make_agent(lr=0.5, update="sarsa", epsilon_start=0.0, epsilon_end=0.0)
    set_table(agent, table)
    assert one_update(agent) == pytest.approx(0.5 + 0.5 * (1.0 + GAMMA * 3.0 - 0.5))
    assert agent.act(np.array([1]), explore=True).tolist() == [0]  # SARSA takes the action it bootstrapped on


def test_double_q_values_the_learners_choice_with_the_other_table():
    agent = make_agent(lr=1.0, update="double")
    learned_by = set()
    for _ in range(20):  # a fair coin picks the learning table: see both outcomes
        agent.tables = [[[0.0, 0.0], [5.0, 1.0]], [[0.0, 0.0], [2.0, 7.0]]]
        agent.q = agent.tables[0]
        one_update(agent)
        first, second = agent.tables[0][0][0], agent.tables[1][0][0]
        assert (first == 0.0) != (second == 0.0)  # exactly one table learns per transition
        if first:
            assert first == pytest.approx(1.0 + GAMMA * 2.0)  # table 0 picks a0 at s1, table 1 values it: 2
        else:
            assert second == pytest.approx(1.0 + GAMMA * 1.0)  # table 1 picks a1 at s1, table 0 values it: 1
        learned_by.add(0 if first else 1)
    assert learned_by == {0, 1}


def test_visit_count_learning_rate():
    agent = make_agent(lr=0.8, lr_schedule="visits", lr_power=1.0, lr_min=0.3)
    set_table(agent, [[0.0, 0.0], [0.0, 0.0]])
    assert one_update(agent, r=1.0, terminated=True) == pytest.approx(0.8)  # first visit: lr
    assert one_update(agent, r=1.0, terminated=True) == pytest.approx(0.8 + 0.4 * 0.2)  # second: lr / 2
    q = agent.q_table()[0, 0]
    assert one_update(agent, r=1.0, terminated=True) == pytest.approx(q + 0.3 * (1 - q))  # floored at lr_min
    assert agent.metrics()["charts/learning_rate"] == pytest.approx((0.8 + 0.4 + 0.3) / 3)


def test_logged_statistics():
    agent = make_agent(obs_space=gym.spaces.Discrete(4), lr=0.5)
    set_table(agent, np.zeros((4, 2)))
    one_update(agent, s=0, a=0, r=1.0, terminated=True)  # Q(0,0) = 0.5, |TD error| 1
    one_update(agent, s=0, a=1, r=3.0, terminated=True)  # Q(0,1) = 1.5, |TD error| 3
    one_update(agent, s=2, a=0, r=0.0, terminated=True)  # Q(2,0) = 0, |TD error| 0
    metrics = agent.metrics()
    assert metrics["charts/states_visited"] == 0.5  # states 0 and 2 of 4
    assert metrics["values/mean_q"] == pytest.approx((0.5 + 1.5 + 0.0) / 3)
    assert metrics["losses/td_abs_error"] == pytest.approx(4 / 3)
    assert "values/mean_q" not in agent.metrics()  # reset after each report
    clone = make_agent(obs_space=gym.spaces.Discrete(4))
    clone.load_state_dict(agent.state_dict())
    assert clone.metrics()["charts/states_visited"] == 0.5


def test_discretised_box_observations_index_the_table():
    box = gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 3.0], np.float32))
    agent = make_agent(obs_space=box, bins=(2, 3), lr=1.0)
    assert agent.n_states == 6
    agent.observe(np.array([[0.5, 2.5]], np.float32), np.array([1]), np.array([4.0]),
                  np.array([[0.0, 0.0]], np.float32), np.array([True]), np.array([False]))
    assert agent.q_table()[1 * 3 + 2, 1] == pytest.approx(4.0)


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("update", ["qlearning", "sarsa", "double"])
def test_save_load_identity(update, tmp_path: Path):
    agent = make_agent(update=update, exploration="boltzmann")
    run_mdp(agent, 500)
    path = save_checkpoint(tmp_path, "final", agent.state_dict(), {"agent": "qlearning", "env": "mdp"})
    state, _ = read_checkpoint(path, agent="qlearning")
    clone = make_agent(update=update, exploration="boltzmann", seed=123)
    clone.load_state_dict(state)
    np.testing.assert_array_equal(clone.q_table(), agent.q_table())
    assert clone.counts == agent.counts and clone.steps == agent.steps
    # same RNG state and pending SARSA action: both continue identically
    run_mdp(agent, 300)
    run_mdp(clone, 300)
    np.testing.assert_array_equal(clone.q_table(), agent.q_table())


def test_loading_a_table_of_another_shape_fails():
    big = make_agent(obs_space=gym.spaces.Discrete(5))
    with pytest.raises(ValueError, match="shape"):
        make_agent().load_state_dict(big.state_dict())


# ---------------------------------------------------------------- CLI: refusals, learning, inspection


def run_bad(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        train_main(argv + ["--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


@pytest.mark.parametrize("argv, message", [
    (["--env", "Pendulum-v1"], "qlearning needs a Discrete action space"),
    (["--env", "Acrobot-v1", "--set", "bins="], "discretise it with --set bins=10,10,10,10,10,10"),
    (["--env", "CartPole-v1", "--set", "bins=4", "--set", "clip_low=", "--set", "clip_high="],
     "observation dimensions [1, 3] of Box"),
    (["--env", "CartPole-v1", "--set", "bins=4,4"], "bins: Box"),
    (["--env", "FrozenLake-v1", "--set", "update=watkins"], "update: bad value 'watkins'; allowed:"),
    (["--env", "FrozenLake-v1", "--set", "exploration=greedy"], "exploration: bad value 'greedy'"),
    (["--env", "FrozenLake-v1", "--set", "lr=0"], "lr: bad value 0.0; must be > 0.0"),
])
def test_refusals(argv, message, capsys, tmp_path):
    run_dir = tmp_path / "run"
    assert message in run_bad(["--agent", "qlearning", "--run-dir", str(run_dir)] + argv, capsys)
    assert not run_dir.exists()


def train(tmp_path: Path, env: str, seed: int, *extra: str) -> dict:
    run_dir = tmp_path / f"{env}-{seed}"
    assert train_main(["--agent", "qlearning", "--env", env, "--seed", str(seed), "--run-dir", str(run_dir),
                       "--no-progress", *extra]) == 0
    return json.loads((run_dir / "summary.json").read_text()) | {"run_dir": run_dir}


@pytest.mark.slow
def test_learns_frozenlake(tmp_path: Path):
    # Slippery 4x4: a random policy succeeds in about 1.5% of episodes, the optimal one in about 74%.
    summary = train(tmp_path, "FrozenLake-v1", 0, "--steps", "40000")
    assert summary["eval_episodes"] == 1000 and summary["eval_return_mean"] >= 0.6, summary["eval_return_mean"]


def cliff_path(run_dir: Path) -> list[tuple[int, int]]:
    from rlagents.evaluate import spaces_of
    from rlagents.runs import load_run

    run = load_run(run_dir, spaces_of, device=torch.device("cpu"))
    path = greedy_path(run.agent.q_table(), make_env("CliffWalking-v1"))
    return [divmod(s, 12) for s in path]


@pytest.mark.slow
def test_cliffwalking_qlearning_takes_the_edge_and_sarsa_the_safe_path(tmp_path: Path, capsys):
    q = train(tmp_path, "CliffWalking-v1", 0, "--set", "update=qlearning")
    assert q["final_eval_returns"][0] == -13.0 and q["eval_return_mean"] == -13.0
    assert all(row == 2 for row, col in cliff_path(q["run_dir"])[1:-1])  # along the cliff edge
    sarsa = train(tmp_path / "sarsa", "CliffWalking-v1", 0, "--set", "update=sarsa")
    path = cliff_path(sarsa["run_dir"])
    assert path[-1] == (3, 11) and -20 <= sarsa["eval_return_mean"] < -13
    assert all(row < 2 for row, col in path if 0 < col < 11)  # never on the row next to the cliff

    assert evaluate_main([str(sarsa["run_dir"]), "--episodes", "10"]) == 0
    out = capsys.readouterr().out
    assert "greedy path from the start" in out and "C C C C C C C C C C G" in out
    assert (sarsa["run_dir"] / "values.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_learns_cartpole_through_discretisation(tmp_path: Path):
    # A random policy lasts about 22 steps.
    summary = train(tmp_path, "CartPole-v1", 0, "--steps", "20000", "--eval-episodes", "20")
    assert summary["eval_return_mean"] >= 150, summary["eval_return_mean"]


@pytest.mark.parametrize("exploration, schedule_tag", [("epsilon", "charts/epsilon"),
                                                       ("boltzmann", "charts/temperature"), ("ucb", None)])
def test_exploration_is_logged_to_tensorboard(exploration, schedule_tag, tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    summary = train(tmp_path, "FrozenLake-v1", 0, "--steps", "3000", "--eval-episodes", "5",
                    "--set", f"exploration={exploration}")
    tags: set[str] = set()
    for events in summary["run_dir"].glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    expected = {"charts/explore_fraction", "losses/td_abs_error", "charts/learning_rate", "values/mean_q",
                "charts/states_visited"} | ({schedule_tag} if schedule_tag else set())
    assert expected <= tags, tags
