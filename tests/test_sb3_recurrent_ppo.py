"""`sb3-recurrent-ppo`: sb3-contrib's RecurrentPPO in our loop — trains, saves and reloads the same greedy policy,
keeps one LSTM state per episode in greedy play, picks the policy its observations need, refuses the rest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlagents.api import load
from rlagents.evaluate import main as evaluate_main
from rlagents.train import main as train_main

AGENT = "sb3-recurrent-ppo"
TINY = ["--set", "n_steps=32", "--set", "batch_size=64", "--set", "n_epochs=2", "--set", "lstm_hidden_size=16",
        "--set", "n_envs=2"]


def _train(tmp_path, env: str = "CartPoleNoVelocity-v0", steps: int = 256, *extra: str) -> tuple[dict, object]:
    run_dir = tmp_path / env.replace("/", "_")
    code = train_main(["--agent", AGENT, "--env", env, "--steps", str(steps), "--eval-every", str(steps // 2),
                       "--eval-episodes", "4", "--seed", "1", "--no-progress", "--run-dir", str(run_dir), *TINY,
                       *extra])
    assert code == 0
    return json.loads((run_dir / "summary.json").read_text()), run_dir


def test_trains_saves_and_reloads_the_same_greedy_policy(tmp_path, capsys):
    summary, run_dir = _train(tmp_path)
    assert summary["agent"] == AGENT and summary["status"] == "completed" and summary["total_steps"] == 256
    assert summary["costs"]["update_ms"] > 0 and not list(run_dir.rglob("*.zip"))
    policy = load(run_dir)
    assert type(policy.agent.model.policy).__name__ == "RecurrentActorCriticPolicy"
    assert policy.agent.model.policy.lstm_actor.hidden_size == 16
    # the reloaded policy replays the run's own final evaluation (the same seed and greedy policy)
    assert np.allclose(policy.evaluate().returns, summary["final_eval_returns"])
    capsys.readouterr()
    assert evaluate_main([str(run_dir), "--episodes", "4"]) == 0
    assert f"{summary['eval_return_mean']:.2f}" in capsys.readouterr().out


def test_greedy_play_keeps_one_lstm_state_per_episode_and_resets_it_at_episode_starts(tmp_path):
    _, run_dir = _train(tmp_path)
    agent = load(run_dir).agent
    steps = np.random.default_rng(0).uniform(-0.2, 0.2, (6, 3, 2)).astype(np.float32)  # 6 steps of 3 episodes

    def hidden() -> np.ndarray:
        return agent._lstm_state[0].copy()  # (layers, rows, units)

    agent.reset_memory()
    agent.act(steps[0], explore=False)
    fresh = hidden()
    for obs in steps[1:]:
        agent.act(obs, explore=False)
    carried = hidden()
    agent.reset_memory(np.array([False, True, False]))  # only episode 1 starts again
    agent.act(steps[0], explore=False)
    after = hidden()
    assert np.allclose(after[:, 1], fresh[:, 1])  # restarted: as after its first step
    assert not np.allclose(after[:, [0, 2]], fresh[:, [0, 2]]) and not np.allclose(after, carried)
    agent.act(steps[0][1:2], explore=False)  # a batch of another size starts afresh
    assert np.allclose(hidden()[:, 0], fresh[:, 1])


def test_dict_observations_get_the_multi_input_lstm_policy(tmp_path):
    summary, run_dir = _train(tmp_path, "MaskedMazeDict-v0", 128)
    assert summary["status"] == "completed"
    assert type(load(run_dir).agent.model.policy).__name__ == "RecurrentMultiInputActorCriticPolicy"


@pytest.mark.parametrize("env, message", [
    ("DigitRecall-v0", "sb3-recurrent-ppo's CNN (SB3's NatureCNN) needs images of at least 36x36 pixels"),
    ("Blackjack-v1", "sb3-recurrent-ppo needs flat Box, Discrete, uint8 image or Dict of those observations"),
])
def test_refuses_spaces_it_cannot_handle_in_one_line(env, message, tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--agent", AGENT, "--env", env, "--run-dir", str(run_dir), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not run_dir.exists()


def test_export_is_refused_with_the_reason(tmp_path):
    from rlagents.errors import ExportError

    _, run_dir = _train(tmp_path)
    with pytest.raises(ExportError, match="depends on the LSTM state"):
        load(run_dir).agent.export_module()
