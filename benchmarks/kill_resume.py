"""Kill runs with SIGKILL at random moments, resume each to completion, and compare with uninterrupted runs.

Usage: python benchmarks/kill_resume.py [--kills 20] [--agent dqn] [--env CartPole-v1] [--seed 0]
                                        [--set checkpoint_replay=true ...]
First one uninterrupted run (the reference, which also times a run). Then each run, same seed and config
plus `checkpoint_every`, is killed (SIGKILL) at a random moment — inside a randomly chosen checkpoint
interval, chosen by progress because the machine's speed varies — and `python -m rlagents.train --resume RUN_DIR` is run until it completes. Each final result is
compared with the reference's: with the replay buffer checkpointed they should be identical.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--agent", default="dqn")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=2000)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args()
    rng = random.Random(1234)
    root = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    base = [sys.executable, "-m", "rlagents.train", "--no-progress"]
    overrides = [arg for kv in [f"checkpoint_every={args.checkpoint_every}", *args.set] for arg in ("--set", kv)]
    fresh = ["--agent", args.agent, "--env", args.env, "--seed", str(args.seed), *overrides]
    t0 = time.perf_counter()
    subprocess.run(base + fresh + ["--run-dir", str(root / "reference")], check=True, stdout=subprocess.DEVNULL)
    duration = time.perf_counter() - t0
    reference = json.loads((root / "reference" / "summary.json").read_text())
    print(f"reference run: {duration:.1f} s, final eval return {reference['eval_return_mean']:.1f}", flush=True)
    n_checkpoints = reference["total_steps"] // args.checkpoint_every
    rows = []
    for i in range(args.kills):
        run_dir = root / f"run{i}"
        # A random moment of the run, chosen by progress rather than by clock (the machine's speed varies):
        # a random checkpoint interval, then a random point inside it (k = 0: before the first checkpoint).
        k = rng.randrange(0, n_checkpoints)
        fraction = rng.random()
        proc = subprocess.Popen(base + fresh + ["--run-dir", str(run_dir)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = last = time.perf_counter()
        seen = 0
        while proc.poll() is None and seen < k:
            # the newest periodic checkpoint's index (older ones are pruned, so files can't simply be counted)
            names = [f.stem for f in (run_dir / "checkpoints").glob("step_*.json")] if (
                run_dir / "checkpoints").is_dir() else []
            count = max((int(n.split("_")[1]) // args.checkpoint_every for n in names), default=0)
            if count > seen:
                seen, interval, last = count, time.perf_counter() - last, time.perf_counter()
            time.sleep(0.02)
        if k == 0:
            interval = max(1.0, (duration - 4.0) / max(n_checkpoints, 1))
        time.sleep(fraction * interval)
        delay = time.perf_counter() - started
        killed = proc.poll() is None
        proc.kill()
        proc.wait()
        resumes = 0
        while not (run_dir / "summary.json").is_file() or json.loads(
                (run_dir / "summary.json").read_text()).get("status") != "completed":
            has_ckpt = any((run_dir / "checkpoints").glob("step_*.json")) if (run_dir / "checkpoints").is_dir() else False
            cmd = base + (["--resume", str(run_dir)] if has_ckpt else fresh + ["--run-dir", str(run_dir)])
            if not has_ckpt:  # killed before its first checkpoint: start over in an emptied folder
                for path in sorted(run_dir.rglob("*"), reverse=True):
                    path.unlink() if path.is_file() else path.rmdir()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            resumes += 1
        summary = json.loads((run_dir / "summary.json").read_text())
        resumed = summary["sessions"] > 1  # else it was killed before its first checkpoint and restarted
        same = ([e["return_mean"] for e in summary["evaluations"]] ==
                [e["return_mean"] for e in reference["evaluations"]]
                and summary["final_eval_returns"] == reference["final_eval_returns"])
        rows.append((i, delay, killed, resumed, summary["eval_return_mean"], same))
        what = ("finished before the kill" if not killed else "resumed from a checkpoint" if resumed
                else "restarted (killed before its first checkpoint)")
        print(f"kill {i:2d}: after {delay:5.2f} s, {seen} checkpoints written, {what}, final eval return "
              f"{summary['eval_return_mean']:.1f}, steps {summary['total_steps']}, every evaluation identical to "
              f"the reference: {same}", flush=True)
    finals = sorted(r[4] for r in rows)
    print(f"{len(rows)} runs, all completed; killed mid-run: {sum(r[2] for r in rows)}; resumed from a "
          f"checkpoint: {sum(r[3] for r in rows)}; identical to the uninterrupted run: {sum(r[5] for r in rows)}; "
          f"final eval returns: min {finals[0]:.1f}, median {finals[len(finals) // 2]:.1f}, max {finals[-1]:.1f}")


if __name__ == "__main__":
    main()
