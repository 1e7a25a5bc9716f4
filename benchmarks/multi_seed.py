"""Train one agent on one env for several seeds with its default config and print a markdown table.

Runs go one at a time by default (`--parallel 1`) so training times are not inflated by competing runs.
Usage: python benchmarks/multi_seed.py --agent dqn --env CartPole-v1 --seeds 0 1 2 3 4 [--out DIR] [--digits N]
[-- extra args]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run(agent: str, env: str, seed: int, out: Path, extra: list[str]) -> dict:
    run_dir = out / f"seed{seed}"
    cmd = [sys.executable, "-m", "rlagents.train", "--agent", agent, "--env", env, "--seed", str(seed),
           "--run-dir", str(run_dir), "--no-progress", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed} failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads((run_dir / "summary.json").read_text())


def table(rows: list[dict], digits: int = 1) -> str:
    lines = ["| seed | final eval return | solved at step | solved at (training s) | env steps/s | training s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s in rows:
        lines.append(f"| {s['seed']} | {s['eval_return_mean']:.{digits}f} ± {s['eval_return_std']:.{digits}f} | "
                     f"{s['solved_at_step'] if s['solved_at_step'] is not None else '—'} | "
                     f"{s['solved_at_time_s'] if s['solved_at_time_s'] is not None else '—'} | "
                     f"{s['env_steps_per_s']:,.0f} | {s['train_time_s']:.1f} |")
    threshold = rows[0]["reward_threshold"]

    def median(key):
        values = [s[key] if s[key] is not None else float("inf") for s in rows]
        return statistics.median(values)

    solved = sum(1 for s in rows if threshold is not None and s["eval_return_mean"] >= threshold)
    lines.append(f"\nfinal evaluation ≥ threshold ({threshold}): {solved}/{len(rows)} seeds; median solved at step "
                 f"{median('solved_at_step')}; median solved at {median('solved_at_time_s')} s of training; "
                 f"median {median('env_steps_per_s'):,.0f} env steps/s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agent", required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--digits", type=int, default=1, help="decimals of the returns (3 for success rates)")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    out = args.out or Path(tempfile.mkdtemp(prefix="multi_seed_"))
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda s: run(args.agent, args.env, s, out, extra), args.seeds))
    for s in rows:
        curve = " ".join(f"{e['return_mean']:.0f}" for e in s["evaluations"])
        print(f"seed {s['seed']} evaluations: {curve}", file=sys.stderr)
    print(table(rows, args.digits))
    print(f"runs: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
