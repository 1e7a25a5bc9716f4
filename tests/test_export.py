"""ONNX export (`python -m rlagents.export`): per agent, onnxruntime acts as the agent on the observations of
real evaluation episodes and scores the same returns; the exported file runs without torch; the JSON
describes it; bad input is one line, exit 2, nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

from conftest import SMALL_CNN
from rlagents import obs as batches
from rlagents.agents.dqn import DQNAgent, DQNConfig
from rlagents.environments import EVAL_STEP_CAP, evaluate, make_vec_env
from rlagents.errors import ExportError
from rlagents.evaluate import main as evaluate_main
from rlagents.evaluate import spaces_of
from rlagents.export import graph_inputs, main as export_main, to_onnx
from rlagents.graphs import Argmax
from rlagents.loop import EVAL_SEED_OFFSET
from rlagents.onnx_policy import OnnxPolicy, evaluate_onnx
from rlagents.runs import load_run
from rlagents.train import main as train_main

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "guide" / "export.md"

# one tiny run per kind of exported graph: (training arguments, continuous actions)
CASES = {
    "dqn-dueling-mlp": (["--agent", "dqn", "--env", "CartPole-v1", "--steps", "1500", "--set", "dueling=true",
                         "--set", "learning_starts=200"], False),
    "dqn-dict-cnn-uint8": (["--agent", "dqn", "--env", "DigitLock-v0", "--steps", "400", "--n-envs", "2",
                            "--set", "learning_starts=200", *SMALL_CNN], False),
    "dqn-discrete-one-hot": (["--agent", "dqn", "--env", "FrozenLake-v1", "--steps", "1000",
                              "--set", "learning_starts=200"], False),
    "reinforce-discrete": (["--agent", "reinforce", "--env", "CartPole-v1", "--steps", "2000"], False),
    "reinforce-tanh-normalised": (["--agent", "reinforce", "--env", "Pendulum-v1", "--steps", "2000",
                                   "--set", "normalize_obs=true", "--set", "episodes_per_update=2"], True),
    "reinforce-clip-learned-std": (["--agent", "reinforce", "--env", "Pendulum-v1", "--steps", "2000",
                                    "--set", "squash=clip", "--set", "log_std=learned",
                                    "--set", "episodes_per_update=2"], True),
    "ppo-discrete": (["--agent", "ppo", "--env", "CartPole-v1", "--steps", "2000", "--set", "n_steps=64"], False),
    "ppo-tanh-normalised": (["--agent", "ppo", "--env", "Pendulum-v1", "--steps", "2000", "--set", "n_steps=64",
                             "--set", "normalize_obs=true", "--set", "normalize_reward=true"], True),
    "ppo-clip-learned-std-shared": (["--agent", "ppo", "--env", "Pendulum-v1", "--steps", "2000", "--set", "n_steps=64",
                                     "--set", "squash=clip", "--set", "log_std=learned",
                                     "--set", "shared_backbone=true"], True),
    "ppo-dict-cnn-uint8": (["--agent", "ppo", "--env", "DigitLock-v0", "--steps", "400", "--n-envs", "2",
                            "--set", "n_steps=50", *SMALL_CNN], False),
    "qlearning-discretised-double": (["--agent", "qlearning", "--env", "CartPole-v1", "--steps", "3000",
                                      "--set", "update=double"], False),
    "qlearning-discrete": (["--agent", "qlearning", "--env", "FrozenLake-v1", "--steps", "3000"], False),
    "planner-tabular": (["--agent", "planner", "--env", "FrozenLake-v1", "--steps", "1000"], False),
    "sb3-dqn": (["--agent", "sb3-dqn", "--env", "CartPole-v1", "--steps", "1000", "--set", "learning_starts=200"],
                False),
    "sb3-ppo-normalised": (["--agent", "sb3-ppo", "--env", "Pendulum-v1", "--steps", "256", "--set", "n_steps=128",
                            "--set", "batch_size=64", "--set", "normalize=true"], True),
}


def train(run_dir: Path, args: list[str]) -> Path:
    code = train_main(["--run-dir", str(run_dir), "--no-progress", "--seed", "1", "--eval-episodes", "3", *args])
    assert code == 0
    return run_dir


def concat(rows: list):
    """One batch from a list of batches (arrays, or dicts of arrays)."""
    if isinstance(rows[0], dict):
        return {key: concat([r[key] for r in rows]) for key in rows[0]}
    return np.concatenate(rows)


def evaluation_episodes(run):
    """The run's own evaluation episodes played by the agent: every observation it acted on, and the returns."""
    seen = []

    def policy(obs):
        seen.append(batches.copy(obs))
        return run.agent.act(obs, explore=False)

    episodes = run.config.train.eval_episodes
    envs = make_vec_env(run.env_id, min(run.config.train.eval_envs, episodes), step_cap=EVAL_STEP_CAP)
    returns, _ = evaluate(policy, envs, episodes, run.seed + EVAL_SEED_OFFSET)
    envs.close()
    return concat(seen), returns


@pytest.mark.parametrize("case", list(CASES))
def test_onnxruntime_acts_as_the_agent_and_scores_the_same(case, tmp_path, capsys):
    args, continuous = CASES[case]
    run_dir = train(tmp_path / "run", args)
    out = tmp_path / "out" / "policy.onnx"
    assert export_main([str(run_dir), "--format", "onnx", "--out", str(out)]) == 0
    assert "acts as the agent on" in capsys.readouterr().out
    run = load_run(run_dir, spaces_of, device=torch.device("cpu"))
    observations, returns = evaluation_episodes(run)
    expected = run.agent.act(observations, explore=False)
    got = OnnxPolicy.load(out)(observations)
    onnx_returns, _ = evaluate_onnx(out)
    if continuous:
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(onnx_returns, returns, rtol=1e-5)
    else:
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(onnx_returns, returns)


def test_evaluate_onnx_prints_the_checkpoints_return(short_dqn_run: Path, tmp_path, capsys):
    out = tmp_path / "dqn.onnx"
    assert export_main([str(short_dqn_run), "--out", str(out)]) == 0
    capsys.readouterr()
    assert evaluate_main([str(short_dqn_run)]) == 0
    from_checkpoint = capsys.readouterr().out.splitlines()[0]
    assert evaluate_main([str(short_dqn_run), "--onnx", str(out)]) == 0
    from_onnx = capsys.readouterr().out.splitlines()[0]
    score = re.compile(r"return (\S+ ± \S+ over \d+ episodes \(mean length \S+\))")
    assert score.search(from_onnx).group(1) == score.search(from_checkpoint).group(1)
    assert "dqn.onnx via onnxruntime, exported from final.json, step 1500" in from_onnx


def test_json_describes_inputs_outputs_spaces_and_source(tmp_path):
    run_dir = train(tmp_path / "run", CASES["dqn-dict-cnn-uint8"][0])
    assert export_main([str(run_dir)]) == 0
    onnx_file, info = run_dir / "policy.onnx", json.loads((run_dir / "policy.json").read_text())
    assert info["onnx_sha256"] == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    umask = os.umask(0)
    os.umask(umask)
    assert onnx_file.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not a temp file's 0600
    final = run_dir / "checkpoints" / "final.json"
    assert info["checkpoint"]["sha256"] == hashlib.sha256(final.read_bytes()).hexdigest()
    assert info["checkpoint"]["tensor_sha256"] == json.loads(final.read_text())["tensor_sha256"]
    assert (info["agent"], info["env"], info["seed"], info["checkpoint"]["step"]) == ("dqn", "DigitLock-v0", 1, 400)
    assert [(i["name"], i["shape"], i["dtype"]) for i in info["inputs"]] == [
        ("dial", ["batch"], "int64"), ("image", ["batch", 1, 12, 12], "uint8")]
    assert info["outputs"] == [{"name": "action", "shape": ["batch"], "dtype": "int64"}]
    assert info["observation_space"]["spaces"]["image"] == {"type": "Box", "shape": [1, 12, 12], "dtype": "uint8",
                                                            "low": 0, "high": 255}
    assert info["action_space"] == {"type": "Discrete", "n": 3, "start": 0}
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert info["evaluation"] == {"seed": 1 + EVAL_SEED_OFFSET, "episodes": 3, "step_cap": EVAL_STEP_CAP,
                                  "envs": config["default"]["eval_envs"]}
    assert info["check"]["mismatches"] == 0 and info["check"]["observations"] > 64
    import onnx

    model = onnx.load(str(onnx_file))
    assert [i.name for i in model.graph.input] == ["dial", "image"]
    assert {p.key: p.value for p in model.metadata_props}["env"] == "DigitLock-v0"


@pytest.mark.parametrize("space, network", [
    (gym.spaces.Box(0, 255, (16, 16, 3), np.uint8), "cnn"),  # channel-last pixels, scaled in the graph
    (gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), "nature"),  # an Atari frame stack
])
def test_image_q_networks_export_with_their_pixel_scaling(space, network):
    config = DQNConfig(network=network, cnn_channels=(4, 8, 8), cnn_features=16, dueling=True, buffer_size=64,
                       batch_size=32)  # a small replay: 100,000 Atari frame stacks would take seconds to allocate
    agent = DQNAgent(config, space, gym.spaces.Discrete(5), n_envs=1, total_steps=1000, device=torch.device("cpu"),
                     seed=0)
    space.seed(0)
    obs = np.stack([space.sample() for _ in range(16)])
    inputs = graph_inputs(space)
    policy = OnnxPolicy(to_onnx(agent.export_module(), inputs, obs[:2]))
    assert policy.inputs == [("obs", np.uint8)]
    np.testing.assert_array_equal(policy(obs), agent.act(obs, explore=False))


class Untraceable(torch.nn.Module):
    def forward(self, obs):
        return torch.special.bessel_j0(obs).argmax(dim=1)  # ONNX has no operator for it


def test_a_policy_onnx_cannot_hold_or_a_space_without_graph_inputs_is_an_export_error():
    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    with pytest.raises(ExportError, match="torch could not turn the policy into ONNX: .*special_bessel_j0"):
        to_onnx(Untraceable(), graph_inputs(space), np.zeros((2, 4), np.float32))
    with pytest.raises(ExportError, match="graph inputs are made for Box, Discrete and Dict spaces"):
        graph_inputs(gym.spaces.Tuple([space, gym.spaces.Discrete(3)]))


# ---------------------------------------------------------------- without torch

NO_TORCH_CHECK = """
import sys
assert "torch" not in sys.modules, "torch imported: " + ", ".join(m for m in sys.modules if m.startswith("torch"))
"""


def run_without_torch(code: str) -> str:
    """Run `code` in a fresh interpreter, then check that torch was never imported; returns stdout."""
    done = subprocess.run([sys.executable, "-c", code + NO_TORCH_CHECK], capture_output=True, text=True,
                          cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_onnx_evaluation_path_never_imports_torch(short_dqn_run: Path, tmp_path):
    out = tmp_path / "policy.onnx"
    assert export_main([str(short_dqn_run), "--out", str(out)]) == 0
    printed = run_without_torch(f"import json\nfrom rlagents.onnx_policy import evaluate_onnx\n"
                                f"returns, _ = evaluate_onnx({str(out)!r})\nprint(json.dumps(returns.tolist()))\n")
    summary = json.loads((short_dqn_run / "summary.json").read_text())
    assert np.mean(json.loads(printed)) == pytest.approx(summary["eval_return_mean"])


def test_the_documented_onnxruntime_snippet_runs_without_torch(short_dqn_run: Path, tmp_path):
    snippet = re.search(r"```python\n(# run an exported policy.*?)```", GUIDE.read_text(), re.S).group(1)
    out = tmp_path / "policy.onnx"
    assert export_main([str(short_dqn_run), "--out", str(out)]) == 0
    code = snippet.replace("runs/my-run/policy.onnx", str(out))
    assert str(out) in code
    printed = run_without_torch(code)
    assert re.search(r"return \d+", printed)


# ---------------------------------------------------------------- bad input


def fails(argv: list[str], capsys, message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        export_main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert message in err, err


def nothing_written(folder: Path) -> bool:
    """No exported file, JSON or temp file in `folder`."""
    files = [p for pattern in ("*.onnx", "policy.json", ".*.tmp") for p in folder.glob(pattern) if p.is_file()]
    return not files


def test_not_a_run_and_a_corrupt_checkpoint_are_refused(short_dqn_run: Path, tmp_path, capsys):
    fails([str(tmp_path), "--out", str(tmp_path / "p.onnx")], capsys, "is not an rlagents run directory")
    fails([str(tmp_path / "missing")], capsys, "run directory not found")
    run_dir = tmp_path / "run"
    shutil.copytree(short_dqn_run, run_dir)
    tensors = run_dir / "checkpoints" / "final.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-8] + b"corrupt!")
    fails([str(run_dir)], capsys, "is corrupt (SHA-256 mismatch)")
    fails([str(run_dir), "--checkpoint", str(run_dir / "checkpoints" / "nope.json")], capsys, "checkpoint not found")
    assert nothing_written(run_dir) and nothing_written(tmp_path)


def test_an_unwritable_out_is_refused_before_exporting(short_dqn_run: Path, tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    fails([str(short_dqn_run), "--out", str(a_file / "policy.onnx")], capsys, "is a file, not a folder")
    fails([str(short_dqn_run), "--out", str(tmp_path / "policy.pt")], capsys, "must end in .onnx")
    (tmp_path / "dir.onnx").mkdir()
    fails([str(short_dqn_run), "--out", str(tmp_path / "dir.onnx")], capsys, "is a folder")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.getuid() == 0:  # root may write anywhere: make the permission check see what a user would
        monkeypatch.setattr("rlagents.export.os.access", lambda path, mode: Path(path) != locked)
    fails([str(short_dqn_run), "--out", str(locked / "sub" / "policy.onnx")], capsys,
          f"{locked} is not writable")
    assert nothing_written(tmp_path) and not (locked / "sub").exists()


def test_an_agent_without_a_greedy_graph_is_refused_with_its_reason(tmp_path, capsys):
    run_dir = train(tmp_path / "run", ["--agent", "planner", "--env", "Pendulum-v1", "--steps", "60",
                                       "--eval-episodes", "1", "--set", "learning_starts=50"])
    fails([str(run_dir)], capsys, "planner cannot be exported with a continuous model: each action is a CEM search")
    assert nothing_written(run_dir)


def test_a_graph_that_acts_otherwise_than_the_agent_is_not_written(short_dqn_run: Path, tmp_path, capsys,
                                                                    monkeypatch):
    # argmin instead of argmax: the check against the agent must catch it
    monkeypatch.setattr(DQNAgent, "export_module", lambda self: torch.nn.Sequential(self.q, Negate(), Argmax()))
    out = tmp_path / "policy.onnx"
    fails([str(short_dqn_run), "--out", str(out)], capsys, "the exported graph acts differently from the agent")
    assert nothing_written(tmp_path)


class Negate(torch.nn.Module):
    def forward(self, x):
        return -x


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_missing_onnx_packages_are_named(short_dqn_run: Path, tmp_path, capsys, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` now raises ImportError
    fails([str(short_dqn_run), "--out", str(tmp_path / "p.onnx")], capsys,
          f"needs the onnx and onnxruntime packages ({missing} is missing): pip install 'rlagents[export]'")
    assert nothing_written(tmp_path)


def test_evaluate_refuses_a_foreign_damaged_or_unpaired_onnx_file(short_dqn_run: Path, tmp_path, capsys):
    out = tmp_path / "policy.onnx"
    assert export_main([str(short_dqn_run), "--out", str(out)]) == 0
    info = json.loads(out.with_suffix(".json").read_text())

    def refused(message: str) -> None:
        with pytest.raises(SystemExit) as exc:
            evaluate_main([str(short_dqn_run), "--onnx", str(out)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and message in err, err

    out.with_suffix(".json").write_text(json.dumps({**info, "env": "Acrobot-v1"}))
    refused("was exported from a run on 'Acrobot-v1', not 'CartPole-v1'")
    out.with_suffix(".json").unlink()
    refused("policy.json not found")
    out.write_bytes(b"not a model")
    out.with_suffix(".json").write_text(json.dumps({**info, "onnx_sha256": hashlib.sha256(b"not a model").hexdigest()}))
    refused("is not a loadable ONNX model")
    out.write_bytes(b"changed")
    refused("does not match policy.json (SHA-256 differs)")
