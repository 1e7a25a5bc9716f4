"""Kill runs with SIGKILL at random moments, resume each to completion, and compare with uninterrupted runs.

Usage: python benchmarks/kill_resume.py [--kills 20] [--agent dqn] [--env CartPole-v1] [--seed 0]
Each run uses the default config plus `checkpoint_every`; it is killed at a uniformly random moment of its
expected duration, then `python -m rlagents.train --resume RUN_DIR` is run until the run completes.
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
    parser.add_argument("--min-delay", type=float, default=6.0, help="kill no sooner than this (after start-up)")
    parser.add_argument("--max-delay", type=float, default=16.0, help="kill within this many seconds of start")
    args = parser.parse_args()
    rng = random.Random(1234)
    root = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    base = [sys.executable, "-m", "rlagents.train", "--no-progress"]
    rows = []
    for i in range(args.kills):
        run_dir = root / f"run{i}"
        delay = rng.uniform(args.min_delay, args.max_delay)
        proc = subprocess.Popen(base + ["--agent", args.agent, "--env", args.env, "--seed", str(args.seed),
                                        "--run-dir", str(run_dir), "--set", f"checkpoint_every={args.checkpoint_every}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        killed = proc.poll() is None
        proc.kill()
        proc.wait()
        resumes = 0
        while not (run_dir / "summary.json").is_file() or json.loads(
                (run_dir / "summary.json").read_text()).get("status") != "completed":
            has_ckpt = any((run_dir / "checkpoints").glob("step_*.json")) if (run_dir / "checkpoints").is_dir() else False
            cmd = base + (["--resume", str(run_dir)] if has_ckpt else
                          ["--agent", args.agent, "--env", args.env, "--seed", str(args.seed), "--run-dir",
                           str(run_dir), "--set", f"checkpoint_every={args.checkpoint_every}"])
            if not has_ckpt:  # killed before its first checkpoint: start over in an emptied folder
                for path in sorted(run_dir.rglob("*"), reverse=True):
                    path.unlink() if path.is_file() else path.rmdir()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            resumes += 1
        summary = json.loads((run_dir / "summary.json").read_text())
        resumed = summary["sessions"] > 1  # else it was killed before its first checkpoint and restarted
        rows.append((i, delay, killed, resumed, summary["eval_return_mean"]))
        print(f"kill {i:2d}: after {delay:5.2f} s (killed: {killed}), "
              f"{'resumed from a checkpoint' if resumed else 'restarted (no checkpoint yet)'}, final eval return "
              f"{summary['eval_return_mean']:.1f}, steps {summary['total_steps']}", flush=True)
    finals = sorted(r[4] for r in rows)
    print(f"{len(rows)} runs, all completed; killed mid-run: {sum(r[2] for r in rows)}; resumed from a "
          f"checkpoint: {sum(r[3] for r in rows)}; final eval returns: min {finals[0]:.1f}, median "
          f"{finals[len(finals) // 2]:.1f}, max {finals[-1]:.1f}")


if __name__ == "__main__":
    main()
