"""Fuzzing the config loader, the CLI parser, checkpoints and run directories: bad input ends in a clean error,
never a traceback, and a checkpoint never makes the loader read outside its folder."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from rlagents.agents.dqn import DQNConfig
from rlagents.agents.reinforce import ReinforceConfig
from rlagents.checkpoint import check_spaces, read_checkpoint
from rlagents.config import TrainConfig, field_types, parse_overrides, read_config_file, resolve
from rlagents.errors import ConfigError, UserError
from rlagents.evaluate import spaces_of
from rlagents.runs import build_agent
from rlagents.state_check import load_agent_state
from rlagents.train import build_parser, prepare
from rlagents.train import main as train_main

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


# ---------------------------------------------------------------- run directories: checkpoints and config.yaml

OPENED: list[str] | None = None  # files opened while a fuzzed load runs (an audit hook cannot be removed)


def _audit(event: str, args: tuple) -> None:
    if OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)

JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=12),
                        st.sampled_from(["../final.safetensors", "/etc/passwd", "final.safetensors", "agent.q",
                                         "nan", "", "0" * 64]))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4),
    st.builds(lambda k, v: {k: v}, st.sampled_from(["__tensor__", "__ndarray__", "__items__"]), inner)),
    max_leaves=12)
DTYPES = [torch.float16, torch.float64, torch.int32, torch.int64, torch.bool, torch.uint8, torch.bfloat16]


@st.composite
def json_edits(draw):
    """(path of child choices, action, value, key to insert): where in the JSON tree to edit, and how."""
    return (draw(st.lists(st.integers(0, 40), min_size=1, max_size=8)),
            draw(st.sampled_from(["replace", "delete", "insert"])), draw(JSON_VALUES), draw(st.text(max_size=8)))


def edit_subtree(record: dict, focus: tuple[str, ...], edit) -> dict:
    """Apply `edit` inside `record[focus[0]][focus[1]]…` (the whole record for an empty focus)."""
    if not focus or not isinstance(record.get(focus[0]), dict):
        return apply_edit(record, edit)
    record[focus[0]] = edit_subtree(record[focus[0]], focus[1:], edit)
    return record


def apply_edit(tree, edit) -> object:
    """Walk `tree` by the choices, then replace, delete or insert there; returns the edited tree."""
    path, action, value, new_key = edit
    if not path or not isinstance(tree, (dict, list)) or not tree:
        return value if action == "replace" else tree
    node = tree
    for i, choice in enumerate(path):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        key = keys[choice % len(keys)]
        child = node[key]
        if i == len(path) - 1 or not isinstance(child, (dict, list)) or not child:
            if action == "replace":
                node[key] = value
            elif action == "delete":
                del node[key]
            elif isinstance(node, dict):
                node[new_key] = value
            else:
                node.insert(choice % (len(node) + 1), value)
            return tree
        node = child
    return tree


@st.composite
def tensor_edits(draw):
    """(tensor choice, dtype or None, fill or None, reshape): one tensor of the file changed."""
    return (draw(st.integers(0, 200)), draw(st.one_of(st.none(), st.sampled_from(DTYPES))),
            draw(st.sampled_from([None, "nan", "inf", "-inf", "zero"])), draw(st.booleans()))


def apply_tensor_edit(tensors: dict, edit) -> None:
    choice, dtype, fill, reshape = edit
    key = sorted(tensors)[choice % len(tensors)]
    tensor = tensors[key].clone()
    if fill is not None and tensor.dtype.is_floating_point:
        tensor.fill_({"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "zero": 0.0}[fill])
    if dtype is not None:
        tensor = tensor.to(dtype)
    if reshape:
        tensor = tensor.reshape(-1)[: max(1, tensor.numel() // 2)].clone()
    tensors[key] = tensor


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.sampled_from([(), ("state",), ("state", "agent")]), json_edits()), min_size=1,
                      max_size=3),
       tensor_edit=st.one_of(st.none(), tensor_edits()))
def test_mutated_checkpoints_load_or_raise_checkpoint_error_and_read_nothing_outside(short_dqn_run, edits,
                                                                                     tensor_edit):
    """A real checkpoint with edits anywhere in its JSON (types, nesting, sizes, tensor references) and in its
    tensors (dtype, NaN/inf, shape): the loader `runs.load_run` uses (read_checkpoint → check_spaces →
    state_check.load_agent_state) must load it or raise a UserError, opening no file outside its folder."""
    global OPENED
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run" / "checkpoints"
        folder.mkdir(parents=True)
        record = json.loads((short_dqn_run / "checkpoints" / "final.json").read_text())
        blob = (short_dqn_run / "checkpoints" / "final.safetensors").read_bytes()
        if tensor_edit is not None:
            tensors = load_tensors(blob)
            apply_tensor_edit(tensors, tensor_edit)
            blob = save_tensors(tensors)
            record["tensor_sha256"] = hashlib.sha256(blob).hexdigest()
        for focus, edit in edits:
            record = edit_subtree(record, focus, edit)
        (folder / "final.safetensors").write_bytes(blob)
        path = folder / "final.json"
        path.write_text(json.dumps(record))
        (Path(tmp) / "final.safetensors").write_bytes(blob)  # a valid tensor file one level up: never to be read
        agent = _fresh_dqn(short_dqn_run)
        OPENED = []
        try:
            state, meta = read_checkpoint(path, agent="dqn", env="CartPole-v1")
            check_spaces(meta, *spaces_of("CartPole-v1"), path)
            load_agent_state(agent, state["agent"] if isinstance(state, dict) and "agent" in state else state, path)
        except UserError:
            pass
        finally:
            opened, OPENED = OPENED, None
        outside = [p for p in opened if not Path(os.path.realpath(p)).is_relative_to(os.path.realpath(folder))
                   and p.endswith((".json", ".safetensors", "passwd"))]
        assert not outside, f"read outside the checkpoint's folder: {outside}"


_DQN_CACHE: dict = {}


def _fresh_dqn(run_dir: Path):
    """A fresh DQN agent for the run's config (the config is resolved once; the agent is new every time)."""
    if "config" not in _DQN_CACHE:
        data = read_config_file(run_dir / "config.yaml")
        _DQN_CACHE["config"] = resolve(DQNConfig, data, "CartPole-v1", {}, source="config.yaml")
    return build_agent("dqn", _DQN_CACHE["config"], *spaces_of("CartPole-v1"), n_envs=1, seed=0,
                       device=torch.device("cpu"))


YAML_SNIPPETS = st.sampled_from(["", "x: &a [1, 2]\ny: [*a, *a]\n", "default: {steps: 5}\n", "? [a, b]\n: 1\n",
                                 "run: {seed: -1}\n", "<<: {a: 1}\n", "!!binary aGk=\n", "default: !!set {a, b}\n",
                                 "%YAML 1.1\n---\na: 1\n", "a: 1\n---\nb: 2\n", "default: {lr: .inf}\n",
                                 "default: {hidden: [[[[1]]]]}\n", "\t- x\n", "default: {steps: 0x10}\n"])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(json_edits(), min_size=1, max_size=4), snippet=YAML_SNIPPETS, append=st.booleans())
def test_mutated_run_config_yaml_resolves_or_raises_config_error(short_dqn_run, edits, snippet, append):
    """A run's config.yaml with values of any type anywhere (and YAML oddities appended or alone) reads and
    resolves, as `train --resume` and `evaluate` do, or raises a UserError."""
    data = yaml.safe_load((short_dqn_run / "config.yaml").read_text())
    for edit in edits:
        data = apply_edit(data, edit)
    try:
        text = yaml.safe_dump(data, sort_keys=False)
    except yaml.YAMLError:
        return
    text = text + snippet if append else snippet or text
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text)
        try:
            data = read_config_file(path)
            run = data.get("run") or {}
            agent = run.get("agent", "dqn")
            if agent in ("dqn", "reinforce"):
                resolve(DQNConfig if agent == "dqn" else ReinforceConfig, data, str(run.get("env", "CartPole-v1")),
                        {}, source=str(path))
        except UserError:
            pass


RESUME_EXAMPLES = max(10, EXAMPLES // 5)  # each example is a whole `train --resume` (about 0.5 s)


@settings(max_examples=RESUME_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.sampled_from([("state", "loop"), ("state", "rng"), ("state", "in_flight"),
                                                 ("state",), ()]), json_edits()), min_size=1, max_size=3),
       tensor_edit=st.one_of(st.none(), tensor_edits()),
       squatter=st.sampled_from([None, "folder", "fifo", "symlink", "empty"]))
def test_mutated_training_checkpoints_resume_or_exit_2(short_dqn_run, edits, tensor_edit, squatter):
    """`train --resume` on a run whose periodic checkpoint has edits anywhere (its loop and RNG state, the
    episodes in flight, the agent) and maybe something odd named like a newer checkpoint: it resumes (exit 0,
    or 3 for a training fault) or refuses in one line (exit 2); a resumed run's final checkpoint loads."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        folder = run_dir / "checkpoints"
        folder.mkdir(parents=True)
        data = yaml.safe_load((short_dqn_run / "config.yaml").read_text())
        data["default"].update(steps=1000, eval_episodes=1)  # resume at the checkpoint's step: no training
        (run_dir / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        source = short_dqn_run / "checkpoints" / "step_000000001000"
        record = json.loads(source.with_suffix(".json").read_text())
        blob = source.with_suffix(".safetensors").read_bytes()
        if tensor_edit is not None:
            tensors = load_tensors(blob)
            apply_tensor_edit(tensors, tensor_edit)
            blob = save_tensors(tensors)
            record["tensor_sha256"] = hashlib.sha256(blob).hexdigest()
        for focus, edit in edits:
            record = edit_subtree(record, focus, edit)
        (folder / "step_000000001000.safetensors").write_bytes(blob)
        (folder / "step_000000001000.json").write_text(json.dumps(record))
        newer = folder / "step_000000002000.json"
        if squatter == "folder":
            newer.mkdir()
        elif squatter == "fifo":
            os.mkfifo(newer)
        elif squatter == "symlink":
            newer.symlink_to("/etc/passwd")
        elif squatter == "empty":
            newer.write_text("")
        err = io.StringIO()
        global OPENED
        OPENED = []
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = train_main(["--resume", str(run_dir), "--no-progress"])
            except SystemExit as exc:
                code = exc.code
            finally:
                opened, OPENED = OPENED, None
        outside = [p for p in opened if not Path(os.path.realpath(p)).is_relative_to(os.path.realpath(run_dir))
                   and p.endswith((".json", ".safetensors", "passwd"))]
        assert not outside, f"read outside the run directory: {outside}"
        message = err.getvalue().strip().splitlines()
        assert code in (0, 2, 3), (code, message[-5:])
        if code in (2, 3):
            assert message and message[-1].startswith("error: ") and "Traceback" not in err.getvalue()
        if code == 0:  # what a mutated checkpoint let through must be a checkpoint that loads
            state, meta = read_checkpoint(folder / "final.json", agent="dqn", env="CartPole-v1")
            load_agent_state(_fresh_dqn(short_dqn_run), state["agent"], folder / "final.json")


@st.composite
def summary_edits(draw):
    return draw(st.lists(json_edits(), min_size=1, max_size=3))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=summary_edits(), as_results=st.booleans())
def test_mutated_summaries_make_a_report_or_raise_user_error(short_dqn_run, edits, as_results):
    """`compare --from` over a run's summary.json (or a comparison's results.json) with edits anywhere: the
    report's tables and curves are computed, or a UserError names the file and field."""
    from rlagents import report

    summary = json.loads((short_dqn_run / "summary.json").read_text())
    record = {"runs": [summary, {**summary, "seed": 4}]} if as_results else summary
    for edit in edits:
        record = apply_edit(record, edit)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "runs"
        (folder / "a").mkdir(parents=True)
        (folder / ("results.json" if as_results else "a/summary.json")).write_text(json.dumps(record))
        try:
            runs = report.load_runs([folder])
            report.markdown(runs, {"created": "now", "machine": "here", "command": "fuzz"})
            for key in ("step", "train_time_s"):
                report.curve_band(report.completed(runs), key)
        except UserError:
            pass
