"""Hostile checkpoints: nothing is read outside the checkpoint's folder, every field's type is checked, and
weights that are not finite floats never load."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlagents.agents.dqn import DQNAgent
from rlagents.checkpoint import FORMAT_VERSION, read_checkpoint, save_checkpoint
from rlagents.config import read_config_file, resolve
from rlagents.errors import CheckpointError
from rlagents.evaluate import main as evaluate_main
from rlagents.evaluate import spaces_of
from rlagents.runs import build_agent
from rlagents.state_check import check_state, load_agent_state

OPENED: list[str] | None = None  # paths opened while a test records them (an audit hook cannot be removed)


def _audit(event: str, args: tuple) -> None:
    if OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def run(short_dqn_run: Path, tmp_path: Path) -> Path:
    """A private copy of a finished DQN run, free to damage."""
    return Path(shutil.copytree(short_dqn_run, tmp_path / "run"))


def final(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "final.json"


def edit_json(run_dir: Path, change) -> None:
    record = json.loads(final(run_dir).read_text())
    change(record)
    final(run_dir).write_text(json.dumps(record))


def evaluate_error(run_dir: Path, capsys) -> str:
    """`rlagents.evaluate` on the run must end with exit 2 and one line; returns it."""
    global OPENED
    OPENED = []
    try:
        with pytest.raises(SystemExit) as exc:
            evaluate_main([str(run_dir), "--episodes", "1"])
        opened = OPENED
    finally:
        OPENED = None
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err[:500]
    outside = [p for p in opened if p.endswith((".safetensors", ".json", "passwd"))
               and not Path(os.path.realpath(p)).is_relative_to(os.path.realpath(run_dir))]
    assert not outside, f"read outside the run: {outside}"
    return err


@pytest.mark.parametrize("name", ["../../outside.safetensors", "../outside.safetensors", "/etc/passwd",
                                  "../../../../../../../../etc/passwd", "sub/final.safetensors", "..", ".", "",
                                  ".final.safetensors", "final.json", 7, None, ["final.safetensors"]])
def test_tensor_file_may_only_name_a_file_beside_the_json(run: Path, capsys, name):
    outside = run.parent / "outside.safetensors"  # a valid tensor file outside the checkpoint's folder
    shutil.copy(run / "checkpoints" / "final.safetensors", outside)
    (run / "checkpoints" / "sub").mkdir()
    shutil.copy(outside, run / "checkpoints" / "sub" / "final.safetensors")
    edit_json(run, lambda r: r.update(tensor_file=name))
    err = evaluate_error(run, capsys)
    assert "must be a *.safetensors file name beside the JSON, without folders" in err


def test_a_symlinked_tensor_file_must_stay_in_the_folder(run: Path, capsys):
    tensors = run / "checkpoints" / "final.safetensors"
    outside = run.parent / "elsewhere" / "final.safetensors"
    outside.parent.mkdir()
    shutil.move(tensors, outside)
    tensors.symlink_to(outside)
    err = evaluate_error(run, capsys)
    assert f"is a symlink to {outside}, outside the checkpoint's folder" in err
    tensors.unlink()
    shutil.move(outside, run / "checkpoints" / "real.safetensors")
    tensors.symlink_to("real.safetensors")  # a link within the folder is fine
    assert evaluate_main([str(run), "--episodes", "1"]) == 0


@pytest.mark.parametrize("target", ["/etc/passwd", "elsewhere"])
def test_a_checkpoint_json_symlinked_out_of_the_run_is_refused_not_read(run: Path, capsys, target):
    """The JSON evaluate picks in RUN_DIR (final.json) may not lead outside the run either."""
    ckpt = final(run)
    if target == "elsewhere":  # a whole valid checkpoint, outside the run
        target = run.parent / "elsewhere" / "final.json"
        target.parent.mkdir()
        for path in (ckpt, ckpt.with_suffix(".safetensors")):
            shutil.copy(path, target.parent / path.name)
    ckpt.unlink()
    ckpt.symlink_to(target)
    err = evaluate_error(run, capsys)
    assert f"checkpoint {ckpt} is a symbolic link to {target}, outside its run's checkpoints folder" in err


def test_a_fifo_as_tensor_file_is_refused_not_read(run: Path, capsys):
    tensors = run / "checkpoints" / "final.safetensors"
    tensors.unlink()
    os.mkfifo(tensors)  # reading would block forever
    assert "is not a regular file" in evaluate_error(run, capsys)


@pytest.mark.parametrize("version, message", [
    (-1, "has format version -1; versions start at 1"), (0, "versions start at 1"),
    (True, "format_version must be an integer, got True"), ("1", "format_version must be an integer, got '1'"),
    (1.0, "format_version must be an integer, got 1.0"), (None, "format_version must be an integer, got None"),
    (FORMAT_VERSION + 1, "upgrade rlagents"), (10**40, "upgrade rlagents"),
])
def test_format_version_must_be_an_integer_in_range(run: Path, capsys, version, message):
    edit_json(run, lambda r: r.update(format_version=version))
    assert message in evaluate_error(run, capsys)


@pytest.mark.parametrize("key, value, message", [
    ("agent", 5, "agent must be a string, got 5"), ("agent", "reinforce", "belongs to agent 'reinforce', not 'dqn'"),
    ("env", ["CartPole-v1"], "env must be a string, got ['CartPole-v1']"),
    ("step", "500", "step must be an integer, got '500'"), ("step", -3, "step must be from 0"),
    ("seed", 2**40, "seed must be from 0 to 4294967295"), ("episodes", 1.5, "episodes must be an integer"),
    ("versions", ["torch"], "versions must be a mapping"), ("versions", {"torch": 2}, "versions must map names"),
    ("config", "lr=1", "config must be a mapping"), ("reason", {}, "reason must be a string"),
    ("observation_space", 4, "observation_space must be a string"), ("tensor_sha256", "abc", "must be 64 hex"),
    ("tensor_sha256", 0, "must be 64 hex"), ("state", [1, 2], "state must be a mapping"),
])
def test_every_metadata_field_has_its_type_checked(run: Path, capsys, key, value, message):
    edit_json(run, lambda r: r.update({key: value}))
    assert message in evaluate_error(run, capsys)


@pytest.mark.parametrize("key", ["observation_space", "action_space"])
def test_a_checkpoint_without_its_space_records_is_refused(run: Path, capsys, key):
    edit_json(run, lambda r: r.pop(key))
    assert f"records no {key}" in evaluate_error(run, capsys)


@pytest.mark.parametrize("change, message", [
    (lambda r: r["state"]["agent"].update(deep=json.loads("[" * 70 + "]" * 70)), "nested more than 64 levels"),
    (lambda r: r["state"]["agent"].update(q={"__tensor__": ["q.x"]}), "is corrupt"),
    (lambda r: r["state"]["agent"].update(q={"__tensor__": "no.such.tensor"}), "is corrupt"),
    (lambda r: r["state"]["agent"].update(optimizer={"__items__": [[[1], 2]]}), "is corrupt"),
])
def test_hostile_state_trees_are_refused(run: Path, capsys, change, message):
    edit_json(run, change)
    assert message in evaluate_error(run, capsys)


@pytest.mark.parametrize("key", ["format_version", "step"])
def test_huge_json_numbers_are_refused_without_a_traceback(run: Path, capsys, key):
    text = final(run).read_text()
    start = text.index(f'"{key}": ') + len(key) + 4
    end = start + len(str(json.loads(text)[key]))
    final(run).write_text(text[:start] + "1" * 5000 + text[end:])  # Python's int() refuses > 4,300 digits
    assert "a number of 5,000 characters" in evaluate_error(run, capsys)


# ---------------------------------------------------------------- the state against a fresh agent


def fresh_agent(run_dir: Path) -> DQNAgent:
    data = read_config_file(run_dir / "config.yaml")
    config = resolve(DQNAgent.config_class, data, "CartPole-v1", {}, source="config.yaml")
    return build_agent("dqn", config, *spaces_of("CartPole-v1"), n_envs=1, seed=0, device=torch.device("cpu"))


def resave(run_dir: Path, change) -> Path:
    """Rewrite the run's final checkpoint (tensors and JSON, with a valid SHA-256) after `change(state)`."""
    state, meta = read_checkpoint(final(run_dir))
    change(state)
    meta = {k: v for k, v in meta.items() if k not in ("format_version", "versions", "tensor_file", "tensor_sha256")}
    return save_checkpoint(run_dir / "checkpoints", "final", state, meta)


def first_weight(state: dict) -> str:
    return next(iter(state["agent"]["q"]))


@pytest.mark.parametrize("change, message", [
    (lambda s: s["agent"]["q"].update({first_weight(s): torch.full_like(s["agent"]["q"][first_weight(s)], torch.nan)}),
     "holds NaN or infinite values"),
    (lambda s: s["agent"]["q"][first_weight(s)].view(-1).__setitem__(0, torch.inf), "holds NaN or infinite values"),
    (lambda s: s["agent"]["target"].update({first_weight(s): s["agent"]["target"][first_weight(s)].to(torch.int32)}),
     "has dtype torch.int32; expected floating values (torch.float32)"),
    (lambda s: s["agent"]["q"].update({first_weight(s): torch.zeros(3, 3)}), "has shape (3, 3); expected"),
    (lambda s: s["agent"]["q"].update({first_weight(s): [1.0, 2.0]}), "must be an array, got [1.0, 2.0]"),
    (lambda s: s["agent"]["counters"].update(steps="many"), "counters.steps must be an integer, got 'many'"),
    (lambda s: s["agent"]["counters"].update(steps=True), "counters.steps must be an integer, got True"),
    (lambda s: s["agent"]["counters"].update(updates=float("inf")), "counters.updates is inf, not a finite"),
    (lambda s: s["agent"]["counters"].update(updates=2.0), "counters.updates must be an integer, got 2.0"),
    (lambda s: s["agent"].update(counters=[1, 2]), "counters must be a mapping, got [1, 2]"),
    (lambda s: s["agent"]["rng"].update(bit_generator=7), "rng.bit_generator must be a string, got 7"),
    (lambda s: s["agent"]["optimizer"]["param_groups"][0].update(lr=float("nan")), "lr is nan, not a finite"),
    (lambda s: s["agent"]["optimizer"]["state"][0].update(exp_avg=torch.full((2,), torch.nan)), "holds NaN"),
    (lambda s: s["agent"].pop("target"), "missing key 'target'"),
])
def test_a_state_that_does_not_fit_the_agent_is_a_checkpoint_error(run: Path, change, message):
    path = resave(run, change)
    state, _ = read_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not fit this agent") as exc:
        load_agent_state(fresh_agent(run), state["agent"], path)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_the_real_checkpoints_fit_and_load(run: Path):
    agent = fresh_agent(run)
    for path in sorted((run / "checkpoints").glob("*.json"), key=lambda p: p.name == "final.json"):
        state, _ = read_checkpoint(path)
        load_agent_state(agent, state["agent"], path)
    assert agent.steps == 1500


def test_recorded_experience_may_hold_non_finite_values():
    reference = {"q": torch.zeros(2), "replay": {"rewards": np.zeros(3, np.float32)}}
    loaded = {"q": torch.ones(2), "replay": {"rewards": np.array([1.0, np.nan, np.inf], np.float32)}}
    check_state(loaded, reference, where="c", recorded={"replay"})
    with pytest.raises(CheckpointError, match="c: replay.rewards holds NaN"):
        check_state(loaded, reference, where="c")
    with pytest.raises(CheckpointError, match="replay.rewards has dtype int32; expected floating"):
        check_state({"replay": {"rewards": np.zeros(3, np.int32)}}, reference, where="c", recorded={"replay"})


@pytest.mark.parametrize("dtype", ["nan", "int32"])
def test_evaluate_refuses_non_finite_or_integer_weights(run: Path, capsys, dtype):
    def damage(state):
        for name, weight in state["agent"]["q"].items():
            state["agent"]["q"][name] = (torch.full_like(weight, torch.nan) if dtype == "nan"
                                         else weight.to(torch.int32))
    resave(run, damage)
    assert "does not fit this agent" in evaluate_error(run, capsys)


def test_sha256_of_the_damaged_files_is_checked_first(run: Path, capsys):
    tensors = run / "checkpoints" / "final.safetensors"
    data = tensors.read_bytes()
    tensors.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert "SHA-256 mismatch" in evaluate_error(run, capsys)
    assert hashlib.sha256(data).hexdigest() == json.loads(final(run).read_text())["tensor_sha256"]


@pytest.mark.parametrize("agent, env, extra", [
    ("qlearning", "FrozenLake-v1", ["--set", "update=sarsa"]),
    ("reinforce", "Pendulum-v1", ["--set", "normalize_obs=true"]),
    ("ppo", "Pendulum-v1", ["--set", "normalize_obs=true", "--set", "normalize_reward=true", "--set", "n_steps=30",
                            "--n-envs", "4"]),
    ("planner", "FrozenLake-v1", []), ("dqn", "CartPole-v1", ["--set", "checkpoint_replay=true", "--set", "n_step=3",
                                                              "--n-envs", "2", "--set", "learning_starts=100"]),
    ("sb3-ppo", "Pendulum-v1", ["--set", "normalize=true", "--set", "n_steps=64"]),
])
def test_every_agents_checkpoints_fit_a_fresh_one_env_agent(tmp_path: Path, agent, env, extra):
    """The reference is a fresh agent with one env, as evaluation builds it; checkpoints of training (several
    envs, periodic and final) must all pass the checks and load."""
    from rlagents.agents import agent_class
    from rlagents.train import main as train_main

    run_dir = tmp_path / "run"
    assert train_main(["--agent", agent, "--env", env, "--steps", "400", "--eval-every", "0", "--eval-episodes", "1",
                       "--run-dir", str(run_dir), "--no-progress", "--set", "checkpoint_every=200", *extra]) == 0
    config = resolve(agent_class(agent).config_class, read_config_file(run_dir / "config.yaml"), env, {}, source="c")
    for path in sorted((run_dir / "checkpoints").glob("*.json")):
        state, _ = read_checkpoint(path)
        fresh = build_agent(agent, config, *spaces_of(env), n_envs=1, seed=0, device=torch.device("cpu"))
        load_agent_state(fresh, state["agent"], path)


def test_the_audit_hook_sees_what_is_opened(tmp_path: Path):
    global OPENED
    OPENED = []
    try:
        (tmp_path / "x.json").write_text("{}")
        read_checkpoint_error = pytest.raises(CheckpointError)
        with read_checkpoint_error:
            read_checkpoint(tmp_path / "x.json")
        assert str(tmp_path / "x.json") in OPENED  # so the "nothing outside" assertions above can fail
    finally:
        OPENED = None


def test_a_pretrained_backbone_with_nan_weights_is_refused(classifier_run: Path, tmp_path: Path, capsys):
    from conftest import SMALL_CNN

    from rlagents.train import main as train_main

    backbone = Path(shutil.copytree(classifier_run, tmp_path / "classifier"))
    state, meta = read_checkpoint(backbone / "backbone.json")
    first = next(iter(state["backbone"]))
    state["backbone"][first] = torch.full_like(state["backbone"][first], torch.nan)
    save_checkpoint(backbone, "backbone", state, {k: v for k, v in meta.items()
                                                  if k not in ("format_version", "versions", "tensor_file",
                                                               "tensor_sha256")})
    with pytest.raises(SystemExit) as exc:
        train_main(["--agent", "dqn", "--env", "DigitLock-v0", "--steps", "100", "--run-dir", str(tmp_path / "r"),
                    "--no-progress", "--set", f"backbone={backbone}", *SMALL_CNN])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    assert f"backbone {backbone / 'backbone.json'} does not fit this network's image branch: {first} holds NaN" in err
    assert not (tmp_path / "r").exists()
