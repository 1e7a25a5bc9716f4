"""Safe checkpoints: tensors in safetensors, everything else in JSON, both written atomically.

An agent's nested state (dicts, lists, tensors, numpy arrays, plain values) is split into a flat dict of
tensors, saved with safetensors, and a JSON tree that refers to them by key. Loading never executes code
from a file: no pickle, no `torch.load`. The JSON, written last, records the SHA-256 of its tensor file, so
a checkpoint whose JSON exists is complete and a damaged tensor file is detected.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from rlagents.errors import CheckpointError
from rlagents.safeload import clip, read_bounded, read_json, shown
from rlagents.validate import SEED_MAX

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoints"
FINAL = "final"
BEST = "best"
MAX_TENSOR_BYTES = 1 << 40  # a bound that only a special file could reach; a frame replay is a few GB
_SHA256 = re.compile(r"[0-9a-f]{64}")
_STRING, _INTEGER, _MAPPING, _NUMBER = ((str,), "a string"), ((int,), "an integer"), ((dict,), "a mapping"), \
    ((int, float), "a number")
# metadata fields rlagents writes, with their types; other fields are kept, unread
_META_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "agent": _STRING, "env": _STRING, "reason": _STRING, "observation_space": _STRING, "action_space": _STRING,
    "config_sha256": _STRING, "versions": _MAPPING, "config": _MAPPING, "seed": _INTEGER, "step": _INTEGER,
    "episodes": _INTEGER, "test_accuracy": _NUMBER}


# ---------------------------------------------------------------- atomic files


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create `.<name>.<random>.tmp` beside `path`, exclusively, with mode 0666 less the umask: the mode any
    other new file gets (`tempfile.mkstemp` would make it 0600, and the rename would keep that)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name beside {path}")


def write_temp_file(path: Path, data: bytes) -> Path:
    """Write `data` to a new fsynced temp file beside `path` and return it; the caller renames it into place
    (`os.replace`) or deletes it. Writers of several files rename them together once all are written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that renames inside it are durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    tmp = write_temp_file(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


# ---------------------------------------------------------------- nested state <-> tensors + JSON


def flatten_state(state: Any, tensors: dict[str, torch.Tensor], prefix: str = "") -> Any:
    """Move every tensor and array of `state` into `tensors` (keyed by path); return the JSON remainder."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state.detach().cpu().contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(state, np.ndarray):
        if state.dtype == object:
            raise TypeError(f"object arrays cannot be checkpointed safely ({prefix})")
        tensors[prefix] = torch.from_numpy(np.ascontiguousarray(state).copy())
        return {"__ndarray__": prefix}
    if isinstance(state, dict):
        if all(isinstance(k, str) for k in state):
            return {k: flatten_state(v, tensors, f"{prefix}.{k}" if prefix else k) for k, v in state.items()}
        # torch optimizer state is keyed by int parameter ids
        return {"__items__": [[k, flatten_state(v, tensors, f"{prefix}.{k}")] for k, v in state.items()]}
    if isinstance(state, (list, tuple)):
        return [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(state)]
    if isinstance(state, np.generic):
        return state.item()
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise TypeError(f"cannot checkpoint value of type {type(state).__name__} at {prefix!r}")


def unflatten_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `flatten_state`."""
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__ndarray__" in tree:
            return tensors[tree["__ndarray__"]].numpy()
        if "__items__" in tree:
            return {k: unflatten_state(v, tensors) for k, v in tree["__items__"]}
        return {k: unflatten_state(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unflatten_state(v, tensors) for v in tree]
    return tree


def library_versions() -> dict[str, str]:
    import gymnasium

    import rlagents

    return {"rlagents": rlagents.__version__, "torch": torch.__version__, "gymnasium": gymnasium.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def save_checkpoint(folder: Path, name: str, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Save agent `state` as `<folder>/<name>.safetensors` + `<name>.json`; returns the JSON path."""
    tensors: dict[str, torch.Tensor] = {}
    tree = flatten_state(state, tensors)
    blob = save_tensors(tensors)
    tensor_file = Path(folder) / f"{name}.safetensors"
    atomic_write_bytes(tensor_file, blob)
    record = {"format_version": FORMAT_VERSION, "versions": library_versions(), **meta,
              "tensor_file": tensor_file.name, "tensor_sha256": hashlib.sha256(blob).hexdigest(), "state": tree}
    json_file = Path(folder) / f"{name}.json"
    atomic_write_json(json_file, record)
    return json_file


def read_checkpoint(json_file: Path, *, agent: str | None = None, env: str | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load and verify a checkpoint; returns (state, metadata). Raises CheckpointError saying what is wrong.

    The JSON is read within `rlagents.safeload`'s bounds and every metadata field's type is checked; the
    tensor file must be a regular file beside the JSON, named without any folder. Whether the state fits an
    agent (types, dtypes, finite weights) is `rlagents.state_check`'s job, which knows the agent.
    """
    json_file = Path(json_file)
    record = read_json(json_file, "checkpoint", CheckpointError)
    check_record(record, json_file)
    if agent is not None and record.get("agent") != agent:
        raise CheckpointError(f"checkpoint {json_file} belongs to agent {shown(record.get('agent'))}, not {agent!r}")
    if env is not None and record.get("env") != env:
        raise CheckpointError(f"checkpoint {json_file} was trained on env {shown(record.get('env'))}, not {env!r}")
    tensor_file = tensor_path(json_file, record["tensor_file"])
    if not tensor_file.exists():
        raise CheckpointError(f"checkpoint {json_file} is incomplete: tensor file {tensor_file.name} is missing")
    blob = read_bounded(tensor_file, MAX_TENSOR_BYTES, "checkpoint tensor file", CheckpointError)
    if hashlib.sha256(blob).hexdigest() != record["tensor_sha256"]:
        raise CheckpointError(f"checkpoint tensor file {tensor_file} is corrupt (SHA-256 mismatch)")
    try:
        tensors = load_tensors(blob)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"checkpoint tensor file {tensor_file} is corrupt: {clip(str(exc))}") from None
    try:
        state = unflatten_state(record["state"], tensors)
    except KeyError as exc:
        raise CheckpointError(f"checkpoint {json_file} is corrupt: its state names tensor {shown(exc.args[0])}, "
                              f"which {tensor_file.name} does not hold") from None
    except (ValueError, TypeError) as exc:  # a malformed __items__ list or reference
        raise CheckpointError(f"checkpoint {json_file} is corrupt: its state tree is malformed ({clip(str(exc))})"
                              ) from None
    meta = {k: v for k, v in record.items() if k != "state"}
    return state, meta


def check_record(record: Any, json_file: Path) -> None:
    """Refuse a checkpoint JSON whose format version or metadata fields have the wrong type or range."""
    if not isinstance(record, dict) or "format_version" not in record or "state" not in record:
        raise CheckpointError(f"{json_file} is not an rlagents checkpoint (no format_version/state)")
    version = record["format_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"checkpoint {json_file}: format_version must be an integer, got {shown(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {json_file} has format version {version}; this rlagents reads "
                              f"versions up to {FORMAT_VERSION}: upgrade rlagents")
    if version < 1:
        raise CheckpointError(f"checkpoint {json_file} has format version {version}; versions start at 1")
    for key in ("tensor_file", "tensor_sha256"):
        if key not in record:
            raise CheckpointError(f"checkpoint {json_file} has no {key}")
    if not isinstance(record["tensor_sha256"], str) or not _SHA256.fullmatch(record["tensor_sha256"]):
        raise CheckpointError(f"checkpoint {json_file}: tensor_sha256 must be 64 hex digits, got "
                              f"{shown(record['tensor_sha256'])}")
    if not isinstance(record["state"], dict):
        raise CheckpointError(f"checkpoint {json_file}: state must be a mapping, got {shown(record['state'])}")
    for key, (types, expected) in _META_TYPES.items():
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            raise CheckpointError(f"checkpoint {json_file}: {key} must be {expected}, got {shown(value)}")
    versions = record.get("versions")
    if versions is not None and not all(isinstance(v, str) for v in versions.values()):
        raise CheckpointError(f"checkpoint {json_file}: versions must map names to version strings")
    for key, high in (("seed", SEED_MAX), ("step", None), ("episodes", None)):
        value = record.get(key)
        if value is not None and (value < 0 or (high is not None and value > high)):
            raise CheckpointError(f"checkpoint {json_file}: {key} must be from 0 to {high or 'any'}, got {value}")


def tensor_path(json_file: Path, name: Any) -> Path:
    """The tensor file a checkpoint JSON names: a plain `*.safetensors` file name beside the JSON, never a
    path (which could point anywhere) nor a symlink to another folder."""
    if (not isinstance(name, str) or not name.endswith(".safetensors") or os.path.basename(name) != name
            or any(sep in name for sep in ("/", "\\", "\0")) or name.startswith(".")):
        raise CheckpointError(f"checkpoint {json_file}: tensor_file {shown(name)} must be a *.safetensors file "
                              f"name beside the JSON, without folders")
    path = json_file.parent / name
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if target.parent != Path(os.path.realpath(json_file.parent)):
            raise CheckpointError(f"checkpoint {json_file}: tensor file {name} is a symlink to {target}, outside "
                                  f"the checkpoint's folder")
    return path


def check_spaces(meta: dict[str, Any], observation_space: Any, action_space: Any, path: Path) -> None:
    """Refuse a checkpoint whose recorded spaces differ from the env's (a changed env under the same id)."""
    for key, space in (("observation_space", observation_space), ("action_space", action_space)):
        recorded = meta.get(key)
        if not isinstance(recorded, str):
            raise CheckpointError(f"checkpoint {path} records no {key}: it was not written by rlagents.train, "
                                  f"or was edited")
        if recorded != repr(space):
            raise CheckpointError(f"checkpoint {path} was saved for {key} {clip(recorded, 200)}, but the env now "
                                  f"has {space!r}")


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temp files a killed writer left in a run's checkpoint folder (`atomic_write_bytes` renames
    its temp file only once it is complete, so a leftover one is never part of a checkpoint); returns them."""
    stale = sorted((Path(run_dir) / CHECKPOINT_DIR).glob(".*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def check_inside(path: Path, folder: Path) -> None:
    """Refuse a checkpoint file found in a run's `folder` that is a symbolic link to a file elsewhere (or to
    no file): loading a run reads nothing outside it."""
    if path.is_symlink() and Path(os.path.realpath(path)).parent != Path(os.path.realpath(folder)):
        raise CheckpointError(f"checkpoint {path} is a symbolic link to {clip(os.path.realpath(path), 120)}, "
                              f"outside its run's {CHECKPOINT_DIR} folder")


def step_checkpoints(run_dir: Path) -> list[Path]:
    """The periodic (and interrupted-run) checkpoints of a run, oldest first."""
    return sorted((Path(run_dir) / CHECKPOINT_DIR).glob("step_*.json"))


def latest_checkpoint(run_dir: Path) -> Path:
    """The final checkpoint of a run, or else its newest periodic one."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    final = folder / f"{FINAL}.json"
    if final.is_file():
        check_inside(final, folder)
        return final
    candidates = step_checkpoints(run_dir)
    if not candidates:
        raise CheckpointError(f"no checkpoint in {folder}: was the run trained to the end?")
    check_inside(candidates[-1], folder)
    return candidates[-1]
