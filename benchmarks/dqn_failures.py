"""How a CartPole DQN run's greedy policy fails late, and which failures its replay holds.

Usage: python benchmarks/dqn_failures.py SEED OUT_DIR [train options, e.g. --set terminal_fraction=0.05]
Trains exactly as `python -m rlagents.train --agent dqn --env CartPole-v1 --seed SEED` (the probes only read the
agent and use their own env) and prints:
- every 5,000 env steps, 10 greedy episodes (reset seeds 77,000-77,009): their returns, what ended each one
  (`cart`: |x| > 2.4, the cart left the track; `pole`: the pole passed 12 degrees; `trunc`: 500 steps), the
  mean cart position and the network's max_a Q(s, a) of the state before the failure, at that step (the true
  value of a state one step from the end is about 1; no return exceeds 100);
- at the end, replay's terminal transitions by cause and by the step they were stored at (the buffer never wraps
  in these runs, so slot = storage order), and the final network's mean max_a Q of the states before each kind.
Writes OUT_DIR.failures.json. docs/agents/dqn.md "Stability" reads these.
"""

from __future__ import annotations

import json
import sys

import gymnasium as gym
import numpy as np
import torch

from rlagents.loop import train
from rlagents.train import build_parser, prepare

X_LIMIT, ANGLE_LIMIT = 2.4, 12 * 2 * np.pi / 360  # CartPole-v1's termination thresholds
PROBE_EVERY, PROBE_EPISODES, PROBE_SEED = 5_000, 10, 77_000
BIN = 5_000


def cause(obs: np.ndarray) -> str:
    """What a terminal CartPole observation broke: the track's end or the pole's angle."""
    return "cart" if abs(obs[0]) > X_LIMIT else ("pole" if abs(obs[2]) > ANGLE_LIMIT else "none")


def max_q(agent, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return agent.q(torch.as_tensor(np.asarray(obs, np.float32))).max(1).values.numpy()


def greedy_episode(agent, env: gym.Env, seed: int) -> dict:
    """One greedy episode: return, what ended it, mean cart position, max Q of the state before a failure."""
    obs, _ = env.reset(seed=seed)
    total, xs, terminated, truncated = 0.0, [], False, False
    while not (terminated or truncated):
        before = obs
        obs, reward, terminated, truncated, _ = env.step(int(agent.act(obs[None], explore=False)[0]))
        total += float(reward)
        xs.append(float(obs[0]))
    return {"return": total, "end": cause(obs) if terminated else "trunc", "mean_x": float(np.mean(xs)),
            "q_before_failure": float(max_q(agent, before[None])[0]) if terminated else None}


def replay_failures(agent) -> dict:
    """Replay's terminal transitions by cause and by storage bin, and the final net's Q before each cause."""
    buffer, n = agent.buffer, len(agent.buffer)
    slots = np.flatnonzero(buffer.terminated[:n] > 0)
    causes = np.array([cause(buffer.next_obs[i]) for i in slots])
    q = max_q(agent, buffer.obs[slots]) if len(slots) else np.zeros(0)
    bins = {f"{lo}-{lo + BIN - 1}": {c: int(((causes == c) & (slots >= lo) & (slots < lo + BIN)).sum())
                                      for c in ("cart", "pole")} for lo in range(0, n, BIN)}
    return {"transitions": n, "terminal": len(slots), "bins": bins,
            "q_before": {c: (float(q[causes == c].mean()), int((causes == c).sum())) for c in ("cart", "pole")
                         if (causes == c).any()}}


def main() -> None:
    seed, out, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
    args = build_parser().parse_args(["--agent", "dqn", "--env", "CartPole-v1", "--seed", seed, "--run-dir", out,
                                      "--no-progress", *extra])
    run = prepare(args)
    agent, observe, probes, env = run.agent, run.agent.observe, {}, gym.make("CartPole-v1")

    def observe_and_probe(*transition, **kwargs) -> None:
        observe(*transition, **kwargs)
        if agent.steps % PROBE_EVERY == 0:
            probes[agent.steps] = [greedy_episode(agent, env, PROBE_SEED + k) for k in range(PROBE_EPISODES)]

    agent.observe = observe_and_probe
    run.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        summary = train(run)
    finally:
        run.envs.close()
        run.eval_envs.close()
        env.close()
    replay = replay_failures(agent)
    with open(f"{out}.failures.json", "w") as f:
        json.dump({"probes": probes, "replay": replay, "final_eval": summary["evaluations"][-1]}, f)
    for step, episodes in probes.items():
        q = [round(e["q_before_failure"], 1) for e in episodes if e["q_before_failure"] is not None]
        print(f"step {step:6d}: returns {[int(e['return']) for e in episodes]}, ends {[e['end'] for e in episodes]}, "
              f"mean x {np.mean([e['mean_x'] for e in episodes]):+.2f}, Q before failure {q}")
    print(f"final evaluation {summary['evaluations'][-1]['return_mean']:.1f}; replay: {replay['terminal']} terminal "
          f"of {replay['transitions']} transitions ({replay['terminal'] / replay['transitions']:.1%})")
    for span, counts in replay["bins"].items():
        print(f"  stored at {span:>11s}: cart {counts['cart']:4d}, pole {counts['pole']:4d}")
    for kind, (q, count) in replay["q_before"].items():
        print(f"  final net's mean max Q of the {count} replay states before a {kind} failure: {q:.1f}")


if __name__ == "__main__":
    main()
