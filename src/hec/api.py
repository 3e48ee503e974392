"""The Python API: compile a model, run it encrypted, or simulate it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from hec.backend_openfhe import (
    Artifact,
    choose_params,
    load_artifact,
    program_report,
    write_artifact,
)
from hec.frontend import import_onnx
from hec.optimize import accuracy, conversion_layers, make_he_friendly
from hec.options import CompileOptions
from hec.passes import PassManager, he_friendly_pipeline, slot_packing_pipeline
from hec.progress import ProgressFn, no_progress
from hec.runtime import Client, Server, simulate_slots
from hec.runtime.inputs import as_batch
from hec.runtime.simulator import check_block_local

__all__ = ["compile", "load_artifact", "run", "simulate", "RunResult"]


def compile(
    model: str | os.PathLike | onnx.ModelProto,
    out_dir: str | os.PathLike,
    options: CompileOptions | None = None,
    progress: ProgressFn = no_progress,
    calibration: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> Artifact:
    """Compile an ONNX model into an artifact directory and return the loaded artifact.

    Args:
        model: path of an ``.onnx`` file (external data next to it) or a ``ModelProto``.
        out_dir: the artifact directory to write.
        options: compiler options (defaults: slot packing, 128-bit security).
        progress: ``progress(stage, done, total)`` callback for long steps.
        calibration: typical inputs ``[N, ...]``; required when the model has non-polynomial
            activations or max pooling, which are then replaced (see ``hec optimize``).
        labels: labels of ``calibration``; when given, the report holds the accuracy of the
            original and of the converted model on them.
    """
    options = options or CompileOptions()
    start = time.perf_counter()
    graph = import_onnx(model)
    original = graph.clone() if calibration is not None else None
    stats = make_he_friendly(model, graph, options, calibration, progress)
    tensor_ir = graph.clone()
    passes = slot_packing_pipeline(options)
    total = len(passes)
    done = iter(range(total))
    PassManager(
        passes,
        dump_dir=options.dump_ir_after,
        progress=lambda name: progress(f"compile: {name}", next(done), total),
        first_index=len(he_friendly_pipeline(options, stats or None)) + 1,
    ).run(graph)
    progress("compile", total, total)
    params = choose_params(
        graph,
        options.scaling_bits,
        options.first_mod_bits,
        options.security,
        options.sample_blocks,
    )
    if params.blocks > 1:
        check_block_local(graph, params.blocks)  # the guarantee the runtime relies on
    name = str(model) if not isinstance(model, onnx.ModelProto) else "<in-memory model>"
    io = {
        "model": name,
        "input_name": tensor_ir.inputs[0].name,
        "input_shape": list(tensor_ir.inputs[0].shape),
        "output_shape": list(tensor_ir.outputs[0].shape),
    }
    report = {
        "model": name,
        "input_shape": io["input_shape"],
        "output_shape": io["output_shape"],
        **program_report(graph, params),
        "activations": conversion_layers(tensor_ir, stats),
        "compile_seconds": round(time.perf_counter() - start, 3),
    }
    if labels is not None and calibration is not None and original is not None:
        report["accuracy"] = accuracy(model, tensor_ir, calibration, labels)
    return write_artifact(Path(out_dir), graph, params, io, report, tensor_ir)


def simulate(artifact: Artifact | str | os.PathLike, x: np.ndarray) -> np.ndarray:
    """Run the compiled program on numpy slot vectors; returns logits ``[B, *output_shape]``."""
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    xb = as_batch(x, art.input_shape)
    out = simulate_slots(art.program, art.input_layout.pack(xb))[0]
    return art.output_layout.unpack(out)


@dataclass
class RunResult:
    """Decrypted outputs of an encrypted run, with timings in seconds."""

    logits: np.ndarray
    precision_bits: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.reshape(len(self.logits), -1).argmax(axis=1)


def run(
    artifact: Artifact | str | os.PathLike, x: np.ndarray, progress: ProgressFn = no_progress
) -> RunResult:
    """Encrypted inference in one process: keys, encrypt, evaluate, decrypt each sample.

    A sample-block artifact encrypts up to ``params.blocks`` samples per ciphertext.
    ``timings`` holds the key generation time and the per-sample means of the other stages.
    """
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    xb = as_batch(x, art.input_shape)
    t = time.perf_counter()
    client = Client(art, progress=lambda d, n: progress("keygen", d, n))
    timings = {"keygen": time.perf_counter() - t, "encrypt": 0.0, "evaluate": 0.0, "decrypt": 0.0}
    server = Server(art, client.context)
    logits, precision = [], []
    per = art.params.blocks
    chunks = [xb[i : i + per] for i in range(0, len(xb), per)]
    for i, chunk in enumerate(chunks):
        t = time.perf_counter()
        ct = client.encrypt_batch(chunk)
        timings["encrypt"] += time.perf_counter() - t
        t = time.perf_counter()
        stage = f"eval {i + 1}/{len(chunks)}"
        out = server.evaluate(ct, lambda d, n, stage=stage: progress(stage, d, n))
        timings["evaluate"] += time.perf_counter() - t
        t = time.perf_counter()
        dec = client.decrypt(out, len(chunk))
        timings["decrypt"] += time.perf_counter() - t
        logits.extend(dec.values)
        precision.extend([dec.precision_bits] * len(chunk))
    for stage in ("encrypt", "evaluate", "decrypt"):
        timings[stage] /= len(xb)
    return RunResult(np.stack(logits), np.asarray(precision), timings)
