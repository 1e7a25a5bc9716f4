"""Config loading: typed coercion, per-env entries, `--set` overrides, unknown keys, resolved round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlagents.agents.dqn import DQNConfig
from rlagents.config import TrainConfig, coerce, dump_resolved, parse_overrides, read_config_file, resolve
from rlagents.errors import ConfigError

DATA = {"default": {"steps": 5000, "lr": "1e-3"}, "CartPole-v1": {"steps": 30000, "hidden": [32, 32]}}


def test_env_entry_overrides_default_and_cli_overrides_both():
    cfg = resolve(DQNConfig, DATA, "CartPole-v1", parse_overrides(["lr=2.5e-4", "double=false"]), source="t")
    assert cfg.train.steps == 30000
    assert cfg.agent.hidden == (32, 32)
    assert cfg.agent.lr == pytest.approx(2.5e-4)
    assert cfg.agent.double is False


def test_default_entry_applies_to_other_envs():
    cfg = resolve(DQNConfig, DATA, "Acrobot-v1", {}, source="t")
    assert cfg.train.steps == 5000
    assert cfg.agent.lr == pytest.approx(1e-3)  # PyYAML's string "1e-3" coerced by the field type
    assert cfg.agent.hidden == DQNConfig().hidden


@pytest.mark.parametrize("value, annotation, expected", [
    ("3", int, 3), ("1e4", int, 10000), ("1_000", int, 1000), ("0.5", float, 0.5), ("yes", bool, True),
    ("off", bool, False), ("64,64", tuple[int, ...], (64, 64)), ("[8, 16]", tuple[int, ...], (8, 16)),
    ("null", float | None, None), ("2", float | None, 2.0),
])
def test_coerce_by_field_type(value, annotation, expected):
    assert coerce(value, annotation, "k") == expected


@pytest.mark.parametrize("pair, message", [
    ("lrr=0.1", "unknown key 'lrr'"),
    ("lr=fast", "lr: expected a number, got 'fast'"),
    ("lr=-1", "lr: bad value -1.0; must be > 0.0"),
    ("batch_size=2.5", "batch_size: expected an integer"),
    ("loss=l1", "loss: bad value 'l1'; allowed: huber, mse"),
    ("double=maybe", "double: expected true or false"),
    ("gamma=1.5", "gamma: bad value 1.5; must be <= 1.0"),
    ("lr=nan", "expected a finite number"),
])
def test_bad_overrides_name_key_value_and_allowed(pair, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        resolve(DQNConfig, DATA, "CartPole-v1", parse_overrides([pair]), source="t")


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        resolve(DQNConfig, {"default": {"learning_rate": 1}}, "X-v0", {}, source="f.yaml")
    assert "f.yaml: unknown key 'learning_rate'" in str(err.value)
    assert "lr" in str(err.value) and "steps" in str(err.value)


def test_cross_field_validation():
    with pytest.raises(ConfigError, match="batch_size .* must not exceed buffer_size"):
        resolve(DQNConfig, {}, "X", {"batch_size": "64", "buffer_size": "10"}, source="t")


def test_set_needs_key_equals_value():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["lr"])


def test_read_config_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        read_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("default: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("default: 3\n")
    with pytest.raises(ConfigError, match="entry 'default' must be a mapping"):
        read_config_file(scalar)


def test_resolved_dump_reproduces_the_config(tmp_path: Path):
    cfg = resolve(DQNConfig, DATA, "CartPole-v1", {"lr": "3e-4"}, source="t")
    path = tmp_path / "config.yaml"
    path.write_text(dump_resolved(cfg, agent="dqn", env_id="CartPole-v1", seed=7, device="cpu"))
    data = read_config_file(path)
    assert data["run"] == {"agent": "dqn", "env": "CartPole-v1", "seed": 7, "device": "cpu"}
    again = resolve(DQNConfig, data, "CartPole-v1", {}, source=str(path))
    assert again.agent == cfg.agent and again.train == cfg.train
    assert yaml.safe_load(path.read_text())["default"]["hidden"] == [32, 32]


def test_shipped_config_resolves_for_each_env_entry():
    data = read_config_file(Path(__file__).parents[1] / "configs" / "dqn.yaml")
    for env_id in data:
        if env_id not in ("default", "run"):
            cfg = resolve(DQNConfig, data, env_id, {}, source="dqn.yaml")
            assert isinstance(cfg.train, TrainConfig)
