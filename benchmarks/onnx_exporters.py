"""Micro-benchmark: torch's two ONNX exporters on a run's greedy policy (why `rlagents.export` uses the
TorchScript-based one).

Usage: python benchmarks/onnx_exporters.py RUN_DIR [REPEATS]   (needs `pip install onnxscript` for torch.export)
Exports the run's `export_module()` with `torch.onnx.export(dynamo=False)` (what `rlagents.export` does) and
with `dynamo=True`, interleaved, REPEATS times each in one process (the first of each pays its imports), one
torch thread; prints each time and whether the graph acts as the agent on the export check's observations.
"""

import logging
import sys
import time
import warnings

import torch

from rlagents import obs as batches
from rlagents.evaluate import spaces_of
from rlagents.export import FlatInputs, check_observations, graph_inputs, input_arrays, to_onnx
from rlagents.onnx_policy import OnnxPolicy
from rlagents.runs import load_run

logging.disable(logging.WARNING)  # the torch.export exporter logs missing torchvision ops
torch.set_num_threads(1)
run = load_run(sys.argv[1], spaces_of, device=torch.device("cpu"))
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 4
inputs = graph_inputs(run.agent.obs_space)
observations = check_observations(run)
example = batches.take(observations, slice(0, 2))
module = run.agent.export_module()


def torchscript() -> bytes:
    return to_onnx(module, inputs, example)


def torch_export() -> bytes:
    wrapped = FlatInputs(module, [i.path for i in inputs]).eval()
    tensors = tuple(torch.from_numpy(a) for a in input_arrays(example, inputs))
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapped, tensors, dynamo=True, input_names=[i.name for i in inputs],
                                    output_names=["action"], dynamic_shapes=(tuple({0: batch} for _ in tensors),),
                                    verbose=False)
    return program.model_proto.SerializeToString()


expected = run.agent.act(observations, explore=False)
exporters = [("torchscript (dynamo=False)", torchscript), ("torch.export (dynamo=True)", torch_export)]
for name, export in exporters * repeats:
    start = time.perf_counter()
    data = export()
    seconds = time.perf_counter() - start
    same = bool((OnnxPolicy(data)(observations) == expected).all())
    print(f"{name}: {seconds:.3f} s, {len(data):,} bytes, acts as the agent: {same}", flush=True)
