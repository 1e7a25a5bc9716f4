"""The SB3 reference agents: trained by SB3's learn() inside our loop, with our summary, schedule and tags."""

from __future__ import annotations

import json

import pytest

from rlagents.train import main as train_main

TINY = {"sb3-dqn": ("CartPole-v1", ["--set", "learning_starts=50"]),
        "sb3-ppo": ("Pendulum-v1", ["--set", "n_steps=64", "--set", "batch_size=64", "--set", "n_epochs=1"]),
        "sb3-a2c": ("CartPole-v1", []),
        "sb3-recurrent-ppo": ("CartPoleNoVelocity-v0", ["--set", "n_steps=16", "--set", "batch_size=64",
                                                        "--set", "n_epochs=1", "--set", "lstm_hidden_size=16"])}


def _train(tmp_path, agent: str, seed: int = 0, name: str = "run") -> dict:
    env, extra = TINY[agent]
    run_dir = tmp_path / f"{agent}-{name}"
    code = train_main(["--agent", agent, "--env", env, "--steps", "512", "--eval-every", "256", "--eval-episodes",
                       "2", "--seed", str(seed), "--no-progress", "--run-dir", str(run_dir), "--set", "log_every=256", *extra])
    assert code == 0
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize("agent", sorted(TINY))
def test_sb3_adapter_writes_our_summary(agent, tmp_path, short_dqn_run):
    ours = json.loads((short_dqn_run / "summary.json").read_text())
    summary = _train(tmp_path, agent)
    assert set(summary) - {"costs"} == set(ours) - {"costs"}
    assert set(summary["evaluations"][0]) == set(ours["evaluations"][0])
    assert summary["agent"] == agent and summary["status"] == "completed"
    assert summary["total_steps"] == 512  # the loop's budget, not SB3's rollout boundary
    assert [e["step"] for e in summary["evaluations"]] == [256, 512]  # the loop's evaluation schedule
    assert summary["costs"]["update_ms"] > 0
    assert not list((tmp_path / f"{agent}-run").rglob("*.zip"))  # never SB3's pickled format


def test_sb3_dqn_is_deterministic_logs_our_tags_and_evaluates_from_checkpoint(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from rlagents.evaluate import main as evaluate_main

    first, second = _train(tmp_path, "sb3-dqn", 3, "a"), _train(tmp_path, "sb3-dqn", 3, "b")
    assert first["evaluations"] == [dict(e, train_time_s=f["train_time_s"]) for e, f in
                                    zip(second["evaluations"], first["evaluations"])]
    events = EventAccumulator(str(tmp_path / "sb3-dqn-a")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"eval/return_mean", "charts/episode_return", "charts/steps_per_s", "losses/td_loss",
            "charts/epsilon"} <= tags
    capsys.readouterr()
    assert evaluate_main([str(tmp_path / "sb3-dqn-a"), "--episodes", "2"]) == 0
    assert f"{first['eval_return_mean']:.2f}" in capsys.readouterr().out  # the same greedy policy, reloaded
