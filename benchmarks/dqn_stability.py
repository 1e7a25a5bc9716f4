"""Instrumented DQN run: every 1,000 env steps, measure what could make a solved policy fall back.

Usage: python benchmarks/dqn_stability.py SEED OUT_DIR [train options, e.g. --env CartPole-v1 --set tau=0.01]
Trains exactly as `python -m rlagents.train --agent dqn --env CartPole-v1 --seed SEED` (the probes only read
the agent; `metrics()` is drained at each probe, so the run's own TensorBoard TD-loss curve is thinner) and
writes OUT_DIR.probe.json plus a table on stdout. Each probe takes 2,000 replay states and records: the mean
of max_a Q(s, a) over all of replay and over the 2,000 most recent states, the mean max_a Q of states from
which the episode terminated, the target network's relative distance ‖θ − θ′‖/‖θ‖, the share of ReLU units
that are zero on every probed state (per layer), the weight norm, the learning rate, the share of terminal
transitions in replay and the TD loss. docs/agents/dqn.md "Stability" reads these.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from rlagents.loop import train
from rlagents.train import build_parser, prepare

PROBE_EVERY = 1_000
PROBE_STATES = 2_000


def hidden_activations(agent, x: torch.Tensor) -> list[torch.Tensor]:
    """Each hidden layer's output (after its ReLU) of the online MLP."""
    out = []
    for layer in agent.q.backbone.linears:
        x = torch.relu(torch.nn.functional.linear(x, layer.weight, layer.bias))
        out.append(x)
    return out


@torch.no_grad()
def probe(agent) -> dict:
    buffer, n = agent.buffer, len(agent.buffer)
    rows = np.random.default_rng(0).integers(0, n, PROBE_STATES)  # not the agent's rng: the run stays the same
    obs = torch.as_tensor(buffer.obs[rows])
    recent = torch.as_tensor(buffer.obs[max(0, n - PROBE_STATES):n])  # the buffer never wraps in these runs
    terminal = buffer.terminated[:n].astype(bool)
    q_terminal = agent.q(torch.as_tensor(buffer.obs[:n][terminal])).max(1).values if terminal.any() else None
    online = [p.detach() for p in agent.params]
    target = [p.detach() for p in agent.target_params]
    norm = float(sum((p ** 2).sum() for p in online).sqrt())
    return {
        "q_mean": float(agent.q(obs).max(1).values.mean()),
        "q_recent": float(agent.q(recent).max(1).values.mean()),
        "q_terminal_states": float(q_terminal.mean()) if q_terminal is not None else None,
        "target_drift": float(sum(((a - b) ** 2).sum() for a, b in zip(online, target)).sqrt()) / norm,
        "dead": [float((a.max(0).values <= 0).float().mean()) for a in hidden_activations(agent, obs)],
        "wnorm": norm, "lr": agent.optimizer.param_groups[0]["lr"], "terminal_frac": float(terminal.mean()),
    }


def main() -> None:
    seed, out, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
    env = [] if "--env" in extra else ["--env", "CartPole-v1"]
    args = build_parser().parse_args(["--agent", "dqn", *env, "--seed", seed, "--run-dir", out, "--no-progress",
                                      *extra])
    run = prepare(args)
    agent, records, observe = run.agent, [], run.agent.observe
    next_probe = [PROBE_EVERY]

    def observe_and_probe(*transition) -> None:
        observe(*transition)
        if agent.steps >= next_probe[0] and len(agent.buffer) >= PROBE_STATES // 10:
            next_probe[0] += PROBE_EVERY
            records.append({"step": agent.steps, **probe(agent), "td_loss": agent.metrics().get("losses/td_loss")})

    agent.observe = observe_and_probe
    run.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        summary = train(run)
    finally:
        run.envs.close()
        run.eval_envs.close()
    evaluations = {e["step"]: e["return_mean"] for e in summary["evaluations"]}
    for record in records:
        record["eval"] = evaluations.get(record["step"])
    with open(f"{out}.probe.json", "w") as f:
        json.dump(records, f)
    print("step    eval   maxQ(replay) maxQ(recent) Q(pre-terminal) drift  dead(per layer)  lr       terminal  TD loss")
    for r in records:
        q_term = f"{r['q_terminal_states']:15.1f}" if r["q_terminal_states"] is not None else " " * 15
        print(f"{r['step']:6d} {r['eval'] if r['eval'] is not None else float('nan'):7.1f} {r['q_mean']:12.1f} "
              f"{r['q_recent']:12.1f} {q_term} {r['target_drift']:6.3f} "
              f"{'/'.join(f'{d:.2f}' for d in r['dead']):16s} {r['lr']:.1e} {r['terminal_frac']:8.3f} "
              f"{r['td_loss'] if r['td_loss'] is not None else float('nan'):9.3f}")


if __name__ == "__main__":
    main()
