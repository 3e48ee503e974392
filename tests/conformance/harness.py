"""Run one adapted ONNX node case through hec and say how it went.

A case is compiled with ``hec.api.compile`` (slot packing; calibrated on the case's own samples
when hec asks for calibration data) and simulated with ``hec.api.simulate``; the simulator's
logits, through the artifact's client tail (what the client runs after decryption), are compared
with ONNX's expected output. Statuses:

- ``pass``: no approximation, every element within ``EXACT_RTOL``·|expected| + ``EXACT_ATOL``
  (the relative part widened to the type's resolution where ONNX's output is float16 or
  bfloat16: hec computes on reals and does not round to the narrower type);
- ``approximated``: hec replaced a non-polynomial op by a calibrated polynomial (activations,
  ...): the output is within ``APPROX_BOUND`` relative RMS error (``‖out − expected‖₂ /
  ‖expected‖₂``) of ONNX's expected output. Max pooling becomes average pooling times a
  per-channel affine map fitted on the calibration data, a substitute with no element-wise
  accuracy claim: a max-pooling case is checked exactly (as ``pass`` is) against that substitute
  computed independently (ONNX's AveragePool, numpy's least squares);
- ``refused``: hec raised a ``HecError`` (``message`` holds its one line);
- ``wrong``: an output of another shape, or outside the tolerance or bound;
- ``crash``: any other exception, or a ``HecError`` raised from one (the pass manager wraps a
  pass's internal failure in a ``PassError``): a bug in hec; ``detail`` holds the traceback;
- ``not adapted``: no adaptation of the case reproduces ONNX's output (``adapt.NotAdaptable``).
"""

from __future__ import annotations

import copy
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from onnx import helper
from onnx.backend.test.case.test_case import TestCase
from onnx.reference import ReferenceEvaluator

from conformance.adapt import Adapted, NotAdaptable, adapt
from conformance.cases import case_op_type, family

__all__ = [
    "EXACT_RTOL",
    "EXACT_ATOL",
    "APPROX_BOUND",
    "STATUSES",
    "Result",
    "run_case",
    "compile_case",
]

EXACT_RTOL = 1e-4
EXACT_ATOL = 1e-4
APPROX_BOUND = 0.1  # relative RMS error: twice hec's default per-activation error budget (0.05)
STATUSES = ("pass", "approximated", "refused", "wrong", "crash", "not adapted")


@dataclass
class Result:
    """How one case went; ``message`` is one line, ``detail`` a traceback (crashes only)."""

    name: str
    op_type: str
    family: str
    status: str
    adaptations: list[str] = field(default_factory=list)
    message: str = ""
    error: float | None = None  # max |diff| (exact) or relative RMS error (approximated)
    seconds: float = 0.0
    detail: str = ""

    def to_json(self) -> dict:
        row = asdict(self)
        del row["detail"]
        return row


def compile_case(adapted: Adapted, out_dir: Path):
    """Compile ``adapted`` with hec as a user would: without calibration data, and with the
    case's own samples when hec asks for them. Returns the artifact and the kinds of
    non-polynomial op hec then approximates (empty: nothing approximated)."""
    from hec.api import compile as hec_compile
    from hec.frontend import import_onnx
    from hec.ir.tensor_ops import NON_POLYNOMIAL_KINDS
    from hec.options import CompileOptions
    from hec.passes.replace_activations import CalibrationMissing

    options = CompileOptions(packing="slots")
    try:
        return hec_compile(adapted.model, out_dir, options), set()
    except CalibrationMissing:
        pass
    kinds = {op.kind for op in import_onnx(adapted.model).ops} & NON_POLYNOMIAL_KINDS
    calibration = adapted.x.astype(np.float32)
    return hec_compile(adapted.model, out_dir, options, calibration=calibration), kinds


def model_output(artifact, adapted: Adapted) -> np.ndarray:
    """The simulator's logits through the artifact's client tail (the steps the client runs
    after decryption, e.g. a final Sigmoid): the model's output as its user gets it."""
    from hec.api import simulate
    from hec.runtime.tail import apply_tail

    outputs = apply_tail(artifact, simulate(artifact, adapted.x))
    name = adapted.model.graph.output[0].name
    return np.asarray(outputs[name] if name in outputs else next(iter(outputs.values())))


def run_case(case: TestCase, out_dir: Path | None = None) -> Result:
    """Adapt, compile, simulate and compare one case (see the module docstring)."""
    from hec.errors import HecError

    op_type = case_op_type(case)
    result = Result(case.name, op_type, family(op_type), "not adapted")
    start = time.perf_counter()
    try:
        adapted = adapt(case)
    except NotAdaptable as exc:
        result.message = _one_line(str(exc))
        return result
    result.adaptations = adapted.adaptations
    try:
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            artifact, kinds = compile_case(adapted, Path(tmp))
            out = model_output(artifact, adapted)
    except HecError as exc:
        result.status, result.message = "refused", _one_line(str(exc))
        if exc.__cause__ is not None and not isinstance(exc.__cause__, HecError):
            # a pass's internal failure (ValueError, ...) wrapped in a PassError is a bug too
            result.status, result.detail = "crash", traceback.format_exc()
    except Exception as exc:  # anything else is a bug in hec
        result.status = "crash"
        result.message = _one_line(f"{type(exc).__name__}: {exc}")
        result.detail = traceback.format_exc()
    else:
        _compare(result, adapted, np.asarray(out), kinds)
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def _compare(result: Result, adapted: Adapted, out: np.ndarray, kinds: set[str]) -> None:
    got, want = out.astype(np.float64), adapted.expected.astype(np.float64)
    if got.shape != want.shape:
        result.status = "wrong"
        result.message = f"output shape {list(got.shape)}, expected {list(want.shape)}"
        return
    rms = float(np.linalg.norm(got - want) / max(float(np.linalg.norm(want)), 1e-12))
    if kinds == {"maxpool"} and len(adapted.model.graph.node) == 1:
        # hec's substitute, computed independently, must come out exactly
        _exact(result, got, _max_from_average(adapted), "approximated")
        result.message = result.message or (
            f"max pooling as calibrated average pooling matches that substitute; "
            f"relative RMS error to the maximum {rms:.3g}"
        )
    elif kinds:
        result.error = rms
        ok = rms <= APPROX_BOUND
        result.status = "approximated" if ok else "wrong"
        result.message = (
            f"{', '.join(sorted(kinds))} approximated: relative RMS error {rms:.3g} "
            f"({'within' if ok else 'over'} the bound {APPROX_BOUND})"
        )
    else:
        _exact(result, got, want, "pass", _rtol(adapted.expected.dtype))


def _exact(
    result: Result, got: np.ndarray, want: np.ndarray, status: str, rtol: float = EXACT_RTOL
) -> None:
    """``status`` if every element is within the exact tolerance, else ``wrong`` (and why)."""
    diff = np.abs(got - want)
    result.error = float(diff.max()) if diff.size else 0.0
    bad = ~(diff <= EXACT_ATOL + rtol * np.abs(want))
    if not bad.any():
        result.status = status
        return
    i = np.unravel_index(int(np.argmax(np.where(bad, diff, -1.0))), bad.shape)
    result.status = "wrong"
    result.message = (
        f"{int(bad.sum())} of {bad.size} elements off, worst at {list(map(int, i))}: "
        f"{got[i]:.6g} for {want[i]:.6g}"
    )


def _rtol(dtype: np.dtype) -> float:
    """``EXACT_RTOL``, or the resolution of a narrower float output type (float16, bfloat16):
    hec computes on reals and does not round to it (its Cast between floats is the identity)."""
    bits = {"float16": 10, "bfloat16": 7}.get(np.dtype(dtype).name)
    return max(EXACT_RTOL, 2.0**-bits) if bits else EXACT_RTOL


def _max_from_average(adapted: Adapted) -> np.ndarray:
    """What hec promises for a max-pooling node: average pooling on the same window (padding
    not counted) times a per-channel affine map fitted by least squares to the maximum on the
    calibration data (here the case's own samples). Computed with ONNX's evaluator and numpy."""
    model = copy.deepcopy(adapted.model)
    node = model.graph.node[0]
    node.op_type = node.op_type.replace("Max", "Average")
    keep = [a for a in node.attribute if a.name not in ("storage_order", "dilations")]
    del node.attribute[:]
    node.attribute.extend(keep)
    if node.op_type == "AveragePool":
        node.attribute.append(helper.make_attribute("count_include_pad", 0))
    del node.output[1:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        session = ReferenceEvaluator(model)
        name = model.graph.input[0].name
        runs = [session.run(None, {name: adapted.x[i : i + 1]})[0] for i in range(len(adapted.x))]
    average = np.concatenate(runs).astype(np.float64)
    maximum = adapted.expected.astype(np.float64)
    out = np.empty_like(average)
    for c in range(average.shape[1]):
        av = average[:, c].ravel()
        design = np.stack([av, np.ones_like(av)], axis=1)
        scale, shift = np.linalg.lstsq(design, maximum[:, c].ravel(), rcond=None)[0]
        out[:, c] = scale * average[:, c] + shift
    return out


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""
