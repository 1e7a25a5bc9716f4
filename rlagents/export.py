"""`python -m rlagents.export RUN_DIR --format onnx`: a run's greedy policy as one ONNX graph, plus a JSON.

The agent hands over its greedy policy as a torch module (`Agent.export_module`); here it gets named graph
inputs (one per key of a `Dict` observation) and a dynamic batch axis, goes through torch's ONNX exporter,
and is checked with onnxruntime against the agent itself, on the observations of a real greedy episode and
observations drawn from the space (every state of a `Discrete` space), before the `.onnx` file and the JSON
describing it are written, atomically, side by side. Running the file needs onnxruntime only
(`rlagents.onnx_policy`, or the snippet in docs/guide/export.md).
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import rlagents
from rlagents import obs as batches
from rlagents.checkpoint import library_versions, sync_folder, write_temp_file
from rlagents.cli import ArgumentParser
from rlagents.environments import EVAL_STEP_CAP, make_env
from rlagents.errors import ExportError, UserError, cli_entry
from rlagents.graphs import with_action_mask
from rlagents.evaluate import spaces_of
from rlagents.loop import EVAL_SEED_OFFSET
from rlagents.masks import MASK_KEY, obs_mask_space, obs_masks, single_mask
from rlagents.onnx_policy import ACTION, MASK_INPUT, OnnxPolicy, first_line, flatten_obs, sidecar_path
from rlagents.threads import set_cpu_threads
from rlagents.paths import check_output_file
from rlagents.runs import LoadedRun, load_run

FORMATS = ("onnx",)
OPSET = 17
DEFAULT_NAME = "policy.onnx"
CHECK_STEPS = 200  # greedy steps of a real episode, from the run's evaluation seed
CHECK_SAMPLES = 64  # observations drawn from the observation space
CHECK_ALL_STATES = 100_000  # Discrete observation spaces up to this size: every state is checked
SAMPLE_LIMIT = 1e6  # drawn observations beyond this magnitude (huge Box bounds) say nothing about a policy


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m rlagents.export", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="a run directory written by rlagents.train")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default onnx)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"the .onnx file to write; its JSON goes next to it (default RUN_DIR/{DEFAULT_NAME})")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint JSON (default: the final one)")
    return p


# ---------------------------------------------------------------- graph inputs


@dataclass
class GraphInput:
    """One named input of the graph: a `Box` or `Discrete` observation, or one key of a `Dict` one."""

    name: str
    path: tuple[str, ...]  # keys leading to it in a (nested) Dict observation; () for a plain one
    space: gym.Space

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int64) if isinstance(self.space, gym.spaces.Discrete) else np.dtype(self.space.dtype)

    @property
    def shape(self) -> list[str | int]:
        return ["batch"] if isinstance(self.space, gym.spaces.Discrete) else ["batch", *self.space.shape]


def graph_inputs(space: gym.Space, path: tuple[str, ...] = ()) -> list[GraphInput]:
    """The graph inputs of an observation space: `obs`, or one per (nested) key of a `Dict`, named by the keys
    joined with dots."""
    if isinstance(space, gym.spaces.Dict):
        return [i for key, sub in space.spaces.items() for i in graph_inputs(sub, (*path, str(key)))]
    if isinstance(space, (gym.spaces.Box, gym.spaces.Discrete)):
        return [GraphInput(".".join(path) or "obs", path, space)]
    raise ExportError(f"cannot export a policy over {space} observations: graph inputs are made for Box, "
                      f"Discrete and Dict spaces")


def mask_input(action_space: gym.spaces.Discrete) -> GraphInput:
    """The `action_mask` graph input of a policy that takes masks from the env's info: int8, batch × actions."""
    return GraphInput(MASK_INPUT, (MASK_INPUT,), gym.spaces.MultiBinary(int(action_space.n)))


class FlatInputs(nn.Module):
    """The agent's policy module taking one positional tensor per graph input (ONNX inputs are flat and
    named), reassembled into the (nested) dict a `Dict`-observation network takes; with `takes_mask`, the last
    input is the action mask, passed on as the policy's second argument."""

    def __init__(self, policy: nn.Module, paths: list[tuple[str, ...]], takes_mask: bool = False):
        super().__init__()
        self.policy = policy
        self.paths = paths
        self.takes_mask = takes_mask

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        if self.takes_mask:
            *tensors, mask = tensors
            return self.policy(self._obs(tensors), mask)
        return self.policy(self._obs(tensors))

    def _obs(self, tensors) -> Any:
        if self.paths == [()]:
            return tensors[0]
        obs: dict[str, Any] = {}
        for path, tensor in zip(self.paths, tensors):
            node = obs
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = tensor
        return obs


def input_arrays(obs: Any, inputs: list[GraphInput]) -> list[np.ndarray]:
    """An observation batch as one array per graph input, in the input's dtype."""
    flat = flatten_obs(obs) if isinstance(obs, dict) else {inputs[0].name: obs}
    return [np.ascontiguousarray(flat[i.name], dtype=i.dtype) for i in inputs]


# ---------------------------------------------------------------- exporting


def to_onnx(policy: nn.Module, inputs: list[GraphInput], example: Any, takes_mask: bool = False) -> bytes:
    """The policy as a serialised ONNX model with a dynamic batch axis, traced on the `example` batch.

    torch's TorchScript-based exporter (`dynamo=False`) is used: it exports these graphs in well under a second
    and needs only `onnx`, where the torch.export-based one takes seconds per graph and needs onnxscript too
    (benchmarks/onnx_exporters.py). A module it cannot trace is an `ExportError` naming the first problem.
    """
    module = FlatInputs(policy, [i.path for i in (inputs[:-1] if takes_mask else inputs)], takes_mask).eval()
    tensors = tuple(torch.from_numpy(a) for a in input_arrays(example, inputs))
    names = [i.name for i in inputs]
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer remarks; the check decides
        try:
            torch.onnx.export(module, tensors, buffer, dynamo=False, opset_version=OPSET, input_names=names,
                              output_names=[ACTION], dynamic_axes={n: {0: "batch"} for n in [*names, ACTION]})
        except Exception as exc:  # the tracer and the op converters raise assorted types
            raise ExportError(f"torch could not turn the policy into ONNX: {first_line(exc)}") from None
    return buffer.getvalue()



def with_metadata(data: bytes, metadata: dict[str, str]) -> bytes:
    """The model with `metadata` in its `metadata_props`, checked by onnx's model checker."""
    import onnx

    model = onnx.load_from_string(data)
    model.doc_string = "greedy policy exported by rlagents (python -m rlagents.export)"
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph is not a valid ONNX model: {first_line(exc)}") from None
    return model.SerializeToString()


# ---------------------------------------------------------------- checking


def check_observations(run: LoadedRun) -> tuple[Any, np.ndarray | None]:
    """Observations to compare the graph with the agent on: a real greedy episode from the run's evaluation
    seed (up to `CHECK_STEPS` steps), observations drawn from the space, and every state of a small `Discrete`
    space; for a masked agent also their action masks (the episode's own, random ones for the others, some
    without any legal action)."""
    space, agent = run.agent.obs_space, run.agent
    env = make_env(run.env)
    masks = []
    try:
        obs, info = env.reset(seed=run.seed + EVAL_SEED_OFFSET)
        rows = [obs]
        for _ in range(CHECK_STEPS):
            mask = single_mask(obs, info, env.action_space) if agent.masked else None
            masks += [] if mask is None else [mask[0]]
            obs, _, terminated, truncated, info = env.step(agent.greedy(batches.stack([obs]), mask)[0])
            rows.append(obs)
            if terminated or truncated:
                break
        mask = single_mask(obs, info, env.action_space) if agent.masked else None
        masks += [] if mask is None else [mask[0]]
    finally:
        env.close()
    space.seed(run.seed)
    rows += [s for s in (space.sample() for _ in range(CHECK_SAMPLES)) if _modest(s)]
    if isinstance(space, gym.spaces.Discrete) and space.n <= CHECK_ALL_STATES:
        rows += list(np.arange(space.start, space.start + space.n, dtype=np.int64))
    observations = batches.stack([_as_array(r) for r in rows])
    if not agent.masked:
        return observations, None
    n = int(agent.action_space.n)
    if obs_mask_space(space):  # the masks are part of the observations, drawn with them
        return observations, obs_masks(observations, n)
    drawn = np.random.default_rng(run.seed).random((len(rows) - len(masks), n)) < 0.5
    return observations, np.concatenate([np.asarray(masks, dtype=bool).reshape(-1, n), drawn])


def _as_array(obs: Any) -> Any:
    return {k: _as_array(v) for k, v in obs.items()} if isinstance(obs, dict) else np.asarray(obs)


def _modest(obs: Any) -> bool:
    if isinstance(obs, dict):
        return all(_modest(v) for v in obs.values())
    values = np.asarray(obs, dtype=np.float64)
    return bool(np.all(np.abs(values) <= SAMPLE_LIMIT))


def compare_actions(expected: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """Discrete actions must be equal; continuous ones equal within float32 tolerance. Raises `ExportError`
    naming the first difference; returns what the JSON records about the check."""
    expected, got = np.asarray(expected), np.asarray(got)
    if expected.shape != got.shape:
        raise ExportError(f"the exported graph returns actions of shape {got.shape}, the agent {expected.shape}")
    if np.issubdtype(expected.dtype, np.integer):
        bad = expected != got
        max_diff = 0.0
    else:
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        bad = (diff > 1e-5 + 1e-5 * np.abs(expected)).reshape(len(expected), -1).any(axis=1)
        max_diff = float(diff.max()) if diff.size else 0.0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ExportError(f"the exported graph acts differently from the agent on {int(bad.sum())} of "
                          f"{len(bad)} check observations (first: observation {i}, agent {expected[i]}, graph "
                          f"{got[i]}); nothing was written")
    return {"observations": len(bad), "mismatches": 0, "max_abs_diff": max_diff}


# ---------------------------------------------------------------- the JSON


def _compact(values: np.ndarray) -> Any:
    """Bounds as one number when all are equal, else a list; infinities as the strings "inf" and "-inf"."""
    flat = np.asarray(values).reshape(-1)
    items = [v if np.isfinite(v) else ("inf" if v > 0 else "-inf") for v in flat.tolist()]
    return items[0] if len(set(items)) == 1 else np.asarray(items, dtype=object).reshape(np.shape(values)).tolist()


def describe_space(space: gym.Space) -> dict[str, Any]:
    """A JSON description of a space (type, shape, dtype, bounds), readable without gymnasium."""
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {str(k): describe_space(v) for k, v in space.spaces.items()}}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": _compact(space.low), "high": _compact(space.high)}
    return {"type": type(space).__name__, "repr": repr(space)}


def output_spec(action_space: gym.Space) -> dict[str, Any]:
    if isinstance(action_space, gym.spaces.Box):
        return {"name": ACTION, "shape": ["batch", *action_space.shape], "dtype": "float32"}
    return {"name": ACTION, "shape": ["batch"], "dtype": "int64"}


def describe_export(run: LoadedRun, inputs: list[GraphInput], data: bytes, out: Path,
                    check: dict[str, Any]) -> dict[str, Any]:
    """The JSON written next to the ONNX file."""
    info = _describe(run, inputs, data, out, check)
    if run.agent.masked:  # which input holds the action mask, and where the env gives it
        in_obs = obs_mask_space(run.agent.obs_space)
        info["action_mask"] = {"input": MASK_KEY if in_obs else MASK_INPUT,
                               "from": "observation" if in_obs else "info",
                               "meaning": "nonzero = legal; a row without a legal action counts all legal"}
    return info


def _describe(run: LoadedRun, inputs: list[GraphInput], data: bytes, out: Path,
              check: dict[str, Any]) -> dict[str, Any]:
    """The fields of the JSON that every export has."""
    import onnx
    import onnxruntime

    agent, train = run.agent, run.config.train
    return {
        "format": "onnx", "opset": OPSET, "file": out.name, "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "agent": run.agent_name, "env": run.env_id, "seed": run.seed, "run_dir": str(run.run_dir),
        "policy": "greedy",
        "inputs": [{"name": i.name, "shape": i.shape, "dtype": str(i.dtype), "space": repr(i.space)} for i in inputs],
        "outputs": [output_spec(agent.action_space)],
        "observation_space": describe_space(agent.obs_space), "action_space": describe_space(agent.action_space),
        "observation_space_repr": repr(agent.obs_space), "action_space_repr": repr(agent.action_space),
        "checkpoint": {"path": str(run.checkpoint), "sha256": hashlib.sha256(run.checkpoint.read_bytes()).hexdigest(),
                       "tensor_sha256": run.meta.get("tensor_sha256"), "step": run.meta.get("step")},
        # the run's own evaluation episodes, so `evaluate_onnx` reproduces `python -m rlagents.evaluate RUN_DIR`
        "evaluation": {"seed": run.seed + EVAL_SEED_OFFSET, "episodes": train.eval_episodes,
                       "envs": train.eval_envs, "step_cap": EVAL_STEP_CAP},
        "check": check,
        "versions": {**library_versions(), "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------- writing


def check_writable(out: Path) -> None:
    """Refuse an `--out` that cannot be written, before any work: another suffix, a folder, or a path that
    `paths.check_output_file` refuses (under a file, unwritable, too long, a device...)."""
    if out.suffix.lower() != ".onnx":
        raise UserError(f"--out {out}: the file name must end in .onnx")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name ending in .onnx")
    check_output_file(out, "--out")


def write_pair(out: Path, data: bytes, info: dict[str, Any]) -> None:
    """Write the ONNX file and its JSON: both to temp files (fsynced) first, then renamed into place, so an
    interrupted export leaves the previous pair or nothing, never a partial file."""
    targets = [(out, data), (sidecar_path(out), (json.dumps(info, indent=2) + "\n").encode())]
    temps: list[Path] = []
    try:
        for target, blob in targets:
            temps.append(write_temp_file(target, blob))
        for (target, _), tmp in zip(targets, temps):
            os.replace(tmp, target)
        sync_folder(out.parent)
    except OSError as exc:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None


def export_onnx(run: LoadedRun, out: Path) -> dict[str, Any]:
    """Export `run`'s greedy policy to `out` (+ its JSON), checked against the agent; returns the JSON."""
    inputs = graph_inputs(run.agent.obs_space)
    policy = run.agent.export_module()
    observations, masks = check_observations(run)
    takes_mask = masks is not None and not obs_mask_space(run.agent.obs_space)
    if masks is not None:  # masked greedy actions inside the graph
        policy = with_action_mask(policy, None if takes_mask else MASK_KEY)
    if takes_mask:
        inputs.append(mask_input(run.agent.action_space))
    example = batches.take(observations, slice(0, 2))
    if takes_mask:
        example = {**(example if isinstance(example, dict) else {inputs[0].name: example}), MASK_INPUT: masks[:2]}
    data = to_onnx(policy, inputs, example, takes_mask)
    data = with_metadata(data, {"rlagents_version": rlagents.__version__, "agent": run.agent_name,
                                "env": run.env_id, "checkpoint_tensor_sha256": str(run.meta.get("tensor_sha256"))})
    check = compare_actions(run.agent.greedy(observations, masks), OnnxPolicy(data)(observations, masks))
    info = describe_export(run, inputs, data, out, check)
    write_pair(out, data, info)
    return info


def require_packages() -> None:
    """onnx and onnxruntime, or a one-line UserError saying how to install them."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise UserError(f"ONNX export needs the onnx and onnxruntime packages ({exc.name} is missing): "
                        f"pip install 'rlagents[export]'") from None


def _signature(tensor: dict[str, Any]) -> str:
    return f"{tensor['name']} {tensor['dtype']}[{', '.join(str(d) for d in tensor['shape'])}]"


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    require_packages()
    set_cpu_threads(1)
    run = load_run(args.run_dir, spaces_of, device=torch.device("cpu"), checkpoint=args.checkpoint)
    out = args.out if args.out is not None else run.run_dir / DEFAULT_NAME
    check_writable(out)
    info = export_onnx(run, out)
    inputs = ", ".join(_signature(i) for i in info["inputs"])
    print(f"exported {run.agent_name} on {run.env_id} ({run.checkpoint.name}, step {run.meta.get('step')}) to "
          f"{out} and {sidecar_path(out).name}: {inputs} -> {_signature(info['outputs'][0])}; acts as the agent "
          f"on {info['check']['observations']} check observations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
