"""Experiment trackers: the run's TensorBoard scalars, resolved config and summary mirrored to Weights & Biases
or MLflow (`train --track wandb|mlflow`).

TensorBoard stays the record every run writes; `TrackerLog` is a loop listener that hands the trackers what
TensorBoard gets, one batch per loop event. Trackers are optional extras
(`pip install 'rlagents[wandb]'`, `'rlagents[mlflow]'`), imported only when a run tracks with them.

- W&B runs offline by default (`RUN_DIR/wandb/offline-run-*`, no network; `wandb sync` uploads it later);
  `WANDB_MODE=online` in the environment logs live instead.
- `--resume` continues the tracker runs the first session started (their ids are kept in the run directory's
  `trackers.json`): MLflow reopens the run by its run id, W&B by its id with `resume="allow"`.
- MLflow logs to `--track-uri` (a server URL such as `http://localhost:5000`, or `sqlite:///FILE`), else to
  `MLFLOW_TRACKING_URI`, else to MLflow's own default: an SQLite store `mlflow.db` in the working folder,
  with artifacts under `mlruns/`. (MLflow 3 refuses new plain-folder stores without an opt-out.)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from rlagents.checkpoint import atomic_write_json
from rlagents.errors import UserError
from rlagents.loop import LoopListener
from rlagents.runlock import LOCK_NAME
from rlagents.safeload import read_json

TRACKERS = ("wandb", "mlflow")
DEFAULT_PROJECT = "rlagents"
MLFLOW_PARAM_CHARS = 6000  # MLflow's limit on a parameter value
IDS_FILE = "trackers.json"  # in the run directory: {kind: {"id": tracker run id}}, so a resume continues them


class Tracker(ABC):
    """Where a run's scalars, config and summary go besides TensorBoard; `id` is the tracker's own run id."""

    id: str = ""

    @abstractmethod
    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Record scalars (TensorBoard tags as keys) at env step `step`."""

    @abstractmethod
    def log_summary(self, summary: dict[str, Any]) -> None:
        """Record the run's summary.json."""

    def log_video(self, path: Path, step: int) -> None:
        """Attach a video file recorded at `step` (`train --capture-video`)."""

    @abstractmethod
    def close(self, status: str) -> None:
        """Finish the run (`status`: completed, interrupted, stopped or failed)."""


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level of `section.key` entries, values JSON-encoded where not scalars."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)
    return out


class WandbTracker(Tracker):
    def __init__(self, run_dir: Path, name: str, config: dict[str, Any], project: str, run_id: str | None = None):
        """A new W&B run, or (`run_id`) the run of that id continued (`resume="allow"`: a new one if W&B has
        none of that id)."""
        import wandb

        self.run = wandb.init(project=project, name=name, dir=str(run_dir), config=config,
                              mode=os.environ.get("WANDB_MODE", "offline"),
                              id=run_id, resume="allow" if run_id else None,
                              settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        self.id = str(self.run.id)
        self._wandb = wandb

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def log_summary(self, summary: dict[str, Any]) -> None:
        self.run.summary.update(json.loads(json.dumps(summary)))

    def log_video(self, path: Path, step: int) -> None:
        self.run.log({"videos/greedy_episode": self._wandb.Video(str(path), format=path.suffix[1:])}, step=step)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)


class MlflowTracker(Tracker):
    def __init__(self, name: str, config: dict[str, Any], experiment: str, uri: str | None,
                 run_id: str | None = None):
        """A new MLflow run in `experiment`, or (`run_id`) that run reopened where it is, when this store has it
        (its params are already logged: MLflow refuses to log them again with other values)."""
        # an unreachable server fails in seconds, not after MLflow's default 7 retries of up to 120 s each
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri) if uri else MlflowClient()
        if run_id is not None and self._exists(run_id):
            self.run_id = self.id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        self.run_id = self.id = self.client.create_run(experiment_id, run_name=name).info.run_id
        params = [Param(key, str(value)[:MLFLOW_PARAM_CHARS]) for key, value in flat_config(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.client.log_dict(self.run_id, config, "config.json")

    def _exists(self, run_id: str) -> bool:
        """Whether this store holds the run (a resume may log to another store, or the run was deleted)."""
        try:
            return self.client.get_run(run_id).info.lifecycle_stage != "deleted"
        except Exception:  # noqa: BLE001 (MLflow raises MlflowException, or a store-specific error)
            return False

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, float(value), now, step)
                                                    for key, value in scalars.items()])

    def log_summary(self, summary: dict[str, Any]) -> None:
        self.client.log_dict(self.run_id, summary, "summary.json")

    def log_video(self, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path), "videos")

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if status == "completed" else "KILLED")


def require_tracker(kind: str) -> None:
    """A one-line UserError when `kind` is unknown or its package is not installed (checked before training)."""
    if kind not in TRACKERS:
        raise UserError(f"--track {kind}: unknown tracker; valid: {', '.join(TRACKERS)}")
    import importlib.util

    if importlib.util.find_spec(kind) is None:
        raise UserError(f"--track {kind} needs the {kind} package: pip install 'rlagents[{kind}]'")


def read_tracker_ids(run_dir: Path) -> dict[str, str]:
    """{kind: tracker run id} of the runs earlier sessions of `run_dir` logged to (its `trackers.json`)."""
    path = Path(run_dir) / IDS_FILE
    if not path.is_file():
        return {}
    data = read_json(path, "tracker ids")
    if not isinstance(data, dict):
        raise UserError(f"tracker ids {path}: expected a mapping of tracker: {{id: ...}}, got {type(data).__name__}")
    return {kind: entry["id"] for kind, entry in data.items()
            if kind in TRACKERS and isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]}


def open_trackers(kinds: list[str], run_dir: Path, config: dict[str, Any], *, project: str = DEFAULT_PROJECT,
                  uri: str | None = None, ids: dict[str, str] | None = None) -> list[Tracker]:
    """Start one tracker run per entry of `kinds`, named after the run directory, with the resolved config; a
    kind with an id in `ids` continues that run instead."""
    trackers: list[Tracker] = []
    ids = ids or {}
    for kind in dict.fromkeys(kinds):  # each once, in the order given
        require_tracker(kind)
        try:
            if kind == "wandb":
                trackers.append(WandbTracker(run_dir, run_dir.name, config, project, ids.get(kind)))
            else:
                trackers.append(MlflowTracker(run_dir.name, config, project, uri, ids.get(kind)))
        except Exception as exc:  # each library raises its own types (bad URI, unreachable server, ...)
            for tracker in trackers:
                tracker.close("failed")
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--track {kind}: cannot start a run: {text}") from None
    return trackers


class TrackerLog(LoopListener):
    """`--track`: starts the tracker runs when training starts (a resume continues those of `trackers.json`,
    which records their ids), and hands them every scalar of every loop
    event (what TensorBoard gets, one batch per event), the videos `--capture-video` records, and the summary
    at the end."""

    def __init__(self, kinds: list[str], *, project: str = DEFAULT_PROJECT, uri: str | None = None):
        self.kinds, self.project, self.uri = list(kinds), project, uri
        self.trackers: list[Tracker] = []
        self.run_dir = Path()

    def start(self, run: Any, state: Any, resumed: bool) -> None:
        self.run_dir = Path(run.run_dir)
        config = {"run": {"agent": run.agent_name, "env": run.env_id, "seed": run.seed, "device": str(run.device),
                          "run_dir": str(run.run_dir)},
                  "train": dataclasses.asdict(run.config.train), "agent": dataclasses.asdict(run.config.agent)}
        try:
            ids = read_tracker_ids(self.run_dir) if resumed else {}
            self.trackers = open_trackers(self.kinds, self.run_dir, config, project=self.project, uri=self.uri,
                                          ids=ids)
            kinds = list(dict.fromkeys(self.kinds))
            atomic_write_json(self.run_dir / IDS_FILE, {  # kinds this session did not track keep their ids
                **{kind: {"id": run_id} for kind, run_id in ids.items()},
                **{kind: {"id": tracker.id} for kind, tracker in zip(kinds, self.trackers)}})
        except UserError:
            if not resumed:  # a new run's folder holds only what this session just wrote: no half-started run
                for path in self.run_dir.iterdir():  # all but the run lock, which stays (rlagents.runlock)
                    if path.name != LOCK_NAME:
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
            raise

    def on_event(self, step: int, metrics: dict[str, Any]) -> None:
        scalars = {tag: float(value) for tag, value in metrics.items() if "/" in tag}
        for tracker in self.trackers:
            if scalars:
                tracker.log_scalars(scalars, step)
            video = (metrics.get("evaluation") or {}).get("video")
            if video:
                tracker.log_video(self.run_dir / video, step)

    def end(self, status: str, summary: dict[str, Any] | None) -> None:
        for tracker in self.trackers:
            if summary is not None:  # TensorBoard's last steps/s is the whole run's: mirror it
                tracker.log_scalars({"charts/steps_per_s": summary["env_steps_per_s"]}, summary["total_steps"])
                tracker.log_summary(summary)
            else:
                tracker.log_summary({"status": status})
            tracker.close(status)
        self.trackers = []
