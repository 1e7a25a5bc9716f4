"""The agent × env results table (docs/results.md): every agent × every env with an entry in configs/*.yaml.

Each pair is run by `python -m rlagents.compare` on held-out seeds (default 1000-1004; no config was chosen on
them) and summarised as the IQM of the final greedy returns with its 95% stratified-bootstrap interval, next
to RL Baselines3 Zoo's published score for the same env where one exists.

A pair's result is cached in `benchmarks/results/<agent>__<env>.json` with the SHA-256 of its resolved config
(every loop and agent setting, the env's kwargs, the seeds): a rerun skips pairs whose cache matches and reruns
pairs whose config changed since. The page lists every pair, the ones not run yet (or run on an older config)
included, with the reason.

Usage:
    python benchmarks/results_table.py                       # only rewrite docs/results.md from the cache
    python benchmarks/results_table.py --run --budget-s 3600 # run missing pairs, cheapest first, then rewrite
    python benchmarks/results_table.py --run --only qlearning --only sb3-ppo:CartPole-v1
    python benchmarks/results_table.py --run --only dqn:DigitLock-v0 --backbone runs/classifier
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rlagents.agents import agent_class
from rlagents.config import (
    RESERVED_ENTRIES,
    TrainConfig,
    config_values,
    is_pattern,
    read_config_file,
)
from rlagents.errors import UserError
from rlagents.report import machine
from rlagents.runspec import resolve_spec
from rlagents.stats import iqm_interval
from rlagents.validate import parse_seeds

ROOT = Path(__file__).resolve().parents[1]
SKIP_FILES = ("classify",)  # the digit classifier is not an RL agent
NEEDS_BACKBONE = ("DigitLock-v0",)  # its entries assume the classifier's pretrained CNN (docs/classifier.md)
IMAGE_ENVS = ("DigitLock-v0", "DigitRecall-v0")  # a CNN forward per step: far dearer than a vector env's

# Rough training seconds per env step of each agent on one core (ordering only: cheapest pairs run first).
STEP_COST = {"qlearning": 1, "reinforce": 5, "ppo": 5, "sb3-a2c": 20, "sb3-ppo": 20, "dqn": 20, "sb3-dqn": 40,
             "planner": 500}

# RL Baselines3 Zoo's published scores: benchmark.md of DLR-RM/rl-baselines3-zoo (commit 0088472b8cb6),
# "Performance of trained agents": mean ± std of the episode returns of ONE trained agent (deterministic
# policy) over about 150,000 evaluation steps, after its own training budget. Keyed by (Zoo algorithm, env);
# LunarLander is Zoo's v2 (v3 fixed bugs of v2's physics; the task is the same).
ZOO_SOURCE = ("[rl-baselines3-zoo benchmark.md](https://github.com/DLR-RM/rl-baselines3-zoo/blob/"
              "0088472b8cb622732bdbc4aa3d0d0abde86c67ed/benchmark.md)")
ZOO_ALGO = {"dqn": "dqn", "sb3-dqn": "dqn", "ppo": "ppo", "sb3-ppo": "ppo", "sb3-a2c": "a2c"}
ZOO = {  # (algo, env): (mean, std, Zoo's training steps)
    ("a2c", "Acrobot-v1"): (-83.353, 17.213, "500k"),
    ("a2c", "CartPole-v1"): (500.0, 0.0, "500k"),
    ("a2c", "LunarLander-v3"): (155.751, 80.419, "200k"),
    ("a2c", "MountainCar-v0"): (-111.263, 24.087, "1M"),
    ("a2c", "MountainCarContinuous-v0"): (91.166, 0.255, "100k"),
    ("a2c", "Pendulum-v1"): (-162.965, 103.210, "1M"),
    ("dqn", "Acrobot-v1"): (-76.639, 11.752, "100k"),
    ("dqn", "CartPole-v1"): (500.0, 0.0, "50k"),
    ("dqn", "LunarLander-v3"): (154.382, 79.241, "100k"),
    ("dqn", "MountainCar-v0"): (-100.849, 9.925, "120k"),
    ("ppo", "Acrobot-v1"): (-73.506, 18.201, "1M"),
    ("ppo", "CartPole-v1"): (500.0, 0.0, "100k"),
    ("ppo", "LunarLander-v3"): (242.119, 31.823, "1M"),
    ("ppo", "MountainCar-v0"): (-110.423, 19.473, "1M"),
    ("ppo", "MountainCarContinuous-v0"): (88.343, 2.572, "20k"),
    ("ppo", "Pendulum-v1"): (-172.225, 104.159, "100k"),
}


@dataclass(frozen=True)
class Pair:
    """One agent × env with a config entry, and what its result depends on."""

    agent: str
    env: str
    steps: int
    key: str  # SHA-256 of `values`
    blocked: str = ""  # why it cannot run here ("" when it can)
    values: dict[str, Any] = field(default_factory=dict, compare=False)  # resolved config, env, seeds (flat)

    @property
    def name(self) -> str:
        return f"{self.agent}__{self.env.replace('/', '-')}"

    @property
    def cost(self) -> float:
        return self.steps * STEP_COST.get(self.agent, 50) * (50 if self.env in IMAGE_ENVS else 1)


def pair_values(agent: str, env: str, seeds: list[int], config_file: Path,
                overrides: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """(everything that fixes the pair's result: its resolved config values, env, kwargs and seeds, flat;
    its env steps per run)."""
    spec = resolve_spec(agent, env, config_file=config_file, overrides=overrides)
    values = config_values(spec.config.train, spec.config.agent, seeds)
    values["env"], values["env_kwargs"], values["agent"] = spec.env.id, spec.env.kwargs, agent
    return json.loads(json.dumps(values, default=str)), spec.config.train.steps


def digest(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def config_changes(record: dict[str, Any], pair: Pair) -> list[str]:
    """How `pair`'s config differs from the one its cached `record` was run on ("key: old -> new"). A field
    the record lacks counts as unchanged at its dataclass default: agents gain switches whose default keeps
    the old behaviour. A record without its config compares by key only."""
    if record.get("key") == pair.key:
        return []
    recorded = record.get("config")
    if recorded is None:
        return ["config hash"]
    defaults = config_values(TrainConfig(), agent_class(pair.agent).config_class(), pair.values["seed"])
    defaults = json.loads(json.dumps(defaults, default=str))
    changes = []
    for key, value in pair.values.items():
        old = recorded.get(key, defaults.get(key, "(absent)"))
        if old != value:
            changes.append(f"{key.partition('.')[2] or key}: {old} -> {value}")
    return changes


def pairs(config_dir: Path, seeds: list[int], backbone: str | None = None) -> list[Pair]:
    """Every (agent, env) with an entry of its own in `config_dir/<agent>.yaml` (patterns such as `ALE/*`
    name no one env and are left out), in file order."""
    found = []
    for path in sorted(config_dir.glob("*.yaml")):
        if path.stem in SKIP_FILES:
            continue
        for env in read_config_file(path):
            if env in RESERVED_ENTRIES or is_pattern(env):
                continue
            overrides, blocked = {}, ""
            if env in NEEDS_BACKBONE:
                if backbone:
                    overrides["backbone"] = backbone
                else:
                    blocked = ("needs the classifier's pretrained backbone: `python -m rlagents.classify --run-dir "
                               "runs/classifier`, then this script with `--backbone runs/classifier`")
            values, steps = pair_values(path.stem, env, seeds, path, overrides)
            found.append(Pair(path.stem, env, steps, digest(values), blocked, values))
    return found


def cached(cache_dir: Path, pair: Pair) -> dict[str, Any] | None:
    """The cached result of `pair`, whatever config it was run on (see `config_changes`)."""
    path = cache_dir / f"{pair.name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def load_cell(record: dict[str, Any]) -> str:
    """The 1-minute load average at the start and the end of a pair's run ("12.6–12.8")."""
    return "–".join(side.split()[0] for side in record["load"].split("->") if side.strip())


def run_pair(pair: Pair, seeds: list[int], cache_dir: Path, work_dir: Path, workers: int,
             backbone: str | None) -> dict[str, Any]:
    """Run `pair` with `rlagents.compare` and cache its per-seed final returns under its config's key."""
    out = work_dir / f"{pair.name}__{pair.key[:12]}"
    shutil.rmtree(out, ignore_errors=True)  # a run cut short leaves a folder compare would refuse
    cmd = [sys.executable, "-m", "rlagents.compare", "--agents", pair.agent, "--env", pair.env, "--seeds",
           ",".join(map(str, seeds)), "--workers", str(workers), "--out", str(out), "--no-progress"]
    if pair.env in NEEDS_BACKBONE and backbone:
        cmd += ["--set", f"backbone={backbone}"]
    started, load_start, t0 = datetime.now(timezone.utc), load(), time.perf_counter()
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True)
    results = out / "results.json"
    if not results.is_file():
        raise RuntimeError(f"{pair.name}: compare failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    runs = json.loads(results.read_text())["runs"]
    record = {
        "agent": pair.agent, "env": pair.env, "key": pair.key, "config": pair.values, "steps": pair.steps,
        "seeds": seeds,
        "finals": {str(r["seed"]): r["eval_return_mean"] for r in runs if r.get("status") == "completed"},
        "failed": {str(r["seed"]): str(r.get("error", r.get("status"))) for r in runs
                   if r.get("status") != "completed"},
        "threshold": next((r.get("reward_threshold") for r in runs if r.get("reward_threshold") is not None), None),
        "command": "python -m rlagents.compare " + " ".join(cmd[3:]).replace(str(out), f"runs/results/{out.name}"),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "workers": workers,
        "load": f"{load_start} -> {load()}", "wall_s": round(time.perf_counter() - t0, 1),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{pair.name}.json.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(cache_dir / f"{pair.name}.json")
    return record


def zoo_cell(agent: str, env: str) -> str:
    found = ZOO.get((ZOO_ALGO.get(agent, ""), env))
    if found is None:
        return "—"
    mean, std, steps = found
    return f"{mean:.1f} ± {std:.1f} ({ZOO_ALGO[agent]}, {steps} steps)"


def result_cells(record: dict[str, Any]) -> tuple[str, str]:
    """(IQM [95% CI], seeds ending at or above the threshold) of a cached result."""
    finals = np.array(list(record["finals"].values()), dtype=np.float64)
    failed = f", {len(record['failed'])} failed" if record["failed"] else ""
    if not len(finals):
        return f"all runs failed{failed}", "—"
    ci = iqm_interval(finals)
    digits = 2 if np.abs(finals).max() < 10 else 1  # Taxi's 7.98 against its threshold of 8
    threshold = record["threshold"]
    reached = "—" if threshold is None else f"{int((finals >= threshold).sum())}/{len(finals)} (≥ {threshold:g})"
    return f"{ci.point:.{digits}f} [{ci.low:.{digits}f}, {ci.high:.{digits}f}]{failed}", reached


def markdown(all_pairs: list[Pair], cache_dir: Path, seeds: list[int]) -> str:
    """docs/results.md: the table of pairs run on their current config, then every other pair with why."""
    rows, missing = [], []
    for pair in sorted(all_pairs, key=lambda p: (p.env, p.agent)):
        record = cached(cache_dir, pair)
        changes = None if record is None else config_changes(record, pair)
        if changes == []:
            iqm_cell, reached = result_cells(record)
            rows.append(f"| {pair.agent} | {pair.env} | {iqm_cell} | {reached} | {pair.steps:,} | "
                        f"{zoo_cell(pair.agent, pair.env)} | {record['date']}, load {load_cell(record)} |")
        elif pair.blocked:
            missing.append(f"- {pair.agent} × {pair.env}: {pair.blocked}.")
        elif record is not None:
            missing.append(f"- {pair.agent} × {pair.env}: its config changed since its run of {record['date']} "
                           f"({'; '.join(changes)}); not rerun yet.")
        else:
            missing.append(f"- {pair.agent} × {pair.env} ({pair.steps:,} steps): not run yet.")
    seed_text = f"{seeds[0]}–{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else ", ".join(map(str, seeds))
    lines = [
        "# Results: every agent × every env with a shipped config",
        "",
        "<!-- Written by benchmarks/results_table.py from benchmarks/results/*.json: edit the script, not this page. -->",
        "",
        (f"Each row is one `python -m rlagents.compare` run of the agent's shipped config (its entry in "
        f"`configs/<agent>.yaml`) on the held-out seeds {seed_text}: no config was chosen on them. **IQM** is the "
        f"interquartile mean of the final greedy evaluation returns of the {len(seeds)} seeds with its 95% "
        f"stratified-bootstrap interval (rliable); **≥ threshold** counts the seeds whose final return reaches the "
        f"env's `reward_threshold`; **env steps** is the config's training budget per seed."),
        "",
        (f"**RL Zoo** is RL Baselines3 Zoo's published score for the same env and algorithm family, from "
        f"{ZOO_SOURCE}: the mean ± std of the episode returns of *one* trained agent after its own (often larger) "
        f"training budget, so it is a reference point, not a like-for-like comparison. Zoo's LunarLander is "
        f"`LunarLander-v2`; rlagents uses `-v3`. Zoo publishes nothing for tabular Q-learning, REINFORCE or a "
        f"model-based planner."),
        "",
        ("Timing figures are not shown: the runs share a 2-core machine with other work (the load column), so "
        "wall-clock numbers would say more about the load than about the agents."),
        "",
        "| agent | env | IQM [95% CI] | ≥ threshold | env steps | RL Zoo (algo, its steps) | run |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "## Pairs not in the table yet",
        "",
        *(missing or ["None: every pair has a result on its current config."]),
        "",
        ("Entries named by a pattern (`ALE/*` in `configs/dqn.yaml`: 10M steps per Atari game, GPU territory) "
        "are not one env and are not listed."),
        "",
        "## Reproducing",
        "",
        "```bash",
        "python benchmarks/results_table.py --run --budget-s 3600   # runs missing pairs, cheapest first",
        "```",
        "",
        ("The script caches each pair's per-seed returns in `benchmarks/results/<agent>__<env>.json` under the "
        "SHA-256 of its resolved config, so a rerun skips pairs already done and reruns those whose config "
        "changed. Each cache file records the exact `compare` command, date, machine and load."),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="run pairs without a current cached result")
    parser.add_argument("--only", action="append", default=[], metavar="AGENT[:ENV]",
                        help="run only these pairs (repeatable); the page still lists every pair")
    parser.add_argument("--seeds", default="1000-1004", help="held-out seeds (default 1000-1004)")
    parser.add_argument("--workers", type=int, default=1, help="parallel runs of one compare (default 1)")
    parser.add_argument("--budget-s", type=float, default=None, help="start no new pair after this many seconds")
    parser.add_argument("--backbone", default=None, help="classifier run folder for the DigitLock-v0 pairs")
    parser.add_argument("--configs", type=Path, default=ROOT / "configs")
    parser.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "results")
    parser.add_argument("--page", type=Path, default=ROOT / "docs" / "results.md")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except UserError as err:
        parser.error(str(err))
    all_pairs = pairs(args.configs, seeds, args.backbone)
    if args.run:
        wanted = [p for p in all_pairs if not p.blocked and selected(p, args.only)]
        todo = sorted((p for p in wanted if config_changes(cached(args.cache, p) or {}, p)), key=lambda p: p.cost)
        print(f"{len(wanted) - len(todo)} of {len(wanted)} selected pairs cached; running {len(todo)}", flush=True)
        t0 = time.perf_counter()
        for pair in todo:
            if args.budget_s is not None and time.perf_counter() - t0 > args.budget_s:
                print(f"budget spent: {pair.name} and later pairs not started", flush=True)
                break
            try:
                record = run_pair(pair, seeds, args.cache, args.work, args.workers, args.backbone)
            except RuntimeError as err:
                print(err, flush=True)
                continue
            print(f"{pair.name}: {result_cells(record)[0]} ({record['wall_s']:.0f} s)", flush=True)
    args.page.write_text(markdown(all_pairs, args.cache, seeds))
    print(f"wrote {args.page}")
    return 0


def selected(pair: Pair, only: list[str]) -> bool:
    """Whether `pair` matches one of the `--only AGENT[:ENV]` filters (all pairs when there are none)."""
    if not only:
        return True
    for item in only:
        agent, _, env = item.partition(":")
        if agent == pair.agent and env in ("", pair.env):
            return True
    return False


if __name__ == "__main__":
    sys.exit(main())
