"""Fuzzing the config loader and the CLI parser: bad input ends in a clean error, never a traceback."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlagents.agents.dqn import DQNConfig
from rlagents.agents.reinforce import ReinforceConfig
from rlagents.config import TrainConfig, field_types, parse_overrides, read_config_file, resolve
from rlagents.errors import ConfigError, UserError
from rlagents.train import build_parser, prepare

EXAMPLES = int(os.environ.get("RLAGENTS_FUZZ_EXAMPLES", "150"))
KEYS = sorted(set(field_types(DQNConfig)) | set(field_types(TrainConfig)) | set(field_types(ReinforceConfig)))
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.one_of(st.integers(-5, 300), st.text(max_size=3)), max_size=4),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=EXAMPLES, deadline=None)
@given(entry=st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), VALUES, max_size=6),
       agent_config=st.sampled_from([DQNConfig, ReinforceConfig]))
def test_config_entries_resolve_or_raise_config_error(entry, agent_config):
    try:
        resolve(agent_config, {"default": entry}, "CartPole-v1", {}, source="fuzz.yaml")
    except ConfigError:
        pass


@settings(max_examples=EXAMPLES, deadline=None)
@given(pairs=st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), st.text(max_size=10)),
                                st.text(max_size=15)), max_size=4))
def test_set_overrides_resolve_or_raise_config_error(pairs):
    try:
        resolve(DQNConfig, {}, "CartPole-v1", parse_overrides(pairs), source="fuzz")
    except ConfigError:
        pass


@settings(max_examples=EXAMPLES, deadline=None)
@given(text=st.text(max_size=200))
def test_config_files_of_any_text_load_or_raise_config_error(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(text)
        try:
            resolve(DQNConfig, read_config_file(path), "CartPole-v1", {}, source=str(path))
        except ConfigError:
            pass


FLAGS = ["--agent", "--env", "--steps", "--seed", "--set", "--n-envs", "--eval-every", "--eval-episodes", "--device",
         "--config", "--run-dir", "--resume", "--check-env", "--no-check-env", "--no-progress"]
TOKENS = ["dqn", "reinforce", "qlearning", "CartPole-v1", "Pendulum-v1", "FrozenLake-v1", "0", "-1", "1e3", "abc",
          "lr=1e-3", "hidden=8,8", "n_step=0", "steps=10", "cpu", "cuda", "", "=", "missing.yaml"]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=st.lists(st.one_of(st.sampled_from(FLAGS), st.sampled_from(TOKENS), st.text(max_size=6)), max_size=8))
def test_cli_arguments_validate_or_exit_2_and_write_nothing(argv):
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            args = build_parser().parse_args(argv)
            run = prepare(args)  # validation and construction only: writes nothing
            run.envs.close()
        except SystemExit as exc:
            assert exc.code == 2
        except UserError:
            pass
        finally:
            os.chdir(cwd)
        assert not any(Path(tmp).iterdir()), "validation wrote files"


def test_yaml_loading_is_safe(tmp_path: Path):
    path = tmp_path / "evil.yaml"
    path.write_text("default: !!python/object/apply:os.system ['touch pwned']\n")
    try:
        read_config_file(path)
    except ConfigError as exc:
        assert "not valid YAML" in str(exc)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    assert yaml.safe_load("a: 1") == {"a": 1}
