"""A comparison's outputs from its runs' summaries: `results.json`, `report.md` and `curves.png`."""

from __future__ import annotations

import itertools
import os
import platform
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from rlagents import stats
from rlagents.checkpoint import atomic_write_bytes, atomic_write_json, atomic_write_text
from rlagents.errors import UserError
from rlagents.safeload import read_json, shown

CURVE_POINTS = 100


def machine() -> str:
    """One line naming this machine: CPU model, core count, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


# ---------------------------------------------------------------- collecting runs


def load_runs(dirs: list[Path]) -> list[dict[str, Any]]:
    """Run records from finished directories: a comparison's output (its `results.json`), a run directory
    (its `summary.json`), or any folder holding run directories."""
    runs: dict[str, dict[str, Any]] = {}
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise UserError(f"--from {d}: not a directory")
        if (d / "results.json").is_file():
            found = _read_json(d / "results.json").get("runs", [])
        else:
            found = []
            for summary in sorted(d.rglob("summary.json")):
                record = _read_json(summary)
                record.setdefault("run_dir", str(summary.parent))
                _variant_from_dir(record, summary.parent.name)
                found.append(record)
        if not isinstance(found, list):
            raise UserError(f"--from {d}: results.json's runs must be a list, got {shown(found)}")
        if not found:
            raise UserError(f"--from {d}: no results.json or run directories with summary.json")
        for record in found:
            check_run_record(record, d)
            runs[str(record.get("run_dir", len(runs)))] = record
    return sort_runs(list(runs.values()))


def _variant_from_dir(record: dict[str, Any], name: str) -> None:
    """A comparison names a variant's run directory `ENV__AGENT@NAME__sSEED` (`rlagents.compare`), while its
    summary names the agent itself: report it under the variant's name, as the comparison did."""
    parts = name.split("__")
    agent = record.get("agent")
    if len(parts) == 3 and isinstance(agent, str) and parts[1].startswith(f"{agent}@"):
        record["agent"] = parts[1]


_NUMBER_FIELDS = ("eval_return_mean", "eval_return_std", "env_steps_per_s", "train_time_s", "reward_threshold",
                  "solved_at_time_s")


def check_run_record(record: Any, source: Path) -> None:
    """Refuse (UserError naming `source` and the field) a run record whose fields the report reads have the
    wrong type; numbers may be NaN or infinite (a run on an env that returned them), which the report shows
    as such rather than averaging them."""
    if not isinstance(record, dict):
        raise UserError(f"--from {source}: a run record must be a JSON object, got {shown(record)}")
    if not all(k in record for k in ("agent", "env", "seed")):
        raise UserError(f"--from {source}: a run record lacks agent/env/seed: {shown(record)}")
    where = f"--from {source}: run {shown(record.get('agent'), 40)} {shown(record.get('env'), 40)}"
    for key in ("agent", "env", "run_dir", "status", "error"):
        if key in record and not (isinstance(record[key], str) and (record[key] or key == "error")):
            raise UserError(f"{where}: {key} must be a non-empty string, got {shown(record[key])}")
    if isinstance(record["seed"], bool) or not isinstance(record["seed"], int):
        raise UserError(f"{where}: seed must be an integer, got {shown(record['seed'])}")
    for key in _NUMBER_FIELDS:
        if record.get(key) is not None and not _is_number(record[key]):
            raise UserError(f"{where}: {key} must be a number, got {shown(record[key])}")
    if record.get("solved_at_step") is not None and not _is_int(record["solved_at_step"]):
        raise UserError(f"{where}: solved_at_step must be an integer or null, got {shown(record['solved_at_step'])}")
    costs = record.get("costs", {})
    if not isinstance(costs, dict) or not all(_is_number(v) for v in costs.values()):
        raise UserError(f"{where}: costs must map names to numbers, got {shown(costs)}")
    evaluations = record.get("evaluations", [])
    if not isinstance(evaluations, list):
        raise UserError(f"{where}: evaluations must be a list, got {shown(evaluations)}")
    for e in evaluations:
        if not isinstance(e, dict) or not all(_is_number(e.get(k)) for k in ("step", "return_mean")) or (
                e.get("train_time_s") is not None and not _is_number(e["train_time_s"])):
            raise UserError(f"{where}: each evaluation must hold numbers step, return_mean and train_time_s, "
                            f"got {shown(e)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_json(path: Path) -> dict[str, Any]:
    data = read_json(path, "summary file" if path.name == "summary.json" else "results file")
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a JSON object")
    return data


def sort_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(runs, key=lambda r: (str(r["env"]), str(r["agent"]), int(r["seed"])))


def completed(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs that count in the statistics: completed, with a finite final return (a NaN or infinite one,
    from an env that returned such rewards, would make every statistic of its agent NaN)."""
    return [r for r in runs if r.get("status") == "completed" and _is_number(r.get("eval_return_mean"))
            and np.isfinite(r["eval_return_mean"])]


def failure(run: dict[str, Any]) -> str:
    """Why a run is not among `completed` runs, in a few words."""
    if run.get("error"):
        return str(run["error"])
    if run.get("status") == "completed":
        return f"final evaluation return is {run.get('eval_return_mean')}, not a finite number"
    return f"status {run.get('status')}"


# ---------------------------------------------------------------- writing


def load_headers(dirs: list[Path]) -> list[dict[str, str]]:
    """Date, machine and command of the comparisons whose `results.json` lie in `dirs` (for a rebuilt report)."""
    out = []
    for d in dirs:
        path = Path(d) / "results.json"
        if path.is_file():
            data = _read_json(path)
            if data.get("origin"):  # itself a rebuilt report: name the comparisons it came from
                out.extend(data["origin"])
            else:
                out.append({k: str(data.get(k, "?")) for k in ("created", "machine", "command")})
    return out


def write_all(out: Path, runs: list[dict[str, Any]], *, command: str, order: list[str] | None = None,
              origin: list[dict[str, str]] | None = None) -> None:
    """Write results.json, report.md and curves.png into `out`; `origin` names the comparisons whose runs a
    rebuilt report (`--from`) shows."""
    runs = sort_runs(runs)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header: dict[str, Any] = {"created": created, "machine": machine(), "command": command}
    if origin:
        header["origin"] = origin
    atomic_write_json(out / "results.json", {**header, "runs": runs})
    atomic_write_text(out / "report.md", markdown(runs, header, order))
    png = curves_png(runs, order)
    if png is not None:
        atomic_write_bytes(out / "curves.png", png)


def _agents(runs: list[dict[str, Any]], order: list[str] | None) -> list[str]:
    names = {r["agent"] for r in runs}
    first = [a for a in (order or []) if a in names]
    return first + sorted(names - set(first))


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def env_rows(runs: list[dict[str, Any]], agents: list[str]) -> list[dict[str, Any]]:
    """Per-agent statistics of one env's runs (the report table's rows)."""
    rows = []
    for agent in agents:
        mine = [r for r in runs if r["agent"] == agent]
        done = completed(mine)
        finals = np.array([r["eval_return_mean"] for r in done], dtype=np.float64)
        threshold = next((r.get("reward_threshold") for r in done if r.get("reward_threshold") is not None), None)
        row: dict[str, Any] = {"agent": agent, "runs": len(mine), "failed": len(mine) - len(done),
                               "finals": finals, "threshold": threshold}
        if len(done):
            row["iqm"] = stats.iqm_interval(finals)
            row["mean"], row["std"] = float(finals.mean()), float(finals.std())
            reached = [r.get("solved_at_step") for r in done]
            row["reached"] = sum(v is not None for v in reached)
            row["ends_solved"] = None if threshold is None else int((finals >= threshold).sum())
            row["median_steps"] = stats.median_with_unreached(reached)
            row["median_seconds"] = stats.median_with_unreached([r.get("solved_at_time_s") for r in done])
            speeds = [r["env_steps_per_s"] for r in done if r.get("env_steps_per_s") is not None]
            row["steps_per_s"] = float(np.median(speeds)) if speeds else None
            costs = defaultdict(list)
            for r in done:
                for k, v in (r.get("costs") or {}).items():
                    costs[k].append(v)
            row["costs"] = {k: float(np.median(v)) for k, v in costs.items()}
        rows.append(row)
    return rows


def markdown(runs: list[dict[str, Any]], header: dict[str, str], order: list[str] | None = None) -> str:
    """The text of report.md."""
    failed = [r for r in runs if r not in completed(runs)]
    lines = ["# Comparison report", "",
             f"Created {header['created']} on {header['machine']}.", "",
             f"Command: `{header['command']}`", ""]
    for o in header.get("origin") or []:
        lines += [f"Runs made by `{o['command']}`, {o['created']}, on {o['machine']}.", ""]
    lines += [(f"{len(runs)} runs, {len(failed)} failed. *Final return*: the mean return of the last greedy "
               "evaluation of each run (one value per seed). IQM: interquartile mean over seeds, with a 95% "
               "stratified-bootstrap confidence interval (rliable). *Reached*: runs whose greedy evaluation mean "
               "reached the env's reward threshold at some evaluation; *ends ≥*: runs whose final evaluation is "
               "at or above it. Medians to the threshold count runs that never reached it as infinitely late "
               "(— when fewer than half reached it); *training s* exclude evaluation time. Env steps/s: median "
               "over seeds of env steps per training second."), ""]
    for env in sorted({r["env"] for r in runs}):
        env_runs = [r for r in runs if r["env"] == env]
        agents = _agents(env_runs, order)
        rows = env_rows(env_runs, agents)
        threshold = next((r["threshold"] for r in rows if r["threshold"] is not None), None)
        cost_keys = sorted({k for r in rows for k in r.get("costs", {})})
        lines += [f"## {env}" + (f" (reward threshold {threshold:g})" if threshold is not None else ""), ""]
        head = ["agent", "seeds", "final return IQM [95% CI]", "mean ± std", "reached", "ends ≥",
                "median steps to threshold", "median training s to threshold", "env steps/s"]
        head += [f"{k} (median)" for k in cost_keys]
        lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for row in rows:
            n_done = row["runs"] - row["failed"]
            seeds = f"{n_done}" + (f" ({row['failed']} failed)" if row["failed"] else "")
            if not n_done:
                lines.append(f"| {row['agent']} | {seeds} |" + " — |" * (len(head) - 2))
                continue
            ci = row["iqm"]
            cells = [row["agent"], seeds, f"{ci.point:.1f} [{ci.low:.1f}, {ci.high:.1f}]",
                     f"{row['mean']:.1f} ± {row['std']:.1f}",
                     "—" if threshold is None else f"{row['reached']}/{n_done}",
                     "—" if row["ends_solved"] is None else f"{row['ends_solved']}/{n_done}",
                     _fmt(row["median_steps"], 0), _fmt(row["median_seconds"], 2), _fmt(row["steps_per_s"], 0)]
            cells += [_fmt(row["costs"].get(k), 3) for k in cost_keys]
            lines.append("| " + " | ".join(cells) + " |")
        if cost_keys:
            lines += ["", ("Costs as the agents report them: `update_ms` is milliseconds per training round "
                           "(for SB3 agents one call of its `train()`), `planning_ms` per planned decision.")]
        pairs = [(a, b) for a, b in itertools.combinations(rows, 2) if len(a["finals"]) and len(b["finals"])]
        if pairs:
            lines += ["", (f"Probability of improvement on {env} (final return; P(X > Y) with 95% CI; 0.5 = no "
                           "difference):"), "", "| X | Y | P(X > Y) [95% CI] |", "| --- | --- | --- |"]
            for a, b in pairs:
                p = stats.probability_of_improvement(a["finals"], b["finals"])
                lines.append(f"| {a['agent']} | {b['agent']} | {p.point:.2f} [{p.low:.2f}, {p.high:.2f}] |")
        lines.append("")
    if failed:
        lines += ["## Failed runs", ""]
        for r in failed:
            lines.append(f"- {r['agent']} on {r['env']}, seed {r['seed']}: {failure(r)}")
        lines.append("")
    lines += ["Learning curves: `curves.png`. TensorBoard: `tensorboard --logdir <this folder>`.", ""]
    return "\n".join(lines)


def _curve(run: dict[str, Any], key: str) -> tuple[np.ndarray, np.ndarray]:
    evals = run.get("evaluations") or []
    xs = np.array([e.get(key) for e in evals], dtype=np.float64)
    ys = np.array([e["return_mean"] for e in evals], dtype=np.float64)
    keep = np.isfinite(xs) & np.isfinite(ys)  # a NaN evaluation (or one without a time) is no point of a curve
    return xs[keep], ys[keep]


def curve_band(runs: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Grid, IQM and 95% band of the evaluation returns of `runs` against `key` ("step" or "train_time_s"):
    each run's curve is read as a step function on a common grid from the point where every run has been
    evaluated once to the end of the longest run (shorter runs hold their last value)."""
    curves = [_curve(r, key) for r in runs]
    curves = [(x, y) for x, y in curves if len(x)]
    if not curves:
        return None
    start = max(x[0] for x, _ in curves)
    end = max(x[-1] for x, _ in curves)
    all_x = np.unique(np.concatenate([x for x, _ in curves]))
    grid = all_x[all_x >= start]
    if len(grid) > CURVE_POINTS or key != "step":
        grid = np.linspace(start, end, CURVE_POINTS) if end > start else np.array([start])
    matrix = np.stack([stats.on_grid(x, y, grid) for x, y in curves])
    centre, low, high = stats.iqm_band(matrix)
    return grid, centre, low, high


def curves_png(runs: list[dict[str, Any]], order: list[str] | None = None) -> bytes | None:
    """PNG bytes of the learning curves: one row per env, return against env steps and against training
    seconds, IQM over seeds with a 95% bootstrap band per agent; None without completed runs."""
    done = completed(runs)
    if not done:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env"] for r in done})
    fig, axes = plt.subplots(len(envs), 2, figsize=(11, 3.8 * len(envs)), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, env in enumerate(envs):
        env_runs = [r for r in done if r["env"] == env]
        agents = _agents(env_runs, order)
        threshold = next((r.get("reward_threshold") for r in env_runs if r.get("reward_threshold") is not None), None)
        for col, (key, label) in enumerate((("step", "env steps"), ("train_time_s", "training seconds"))):
            ax = axes[row][col]
            for i, agent in enumerate(agents):
                mine = [r for r in env_runs if r["agent"] == agent]
                band = curve_band(mine, key)
                if band is None:
                    continue
                grid, centre, low, high = band
                colour = colours[i % len(colours)]
                ax.plot(grid, centre, color=colour, label=f"{agent} ({len(mine)} seeds)", drawstyle="steps-post")
                ax.fill_between(grid, low, high, color=colour, alpha=0.2, step="post", linewidth=0)
            if threshold is not None:
                ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
            ax.set_xlabel(label)
            ax.set_ylabel("greedy eval return (IQM, 95% CI)")
            ax.set_title(env)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
