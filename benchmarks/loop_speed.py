"""Env steps per second of the training loop: this tree's `rlagents/loop.py` against another tree's (e.g. main
before a loop change), on CartPole-v1 DQN, interleaved A/B/B/A in one process so that both see the same load;
reports the medians and the median of the per-round ratios.

The other tree's `loop.py` is loaded from its file and runs with this tree's agents, envs and checkpoints, so
only the loop differs (it must be compatible with them, as a loop refactoring is). Three settings: the default
DQN config (a gradient step every 2 env steps: the update dominates); the same with learning never starting
(act, step, observe and the loop's own bookkeeping only); and a null agent (acts 0, learns nothing: CartPole,
the vector env and the loop), where a per-step cost added to the loop shows most.
Usage: nice -n 10 python benchmarks/loop_speed.py --base /tmp/loop-base [--rounds 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

import rlagents.loop
from rlagents.train import build_parser, prepare

SETTINGS = {"dqn default": (5_000, [], False), "no learning": (20_000, ["--set", "learning_starts=10000000"], False),
            "null agent": (50_000, [], True)}


def load_loop(tree: Path):
    spec = importlib.util.spec_from_file_location("base_loop", tree / "rlagents" / "loop.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["base_loop"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def steps_per_s(loop, steps: int, extra: list[str], null_agent: bool, run_dir: Path) -> float:
    """One training run through `loop.train`; its summary's env steps per training second. A null agent
    acts 0 and learns nothing: what remains is CartPole, the vector env and the loop itself."""
    run = prepare(build_parser().parse_args([
        "--agent", "dqn", "--env", "CartPole-v1", "--seed", "0", "--steps", str(steps), "--eval-every", "0",
        "--eval-episodes", "1", "--no-progress", "--run-dir", str(run_dir), *extra]))
    if null_agent:
        actions = np.zeros(run.envs.num_envs, dtype=np.int64)
        run.agent.act = lambda obs, explore: actions
        run.agent.observe = lambda *args: None
    return loop.train(run)["env_steps_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base", type=Path, required=True, help="tree whose rlagents/loop.py is the reference")
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    loops = {"base": load_loop(args.base), "new": rlagents.loop}
    with tempfile.TemporaryDirectory() as tmp:
        for setting, (steps, extra, null_agent) in SETTINGS.items():
            speeds: dict[str, list[float]] = {name: [] for name in loops}
            for r in range(args.rounds):
                for name in (["base", "new"] if r % 2 == 0 else ["new", "base"]):  # neither always goes first
                    run_dir = Path(tmp) / f"{setting.replace(' ', '-')}-{name}-{r}"
                    speeds[name].append(steps_per_s(loops[name], steps, extra, null_agent, run_dir))
            ratios = [n / b for n, b in zip(speeds["new"], speeds["base"])]
            print(f"{setting:12s} ({steps} steps x {args.rounds})  base {statistics.median(speeds['base']):8,.0f}"
                  f" steps/s  new {statistics.median(speeds['new']):8,.0f} steps/s  new/base: median "
                  f"{statistics.median(ratios):.3f}, quartiles {statistics.quantiles(ratios, n=4)[0]:.3f}-"
                  f"{statistics.quantiles(ratios, n=4)[2]:.3f}")


if __name__ == "__main__":
    main()
