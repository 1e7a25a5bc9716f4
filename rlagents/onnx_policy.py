"""Running an exported policy (`python -m rlagents.export`) with onnxruntime alone: torch is never imported.

`OnnxPolicy.load(FILE)` maps a batch of raw observations (an array, or a dict of arrays for `Dict` spaces)
to the actions `agent.act(obs, explore=False)` gives; `evaluate_onnx(FILE)` plays the run's own evaluation
episodes with it. Neither this module nor what it imports (`rlagents.environments`, `rlagents.obs`,
`rlagents.errors`) imports torch: `tests/test_export.py` checks that in a fresh interpreter.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from rlagents.errors import UserError

ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(uint16)": np.uint16,
               "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
               "tensor(bool)": np.bool_}
ACTION = "action"  # the graph output every exported policy has
MASK_INPUT = "action_mask"  # the graph input of an action mask (rlagents.masks), where the policy takes one


def sidecar_path(onnx_file: Path) -> Path:
    """The JSON written next to an exported `.onnx` file (same name, `.json`)."""
    return Path(onnx_file).with_suffix(".json")


def import_onnxruntime():
    """onnxruntime, or a one-line UserError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError("running an exported policy needs onnxruntime: pip install 'rlagents[export]' "
                        "(or pip install onnxruntime)") from None
    return onnxruntime


def first_line(exc: Exception) -> str:
    """The first line of an exception's message (its type's name if it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def flatten_obs(obs: Any, prefix: str = "") -> dict[str, Any]:
    """A (nested) dict observation batch as {graph input name: array}; nested keys are joined by dots."""
    out: dict[str, Any] = {}
    for key, value in obs.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten_obs(value, name) if isinstance(value, dict) else {name: value})
    return out


class OnnxPolicy:
    """An exported greedy policy in an onnxruntime session (one thread by default: these graphs are small, and
    one thread gives the same numbers on every run)."""

    def __init__(self, model: Path | bytes, *, threads: int = 1, info: dict[str, Any] | None = None):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: no optimiser chatter on stderr
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own assorted types for unreadable models
            name = "the exported graph" if isinstance(model, bytes) else str(model)
            raise UserError(f"{name} is not a loadable ONNX model: {first_line(exc)}") from None
        self.inputs = [(i.name, ONNX_DTYPES.get(i.type)) for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if ACTION not in outputs:
            raise UserError(f"the ONNX model has no {ACTION!r} output (outputs: {', '.join(outputs)}); was it "
                            f"written by rlagents.export?")
        self.info = info or {}

    @classmethod
    def load(cls, path: Path, *, env_id: str | None = None, threads: int = 1) -> OnnxPolicy:
        """Load `path` with its JSON, checking that the two belong together (and to `env_id`, if given)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"ONNX file not found: {path}")
        info = read_sidecar(path)
        if env_id is not None and info.get("env") != env_id:
            raise UserError(f"{path} was exported from a run on {info.get('env')!r}, not {env_id!r}")
        return cls(path, threads=threads, info=info)

    def source(self) -> str:
        """Where the policy came from, for printing: the file and the checkpoint it was exported from."""
        checkpoint = self.info.get("checkpoint") or {}
        name = Path(checkpoint.get("path") or "?").name
        return (f"{self.info.get('file', 'ONNX graph')} via onnxruntime, exported from {name}, "
                f"step {checkpoint.get('step')}")

    def feeds(self, obs: Any) -> dict[str, np.ndarray]:
        """The graph's inputs for an observation batch, in the dtypes the graph takes."""
        flat = flatten_obs(obs) if isinstance(obs, dict) else {self.inputs[0][0]: obs}
        missing = [name for name, _ in self.inputs if name not in flat]
        if missing:
            raise ValueError(f"observation batch lacks graph inputs {missing} (has {sorted(flat)})")
        return {name: np.ascontiguousarray(flat[name], dtype=dtype) for name, dtype in self.inputs}

    def __call__(self, obs: Any, mask: np.ndarray | None = None) -> np.ndarray:
        """Greedy actions for a batch of observations; a graph exported from an agent that takes action masks
        from the env's info has an `action_mask` input, fed from `mask` (all actions legal when None)."""
        if any(name == MASK_INPUT for name, _ in self.inputs) and not (isinstance(obs, dict) and MASK_INPUT in obs):
            if mask is None:
                rows = len(next(iter(obs.values()))) if isinstance(obs, dict) else len(obs)
                mask = np.ones((rows, self._mask_width()), dtype=bool)
            obs = {"obs": obs, MASK_INPUT: mask} if not isinstance(obs, dict) else {**obs, MASK_INPUT: mask}
        return self.session.run([ACTION], self.feeds(obs))[0]

    def _mask_width(self) -> int:
        shape = next(i.shape for i in self.session.get_inputs() if i.name == MASK_INPUT)
        return int(shape[1])


def read_sidecar(path: Path) -> dict[str, Any]:
    """The JSON describing an exported file, checked against the file's SHA-256."""
    side = sidecar_path(path)
    if not side.is_file():
        raise UserError(f"{side} not found: an exported policy is the .onnx file plus the .json written next "
                        f"to it (python -m rlagents.export)")
    try:
        info = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{side} is corrupt (not valid JSON: {exc})") from None
    if not isinstance(info, dict) or "onnx_sha256" not in info:
        raise UserError(f"{side} does not describe an exported policy (no onnx_sha256)")
    if hashlib.sha256(Path(path).read_bytes()).hexdigest() != info["onnx_sha256"]:
        raise UserError(f"{path} does not match {side.name} (SHA-256 differs): export it again")
    return info


def evaluate_onnx(path: Path, *, episodes: int | None = None, seed: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Play the exported policy's greedy episodes on the env it was trained on; returns (returns, lengths).

    By default these are the run's own evaluation episodes (its eval seed, count and number of envs, recorded
    at export), so the result equals `python -m rlagents.evaluate RUN_DIR` on the source checkpoint.
    """
    from rlagents.environments import evaluate, make_vec_env

    policy = OnnxPolicy.load(path)
    setting = policy.info["evaluation"]
    episodes = episodes or int(setting["episodes"])
    seed = int(setting["seed"]) if seed is None else seed
    envs = make_vec_env(policy.info["env"], min(int(setting["envs"]), episodes), step_cap=setting["step_cap"])
    try:
        return evaluate(policy, envs, episodes, seed)
    finally:
        envs.close()
