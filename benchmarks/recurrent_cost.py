"""What memory costs, and what it does not: the recurrent core's time per env step and per PPO update, and the
feed-forward agents' speed before and after the core was added.

`--what core`: PPO on CartPoleNoVelocity-v0 (8 envs, the `configs/ppo.yaml` entry's rollout: 32 steps × 8
envs, 20 epochs of one minibatch), feed-forward (`recurrent=none`) against LSTM and GRU cores, interleaved
round by round in one process: microseconds per training `act` of the 8 envs, and milliseconds per update.

`--what dqn --base TREE`: CartPole-v1 DQN (its default config) env steps/s of this tree against another tree
(e.g. `git archive <commit before the core> | tar -x -C /tmp/base`), each run in its own subprocess with
that tree first on `PYTHONPATH`, interleaved A/B/B/A so that both see the same load; prints the medians and
the median of the per-round ratios (new / base).
`--what identical --base TREE`: short CartPole-v1 runs of ppo, reinforce and dqn (feed-forward, their
default configs) with each tree; prints each run's evaluation returns and a hash of every tensor of its final
checkpoint: equal lines mean bit-identical training.
Usage: nice -n 10 python benchmarks/recurrent_cost.py --what core [--rounds 5]
       nice -n 10 python benchmarks/recurrent_cost.py --what dqn --base /tmp/base [--rounds 6]
       nice -n 10 python benchmarks/recurrent_cost.py --what identical --base /tmp/base
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("none", "lstm", "gru")


def build_ppo(recurrent: str):
    """A PPO agent on CartPoleNoVelocity-v0 with the ppo.yaml entry's rollout and network sizes."""
    from rlagents.train import build_parser, prepare

    tmp = tempfile.mkdtemp()
    run = prepare(build_parser().parse_args([
        "--agent", "ppo", "--env", "CartPoleNoVelocity-v0", "--seed", "0", "--no-progress", "--run-dir",
        f"{tmp}/run", "--set", f"recurrent={recurrent}", "--set", "learner=auto"]))
    return run


def core_costs(recurrent: str, vector_steps: int = 1_024) -> tuple[float, float]:
    """(µs per training `act` of all envs, ms per update) of a fresh agent on real observations."""
    run = build_ppo(recurrent)
    agent, envs = run.agent, run.envs
    obs, _ = envs.reset(seed=0)
    act_s = 0.0
    for _ in range(vector_steps):
        start = time.perf_counter()
        actions = agent.act(obs, explore=True)
        act_s += time.perf_counter() - start
        next_obs, rewards, terminated, truncated, _ = envs.step(actions)
        agent.observe(obs, actions, rewards, next_obs, terminated, truncated)  # updates, timed by the agent
        obs = next_obs
    envs.close()
    return act_s / vector_steps * 1e6, agent.costs()["update_ms"]


def run_core(rounds: int) -> None:
    results: dict[str, dict[str, list[float]]] = {k: {"act_us": [], "update_ms": []} for k in KINDS}
    for r in range(rounds):
        for kind in KINDS if r % 2 == 0 else KINDS[::-1]:
            act_us, update_ms = core_costs(kind)
            results[kind]["act_us"].append(act_us)
            results[kind]["update_ms"].append(update_ms)
    print("PPO on CartPoleNoVelocity-v0, 8 envs, rollout 32 × 8, 20 epochs (medians over rounds):")
    base = {key: statistics.median(values) for key, values in results["none"].items()}
    for kind, values in results.items():
        act, update = statistics.median(values["act_us"]), statistics.median(values["update_ms"])
        print(f"  recurrent={kind:4}  act (8 envs) {act:7.1f} µs ({act / base['act_us']:.2f}×)   "
              f"update {update:7.1f} ms ({update / base['update_ms']:.2f}×)")


def dqn_speed(tree: Path, steps: int) -> float:
    """CartPole-v1 DQN env steps/s with `tree` first on PYTHONPATH (its rlagents), in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(tree))
        subprocess.run([sys.executable, "-m", "rlagents.train", "--agent", "dqn", "--env", "CartPole-v1",
                        "--seed", "0", "--steps", str(steps), "--eval-every", "0", "--eval-episodes", "1",
                        "--no-progress", "--run-dir", f"{tmp}/run"], env=env, check=True, cwd=tmp,
                       capture_output=True)
        return json.loads(Path(f"{tmp}/run/summary.json").read_text())["env_steps_per_s"]


def run_dqn(base: Path, rounds: int, steps: int) -> None:
    trees = {"base": base.resolve(), "new": ROOT}
    speeds: dict[str, list[float]] = {name: [] for name in trees}
    ratios = []
    for r in range(rounds):
        order = ["base", "new"] if r % 2 == 0 else ["new", "base"]
        got = {name: dqn_speed(trees[name], steps) for name in order}
        for name, value in got.items():
            speeds[name].append(value)
        ratios.append(got["new"] / got["base"])
    print(f"CartPole-v1 DQN (default config, {steps:,} steps), {rounds} rounds interleaved:")
    for name in trees:
        print(f"  {name:4} {statistics.median(speeds[name]):8.0f} steps/s  (all: "
              f"{', '.join(f'{s:.0f}' for s in speeds[name])})")
    print(f"  median ratio new/base {statistics.median(ratios):.3f}  (all: {', '.join(f'{x:.3f}' for x in ratios)})")


def fingerprint(tree: Path, agent: str, steps: int = 3_000) -> str:
    """A short run of `agent` with `tree`'s rlagents: its evaluation returns and a hash of its final weights."""
    from safetensors.numpy import load_file

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "rlagents.train", "--agent", agent, "--env", "CartPole-v1", "--seed",
                        "1", "--steps", str(steps), "--eval-every", str(steps // 2), "--eval-episodes", "5",
                        "--no-progress", "--run-dir", f"{tmp}/run"], env=dict(os.environ, PYTHONPATH=str(tree)),
                       check=True, cwd=tmp, capture_output=True)
        summary = json.loads(Path(f"{tmp}/run/summary.json").read_text())
        tensors = load_file(f"{tmp}/run/checkpoints/final.safetensors")
    digest = hashlib.sha256(b"".join(tensors[k].tobytes() for k in sorted(tensors))).hexdigest()[:16]
    return f"{[e['return_mean'] for e in summary['evaluations']]} {len(tensors)} tensors sha256 {digest}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--what", choices=("core", "dqn", "identical"), required=True)
    p.add_argument("--base", type=Path, help="--what dqn: the tree to compare against")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10_000, help="--what dqn: env steps per run")
    args = p.parse_args()
    np.set_printoptions(precision=3)
    if args.what == "core":
        import torch

        torch.set_num_threads(1)
        run_core(args.rounds)
    elif args.base is None:
        p.error(f"--what {args.what} needs --base TREE")
    elif args.what == "dqn":
        run_dqn(args.base, args.rounds, args.steps)
    else:
        for agent in ("ppo", "reinforce", "dqn"):
            for name, tree in (("base", args.base.resolve()), ("new", ROOT)):
                print(f"{agent:9} {name:4} {fingerprint(tree, agent)}", flush=True)


if __name__ == "__main__":
    main()
