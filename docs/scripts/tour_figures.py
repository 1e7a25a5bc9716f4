"""The figures of the taxonomy tour (docs/tour/): `python docs/scripts/tour_figures.py [AXIS ...]`.

Each axis is a few `rlagents.compare` runs (one per variant: an agent, or one agent with a config switch) on
small budgets; the script plots the greedy evaluation return against env steps (median over seeds, the band
spanning the seeds) into docs/tour/figures/<axis>.png and writes docs/tour/figures/<axis>.json with every
run's final return and first step at the threshold, plus the date, CPU and the calls made; a
variant whose call has not changed since the saved JSON is reused from it (marked `reused_from`: its date). `taxonomy` draws
the map of the agents (no training). With no argument it makes every figure, cheapest first;
`--plot-only AXIS ...` redraws figures from their JSON without training.

The runs go to runs/tour/<axis>/<variant>/ (each a full comparison folder: report.md, curves.png, runs/).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "docs" / "tour" / "figures"
RUNS = ROOT / "runs" / "tour"


@dataclass(frozen=True)
class Variant:
    label: str
    agent: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Axis:
    env: str
    seeds: list[int]
    steps: dict[str, int]  # per agent
    variants: list[Variant]
    title: str
    eval: dict[str, Any]  # evaluation schedule of every run (the default schedules evaluate less often)
    log_x: bool = False
    train_panel: bool = False  # a second panel: the return of the training episodes (exploring), from TensorBoard
    y_range: tuple[float, float] | None = None  # e.g. to keep CliffWalking's early -10,000 (a policy looping
    # until the time limit) from flattening the rest


AXES = {
    "on-off-policy": Axis(
        "CliffWalking-v1", [0, 1, 2], {"qlearning": 50_000},
        [Variant("Q-learning (off-policy)", "qlearning", {"update": "qlearning"}),
         Variant("SARSA (on-policy)", "qlearning", {"update": "sarsa"})],
        "CliffWalking: greedy return (optimal: -13)", {"eval_every": 2_500, "eval_episodes": 5},
        train_panel=True, y_range=(-60, 0)),
    "exploration": Axis(
        "FrozenLake-v1", [0, 1, 2], {"qlearning": 100_000},
        [Variant("epsilon-greedy", "qlearning", {"exploration": "epsilon"}),
         Variant("Boltzmann", "qlearning", {"exploration": "boltzmann"}),
         Variant("UCB", "qlearning", {"exploration": "ucb"})],
        "FrozenLake 4x4 (slippery): greedy success rate", {"eval_every": 5_000, "eval_episodes": 200}),
    "model-based": Axis(
        "Taxi-v4", [0, 1, 2], {"qlearning": 200_000, "planner": 10_000},
        [Variant("qlearning (model-free)", "qlearning"),
         Variant("planner (model-based)", "planner", {"eval_every": 1_000})],
        "Taxi: greedy return against env steps (log scale)", {"eval_every": 10_000, "eval_episodes": 50},
        log_x=True, y_range=(-250, 15)),
    "value-policy": Axis(
        "CartPole-v1", [0, 1], {"dqn": 40_000, "reinforce": 50_000, "ppo": 50_000},
        [Variant("dqn (value-based)", "dqn"), Variant("reinforce (policy gradient)", "reinforce"),
         Variant("ppo (actor-critic policy gradient)", "ppo")],
        "CartPole: greedy return against env steps", {"eval_every": 2_500, "eval_episodes": 5}),
    "memory": Axis(
        "CartPoleNoVelocity-v0", [0, 1], {"ppo": 100_000, "sb3-recurrent-ppo": 50_000},
        # ppo's CartPoleNoVelocity-v0 entry (configs/ppo.yaml: an LSTM core) with and without its core
        [Variant("feed-forward ppo", "ppo", {"recurrent": "none"}),
         Variant("recurrent ppo (LSTM)", "ppo"),
         Variant("sb3-recurrent-ppo (LSTM)", "sb3-recurrent-ppo")],
        "CartPole without velocities: greedy return against env steps", {"eval_every": 2_500, "eval_episodes": 5}),
}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def run_axis(name: str, axis: Axis, saved: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every variant of `axis`; a variant whose call is unchanged in `saved` (the axis's JSON) is reused."""
    import rlagents

    record: dict[str, Any] = {"env": axis.env, "seeds": axis.seeds, "date": datetime.now(timezone.utc).isoformat(
        timespec="minutes"), "cpu": cpu_name(), "load_average_at_start": list(np.round(_load(), 1)), "variants": {}}
    for variant in axis.variants:
        config = dict(axis.eval, **variant.config)
        steps = axis.steps[variant.agent]
        out = RUNS / name / variant.label.split(" ")[0].replace("-", "")
        call = (f"rlagents.compare([{variant.agent!r}], {axis.env!r}, seeds={axis.seeds}, steps={steps}, "
                f"config={config!r}, workers=1)")
        previous = (saved or {}).get("variants", {}).get(variant.label)
        if previous and previous["call"] == call:
            record["variants"][variant.label] = previous | {"reused_from": previous.get("reused_from", saved["date"])}
            continue
        print(call, flush=True)
        result = rlagents.compare([variant.agent], axis.env, seeds=axis.seeds, steps=steps, config=config, out=out,
                                  workers=1)
        runs = [{k: r.get(k) for k in ("seed", "status", "eval_return_mean", "solved_at_step", "train_time_s",
                                       "env_steps_per_s", "reward_threshold")}
                | {"curve": [(e["step"], e["return_mean"]) for e in r.get("evaluations", [])]}
                | ({"train_curve": train_curve(Path(r["run_dir"]))} if axis.train_panel else {})
                for r in result.runs]
        record["variants"][variant.label] = {"call": call, "runs": runs}
    return record


def train_curve(run_dir: Path) -> list[tuple[int, float]]:
    """`charts/episode_return` of a run (the mean return of recent training episodes), from its events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars("charts/episode_return")]


def _load() -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ()


def _draw(ax: Any, record: dict[str, Any], key: str) -> None:
    for label, variant in record["variants"].items():
        curves = [r[key] for r in variant["runs"] if r.get(key)]
        length = min(len(c) for c in curves)
        steps = np.array([s for s, _ in curves[0][:length]])
        values = np.array([[v for _, v in c[:length]] for c in curves])
        line, = ax.plot(steps, np.median(values, axis=0), label=f"{label} ({len(curves)} seeds)")
        ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)


def plot_axis(name: str, axis: Axis, record: dict[str, Any]) -> None:
    panels = 2 if axis.train_panel else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4), squeeze=False)
    ax = axes[0][0]
    _draw(ax, record, "curve")
    threshold = next(r["reward_threshold"] for v in record["variants"].values() for r in v["runs"])
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle=":", label=f"reward threshold {threshold:g}")
    ax.set(xlabel="env steps", ylabel="greedy evaluation return", title=axis.title)
    if axis.train_panel:
        _draw(axes[0][1], record, "train_curve")
        axes[0][1].set(xlabel="env steps", ylabel="return of recent training episodes",
                       title="while training (exploring)")
    for a in axes[0]:
        if axis.log_x:
            a.set_xscale("log")
        if axis.y_range:
            a.set_ylim(*axis.y_range)
        a.legend(fontsize=8)
    ax.set_xlabel(f"env steps\n{record['date'][:10]}, {record['cpu']}; line: median over seeds, band: min-max",
                  fontsize=8)
    fig.tight_layout()
    fig.savefig(FIGURES / f"{name}.png", dpi=110)
    plt.close(fig)


AGENTS = [  # (agent, model-free or model-based, value-based or not, function class, exploration)
    ("qlearning", "model-free", "value-based", "tabular", "epsilon / Boltzmann / UCB"),
    ("dqn", "model-free", "value-based", "deep", "epsilon-greedy"),
    ("sb3-dqn", "model-free", "value-based", "deep", "epsilon-greedy"),
    ("reinforce", "model-free", "policy-based", "deep", "sampling the policy"),
    ("ppo", "model-free", "policy-based", "deep", "sampling the policy"),
    ("sb3-ppo, sb3-a2c, sb3-recurrent-ppo", "model-free", "policy-based", "deep", "sampling the policy"),
    ("planner (R-max)", "model-based", "value-based", "count model + value iteration", "optimism (R-max)"),
    ("planner (CEM MPC)", "model-based", "action search", "dynamics ensemble + CEM", "sampled action plans"),
]


def taxonomy() -> None:
    """A 2×2 map: model-free / model-based against value-based / policy-based, each agent with its exploration."""
    fig, ax = plt.subplots(figsize=(8, 5))
    cols, rows = ["value-based", "policy-based / action search"], ["model-free", "model-based"]
    for i, _ in enumerate(cols):
        for j, _ in enumerate(rows):
            ax.add_patch(plt.Rectangle((i, 1 - j), 1, 1, fill=True, alpha=0.08 + 0.06 * (i + j), edgecolor="black"))
    cells: dict[tuple[int, int], list[str]] = {}
    for agent, model, kind, size, exploration in AGENTS:
        col = 0 if kind == "value-based" else 1
        cells.setdefault((col, rows.index(model)), []).append((agent, f"{size}; explores by {exploration}"))
    for (col, row), names in cells.items():
        for k, (agent, detail) in enumerate(names):
            y = 1 - row + 0.9 - 0.29 * k
            ax.text(col + 0.05, y, agent, fontsize=10, family="monospace", weight="bold", va="top")
            ax.text(col + 0.05, y - 0.1, detail, fontsize=8, color="dimgrey", va="top")
    for i, c in enumerate(cols):
        ax.text(i + 0.5, 2.05, c, ha="center", fontsize=11, weight="bold")
    for j, r in enumerate(rows):
        ax.text(-0.04, 1.5 - j, r, ha="right", va="center", rotation=90, fontsize=11, weight="bold")
    ax.text(1.0, -0.12, "memory: dqn, reinforce, ppo (recurrent: lstm | gru) and sb3-recurrent-ppo", ha="right",
            fontsize=8, color="grey")
    ax.set(xlim=(-0.15, 2.02), ylim=(-0.18, 2.2))
    ax.axis("off")
    ax.set_title("rlagents in the taxonomy of RL algorithms", fontsize=12)
    fig.tight_layout()
    fig.savefig(FIGURES / "taxonomy.png", dpi=110)
    plt.close(fig)


def main(args: list[str]) -> None:
    """`AXIS ...` runs and plots those axes; `--plot-only AXIS ...` redraws from their saved JSON."""
    plot_only = "--plot-only" in args
    names = [a for a in args if a != "--plot-only"] or ["taxonomy", *AXES]
    FIGURES.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name == "taxonomy":
            taxonomy()
            continue
        if name not in AXES:
            sys.exit(f"error: unknown axis {name!r}; choose from taxonomy, {', '.join(AXES)}")
        path = FIGURES / f"{name}.json"
        if plot_only:
            record = json.loads(path.read_text())
        else:
            record = run_axis(name, AXES[name], json.loads(path.read_text()) if path.exists() else None)
            record["command"] = f"nice -n 10 python docs/scripts/tour_figures.py {name}"
            path.write_text(json.dumps(record, indent=1) + "\n")
        plot_axis(name, AXES[name], record)


if __name__ == "__main__":
    main(sys.argv[1:])
