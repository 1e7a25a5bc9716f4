"""Exact resume: a run stopped after a checkpoint and resumed from it ends exactly as the uninterrupted run.

The crash is simulated by rewinding a finished run to one of its periodic checkpoints (deleting what came
later, as if the process had been killed just after writing it) and resuming that copy.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from rlagents.checkpoint import step_checkpoints
from rlagents.environments import make_vec_env
from rlagents.train import main as train_main
from tests.test_determinism import scalars


def rewind_to(run_dir: Path, keep: Path) -> None:
    """Leave `run_dir` as a SIGKILL right after checkpoint `keep` would have: no later checkpoints, no summary."""
    for ckpt in step_checkpoints(run_dir):
        if ckpt.name > keep.name:
            ckpt.unlink()
            ckpt.with_suffix(".safetensors").unlink()
    for name in ("final.json", "final.safetensors"):
        (run_dir / "checkpoints" / name).unlink()
    (run_dir / "summary.json").unlink()


@pytest.mark.parametrize("agent, env, steps, sets", [
    ("dqn", "CartPole-v1", 3000, ["checkpoint_replay=true", "learning_starts=300", "n_step=3"]),
    # recurrent DQN: the training envs' hidden states, the replay's stored sequences and pending slots carry over
    ("dqn", "CartPoleNoVelocity-v0", 1500, ["recurrent=lstm", "recurrent_hidden=16", "checkpoint_replay=true",
                                            "n_envs=2", "learning_starts=300", "n_step=3", "sequence_length=8",
                                            "burn_in=2", "sequence_overlap=4", "batch_size=8"]),
    ("reinforce", "CartPole-v1", 4000, []),
    # checkpoints fall mid-rollout; normaliser statistics and the running discounted returns carry over
    ("ppo", "CartPole-v1", 3000, ["n_steps=48", "normalize_obs=true", "normalize_reward=true"]),
    ("ppo", "Pendulum-v1", 2400, ["n_steps=70", "batch_size=128", "target_kl=0.02", "clip_range_vf=0.5"]),
    # gSDE: the noise θ in use (checkpoints fall between its resamples) and the RNG that draws the next one
    ("ppo", "Pendulum-v1", 2400, ["n_steps=70", "batch_size=128", "use_sde=true", "sde_sample_freq=9"]),
    # recurrent: the training envs' hidden states and the rollout's initial states carry over
    ("ppo", "CartPole-v1", 3000, ["recurrent=lstm", "recurrent_hidden=16", "n_steps=48", "batch_size=96"]),
    ("ppo", "CartPole-v1", 2400, ["recurrent=gru", "recurrent_hidden=16", "n_steps=40", "shared_backbone=true"]),
    ("reinforce", "CartPole-v1", 4000, ["recurrent=lstm", "recurrent_hidden=16", "truncation=bootstrap"]),
    ("qlearning", "FrozenLake-v1", 6000, ["n_envs=2"]),
    ("qlearning", "Blackjack-v1", 6000, ["n_envs=2"]),  # Tuple observations in the in-flight record
    ("planner", "FrozenLake-v1", 3000, []),
    ("planner", "CartPole-v1", 600, []),
])
def test_resumed_run_matches_the_uninterrupted_one(agent, env, steps, sets, tmp_path: Path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    args = ["--agent", agent, "--env", env, "--seed", "3", "--steps", str(steps), "--eval-every", str(steps // 6),
            "--eval-episodes", "5", "--no-progress", "--set", f"checkpoint_every={steps // 3}",
            "--set", "keep_checkpoints=5", "--set", f"log_every={steps // 6}"]
    for s in sets:
        args += ["--set", s]
    assert train_main([*args, "--run-dir", str(whole)]) == 0
    shutil.copytree(whole, resumed)
    first = step_checkpoints(resumed)[0]
    rewind_to(resumed, first)
    # TensorBoard reads a run's event files in name order, and a name starts with its creation second: a
    # resume within the same second as the original run's start (only possible in a test) could sort first.
    time.sleep(1.1)
    assert train_main(["--resume", str(resumed), "--no-progress"]) == 0

    a = json.loads((whole / "summary.json").read_text())
    b = json.loads((resumed / "summary.json").read_text())
    assert b["sessions"] == 2
    assert [e["return_mean"] for e in a["evaluations"]] == [e["return_mean"] for e in b["evaluations"]]
    assert a["final_eval_returns"] == b["final_eval_returns"] and a["episodes"] == b["episodes"]
    assert scalars(whole) == scalars(resumed)


def test_restore_episodes_replays_the_running_episodes():
    envs = make_vec_env("CartPole-v1", 3, record_episodes=True)
    obs, _ = envs.reset(seed=11)
    rng = np.random.default_rng(0)
    for _ in range(40):  # some envs finish episodes and autoreset from their own np_random on the way
        obs, *_ = envs.step(rng.integers(0, 2, size=3))
    snapshot = envs.episode_snapshot()
    copy = make_vec_env("CartPole-v1", 3, record_episodes=True)
    rebuilt, restored = copy.restore_episodes(snapshot, obs, fallback_seed=99)
    assert restored.all() and np.array_equal(rebuilt, obs)
    actions = rng.integers(0, 2, size=(25, 3))
    for a in actions:  # and both go on identically
        assert np.array_equal(envs.step(a)[0], copy.step(a)[0])


def test_an_env_that_does_not_replay_starts_a_new_episode():
    envs = make_vec_env("CartPole-v1", 2, record_episodes=True)
    obs, _ = envs.reset(seed=1)
    obs, *_ = envs.step(np.array([0, 1]))
    snapshot = envs.episode_snapshot()
    tampered = obs.copy()
    tampered[1, 0] += 1.0  # env 1's saved observation no longer matches what its replay gives
    rebuilt, restored = make_vec_env("CartPole-v1", 2, record_episodes=True).restore_episodes(
        snapshot, tampered, fallback_seed=5)
    assert restored.tolist() == [True, False]
    assert np.array_equal(rebuilt[0], obs[0]) and not np.array_equal(rebuilt[1], tampered[1])
