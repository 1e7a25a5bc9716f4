"""Shared fixtures: a short trained DQN run and a small trained digit classifier that several tests read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlagents.threads import set_cpu_threads

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen
set_cpu_threads(1)


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


SMALL_CNN = ["--set", "cnn_channels=4,8,8", "--set", "cnn_features=16"]  # a CNN small enough for tests


@pytest.fixture(scope="session")
def classifier_run(tmp_path_factory) -> Path:
    """A classifier run (2 epochs, `SMALL_CNN`) whose backbone agents can load."""
    from rlagents.classify import main as classify_main

    run_dir = tmp_path_factory.mktemp("classify") / "run"
    assert classify_main(["--run-dir", str(run_dir), "--no-progress", "--set", "epochs=2", *SMALL_CNN]) == 0
    return run_dir
