"""Print the README's comparison section (per-seed table and the time-to-solve ratio) from a compare run.

Usage: python benchmarks/compare_readme.py DIR [--ours dqn --reference sb3-dqn]
where DIR is the output folder of `python -m rlagents.compare` (it reads DIR/results.json and DIR/report.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlagents.stats import median_with_unreached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--ours", default="dqn")
    parser.add_argument("--reference", default="sb3-dqn")
    args = parser.parse_args()
    results = json.loads((args.dir / "results.json").read_text())
    runs = [r for r in results["runs"] if r.get("status") == "completed"]
    print(f"Measured {results['created']} on {results['machine']}: `{results['command']}`\n")
    report = (args.dir / "report.md").read_text().splitlines()
    print("\n".join(line for line in report if line.startswith("|")))
    print("\n| agent | seed | solved at step | solved at (training s) | final eval return | env steps/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in runs:
        print(f"| {r['agent']} | {r['seed']} | {r['solved_at_step'] or '—'} | {r['solved_at_time_s'] or '—'} | "
              f"{r['eval_return_mean']:.1f} | {r['env_steps_per_s']:,.0f} |")
    medians = {a: median_with_unreached([r["solved_at_time_s"] for r in runs if r["agent"] == a])
               for a in (args.ours, args.reference)}
    if None not in medians.values():
        print(f"\nmedian training seconds to solve: {args.ours} {medians[args.ours]:.2f}, {args.reference} "
              f"{medians[args.reference]:.2f}, ratio {medians[args.ours] / medians[args.reference]:.2f}")


if __name__ == "__main__":
    main()
