"""Shared fixtures: a short trained DQN run that several tests read."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def short_dqn_run(tmp_path_factory):
    """A 1,500-step DQN run on CartPole with two evaluations and a periodic checkpoint."""
    from rlagents.train import main

    run_dir = tmp_path_factory.mktemp("runs") / "short"
    code = main(["--agent", "dqn", "--env", "CartPole-v1", "--steps", "1500", "--seed", "3", "--run-dir",
                 str(run_dir), "--eval-every", "750", "--eval-episodes", "4", "--no-progress",
                 "--set", "learning_starts=200", "--set", "checkpoint_every=1000"])
    assert code == 0
    return run_dir
