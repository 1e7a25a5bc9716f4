"""Atari through DQN: the standard preprocessing, the Nature-DQN CNN, the `ALE/*` config entry, and a smoke
run of a few hundred steps through the CLI (train, resume, evaluate) with a tiny frame replay buffer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rlagents.agents.dqn import DQNConfig
from rlagents.config import read_config_file, resolve
from rlagents.environments import clip_reward, make_env
from rlagents.evaluate import main as evaluate_main
from rlagents.networks import NatureCNN, make_backbone
from rlagents.train import main as train_main


def run_until_done(env: gym.Env, seed: int = 0, cap: int = 5_000) -> tuple[bool, int]:
    """Random actions until the episode ends; returns (terminated, lives left)."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for _ in range(cap):
        _, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            return terminated, env.unwrapped.ale.lives()
    raise AssertionError("episode did not end")


def test_atari_preprocessing_and_life_loss_for_training_only():
    env = make_env("ALE/Breakout-v5", training=True)
    assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert env.unwrapped._frameskip == 1  # the wrapper skips frames (4, max-pooled), not the ALE
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.25  # v5's sticky actions are kept
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 84, 84) and (obs[:3] == obs[3]).all()  # first stack repeats the first frame
    terminated, lives = run_until_done(env)
    assert terminated and lives == 4  # a lost life ends a training episode…
    env.reset()
    assert env.unwrapped.ale.lives() == 4  # …but the game goes on
    env.close()
    env = make_env("ALE/Breakout-v5")  # evaluation: the whole game
    terminated, lives = run_until_done(env)
    assert terminated and lives == 0
    env.close()


def test_training_rewards_are_clipped_to_their_sign_and_evaluation_rewards_are_not():
    scores = {}
    for training in (True, False):
        env = make_env("ALE/Breakout-v5", training=training)
        env.reset(seed=1)
        rng = np.random.default_rng(1)
        rewards = []
        for _ in range(400):  # bricks of the upper rows score 4 and 7 in Breakout; sign() makes them 1
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            rewards.append(reward)
            if terminated or truncated:
                env.reset()
        scores[training] = set(rewards)
        env.close()
    assert scores[True] <= {0.0, 1.0} and 1.0 in scores[True] and 1.0 in scores[False]
    assert (clip_reward(7.0), clip_reward(-3.0), clip_reward(0.0)) == (1.0, -1.0, 0.0)

    def chain(env: gym.Env) -> list[str]:
        names = []
        while isinstance(env, gym.Wrapper):
            names.append(type(env).__name__)
            env = env.env
        return names

    assert "TransformReward" in chain(make_env("ALE/Pong-v5", training=True))
    assert "TransformReward" not in chain(make_env("ALE/Pong-v5"))  # evaluation: real game scores


def test_nature_cnn_shapes():
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    net = make_backbone(space, "nature")
    assert isinstance(net, NatureCNN) and net.features_dim == 512
    assert [m.out_channels for m in net.convs if isinstance(m, torch.nn.Conv2d)] == [32, 64, 64]
    assert net.dense[0].in_features == 64 * 7 * 7
    assert net(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape == (2, 512)


def test_every_ale_id_gets_the_atari_entry():
    data = read_config_file(Path(__file__).resolve().parent.parent / "configs" / "dqn.yaml")
    for env_id in ("ALE/Pong-v5", "ALE/Breakout-v5"):
        config = resolve(DQNConfig, data, env_id, {}, source="dqn.yaml")
        assert config.agent.network == "nature" and config.agent.frame_stack == 4 and config.agent.lr == 1.0e-4
    assert resolve(DQNConfig, data, "CartPole-v1", {}, source="dqn.yaml").agent.frame_stack == 0


def test_pattern_entries_sit_between_default_and_the_ids_own_entry():
    data = {"default": {"lr": 1.0, "batch_size": 4}, "ALE/*": {"lr": 2.0, "batch_size": 8},
            "ALE/Pong-v5": {"lr": 3.0}}
    pong = resolve(DQNConfig, data, "ALE/Pong-v5", {}, source="t").agent
    assert (pong.lr, pong.batch_size) == (3.0, 8)
    assert resolve(DQNConfig, data, "ALE/Breakout-v5", {}, source="t").agent.lr == 2.0
    assert resolve(DQNConfig, data, "CartPole-v1", {}, source="t").agent.lr == 1.0


def test_pong_smoke_run_trains_resumes_and_evaluates(tmp_path: Path, capsys, monkeypatch):
    # A Pong game lasts ~800 steps, 5 s of greedy CNN forwards here: cap episodes at 80 steps (which also
    # sends truncated episodes through the frame replay) so the three evaluations below stay short.
    from rlagents import environments

    wrap = environments.wrap_atari
    monkeypatch.setattr(environments, "wrap_atari",
                        lambda env, training: gym.wrappers.TimeLimit(wrap(env, training=training), 80))
    run_dir = tmp_path / "pong"
    args = ["--agent", "dqn", "--env", "ALE/Pong-v5", "--steps", "240", "--eval-every", "0", "--eval-episodes", "1",
            "--run-dir", str(run_dir), "--no-progress", "--set", "buffer_size=500", "--set", "learning_starts=160",
            "--set", "batch_size=8", "--set", "checkpoint_every=120", "--set", "checkpoint_replay=true"]
    assert train_main(args) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] == 240 and summary["env_steps_per_s"] > 0 and summary["eval_return_mean"] <= 21
    assert summary["episodes"] >= 2  # episodes ended (truncated) inside the run
    config = (run_dir / "config.yaml").read_text()
    assert "network: nature" in config and "frame_stack: 4" in config
    # as if killed after the step-240 checkpoint: drop the end of the run, give it more steps, resume
    for name in ("final.json", "final.safetensors"):
        (run_dir / "checkpoints" / name).unlink()
    (run_dir / "summary.json").unlink()
    (run_dir / "config.yaml").write_text(config.replace("steps: 240", "steps: 320"))
    assert train_main(["--resume", str(run_dir), "--no-progress"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] == 320 and summary["sessions"] == 2 and summary["env_steps_per_s"] > 0
    capsys.readouterr()
    assert evaluate_main([str(run_dir), "--episodes", "1"]) == 0
    out = capsys.readouterr().out
    assert "dqn on ALE/Pong-v5 (final.json, step 320): return" in out
    shutil.rmtree(run_dir)


def test_legacy_atari_ids_point_to_the_ale_ones(tmp_path: Path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        train_main(["--agent", "dqn", "--env", "PongNoFrameskip-v4", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "use ALE/Pong-v5" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_frame_stack_misuse_is_a_config_error(tmp_path: Path, capsys):
    import pytest

    cases = [("CartPole-v1", ["frame_stack=4", "n_step=1"], "observations must be stacks of that many frames"),
             ("ALE/Pong-v5", ["n_step=3"], "frame_stack replay supports 1-step uniform replay only"),
             ("ALE/Pong-v5", ["buffer_size=8", "batch_size=4"], "buffer_size: replay capacity 8 is too small")]
    for env_id, sets, message in cases:
        with pytest.raises(SystemExit) as exc:
            train_main(["--agent", "dqn", "--env", env_id, "--run-dir", str(tmp_path / "r"), "--eval-episodes", "1",
                        *[arg for s in sets for arg in ("--set", s)]])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "r").exists()
