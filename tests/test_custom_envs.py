"""Envs the user brings: `--env module:Id`, `--env-module`, `--env-kwargs` and `env_kwargs:` entries, recorded in
the run so that `--resume` and evaluate rebuild the same env; every bad-env case is one line (exit 2 before
training, exit 3 during it).

The env module is written by this file into a temporary folder, as a user's own module would sit in the
folder they run rlagents from; nothing here ships with rlagents.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from rlagents.checkpoint import read_checkpoint, step_checkpoints
from rlagents import compare
from rlagents.evaluate import main as evaluate_main
from rlagents.export import main as export_main
from rlagents.train import main as train_main

ENV_MODULE = textwrap.dedent('''
    """A corridor of `size` cells: start at the left end, walk right (action 1) to the goal at the right end."""
    import gymnasium as gym
    import numpy as np

    class Line(gym.Env):
        def __init__(self, size=5, render_mode=None):
            self.size = int(size)
            self.observation_space = gym.spaces.Box(0.0, 1.0, (self.size,), np.float32)  # one-hot position
            self.action_space = gym.spaces.Discrete(2)

        def _obs(self):
            obs = np.zeros(self.size, np.float32)
            obs[self.pos] = 1.0
            return obs

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.pos = 0
            self.steps = 0
            return self._obs(), {}

        def step(self, action):
            self.steps += 1
            self.pos = max(0, min(self.size - 1, self.pos + (1 if int(action) == 1 else -1)))
            done = self.pos == self.size - 1
            return self._obs(), 1.0 if done else -0.05, done, False, {}

    class BrokenStep(Line):
        def step(self, action):
            raise RuntimeError("the floor gave way")

    class BrokenReset(Line):
        def reset(self, *, seed=None, options=None):
            raise ValueError("no start state")

    class LateFault(Line):
        """Steps normally for 300 steps of each copy, then raises: a fault in the middle of training."""
        def step(self, action):
            if getattr(self, "total", 0) >= 300:
                raise RuntimeError("sensor lost")
            self.total = getattr(self, "total", 0) + 1
            return super().step(action)

    def make_line(size=4):
        return Line(size=size)

    gym.register("Line-v0", entry_point=Line, max_episode_steps=50, reward_threshold=0.8)
    gym.register("BrokenStepLine-v0", entry_point=BrokenStep, max_episode_steps=50)
    gym.register("BrokenResetLine-v0", entry_point=BrokenReset, max_episode_steps=50)
    gym.register("LateFaultLine-v0", entry_point=LateFault, max_episode_steps=50)
''')
# each test imports the module afresh (as a new process would), registering its ids again
pytestmark = pytest.mark.filterwarnings("ignore:.*Overriding environment")
SHORT = ["--steps", "1200", "--eval-every", "600", "--eval-episodes", "3", "--no-progress",
         "--set", "learning_starts=200", "--set", "checkpoint_every=600"]


@pytest.fixture()
def user_folder(tmp_path, monkeypatch) -> Path:
    """A working folder holding the user's env module `linegrid.py`, made the current directory."""
    (tmp_path / "linegrid.py").write_text(ENV_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("linegrid", None)


def one_line_error(argv: list[str], capsys, code: int = 2) -> str:
    with pytest.raises(SystemExit) as exc:
        train_main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == code, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_module_env_with_kwargs_survives_resume_and_evaluate(user_folder: Path, capsys):
    """`--env linegrid:Line-v0 --env-kwargs size=6`: the kwarg shapes the observation (6 cells), so a resume or
    an evaluation that rebuilt the env without it would refuse the checkpoint's spaces."""
    run_dir = user_folder / "run"
    stopped: list[int] = []

    from rlagents.api import train_spec
    from rlagents.train import build_parser, spec_from_args

    args = build_parser().parse_args(["--agent", "dqn", "--env", "linegrid:Line-v0", "--env-kwargs", "size=6",
                                      *SHORT, "--run-dir", str(run_dir)])
    result = train_spec(spec_from_args(args), callback=lambda step, m: stopped.append(step) or step < 600)
    assert result.status == "stopped" and result.summary["total_steps"] == 600
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["run"]["env"] == "linegrid:Line-v0" and config["default"]["env_kwargs"] == {"size": 6}
    _, meta = read_checkpoint(step_checkpoints(run_dir)[-1])
    assert "(6,)" in meta["observation_space"]

    sys.modules.pop("linegrid", None)  # a fresh process would import it again: so does the resume
    assert train_main(["--resume", str(run_dir), "--no-progress"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["total_steps"] == 1200 and summary["sessions"] == 2
    out = capsys.readouterr().out
    assert "dqn on linegrid:Line-v0 seed 0 (untuned config: its default: settings)" in out

    assert evaluate_main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"return {summary['eval_return_mean']:.2f} ± {summary['eval_return_std']:.2f} over 3 episodes" in out
    assert export_main([str(run_dir)]) == 0  # checks the graph on a real episode of the rebuilt env
    assert json.loads((run_dir / "policy.json").read_text())["env"] == "linegrid:Line-v0"


def test_env_module_and_config_entry_kwargs(user_folder: Path):
    """`--env-module` registers the ids; an `env_kwargs:` mapping in the env's config entry reaches the env,
    and `--env-kwargs` goes on top of it."""
    config = user_folder / "dqn.yaml"
    config.write_text("default:\n  steps: 300\n  learning_starts: 100\nLine-v0:\n  eval_every: 0\n"
                      "  env_kwargs:\n    size: 3\n")
    run_dir = user_folder / "run"
    assert train_main(["--agent", "dqn", "--env", "Line-v0", "--env-module", "linegrid", "--config", str(config),
                       "--eval-episodes", "2", "--no-progress", "--run-dir", str(run_dir)]) == 0
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert recorded["run"]["env_modules"] == ["linegrid"] and recorded["default"]["env_kwargs"] == {"size": 3}
    assert "(3,)" in read_checkpoint(run_dir / "checkpoints" / "final.json")[1]["observation_space"]

    again = user_folder / "again"  # the entry's kwargs, then the command line's
    assert train_main(["--agent", "dqn", "--env", "Line-v0", "--env-module", "linegrid", "--config", str(config),
                       "--env-kwargs", "size=4", "--eval-episodes", "2", "--no-progress",
                       "--run-dir", str(again)]) == 0
    assert "(4,)" in read_checkpoint(again / "checkpoints" / "final.json")[1]["observation_space"]
    # the run's config.yaml reproduces it: same module, same kwargs
    third = user_folder / "third"
    assert train_main(["--config", str(again / "config.yaml"), "--run-dir", str(third), "--no-progress"]) == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (again, third))
    assert a["final_eval_returns"] == b["final_eval_returns"] and a["episodes"] == b["episodes"]


@pytest.mark.parametrize("argv, needles", [
    (["--env", "nosuchmodule:Line-v0"],
     ["env 'nosuchmodule:Line-v0': import nosuchmodule failed: ModuleNotFoundError",
      "importable from the current directory"]),
    (["--env", "linegrid:Circle-v0"],
     ["env 'linegrid:Circle-v0': module linegrid registers no env 'Circle-v0'", "it registers: ",
      "Line-v0"]),
    (["--env", "linegrid:Line-v0", "--env-kwargs", "width=3"],
     ["env 'linegrid:Line-v0': gym.make('Line-v0', width=3) raised TypeError", "width"]),
    (["--env", "linegrid:BrokenResetLine-v0"],
     ["env 'linegrid:BrokenResetLine-v0': reset(seed=0) raised ValueError: no start state"]),
    (["--env", "linegrid:BrokenStepLine-v0"],
     ["env 'linegrid:BrokenStepLine-v0': step(", "raised RuntimeError: the floor gave way"]),
    (["--env", "Line-v0", "--env-module", "linegrid", "--env-kwargs", "size"],
     ["--env-kwargs expects KEY=VALUE"]),
    (["--env", "Line-v0", "--env-module", "no_such_envs"],
     ["import no_such_envs failed: ModuleNotFoundError"]),
])
def test_bad_env_is_one_line_before_training(user_folder: Path, capsys, argv, needles):
    run_dir = user_folder / "run"
    err = one_line_error(["--agent", "dqn", *argv, "--run-dir", str(run_dir), "--no-progress"], capsys)
    for needle in needles:
        assert needle in err
    assert not run_dir.exists()  # nothing written


def test_list_envs_shows_the_ids_a_module_registers(user_folder: Path, capsys):
    assert train_main(["--list-envs", "--env-module", "linegrid"]) == 0
    assert "Line-v0" in capsys.readouterr().out.split()


def test_compare_refuses_a_bad_env_before_any_run(user_folder: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        compare.main(["--agents", "dqn", "--env", "linegrid:Line-v0", "--env-kwargs", "width=3", "--out",
                      str(user_folder / "cmp"), "--no-progress"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "gym.make('Line-v0', width=3) raised TypeError" in err


def test_env_failing_mid_training_exits_3_with_the_last_checkpoint(user_folder: Path, capsys):
    run_dir = user_folder / "run"
    err = one_line_error(["--agent", "dqn", "--env", "linegrid:LateFaultLine-v0", "--steps", "5000",
                          "--eval-every", "0", "--set", "checkpoint_every=100", "--set", "learning_starts=50",
                          "--run-dir", str(run_dir), "--no-progress"], capsys, code=3)
    assert "env 'linegrid:LateFaultLine-v0' (copy 0): step" in err and "RuntimeError: sensor lost" in err
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert step_checkpoints(run_dir)[-1].name == "step_000000000300.json"


def test_missing_box2d_points_at_our_extra(user_folder: Path, capsys):
    """Gymnasium's own install hint names its extra; ours names rlagents' `.[box2d]`."""
    (user_folder / "needsbox.py").write_text(textwrap.dedent('''
        import gymnasium as gym

        def make():
            raise gym.error.DependencyNotInstalled('Box2D is not installed, you can install it by run `pip install swig` followed by `pip install "gymnasium[box2d]"`')

        gym.register("NeedsBox-v0", entry_point=make)
    '''))
    err = one_line_error(["--agent", "dqn", "--env", "needsbox:NeedsBox-v0", "--no-progress"], capsys)
    assert "needs an extra package: Box2D is not installed" in err and 'pip install -e ".[box2d]"' in err
    assert "gymnasium[box2d]" not in err


def test_console_script_imports_env_modules_from_the_current_directory(user_folder: Path):
    """`rlagents-train` (a console script) does not put the current directory on sys.path; the env module
    is found there anyway, as with `python -m rlagents.train`."""
    import subprocess

    code = ("import sys; sys.path = [p for p in sys.path if p not in ('', '.', %r)]; "
            "from rlagents.train import main; sys.exit(main(sys.argv[1:]))" % str(user_folder))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.run([sys.executable, "-c", code, "--agent", "dqn", "--env", "linegrid:Line-v0",
                           "--steps", "200", "--eval-episodes", "2", "--no-progress", "--run-dir", "run"],
                          cwd=user_folder, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "dqn on linegrid:Line-v0" in proc.stdout
