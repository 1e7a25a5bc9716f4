"""Hostile config and JSON files: bounded parsing, duplicate keys, short one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rlagents.classify import main as classify_main
from rlagents.config import read_config_file
from rlagents.errors import ConfigError, UserError
from rlagents.safeload import (MAX_CONFIG_BYTES, MAX_DEPTH, MAX_NUMBER_CHARS, MAX_YAML_NODES, depth_of, load_json,
                               load_yaml, read_json, shown)
from rlagents.train import main as train_main

LAUGHS = "".join(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9 if prev else ['lol'] * 9)}]\n"
                 for prev, name in zip([None, "a", "b", "c", "d", "e", "f", "g"], "abcdefgh")) + "default: {lr: *h}\n"


def train_with_config(tmp_path: Path, text: str | bytes, capsys) -> str:
    """Run `rlagents.train` on a config file holding `text`; returns its one-line error (exit 2 required)."""
    path = tmp_path / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SystemExit) as exc:
        train_main(["--agent", "dqn", "--env", "CartPole-v1", "--config", str(path), "--run-dir",
                    str(tmp_path / "run"), "--no-progress", "--steps", "10"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err[:500]
    assert not (tmp_path / "run").exists()
    return err


def test_billion_laughs_is_refused_in_one_short_line(tmp_path: Path, capsys):
    assert len(LAUGHS) < 400  # the issue's was 364 bytes and made a 312 MB message; 9**8 = 43M nodes
    err = train_with_config(tmp_path, LAUGHS, capsys)
    assert f"aliases expand it to more than {MAX_YAML_NODES:,} nodes" in err and len(err) < 300


@pytest.mark.parametrize("text, message", [
    ("default:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(1000)), f"nested more than {MAX_DEPTH} levels"),
    ("default: " + "[" * 1000 + "]" * 1000 + "\n", f"nested more than {MAX_DEPTH} levels"),
    ("default: {lr: 1.0e-3, lr: 2.0e-3}\n", "found duplicate key 'lr' (line 1"),
    ("default:\n  lr: 1.0e-3\ndefault:\n  lr: 5.0e-3\n", "found duplicate key 'default' (line 3, column 1)"),
    ("default: {steps: " + "9" * 5000 + "}\n", f"found a number of 5,000 characters (at most {MAX_NUMBER_CHARS})"),
    ("default: {lr: 0." + "1" * 5000 + "}\n", "found a number of 5,002 characters"),
    ("default: &a {hidden: [*a]}\n", "an alias refers to the node that contains it"),
    ("default: {lr: \x07}\n", "special characters are not allowed"),
    (b"default: {lr: \xff}\n", "is not UTF-8 text"),
    ("default: !!python/object/apply:os.system ['touch pwned']\n", "could not determine a constructor"),
    ("default: {hidden: {" + ", ".join(f"k{i}: {i}" for i in range(2000)) + "}}\n", "hidden: expected a list like"),
])
def test_hostile_yaml_is_a_one_line_error(tmp_path: Path, capsys, text, message):
    err = train_with_config(tmp_path, text, capsys)
    assert message in err and len(err) < 400, err[:400]
    assert not Path("pwned").exists()


def test_wrong_types_are_echoed_short(tmp_path: Path, capsys):
    err = train_with_config(tmp_path, "default: {lr: [" + ", ".join(["x" * 50] * 1000) + "]}\n", capsys)
    assert "lr: expected a number, got ['xxxx" in err and len(err) < 300


def test_oversized_config_and_special_files_are_refused(tmp_path: Path, capsys):
    err = train_with_config(tmp_path, "# pad\n" * (MAX_CONFIG_BYTES // 6 + 1), capsys)
    assert f"a config file may have at most {MAX_CONFIG_BYTES:,}" in err
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # reading it would block forever
    for config, message in ((fifo, "is not a regular file"), (tmp_path, "is a directory"),
                            (Path("/dev/zero"), "is not a regular file")):
        with pytest.raises(SystemExit) as exc:
            train_main(["--agent", "dqn", "--env", "CartPole-v1", "--config", str(config), "--no-progress"])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and err.count("\n") == 1


def test_merge_keys_still_work_and_may_be_overridden(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("default: &base {lr: 1.0e-3, steps: 500}\nCartPole-v1:\n  <<: *base\n  steps: 900\n")
    assert read_config_file(path)["CartPole-v1"] == {"lr": 1.0e-3, "steps": 900}


@pytest.mark.parametrize("run, message", [
    ("{agent: dqn, env: CartPole-v1, seed: -1}", "run: seed must be an integer from 0 to 4,294,967,295, got -1"),
    ("{agent: dqn, env: CartPole-v1, seed: 4294967296}", "run: seed must be an integer from 0 to"),
    ("{agent: dqn, env: CartPole-v1, seed: abc}", "got 'abc'"),
    ("{agent: dqn, env: CartPole-v1, seed: true}", "got True"),
    ("{agent: [dqn], env: CartPole-v1}", "run: agent must be a non-empty string, got ['dqn']"),
    ("{agent: dqn, env: {id: 1}}", "run: env must be a non-empty string"),
    ("{agent: dqn, env: CartPole-v1, device: tpu}", "run: device must be one of auto, cpu, cuda, got 'tpu'"),
])
def test_a_runs_config_yaml_with_wrong_types_is_refused(tmp_path: Path, capsys, run, message):
    path = tmp_path / "config.yaml"
    path.write_text(f"run: {run}\ndefault: {{steps: 10}}\n")
    with pytest.raises(SystemExit) as exc:
        train_main(["--config", str(path), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and err.count("\n") == 1, err
    with pytest.raises(ConfigError, match="run: "):
        read_config_file(path)


def test_classify_reads_configs_through_the_same_loader(tmp_path: Path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("run: {seed: 1, data: [a, b]}\ndefault: {epochs: 1}\n")
    with pytest.raises(SystemExit) as exc:
        classify_main(["--config", str(path), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "run: data must be a folder name, or null" in err and err.count("\n") == 1
    path.write_text(LAUGHS.replace("default: {lr: *h}", "default: {epochs: *h}"))
    with pytest.raises(SystemExit):
        classify_main(["--config", str(path), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert "aliases expand it" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- JSON and the bounded readers


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, f"nested more than {MAX_DEPTH} levels deep"),
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"nested more than {MAX_DEPTH} levels deep"),
    ("[" + "9" * 5000 + "]", "a number of 5,000 characters"),
    ("[1." + "9" * 5000 + "]", "a number of 5,002 characters"),
    ('{"a": 1, "a": 2}', "duplicate key 'a'"),
    ("{x", "Expecting property name"),
])
def test_hostile_json_is_refused(text, message):
    with pytest.raises(UserError, match="f.json is not valid JSON: " + message.replace("(", r"\(")):
        load_json(text, "f.json")


def test_json_within_the_bounds_loads():
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert depth_of(load_json(nested, "f")) == MAX_DEPTH
    assert load_json('{"n": ' + "9" * MAX_NUMBER_CHARS + ', "x": NaN}', "f")["n"] == int("9" * MAX_NUMBER_CHARS)


def test_read_json_refuses_special_and_oversized_files(tmp_path: Path):
    with pytest.raises(UserError, match="summary not found"):
        read_json(tmp_path / "missing.json", "summary")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"x": "y" * 100}))
    with pytest.raises(UserError, match="a summary may have at most 10 bytes"):
        read_json(big, "summary", limit=10)
    with pytest.raises(UserError, match="is not a regular file"):
        read_json(Path("/dev/null"), "summary")


def test_yaml_loader_limits_directly():
    assert load_yaml("a: [1, 2]\n", "f") == {"a": [1, 2]}
    with pytest.raises(ConfigError, match="more than 100,000 nodes"):
        load_yaml("a: &a [" + ", ".join(["x"] * 400) + "]\nb: [" + ", ".join(["*a"] * 400) + "]\n", "f")


def test_shown_cuts_any_value_short():
    assert len(shown("x" * 10**6)) <= 80 and len(shown(list(range(10**6)))) <= 80
    nested: list = []
    for _ in range(10_000):
        nested = [nested]
    assert len(shown(nested)) <= 80
