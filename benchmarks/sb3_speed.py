"""Env steps per second of Stable-Baselines3 DQN and ours, with RL Zoo's tuned CartPole-v1 hyperparameters.

Each measurement runs in its own process, one after the other, so neither competes for the CPU. Both libraries
are measured with one and with two torch threads, and each one's faster median is compared.
Usage: python benchmarks/sb3_speed.py [--steps 50000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# RL Zoo (hyperparams/dqn.yml, CartPole-v1)
ZOO = dict(learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1_000, gamma=0.99,
           target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
           exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256]))
OURS = ["lr=2.3e-3", "batch_size=64", "buffer_size=100000", "learning_starts=1000", "gamma=0.99",
        "target_update_every=10", "tau=1.0", "train_every=256", "gradient_steps=128", "epsilon_fraction=0.16",
        "epsilon_end=0.04", "hidden=256,256", "double=false", "n_step=1", "lr_final=null", "max_grad_norm=10"]

SB3_CHILD = """
import sys, time, json, torch
threads = int(sys.argv[2])
if threads: torch.set_num_threads(threads)
from stable_baselines3 import DQN
kwargs = json.loads(sys.argv[3])
model = DQN("MlpPolicy", "CartPole-v1", seed=0, verbose=0, device="cpu", **kwargs)
steps = int(sys.argv[1])
t = time.perf_counter()
model.learn(total_timesteps=steps)
print(json.dumps({"steps_per_s": steps / (time.perf_counter() - t), "threads": torch.get_num_threads()}))
"""


def sb3(steps: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", SB3_CHILD, str(steps), str(threads), json.dumps(ZOO)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ours(steps: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "rlagents.train", "--agent", "dqn", "--env", "CartPole-v1", "--seed", "0",
               "--steps", str(steps), "--eval-every", "0", "--no-progress", "--run-dir", str(run_dir)]
        for pair in OURS + [f"torch_threads={threads}"]:
            cmd += ["--set", pair]
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        summary = json.loads((run_dir / "summary.json").read_text())
    return {"steps_per_s": summary["env_steps_per_s"], "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"sb3 (default threads)": [], "sb3 (1 thread)": [],
                                       "rlagents (1 thread)": [], "rlagents (2 threads)": []}
    for _ in range(args.repeats):  # interleaved, so slow phases of a noisy machine hit both libraries
        results["sb3 (default threads)"].append(sb3(args.steps, 0)["steps_per_s"])
        results["rlagents (1 thread)"].append(ours(args.steps, 1)["steps_per_s"])
        results["sb3 (1 thread)"].append(sb3(args.steps, 1)["steps_per_s"])
        results["rlagents (2 threads)"].append(ours(args.steps, 2)["steps_per_s"])
    medians = {k: statistics.median(v) for k, v in results.items()}
    best_sb3 = max(medians["sb3 (default threads)"], medians["sb3 (1 thread)"])
    best_ours = max(medians["rlagents (1 thread)"], medians["rlagents (2 threads)"])
    for name, values in results.items():
        print(f"{name:24s} median {medians[name]:8.0f} env steps/s   runs: {', '.join(f'{v:.0f}' for v in values)}")
    print(f"ratio best rlagents / best sb3: {best_ours / best_sb3:.2f}x  "
          f"({args.steps} steps, RL Zoo CartPole-v1 hyperparameters, {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
