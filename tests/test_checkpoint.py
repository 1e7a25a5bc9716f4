"""Checkpoints: nested state round-trips, save → load gives identical greedy actions, bad files refused."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlagents.agents.dqn import DQNAgent, DQNConfig
from rlagents.checkpoint import (CHECKPOINT_DIR, atomic_write_bytes, flatten_state, read_checkpoint,
                                 remove_stale_temp_files, save_checkpoint, unflatten_state)
from rlagents.errors import CheckpointError


def make_agent(seed: int, **kw) -> DQNAgent:
    cfg = DQNConfig(hidden=(16, 16), learning_starts=10, batch_size=8, train_every=1, **kw)
    return DQNAgent(cfg, gym.spaces.Box(-2, 2, (4,), np.float32), gym.spaces.Discrete(3), n_envs=1,
                    total_steps=1000, device=torch.device("cpu"), seed=seed)


def trained_agent(**kw) -> DQNAgent:
    agent = make_agent(0, **kw)
    rng = np.random.default_rng(0)
    for _ in range(60):
        obs, nxt = rng.normal(size=(1, 4)).astype(np.float32), rng.normal(size=(1, 4)).astype(np.float32)
        agent.observe(obs, np.array([rng.integers(3)]), np.array([1.0]), nxt, np.array([False]), np.array([False]))
    return agent


def test_flatten_round_trip_of_nested_state():
    state = {"a": torch.arange(3), "b": [np.ones((2, 2), np.float32), {"c": 1.5, "d": None}],
             "opt": {0: {"step": torch.tensor(3.0)}, 1: {"step": torch.tensor(4.0)}}, "s": "x", "big": 2 ** 100}
    tensors: dict = {}
    tree = flatten_state(state, tensors)
    json.dumps(tree)  # the remainder is plain JSON
    back = unflatten_state(json.loads(json.dumps(tree)), tensors)
    assert torch.equal(back["a"], state["a"]) and np.array_equal(back["b"][0], state["b"][0])
    assert back["b"][1] == {"c": 1.5, "d": None} and back["big"] == 2 ** 100
    assert set(back["opt"]) == {0, 1} and back["opt"][1]["step"].item() == 4.0


def test_save_load_gives_identical_greedy_actions_and_counters(tmp_path: Path):
    agent = trained_agent(dueling=True)
    path = save_checkpoint(tmp_path, "final", agent.state_dict(), {"agent": "dqn", "env": "E-v0"})
    fresh = make_agent(seed=123, dueling=True)
    obs = np.random.default_rng(1).normal(size=(256, 4)).astype(np.float32)
    assert not np.array_equal(fresh.act(obs, explore=False), agent.act(obs, explore=False))
    state, meta = read_checkpoint(path, agent="dqn", env="E-v0")
    fresh.load_state_dict(state)
    assert np.array_equal(fresh.act(obs, explore=False), agent.act(obs, explore=False))
    assert fresh.steps == agent.steps and fresh.updates == agent.updates > 0
    assert meta["format_version"] == 1 and "torch" in meta["versions"]
    # the optimizer state survives too: one more identical update keeps both agents identical
    assert fresh.optimizer.state_dict()["state"][0]["exp_avg"].equal(agent.optimizer.state_dict()["state"][0]["exp_avg"])


def test_checkpoint_files_hold_no_pickle(tmp_path: Path):
    path = save_checkpoint(tmp_path, "c", trained_agent().state_dict(), {"agent": "dqn", "env": "E"})
    json.loads(path.read_text())
    assert (tmp_path / "c.safetensors").read_bytes()[:8] != pickle.dumps(0)[:8]


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path, "c", trained_agent().state_dict(), {"agent": "dqn", "env": "E-v0"})


def test_wrong_agent_or_env_is_refused(saved: Path):
    with pytest.raises(CheckpointError, match="belongs to agent 'dqn', not 'reinforce'"):
        read_checkpoint(saved, agent="reinforce")
    with pytest.raises(CheckpointError, match="trained on env 'E-v0', not 'CartPole-v1'"):
        read_checkpoint(saved, env="CartPole-v1")


def test_corrupt_tensor_file_is_detected(saved: Path):
    tensor_file = saved.with_suffix(".safetensors")
    data = bytearray(tensor_file.read_bytes())
    data[-5] ^= 0xFF
    tensor_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(saved)


def test_missing_tensor_file_and_bad_json_and_newer_format(saved: Path):
    record = json.loads(saved.read_text())
    record["format_version"] = 99
    saved.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="format version 99"):
        read_checkpoint(saved)
    saved.write_text("{ not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_checkpoint(saved)
    saved.with_suffix(".safetensors").unlink()
    saved.write_text(json.dumps(dict(record, format_version=1)))
    with pytest.raises(CheckpointError, match="missing"):
        read_checkpoint(saved)


def test_a_pickle_payload_posing_as_a_checkpoint_never_runs(tmp_path: Path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(Payload()))
    (tmp_path / "evil.json").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "evil.json")
    record = {"format_version": 1, "agent": "dqn", "env": "E", "tensor_file": "evil.safetensors",
              "tensor_sha256": __import__("hashlib").sha256((tmp_path / "evil.safetensors").read_bytes()).hexdigest(),
              "state": {"q": {"__tensor__": "x"}}}
    (tmp_path / "evil.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(tmp_path / "evil.json")
    assert not marker.exists()


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path: Path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"good")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"half")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path: Path):
    folder = tmp_path / CHECKPOINT_DIR
    atomic_write_bytes(folder / "step_000000000500.json", b"{}")
    (folder / ".step_000000001000.json.x1y2z3.tmp").write_bytes(b"half a checkpoint")
    removed = remove_stale_temp_files(tmp_path)
    assert [p.name for p in removed] == [".step_000000001000.json.x1y2z3.tmp"]
    assert [p.name for p in folder.iterdir()] == ["step_000000000500.json"]


def test_checkpoint_for_other_spaces_is_refused(saved: Path):
    from rlagents.checkpoint import check_spaces

    _, meta = read_checkpoint(saved)
    meta = dict(meta, observation_space=repr(gym.spaces.Box(-2, 2, (4,), np.float32)),
                action_space=repr(gym.spaces.Discrete(3)))
    check_spaces(meta, gym.spaces.Box(-2, 2, (4,), np.float32), gym.spaces.Discrete(3), saved)
    with pytest.raises(CheckpointError, match="saved for action_space Discrete\\(3\\), but the env now has Discrete\\(2\\)"):
        check_spaces(meta, gym.spaces.Box(-2, 2, (4,), np.float32), gym.spaces.Discrete(2), saved)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_users_umask_like_any_new_file(tmp_path: Path, umask: int):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "atomic.bin", b"x")
        (tmp_path / "plain.bin").write_bytes(b"x")
        path = save_checkpoint(tmp_path / "ck", "c", {"w": torch.zeros(2)}, {"agent": "dqn", "env": "E"})
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "atomic.bin", tmp_path / "plain.bin", path,
                                                             path.with_suffix(".safetensors")]}
    assert set(modes.values()) == {expected}, modes
