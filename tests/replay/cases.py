"""The replay tier: the reference models compiled as a user would, reduced to what must not
change when the compiler's internals move (the generated program, the program IR, its
constants and the report's figures).

A case is an optional ``hec optimize`` step and one ``hec compile``, run through the CLI. What
is compared (``fingerprint``): the SHA-256 of ``openfhe_program.py``, ``program.txt``,
``program.json``, ``params.json`` and ``tensor_ir.txt``, of each constant array, and the
report without what depends on the clock or the machine (``VOLATILE``); and a ``robust`` part,
what the test compares in CI: the text files whose numbers print rounded, constants by their
rounded digest and the report's floats at 6 digits (another CPU's BLAS may move a fit's last
bits). The cost model reads the
reference table (``HEC_COST_TABLE`` points nowhere), so estimated times are the same on every
machine.

``FULL`` cases run ``hec optimize`` with a rotation budget (minutes each): CI replays their
*compile* from the committed optimized model (``models/``); ``python tests/replay/make_goldens.py
--full`` reruns the optimization too and checks its output against the committed model.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hec.ir.printer import digest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GOLDENS = HERE / "goldens"
MODELS = HERE / "models"
EXAMPLES = ROOT / "examples"

# report keys that depend on the clock (or on this machine's files)
VOLATILE = ("compile_seconds", "model")
HASHED = ("openfhe_program.py", "program.txt", "program.json", "params.json", "tensor_ir.txt")
# the text files whose numbers print rounded (program.json and the generated program hold
# exact floats)
ROBUST_FILES = ("program.txt", "params.json", "tensor_ir.txt")


@dataclass(frozen=True)
class Case:
    name: str
    model: Path
    compile_args: tuple[str, ...]
    optimize_args: tuple[str, ...] | None = None  # ``hec optimize`` first (a FULL case)

    @property
    def optimized(self) -> Path:
        """The committed output of the ``hec optimize`` step."""
        return MODELS / f"{self.name}.onnx"


L5 = EXAMPLES / "lenet5_digits"
L5_CALIB = ("--calib", str(L5 / "calib.npz"), "--degree", "2")

CASES = (
    Case("cryptonets", EXAMPLES / "cryptonets_digits" / "model.onnx", ()),
    Case("lenet5", L5 / "model.onnx", L5_CALIB),
    # pruning under the rotation budget a sparsity derives takes minutes: a FULL case, CI
    # compiles the committed pruned model
    Case("lenet5-pruned90", L5 / "model.onnx", (), optimize_args=(*L5_CALIB, "--prune", "0.9")),
    Case(
        "silu-cnn",
        EXAMPLES / "cnn_silu_digits" / "model.onnx",
        ("--calib", str(EXAMPLES / "cnn_silu_digits" / "calib.npz"), "--degree", "2"),
    ),
    Case("lenet5-batch", L5 / "model.onnx", (*L5_CALIB, "--packing", "batch")),
    Case(
        "lenet5-budget20",
        L5 / "model.onnx",
        (),
        optimize_args=(*L5_CALIB, "--rotation-budget", "20"),
    ),
    Case(
        "lenet5-budget20-copies",
        L5 / "model.onnx",
        ("--readout", "copies"),
        optimize_args=(*L5_CALIB, "--rotation-budget", "20", "--readout", "copies"),
    ),
)


def hec(*args: str) -> None:
    env = dict(os.environ, HEC_COST_TABLE=str(HERE / "no-cost-table.json"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "hec", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def onnx_fingerprint(path: Path) -> dict:
    """The optimized model's graph and weights (not its metadata: the plan may be added)."""
    import onnx

    model = onnx.load(str(path))
    weights = {
        t.name: _sha(onnx.numpy_helper.to_array(t).tobytes()) for t in model.graph.initializer
    }
    del model.graph.initializer[:]
    return {"graph": _sha(model.graph.SerializeToString(deterministic=True)), "weights": weights}


def fingerprint(artifact: Path, model: str) -> dict:
    """What the replay compares of one artifact directory (``model``, the path the artifact was
    compiled from, reads ``MODEL`` in its files: where the checkout lies does not matter)."""
    files = {
        name: _sha((artifact / name).read_text().replace(model, "MODEL").encode())
        for name in HASHED
    }
    with zipfile.ZipFile(io.BytesIO((artifact / "constants.npz").read_bytes())) as z:
        names = sorted(z.namelist())
    arrays = np.load(artifact / "constants.npz")
    constants = {
        n: _sha(np.ascontiguousarray(arrays[n.removesuffix(".npy")]).tobytes()) for n in names
    }
    report = json.loads((artifact / "report.json").read_text())
    for key in VOLATILE:
        report.pop(key, None)
    report = json.loads(json.dumps(report).replace(json.dumps(model)[1:-1], "MODEL"))
    # what CI compares: the same, with every float rounded (a least-squares fit may differ in
    # its last bits on another CPU's BLAS); the exact bytes are compared by make_goldens --check
    robust = {
        "files": {n: files[n] for n in ROBUST_FILES},
        "constants": {
            n.removesuffix(".npy"): _rounded_digest(arrays[n.removesuffix(".npy")]) for n in names
        },
        "report": _rounded(report),
    }
    return {"files": files, "constants": constants, "report": report, "robust": robust}


def _rounded_digest(a: np.ndarray) -> str:
    """A numeric array's digest at 6 decimals (``hec.ir.printer.digest``); others' SHA-256."""
    if a.dtype.kind in "fiub":
        return digest(a)
    return _sha(np.ascontiguousarray(a).tobytes())


def _rounded(value):
    """``value`` with every float at 6 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def run_case(case: Case, work: Path, full: bool = False) -> dict:
    """Compile ``case`` into ``work`` (``full``: run its optimization too) and fingerprint it."""
    model = case.model
    result: dict = {}
    if case.optimize_args is not None:
        if full:
            model = work / f"{case.name}.onnx"
            hec("optimize", str(case.model), "-o", str(model), *case.optimize_args)
            result["optimized"] = onnx_fingerprint(model)
        else:
            model = case.optimized
    out = work / case.name
    hec("compile", str(model), "-o", str(out), *case.compile_args)
    result.update(fingerprint(out, str(model)))
    return result
