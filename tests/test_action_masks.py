"""Action masks: from the env (info or Dict observation) through the vector env and the loop to the agents,
which never take a masked action, in exploration or greedily, and learn with them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rlagents.agents.dqn import next_state_values
from rlagents.environments import check_env, evaluate, make_vec_env
from rlagents.masks import final_masks, illegal_count, legal_rows, masked_argmax, random_legal
from rlagents.replay import NStepAccumulator, ReplayBuffer
from rlagents.train import main as train_main

MAZE, MAZE_DICT = "MaskedMaze-v0", "MaskedMazeDict-v0"


def train(tmp_path: Path, agent: str, env: str, steps: int, *extra: str) -> dict:
    run_dir = tmp_path / f"{agent}-{env}"
    assert train_main(["--agent", agent, "--env", env, "--steps", str(steps), "--seed", "1", "--run-dir",
                       str(run_dir), "--no-progress", "--eval-episodes", "20", *extra]) == 0
    return json.loads((run_dir / "summary.json").read_text())


# ---------------------------------------------------------------- the maths, by hand


def test_masked_choices_never_pick_illegal_actions():
    masks = np.array([[False, True, False], [True, False, True], [False, False, True]])
    scores = np.array([[9.0, 1.0, 5.0], [0.0, 9.0, 1.0], [3.0, 2.0, 1.0]])
    assert masked_argmax(scores, masks).tolist() == [1, 2, 2]
    drawn = np.stack([random_legal(masks, np.random.default_rng(s)) for s in range(300)])
    assert masks[np.arange(3), drawn].all()
    assert set(drawn[:, 1].tolist()) == {0, 2}  # uniform among the legal ones: both appear
    assert legal_rows(np.array([[False, False], [True, False]])).tolist() == [[True, True], [True, False]]
    assert illegal_count(masks, np.array([0, 0, 2])) == 1


def test_dqn_targets_maximise_over_legal_actions_only():
    target = torch.tensor([[5.0, 1.0, 2.0], [0.0, 4.0, 3.0]])
    online = torch.tensor([[9.0, 0.0, 1.0], [0.0, 1.0, 8.0]])
    masks = torch.tensor([[False, True, True], [True, True, False]])
    assert next_state_values(target, None, masks).tolist() == [2.0, 4.0]
    # double DQN: the online net picks among legal actions (2, then 1), the target net values them
    assert next_state_values(target, online, masks).tolist() == [2.0, 4.0]
    assert next_state_values(target, online).tolist() == [5.0, 3.0]


def test_replay_and_nstep_keep_next_masks():
    buf = ReplayBuffer(8, (), np.int64, mask_actions=3)
    buf.add_batch(np.arange(2), np.zeros(2, int), np.ones(2), np.arange(2) + 1, np.zeros(2), np.ones(2),
                  np.array([[True, False, False], [False, False, True]]))
    copy = ReplayBuffer(8, (), np.int64, mask_actions=3)
    copy.load_state_dict(buf.state_dict())
    assert copy.sample(4, np.random.default_rng(0)).next_masks.any(axis=1).all()
    assert copy.next_masks[:2].tolist() == [[True, False, False], [False, False, True]]
    acc = NStepAccumulator(1, 2, 0.5)
    acc.push(0, 0, 0, 1.0, 1, False, False, np.array([True, True, False]))
    (out,) = acc.push(0, 1, 0, 1.0, 2, False, False, np.array([False, True, False]))
    assert out[-1].tolist() == [False, True, False]  # the mask of the n-th next state


# ---------------------------------------------------------------- the env and the vector env


@pytest.mark.parametrize("env_id", [MAZE, MAZE_DICT])
def test_maze_passes_the_checker_renders_and_masks_its_walls(env_id):
    check_env(env_id)
    envs = make_vec_env(env_id, 4, render_mode="rgb_array")
    assert envs.masked
    envs.reset(seed=0)
    frame = envs.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    rng = np.random.default_rng(0)
    for _ in range(50):
        masks = envs.action_masks()
        actions = random_legal(masks, rng)
        _, rewards, terminated, truncated, infos = envs.step(actions)
        assert (rewards > -1.0).all()  # a legal move never crashes
        done = terminated | truncated
        assert final_masks(envs.action_masks(), done, infos).shape == masks.shape
    illegal = ~envs.action_masks()[0]
    if illegal.any():  # an illegal move crashes: the episode ends with -1
        _, rewards, terminated, _, _ = envs.step(np.array([int(np.flatnonzero(illegal)[0])] * 4))
        assert rewards[0] == -1.0 and terminated[0]
    envs.close()


def test_evaluation_counts_illegal_actions():
    envs = make_vec_env(MAZE, 2)
    counts: dict[str, int] = {}
    evaluate(lambda obs, masks: np.zeros(len(obs), dtype=np.int64), envs, 4, seed=0, counts=counts)
    assert counts["illegal_actions"] > 0  # "always up" walks into walls and off the grid
    evaluate(lambda obs, masks: masked_argmax(np.zeros(masks.shape), masks), envs, 4, seed=0, counts=counts)
    assert counts["illegal_actions"] == 0
    envs.close()


# ---------------------------------------------------------------- agents: never illegal, and learning


RANDOM_LEGAL_RETURN = 0.03  # a uniformly random legal policy's mean return on the maze (200 episodes)


@pytest.mark.parametrize("agent, env_id, steps, extra, min_return", [
    # the maze's reward_threshold 0.8: reached by qlearning and dqn on held-out seeds 10-14 too
    ("qlearning", MAZE, 6_000, [], 0.8),
    ("qlearning", MAZE, 4_000, ["--set", "update=sarsa", "--set", "exploration=boltzmann"], None),
    ("qlearning", MAZE, 4_000, ["--set", "update=double", "--set", "exploration=ucb", "--n-envs", "2"], None),
    ("dqn", MAZE, 12_000, ["--set", "learning_starts=500", "--set", "target_update_every=250",
                           "--set", "epsilon_fraction=0.3"], 0.8),
    ("dqn", MAZE_DICT, 3_000, ["--set", "n_step=3", "--set", "learning_starts=300", "--n-envs", "2"], None),
    # REINFORCE learns slower: 0.37-0.44 on held-out seeds 10-14 at 6,000 steps (random legal policy: 0.03)
    ("reinforce", MAZE, 6_000, [], 0.3),
    ("reinforce", MAZE_DICT, 3_000, [], None),
    ("ppo", MAZE, 6_000, [], 0.5),  # held-out seeds 10-14: 0.54-0.95 (docs/guide/action-masks.md)
    ("ppo", MAZE_DICT, 2_048, ["--set", "learner=torch"], None),
])
def test_masked_agents_never_take_an_illegal_action(tmp_path, agent, env_id, steps, extra, min_return):
    summary = train(tmp_path, agent, env_id, steps, "--eval-every", str(steps // 2), *extra)
    assert summary["illegal_actions"] == {"train": 0, "final_eval": 0, "masked_agent": True}
    assert all(e["illegal_actions"] == 0 for e in summary["evaluations"])
    if min_return is not None:  # and they learn
        assert summary["eval_return_mean"] >= min_return > RANDOM_LEGAL_RETURN, summary["eval_return_mean"]


def test_without_masks_the_same_agent_crashes_while_it_learns(tmp_path):
    summary = train(tmp_path, "qlearning", MAZE, 6_000, "--set", "action_masks=false")
    assert summary["illegal_actions"]["masked_agent"] is False
    assert summary["illegal_actions"]["train"] > 100  # random exploration walks into walls


def test_sb3_agents_ignore_masks_but_train(tmp_path):
    summary = train(tmp_path, "sb3-dqn", MAZE, 600, "--set", "learning_starts=100")
    assert summary["illegal_actions"]["masked_agent"] is False


# ---------------------------------------------------------------- export: masked greedy actions in the graph


@pytest.mark.parametrize("agent, env_id, graph_inputs", [
    ("qlearning", MAZE, ["obs", "action_mask"]),
    ("dqn", MAZE, ["obs", "action_mask"]),
    ("reinforce", MAZE, ["obs", "action_mask"]),
    ("dqn", MAZE_DICT, ["action_mask", "observation"]),  # the mask is one of the observation's keys
    ("ppo", MAZE, ["obs", "action_mask"]),
])
def test_exported_graph_takes_the_mask_and_acts_as_the_masked_agent(tmp_path, agent, env_id, graph_inputs):
    from rlagents.evaluate import spaces_of
    from rlagents.export import main as export_main
    from rlagents.onnx_policy import OnnxPolicy, evaluate_onnx
    from rlagents.runs import load_run

    summary = train(tmp_path, agent, env_id, 1_500, *(["--set", "learning_starts=300"] if agent == "dqn" else []))
    run_dir, out = tmp_path / f"{agent}-{env_id}", tmp_path / "policy.onnx"
    assert export_main([str(run_dir), "--out", str(out)]) == 0
    policy = OnnxPolicy.load(out)
    assert [name for name, _ in policy.inputs] == graph_inputs
    assert json.loads(out.with_suffix(".json").read_text())["action_mask"]["from"] == (
        "observation" if env_id == MAZE_DICT else "info")
    returns, _ = evaluate_onnx(out)
    assert returns.mean() == pytest.approx(summary["eval_return_mean"])  # the run's own evaluation episodes
    # on every cell, under masks that leave exactly one legal action, the graph and the agent pick that action
    run = load_run(run_dir, spaces_of, device=torch.device("cpu"))
    cells = np.repeat(np.arange(25), 4)
    masks = np.tile(np.eye(4, dtype=bool), (25, 1))
    obs = cells if env_id == MAZE else {"observation": cells, "action_mask": masks.astype(np.int8)}
    expected = np.tile(np.arange(4), 25)
    np.testing.assert_array_equal(run.agent.greedy(obs, masks), expected)
    np.testing.assert_array_equal(policy(obs, masks), expected)


# ---------------------------------------------------------------- resuming a masked run


@pytest.mark.parametrize("agent, config", [
    ("reinforce", {"eval_every": 500, "checkpoint_every": 500, "log_every": 250, "eval_episodes": 5}),
    ("dqn", {"eval_every": 500, "checkpoint_every": 500, "log_every": 250, "eval_episodes": 5,
             "learning_starts": 200, "n_step": 2, "checkpoint_replay": True}),
])
def test_a_stopped_masked_run_resumes_to_the_same_run(tmp_path, agent, config):
    """Masks survive a resume: the episodes in flight are replayed with their masks, the agent's stored masks
    (REINFORCE's episodes, DQN's replay and n-step queue) come back, and the illegal-action count carries on."""
    import rlagents

    def timeless(summary):  # without what depends on the clock or on how many sessions it took
        if isinstance(summary, dict):
            return {k: timeless(v) for k, v in summary.items()
                    if not any(d in k for d in ("time", "per_s", "costs", "sessions", "versions"))}
        return [timeless(v) for v in summary] if isinstance(summary, list) else summary

    whole = rlagents.train(agent, MAZE, seed=3, steps=1_500, config=config, run_dir=tmp_path / "whole")
    stopped = rlagents.train(agent, MAZE, seed=3, steps=1_500, config=config, run_dir=tmp_path / "stopped",
                             callback=lambda step, metrics: step < 750)
    assert stopped.status == "stopped"
    resumed = rlagents.resume(stopped.run_dir)
    assert resumed.summary["illegal_actions"] == {"train": 0, "final_eval": 0, "masked_agent": True}
    assert timeless(resumed.summary) == timeless(whole.summary)
