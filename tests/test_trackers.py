"""`train --track wandb|mlflow`: the TensorBoard scalars, the resolved config and the summary are mirrored to
W&B (offline, read back from its run file) and MLflow (a local SQLite store, read back with its client)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from rlagents.train import main as train_main

RUN_ARGS = ["--agent", "qlearning", "--env", "FrozenLake-v1", "--steps", "2000", "--seed", "4", "--eval-every",
            "1000", "--eval-episodes", "10", "--no-progress", "--set", "log_every=500"]


def train(run_dir: Path, *extra: str) -> dict:
    assert train_main([*RUN_ARGS, "--run-dir", str(run_dir), *extra]) == 0
    return json.loads((run_dir / "summary.json").read_text())


def tensorboard_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    # hparam/ is the hparams table's metric (the summary's eval_return_mean), not a scalar series
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]
            if not tag.startswith("hparam/")}


def wandb_records(path: Path):
    """The protobuf records of a W&B run file (a LevelDB-style log: 32 KiB blocks of chunks with a 7-byte
    header; wandb 0.31 has no reader of its own in Python)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    block, pos, parts = 32768, 7, []  # after the file header (":W&B", magic, version)
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        parts.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


def test_wandb_offline_mirrors_scalars_config_and_summary(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    summary = train(run_dir, "--track", "wandb")
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    history: dict[str, dict[int, float]] = {}
    config: dict[str, object] = {}
    summary_items: dict[str, object] = {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {item_key(i): json.loads(i.value_json) for i in record.history.item}
            for key, value in items.items():
                if not key.startswith("_"):
                    history.setdefault(key, {})[items["_step"]] = value
        elif kind == "run":
            config.update({item_key(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "summary":
            summary_items.update({item_key(i): json.loads(i.value_json) for i in record.summary.update})
    board = tensorboard_scalars(run_dir)
    assert set(board) <= set(history)
    for tag, values in board.items():
        assert history[tag] == pytest.approx(values), tag
    assert history["eval/return_mean"] == {1000: summary["evaluations"][0]["return_mean"],
                                           2000: summary["eval_return_mean"]}
    assert config["train"]["steps"] == 2000 and config["agent"]["update"] == "qlearning"
    assert config["run"]["env"] == "FrozenLake-v1"
    assert summary_items["eval_return_mean"] == summary["eval_return_mean"]
    assert summary_items["status"] == "completed"


def test_mlflow_local_store_mirrors_scalars_config_and_summary(tmp_path: Path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # MLflow puts a new experiment's artifacts under ./mlruns

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    summary = train(run_dir, "--track", "mlflow", "--track-uri", uri, "--track-project", "masks-test")
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("masks-test").experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    board = tensorboard_scalars(run_dir)
    for tag, values in board.items():
        logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, tag)}
        assert logged == pytest.approx(values), tag
    assert {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval/return_mean")}[2000] \
        == summary["eval_return_mean"]
    assert run.data.params["train.steps"] == "2000" and run.data.params["agent.update"] == "qlearning"
    artifacts = Path(client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path)))
    assert json.loads(artifacts.read_text())["eval_return_mean"] == summary["eval_return_mean"]


def test_a_tracker_that_is_not_installed_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        train_main([*RUN_ARGS, "--run-dir", str(run_dir), "--track", "wandb"])
    assert exit_info.value.code == 2
    assert "--track wandb needs the wandb package: pip install 'rlagents[wandb]'" in capsys.readouterr().err
    assert not run_dir.exists()


def test_trackers_are_imported_only_when_tracking():
    import subprocess
    import sys

    code = ("import sys, rlagents.train, rlagents.loop, rlagents.evaluate; "
            "print(any(m in sys.modules for m in ('wandb', 'mlflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.strip() == "False", out.stderr


def _stopped_at_1000(run_dir: Path, tracker: object) -> None:
    """The first session of a run, tracked, stopped by its callback at step 1000 (resumable)."""
    from rlagents.api import train_spec
    from rlagents.train import build_parser, spec_from_args

    spec = spec_from_args(build_parser().parse_args([*RUN_ARGS, "--run-dir", str(run_dir)]))
    result = train_spec(spec, callback=lambda step, metrics: step < 1000, listeners=[tracker])
    assert result.status == "stopped" and result.summary["total_steps"] == 1000


def test_a_resumed_run_continues_its_mlflow_run(tmp_path: Path, monkeypatch):
    """`--resume RUN_DIR --track mlflow` logs to the run the first session started (its id kept in the run
    directory's trackers.json), not to a second run: one run, FINISHED, with both sessions' evaluations."""
    from mlflow.tracking import MlflowClient

    from rlagents.trackers import TrackerLog

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    _stopped_at_1000(run_dir, TrackerLog(["mlflow"], uri=uri, project="resume-test"))
    assert train_main(["--resume", str(run_dir), "--no-progress", "--track", "mlflow", "--track-uri", uri,
                       "--track-project", "resume-test"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("resume-test").experiment_id])
    assert json.loads((run_dir / "trackers.json").read_text()) == {"mlflow": {"id": run.info.run_id}}
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    evals = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval/return_mean")}
    assert evals == {1000: summary["evaluations"][0]["return_mean"], 2000: summary["eval_return_mean"]}
    assert run.data.params["train.steps"] == "2000"


def test_a_resumed_run_continues_its_wandb_run(tmp_path: Path, monkeypatch):
    """W&B offline: the resumed session's run file carries the first session's run id (`resume="allow"`), so
    `wandb sync` of both folders fills one W&B run."""
    from rlagents.trackers import TrackerLog

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "run"
    _stopped_at_1000(run_dir, TrackerLog(["wandb"]))
    first_id = json.loads((run_dir / "trackers.json").read_text())["wandb"]["id"]
    assert train_main(["--resume", str(run_dir), "--no-progress", "--track", "wandb"]) == 0
    files = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2 and all(path.name == f"run-{first_id}.wandb" for path in files)
    ids = {record.run.run_id for path in files for record in wandb_records(path)
           if record.WhichOneof("record_type") == "run"}
    assert ids == {first_id}
    assert json.loads((run_dir / "trackers.json").read_text()) == {"wandb": {"id": first_id}}


def test_a_malformed_trackers_json_is_one_line_on_resume(tmp_path: Path, monkeypatch, capsys):
    from rlagents.trackers import TrackerLog

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    _stopped_at_1000(run_dir, TrackerLog(["mlflow"], uri=uri))
    (run_dir / "trackers.json").write_text("[1, 2]")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        train_main(["--resume", str(run_dir), "--no-progress", "--track", "mlflow", "--track-uri", uri])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"tracker ids {run_dir / 'trackers.json'}: expected a mapping" in err
