"""Numbers the OS or a library rejects: seeds, thread counts, run lengths, buffers that cannot fit (exit 2)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from rlagents import validate
from rlagents.classify import main as classify_main
from rlagents.compare import main as compare_main
from rlagents.config import MAX_STEPS, MAX_TORCH_THREADS, coerce
from rlagents.errors import ConfigError, UserError
from rlagents.frame_replay import FrameReplayBuffer
from rlagents.models.mpc import TransitionBuffer
from rlagents.replay import PrioritizedReplayBuffer, ReplayBuffer
from rlagents.evaluate import main as evaluate_main
from rlagents.train import main as train_main
from rlagents.validate import SEED_MAX, check_count, check_seed, format_bytes, require_memory


def one_line_error(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err[:500]
    return err


@pytest.mark.parametrize("value", [0, 1, SEED_MAX])
def test_seeds_in_range_pass(value):
    assert check_seed(value) == value


@pytest.mark.parametrize("value", [-1, SEED_MAX + 1, 10**100, True, "3", 3.0, None])
def test_seeds_out_of_range_or_of_another_type_fail(value):
    with pytest.raises(UserError, match=r"--seed must be an integer from 0 to 4,294,967,295 \(2\*\*32 - 1\)"):
        check_seed(value)


def test_counts_are_bounded():
    assert check_count(5, "--episodes", high=10) == 5
    with pytest.raises(UserError, match="--episodes must be an integer from 1 to 10, got 0"):
        check_count(0, "--episodes", high=10)
    with pytest.raises(UserError, match="--seeds must be an integer from 1 to 1,000, got 1000000000"):
        check_count(10**9, "--seeds", high=1000)


def test_require_memory_names_the_need_and_the_setting(monkeypatch):
    monkeypatch.setattr(validate, "available_memory", lambda: 2_000_000_000)
    require_memory(1_999_999_999, "a buffer", "lower buffer_size")
    with pytest.raises(ConfigError, match="a buffer needs 3.0 GB of memory, but only 2.0 GB is available: lower "
                                          "buffer_size"):
        require_memory(3_000_000_000, "a buffer", "lower buffer_size")
    monkeypatch.setattr(validate, "available_memory", lambda: None)  # unknown: no check
    require_memory(10**30, "a buffer", "")


def test_available_memory_is_read_here():
    available = validate.available_memory()
    assert available is not None and available > 0


@pytest.mark.parametrize("n, text", [(0, "0 bytes"), (999, "999 bytes"), (1536, "1.5 KB"), (7.1e9, "7.1 GB"),
                                     (5.2e22, "52,000,000.0 PB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_every_preallocated_buffer_checks_memory_first(monkeypatch):
    monkeypatch.setattr(validate, "available_memory", lambda: 10**6)
    dict_space = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, (1, 12, 12), np.uint8), "dial": gym.spaces.Discrete(10)})
    for build, need in [(lambda: ReplayBuffer(10**5, (4,), np.float32), "5.2 MB"),
                        (lambda: PrioritizedReplayBuffer(10**5, (4,), np.float32), "8.4 MB"),
                        (lambda: ReplayBuffer(10**4, (), np.float32, obs_space=dict_space), "3.2 MB"),
                        (lambda: FrameReplayBuffer(10**4, (84, 84), 4, 1, 0.99), "70.8 MB"),
                        (lambda: TransitionBuffer(10**5, 3, 1), "3.6 MB")]:
        with pytest.raises(ConfigError, match=f"needs {need} of memory, but only 1.0 MB is available"):
            build()
    ReplayBuffer(1000, (4,), np.float32)  # 48 KB fits


@pytest.mark.parametrize("argv, message", [
    (["--set", "buffer_size=100000000000"], "a replay buffer of 100,000,000,000 transitions needs 5.2 TB of memory"),
    (["--set", "buffer_size=1e18"], "needs 52,000.0 PB of memory"),
    (["--set", "torch_threads=65536"], f"torch_threads: bad value 65536; must be <= {MAX_TORCH_THREADS:,}"),
    (["--steps", "1000000000000"], f"steps: bad value 1000000000000; must be <= {MAX_STEPS:,}"),
    (["--set", "steps=1e300"], "steps: '1e300' is too large; integers may be at most 2**63 - 1"),
    (["--eval-episodes", "10000000"], "eval_episodes: bad value 10000000; must be <= 1,000,000"),
    (["--set", "eval_envs=100000"], "eval_envs: bad value 100000; must be <= 256"),
    (["--set", "hidden=1e30"], "hidden: '1e30' is too large"),
    (["--set", "hidden=1000000000"], "hidden: bad value (1000000000,); must be <= 65,536"),
    (["--set", "hidden=65536,65536"], "hidden=65536,65536 (4,294,967,296 weights between its layers, with gradients "
                                      "and optimizer state) needs 68.7 GB of memory"),
    (["--set", "batch_size=" + "9" * 400], "batch_size: expected an integer, got '9999"),
    (["--set", "lr=1" + "0" * 400], "lr: expected a finite number"),
])
def test_numbers_a_library_rejects_are_one_line_errors_before_anything_is_written(tmp_path: Path, capsys, argv,
                                                                                   message):
    err = one_line_error(train_main, ["--agent", "dqn", "--env", "CartPole-v1", "--run-dir", str(tmp_path / "r"),
                                      "--no-progress", *argv], capsys)
    assert message in err and len(err) < 400, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("agent, setting, message", [
    ("planner", "buffer_size=100000000000", "a transition buffer of 100,000,000,000 transitions needs 3.6 TB"),
    ("planner", "model_hidden=1000000000", "model_hidden: bad value (1000000000,); must be <= 65,536"),
    ("sb3-ppo", "net_arch=1000000000", "net_arch: bad value (1000000000,); must be <= 65,536"),
    ("reinforce", "fusion=1000000000", "fusion: bad value (1000000000,); must be <= 65,536"),
])
def test_other_agents_sizes_are_checked_too(tmp_path: Path, capsys, agent, setting, message):
    err = one_line_error(train_main, ["--agent", agent, "--env", "Pendulum-v1", "--run-dir", str(tmp_path / "r"),
                                      "--set", setting, "--no-progress"], capsys)
    assert message in err


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "--seed must be an integer from 0 to 4,294,967,295 (2**32 - 1), got -1"),
    (["--seed", str(2**32)], "got 4294967296"),
    (["--set", f"split_seed={2**32}"], "split_seed: bad value 4294967296; must be <= 4,294,967,295"),
    (["--set", "torch_threads=100000"], "torch_threads: bad value 100000; must be <= 1,024"),
])
def test_classify_refuses_seeds_and_threads_out_of_range(tmp_path: Path, capsys, argv, message):
    err = one_line_error(classify_main, ["--run-dir", str(tmp_path / "r"), "--no-progress", *argv], capsys)
    assert message in err
    assert not (tmp_path / "r").exists()


def test_integers_beyond_int64_are_refused_by_every_int_field():
    assert coerce(str(2**63 - 1), int, "k") == 2**63 - 1
    for value in (2**63, -(2**63) - 1, "1e19", 10**100):
        with pytest.raises(ConfigError, match="k: .* is too large; integers may be at most 2\\*\\*63 - 1"):
            coerce(value, int, "k")
    with pytest.raises(ConfigError, match="expected a number"):
        coerce(10**400, float, "k")  # float() of it overflows


SEED_RANGE = "--seed must be an integer from 0 to 4,294,967,295 (2**32 - 1), got"


@pytest.mark.parametrize("value", ["-1", str(2**32), str(10**100), "9" * 5000, "abc", "1e3", ""])
def test_train_and_evaluate_refuse_seeds_out_of_range(tmp_path: Path, short_dqn_run: Path, capsys, value):
    err = one_line_error(train_main, ["--agent", "dqn", "--env", "CartPole-v1", "--run-dir", str(tmp_path / "r"),
                                      "--no-progress", "--seed", value], capsys)
    assert SEED_RANGE in err and len(err) < 300
    assert not (tmp_path / "r").exists()
    err = one_line_error(evaluate_main, [str(short_dqn_run), "--seed", value], capsys)
    assert SEED_RANGE in err and len(err) < 300


@pytest.mark.parametrize("value, message", [
    ("0", "--episodes must be an integer from 1 to 1,000,000, got 0"), ("-5", "got -5"),
    (str(10**7), "got 10000000"), ("9" * 5000, "got '9999"), ("x", "got 'x'"),
])
def test_evaluate_bounds_episodes(short_dqn_run: Path, capsys, value, message):
    assert message in one_line_error(evaluate_main, [str(short_dqn_run), "--episodes", value], capsys)


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds 0: a count of seeds must be at least 1 (--seeds 5 runs seeds 0-4)"),
    (["--seeds", str(10**12)], "--seeds must name 1 to 10,000 seeds, got '1000000000000'"),  # hung before
    (["--workers", "0"], "--workers must be an integer from 1 to 1,024, got 0"),
    (["--workers", "100000"], "--workers must be an integer from 1 to 1,024, got 100000"),
    (["--agents", "dqn,reinforce,sb3-dqn", "--seeds", "1000", "--env", "CartPole-v1,Acrobot-v1,MountainCar-v0,"
      "LunarLander-v3"], "3 agents × 4 envs × 1000 seeds is 12,000 runs; one comparison runs at most 10,000"),
])
def test_compare_bounds_seeds_workers_and_runs(tmp_path: Path, capsys, argv, message):
    base = {"--agents": "dqn", "--env": "CartPole-v1"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    args = [item for pair in base.items() for item in pair] + ["--out", str(tmp_path / "out"), "--no-progress"]
    assert message in one_line_error(compare_main, args, capsys)
    assert not (tmp_path / "out").exists()
