"""What `python -m rlagents.tune` leaves in its study folder: the held-out check, `best.yaml`, `report.md`
with its plots, and (`--write-config`) the new entry in `configs/<agent>.yaml`."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from rlagents import stats
from rlagents.agents import agent_class
from rlagents.checkpoint import atomic_write_bytes, atomic_write_text
from rlagents.cli import default_config_path
from rlagents.config import read_config_file, resolve
from rlagents.errors import UserError
from rlagents.report import machine
from rlagents.safeload import load_yaml
from rlagents.tune_space import config_values

if TYPE_CHECKING:
    from rlagents.tune import Settings

TOP_TRIALS = 10
COMMENT_WIDTH = 110
# loop settings that say how a study measured its trials rather than how the agent learns: a `--fix` of them
# speeds a study up but stays out of best.yaml, so the held-out check measures both configs the same way
MEASUREMENT_KEYS = ("eval_every", "eval_episodes", "eval_envs", "log_every", "checkpoint_every", "keep_checkpoints",
                    "torch_threads")
HISTORY_ROWS = 200


# ---------------------------------------------------------------- the best trial and its config entry


def best_trial(study, settings: Settings):
    """The best completed trial; of a two-objective study's Pareto front, the one best on the first objective."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    if len(settings.objectives) == 1:
        return study.best_trial
    sign = 1 if settings.directions[0] == "maximize" else -1
    return max(study.best_trials, key=lambda t: sign * t.values[0])


def best_entry(study, trial, settings: Settings) -> dict[str, Any]:
    """The env's entry of `configs/<agent>.yaml` with the fixed values and the trial's parameters put in,
    floats rounded to 4 significant digits (the held-out check runs exactly this entry). Fixed evaluation and
    logging settings (MEASUREMENT_KEYS: how a study measured its trials, not what the agent does) stay out."""
    cls = agent_class(settings.agent)
    data = read_config_file(default_config_path(settings.agent))
    chosen = {k: v for k, v in settings.fixed.items() if k not in MEASUREMENT_KEYS}
    chosen.update(config_values(settings.params, trial.params))
    resolved = resolve(cls.config_class, data, settings.env, chosen, source="best trial")
    typed = {**dataclasses.asdict(resolved.train), **dataclasses.asdict(resolved.agent)}
    entry = dict(data.get(settings.env) or {})
    for key in chosen:
        entry[key] = _plain(typed[key])
    return entry


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != 0 and math.isfinite(value):
        return float(f"{value:.4g}")
    return value


def entry_yaml(env: str, entry: dict[str, Any], comment: str) -> str:
    """A config entry as YAML: `# comment` lines, the env key, one `key: value` line per setting."""
    lines = [f"# {line}" if line else "#" for line in comment.splitlines()]
    lines.append(f"{json.dumps(env)}:" if any(ch in env for ch in "*?[]{}:#,&!|>'\"%@`") else f"{env}:")
    for key, value in entry.items():
        lines.append(f"  {key}: {_flow(value)}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the held-out check


def holdout_check(settings: Settings, trial, entry: dict[str, Any]) -> dict[str, Any]:
    """Train the best entry and the current default on the held-out seeds (reusing runs a rerun finds done), the
    default for the best entry's number of steps;
    returns both sides' final returns, IQM intervals and the probability of improvement."""
    from rlagents.compare import Display, Task, run_local
    from rlagents.runspec import resolve_spec

    data = read_config_file(default_config_path(settings.agent))
    current = data.get(settings.env) or {}
    sets = {k: v for k, v in entry.items() if current.get(k) != v}
    # the same budget on both sides: a study run with --steps compares configs, not training lengths
    budget = {"steps": entry["steps"]} if "steps" in entry and current.get("steps") != entry["steps"] else {}
    sides = {"best": (f"trial{trial.number:04d}", sets),
             "default": (f"default_{entry['steps']}steps" if budget else "default", budget)}
    results: dict[str, list[dict[str, Any]]] = {}
    todo = []
    for side, (name, extra) in sides.items():
        for seed in settings.holdout_seeds:
            run_dir = settings.out / "holdout" / f"{name}__s{seed}"
            done = _finished_summary(run_dir)
            if done is None:
                if run_dir.exists():  # an interrupted earlier attempt: start it again
                    _clear(run_dir)
                todo.append((side, Task(resolve_spec(settings.agent, settings.env, seed=seed, overrides=extra,
                                                     env_kwargs=settings.env_kwargs, env_modules=settings.env_modules,
                                                     run_dir=run_dir))))
            else:
                results.setdefault(side, []).append(done)
    if todo:  # both sides in one pool: results are kept per run directory, which no two runs share
        tasks = [t for _, t in todo]
        with Display(tasks, enabled=False) as display:
            for (side, _), result in zip(todo, run_local(tasks, settings.workers, display)):
                results.setdefault(side, []).append(result)
    for side in results:  # in seed order, whether a run was reused or trained now
        results[side].sort(key=lambda r: int(r.get("seed", 0)))
    finals = {side: np.array([r["eval_return_mean"] for r in results.get(side, []) if r.get("status") == "completed"])
              for side in sides}
    failed = {side: [r.get("error", r.get("status")) for r in results.get(side, []) if r.get("status") != "completed"]
              for side in sides}
    check: dict[str, Any] = {"seeds": settings.holdout_seeds, "best_trial": trial.number,
                             "sets": [f"{k}={_flow(v)}" for k, v in sets.items()],
                             "finals": {k: v.tolist() for k, v in finals.items()}, "failed": failed}
    if len(finals["best"]) and len(finals["default"]):
        for side in sides:
            ci = stats.iqm_interval(finals[side])
            check[side] = {"iqm": ci.point, "low": ci.low, "high": ci.high, "mean": float(finals[side].mean()),
                           "std": float(finals[side].std()),
                           "steps": int(results[side][0].get("total_steps", 0))}
        poi = stats.probability_of_improvement(finals["best"], finals["default"])
        check["improvement"] = {"point": poi.point, "low": poi.low, "high": poi.high}
        check["beats_default"] = check["best"]["iqm"] > check["default"]["iqm"]
    return check


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def _finished_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("status") == "completed" else None


def _clear(run_dir: Path) -> None:
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)


# ---------------------------------------------------------------- writing configs/<agent>.yaml


def write_config_entry(path: Path, env: str, entry_text: str) -> None:
    """Replace the env's entry of a config file (its key line and indented body; comments above it stay) with
    `entry_text`, or append it; the new file must still read and resolve before it is written atomically."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    key = re.compile(rf"^(\"{re.escape(env)}\"|'{re.escape(env)}'|{re.escape(env)})\s*:")
    start = next((i for i, line in enumerate(lines) if key.match(line)), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + entry_text
    else:
        end = start + 1
        while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
            end += 1
        while end > start + 1 and not lines[end - 1].strip():  # keep the blank lines before the next entry
            end -= 1
        new = "".join(lines[:start]) + entry_text + "".join(lines[end:])
    data = load_yaml(new, str(path))
    if not isinstance(data, dict) or not isinstance(data.get(env), dict):
        raise UserError(f"--write-config: {path} would not read back with a {env} entry; not written")
    atomic_write_text(path, new)


# ---------------------------------------------------------------- report.md and plots


def finish(study, settings: Settings, elapsed_s: float, *, write_config: bool) -> tuple[Any, str]:
    """Write best.yaml, the held-out check, report.md and the plots; returns the best trial (None when no
    trial completed) and the line to print at the end."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    trial = best_trial(study, settings)
    if trial is None:  # nothing to judge: the report lists the trials' errors
        atomic_write_text(settings.out / "report.md", _markdown(study, settings, None, None, None, elapsed_s))
        states = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
        return None, (f"no trial completed ({', '.join(f'{k} {v}' for k, v in states.items() if v)}); see "
                      f"{settings.out / 'report.md'} and the trials' error.txt")
    entry = best_entry(study, trial, settings)
    check = holdout_check(settings, trial, entry) if settings.holdout_seeds else None
    comment = _entry_comment(settings, trial, check)
    entry_text = entry_yaml(settings.env, entry, comment)
    atomic_write_text(settings.out / "best.yaml", entry_text)
    if check is not None:
        atomic_write_text(settings.out / "holdout.json", json.dumps(check, indent=2))
    plots = _plots(study, settings)
    atomic_write_text(settings.out / "report.md", _markdown(study, settings, trial, entry_text, check, elapsed_s, plots))
    line = (f"{len(trials)} trials; best trial {trial.number}: "
            + ", ".join(f"{o} {v:.4g}" for o, v in zip(settings.objectives, trial.values)))
    if check is not None and "best" in check:
        line += (f"; held-out seeds {_seeds(check['seeds'])}: IQM best {check['best']['iqm']:.4g} vs default "
                 f"{check['default']['iqm']:.4g}, P(best > default) {check['improvement']['point']:.2f}")
    if write_config:
        path = default_config_path(settings.agent)
        if check is not None and check.get("beats_default"):
            write_config_entry(path, settings.env, entry_text)
            line += f"; written to {path}"
        else:
            line += f"; not written to {path}: the best config did not beat the default on the held-out seeds"
    return trial, line + f". Report: {settings.out / 'report.md'}"



def _seeds(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _entry_comment(settings: Settings, trial, check: dict[str, Any] | None) -> str:
    values = ", ".join(f"{o} {v:.4g}" for o, v in zip(settings.objectives, trial.values))
    text = (f"Found by `python -m rlagents.tune` ({datetime.now(timezone.utc):%Y-%m-%d}): trial {trial.number} of "
            f"study {settings.study_name},\n{values} ({settings.aggregate} of seeds {_seeds(settings.seeds)}).")
    if check is not None and "best" in check:
        b, d, p = check["best"], check["default"], check["improvement"]
        text += (f"\nHeld-out seeds {_seeds(check['seeds'])}: final-return IQM {b['iqm']:.4g} [{b['low']:.4g}, "
                 f"{b['high']:.4g}] vs the previous entry's {d['iqm']:.4g} [{d['low']:.4g}, {d['high']:.4g}], "
                 f"P(improvement) {p['point']:.2f} [{p['low']:.2f}, {p['high']:.2f}].")
    return "\n".join(textwrap.fill(part, COMMENT_WIDTH - 2) for part in text.splitlines())


def _markdown(study, settings: Settings, trial, entry_text: str | None, check: dict[str, Any] | None,
              elapsed_s: float, plots: list[str] | None = None) -> str:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    lost = sum("lost" in t.user_attrs for t in trials)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    env_kwargs = ", ".join(f"{k}={v!r}" for k, v in settings.env_kwargs.items())
    lines = [f"# Tuning {settings.agent} on {settings.env}" + (f" ({env_kwargs})" if env_kwargs else ""), "",
             f"Command: `{settings.command}`  ", f"Study: `{settings.study_name}` in `{settings.storage}`  ",
             f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}; load average {load}; "
             f"{elapsed_s:.0f} s in this session.", "",
             f"Objective: {', '.join(f'{o} ({d})' for o, d in zip(settings.objectives, settings.directions))}, the "
             f"{settings.aggregate} over tuning seeds {_seeds(settings.seeds)}"
             + (f"; threshold {settings.threshold:g}" if "seconds" in settings.objectives else "") + ". "
             f"Sampler {settings.sampler}, pruner {settings.pruner}. Fixed: "
             + (", ".join(f"{k}={v}" for k, v in settings.fixed.items()) or "nothing") + ".", "",
             "Trials: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
             + (f" ({lost} lost to an interruption or a killed process)" if lost else "") + ".", "",
             "## Search space", "", "| key | distribution |", "| --- | --- |"]
    lines += [f"| {p.key} | {p.describe()} |" for p in settings.params]
    if trial is None:
        errors = [f"- trial {t.number}: {t.user_attrs.get('error') or t.user_attrs.get('lost', '')}" for t in trials
                  if t.state == TrialState.FAIL]
        return "\n".join(lines + ["", "No trial completed.", ""] + errors) + "\n"
    lines += ["", "## Best config", "", f"Trial {trial.number} (`best.yaml`, ready for "
              f"`configs/{settings.agent}.yaml`):", "", "```yaml", entry_text.rstrip(), "```", ""]
    if len(settings.objectives) > 1:
        lines += _pareto_section(study, settings)
    lines += _top_section(study, settings) + _importance_section(study, settings)
    if check is not None:
        lines += _holdout_section(check, settings)
    lines += _history_section(study, settings)
    for name in plots or []:
        lines += [f"![{name}]({name})", ""]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if failed:
        lines += ["## Failed trials", ""] + [
            f"- trial {t.number}: {t.user_attrs.get('error') or t.user_attrs.get('lost') or 'no error recorded'}"
            for t in failed] + [""]
    return "\n".join(lines) + "\n"


def _params_text(trial) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())


def _values_text(trial, settings: Settings) -> str:
    per_seed = trial.user_attrs.get("per_seed", {})
    return " / ".join(", ".join(f"{v:.4g}" for v in per_seed.get(o, [])) for o in settings.objectives)


def _completed(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _top_section(study, settings: Settings) -> list[str]:
    sign = 1 if settings.directions[0] == "maximize" else -1
    top = sorted(_completed(study), key=lambda t: -sign * t.values[0])[:TOP_TRIALS]
    head = " | ".join(settings.objectives)
    lines = [f"## Top {len(top)} trials", "", f"| trial | {head} | per seed | train s | params |",
             "| --- | " + "--- | " * len(settings.objectives) + "--- | --- | --- |"]
    for t in top:
        lines.append(f"| {t.number} | " + " | ".join(f"{v:.4g}" for v in t.values)
                     + f" | {_values_text(t, settings)} | {t.user_attrs.get('train_seconds', 0):.1f} | "
                     f"{_params_text(t)} |")
    return lines + [""]


def _pareto_section(study, settings: Settings) -> list[str]:
    front = sorted(study.best_trials, key=lambda t: t.values[0])
    lines = ["## Pareto front", "", f"Trials no other trial beats on both {' and '.join(settings.objectives)} "
             "(seconds measured on a shared machine: compare them with each other, not across machines):", "",
             f"| trial | {' | '.join(settings.objectives)} | params |", "| --- | " + "--- | " * len(settings.objectives)
             + "--- |"]
    lines += [f"| {t.number} | " + " | ".join(f"{v:.4g}" for v in t.values) + f" | {_params_text(t)} |" for t in front]
    return lines + [""]


def _importances(study, settings: Settings) -> dict[str, dict[str, float]]:
    """fANOVA importance of each parameter per objective; empty when too few trials completed."""
    import optuna

    out = {}
    if len(_completed(study)) < 4:
        return out
    for index, name in enumerate(settings.objectives):
        try:
            out[name] = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target=(lambda t, i=index: t.values[i]) if len(settings.objectives) > 1 else None)
        except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every completed trial had the same params
            continue
    return out


def _importance_section(study, settings: Settings) -> list[str]:
    importances = _importances(study, settings)
    if not importances:
        return ["## Parameter importances", "", "Too few completed trials (fewer than 4) to estimate them.", ""]
    lines = ["## Parameter importances", "", "fANOVA (Optuna's `FanovaImportanceEvaluator`, seed 0): the share of the objective's "
             "variance over completed trials that each parameter explains.", "",
             "| parameter | " + " | ".join(importances) + " |", "| --- |" + " --- |" * len(importances)]
    keys = list(next(iter(importances.values())))
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(f"{imp.get(key, 0.0):.3f}" for imp in importances.values()) + " |")
    return lines + [""]


def _holdout_section(check: dict[str, Any], settings: Settings) -> list[str]:
    lines = ["## Held-out check", "",
             f"Best trial {check['best_trial']}'s entry and the current default entry of `configs/{settings.agent}.yaml`, "
             f"each trained for the same number of env steps on held-out seeds {_seeds(check['seeds'])} (no trial used them). Final greedy return "
             "per seed; IQM with a 95% stratified-bootstrap CI and the probability that a best-config run ends "
             "above a default run (rliable).", ""]
    if "best" not in check:
        return lines + ["Not enough completed held-out runs to compare: "
                        f"{json.dumps(check['failed'])}", ""]
    lines += ["| config | steps | IQM [95% CI] | mean ± std | per seed |", "| --- | --- | --- | --- | --- |"]
    for side in ("best", "default"):
        s = check[side]
        finals = ", ".join(f"{v:.4g}" for v in check["finals"][side])
        lines.append(f"| {side} | {s['steps']:,} | {s['iqm']:.4g} [{s['low']:.4g}, {s['high']:.4g}] | "
                     f"{s['mean']:.4g} ± {s['std']:.3g} | {finals} |")
    p = check["improvement"]
    verdict = "beats" if check["beats_default"] else "does not beat"
    lines += ["", f"P(best > default) = {p['point']:.2f} [{p['low']:.2f}, {p['high']:.2f}]: the best config "
              f"{verdict} the default by IQM on these seeds. Best differs from the default by: "
              f"`{' '.join(check['sets']) or 'nothing'}`.", ""]
    failed = {k: v for k, v in check["failed"].items() if v}
    if failed:
        lines += [f"Failed held-out runs: {json.dumps(failed)}", ""]
    return lines


def _history_section(study, settings: Settings) -> list[str]:
    sign = 1 if settings.directions[0] == "maximize" else -1
    lines = ["## Optimisation history", "", f"| trial | state | {settings.objectives[0]} | best so far | params |",
             "| --- | --- | --- | --- | --- |"]
    best = None
    for t in study.get_trials(deepcopy=False)[:HISTORY_ROWS]:
        value = t.values[0] if t.values else None
        if value is not None and (best is None or sign * value > sign * best):
            best = value
        lines.append(f"| {t.number} | {t.state.name.lower()} | {'' if value is None else f'{value:.4g}'} | "
                     f"{'' if best is None else f'{best:.4g}'} | {_params_text(t)} |")
    return lines + [""]


def _plots(study, settings: Settings) -> list[str]:
    """history.png (objective per trial and best so far), importances.png, and pareto.png for two objectives."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    done = _completed(study)
    if not done:
        return written
    sign = 1 if settings.directions[0] == "maximize" else -1
    numbers = [t.number for t in done]
    values = [t.values[0] for t in done]
    best = [sign * v for v in values]
    best = [sign * b for b in np.maximum.accumulate(best)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(numbers, values, s=14, label="completed trial")
    ax.step(numbers, best, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(settings.objectives[0])
    ax.set_title(f"{settings.agent} on {settings.env}")
    ax.legend()
    written.append(_save(fig, settings.out / "history.png"))
    importances = _importances(study, settings)
    if importances:
        name, imp = next(iter(importances.items()))
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(imp) + 1.2))
        ax.barh(list(imp)[::-1], list(imp.values())[::-1])
        ax.set_xlabel(f"importance for {name} (fANOVA)")
        written.append(_save(fig, settings.out / "importances.png"))
    if len(settings.objectives) > 1:
        front = {t.number for t in study.best_trials}
        fig, ax = plt.subplots(figsize=(6, 3.5))
        xs = np.array([t.values[1] for t in done])
        ys = np.array([t.values[0] for t in done])
        on = np.array([t.number in front for t in done])
        ax.scatter(xs[~on], ys[~on], s=14, color="C0", label="trial")
        ax.scatter(xs[on], ys[on], s=24, color="C3", label="Pareto front")
        ax.set_xlabel(settings.objectives[1])
        ax.set_ylabel(settings.objectives[0])
        ax.legend()
        written.append(_save(fig, settings.out / "pareto.png"))
    plt.close("all")
    return written


def _save(fig, path: Path) -> str:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return path.name
