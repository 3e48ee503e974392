"""Turn one of ONNX's node test cases into a model a hec user would compile.

hec compiles a model with one encrypted input whose leading axis is the batch (pinned to 1), at an
opset in 13..21, and returns one output. ONNX's cases feed every operand as a graph input, some
have no batch axis, some a batch of several samples, some other opsets. The adaptations, each
recorded in the case's ``adaptations`` list:

- the first floating-point input is the encrypted one; every other input becomes an initializer
  holding the case's own data (the weights a user's model would carry);
- samples whose input holds NaN or infinity are left out when others remain;
- outputs after the first are dropped (hec returns one output), and optional node outputs
  nothing reads are left out, as exporters do;
- an opset outside 13..21 is converted to the nearest bound (ONNX's version converter, else the
  import is simply restated);
- batch: the input's leading axis is taken as the batch (N samples of batch 1 when it is N > 1)
  when each sample's output keeps a leading axis of 1 and is the matching slice of the expected
  output; otherwise a batch axis of size 1 is added in front (with non-negative axis attributes
  and axis-like constant inputs shifted by one; then as it is; then shifted and with constants
  of the input's rank given the axis too: the first that works is kept).

Every adapted model must make ONNX's reference evaluator (``onnx.reference``) reproduce the case's
expected output at the case's own tolerance; an adaptation that does not is discarded, and a case
none fits is ``NotAdaptable`` (recorded with the reason, never blamed on hec).
"""

from __future__ import annotations

import copy
import string
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference, version_converter
from onnx.backend.test.case.test_case import TestCase
from onnx.reference import ReferenceEvaluator

__all__ = ["Adapted", "NotAdaptable", "adapt", "reproduces", "OPSETS"]

OPSETS = range(13, 22)  # what hec loads (hec.frontend.load.SUPPORTED_OPSETS)
_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


class NotAdaptable(Exception):
    """No adaptation of this case reproduces ONNX's expected output; the message says why."""


@dataclass
class Adapted:
    """A case as a one-input model: ``x`` holds its samples ``[B, ...]`` (what the client
    encrypts, one sample at a time), ``expected`` ONNX's expected output for them ``[B, ...]``."""

    model: onnx.ModelProto
    x: np.ndarray
    expected: np.ndarray
    rtol: float
    atol: float
    adaptations: list[str] = field(default_factory=list)


def adapt(case: TestCase) -> Adapted:
    """Adapt ``case`` (see the module docstring); raises ``NotAdaptable``."""
    model = copy.deepcopy(case.model)
    inputs, outputs = ([_array(v) for v in vs] for vs in case.data_sets[0])
    notes: list[str] = []
    x = _encrypted_input(model, inputs, notes)
    if len(model.graph.output) > 1:
        dropped = [o.name for o in model.graph.output[1:]]
        del model.graph.output[1:]
        notes.append(f"outputs {', '.join(dropped)} dropped (hec returns one output)")
    notes += _drop_unused_optional_outputs(model)
    expected = np.asarray(outputs[0])
    opset = _default_opset(model)
    if opset not in OPSETS:
        target = min(max(opset, OPSETS.start), OPSETS.stop - 1)
        model = _change_opset(model, target)
        notes.append(f"opset {opset} -> {target}")
    failures: list[str] = []
    for how, build in _batch_variants(model, x, expected):
        try:
            candidate, samples, want, batch_notes = build()
        except Exception as exc:  # e.g. an op with no schema at the target opset
            failures.append(f"{how}: {type(exc).__name__}: {_first_line(exc)}")
            continue
        why = reproduces(candidate, samples, want, case.rtol, case.atol)
        if why is None:
            samples, want = _finite_samples(samples, want, batch_notes)
            return Adapted(candidate, samples, want, case.rtol, case.atol, notes + batch_notes)
        failures.append(f"{how}: {why}")
    raise NotAdaptable("; ".join(failures) or "no batch adaptation applies")


def reproduces(
    model: onnx.ModelProto, x: np.ndarray, expected: np.ndarray, rtol: float, atol: float
) -> str | None:
    """``None`` if ONNX's reference evaluator maps every sample of ``x`` (batch 1 each) to the
    matching slice of ``expected`` and ONNX's checker and strict shape inference accept
    ``model``; else why not (one line). Declares the output's shape from the reference run."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            session = ReferenceEvaluator(model)
            name = model.graph.input[0].name
            runs = [np.asarray(session.run(None, {name: x[i : i + 1]})[0]) for i in range(len(x))]
        if any(r.ndim == 0 or r.shape[0] != 1 for r in runs):
            return "a sample's output has no batch axis of 1 (the batch axis is merged away)"
        if len({r.shape for r in runs}) == 1:
            _set_shape(model.graph.output[0], runs[0].shape)  # shape inference checks it
        onnx.checker.check_model(model)
        shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        got = np.concatenate(runs)
    except Exception as exc:  # any failure means this adaptation is not a valid model
        return f"{type(exc).__name__}: {_first_line(exc)}"
    if got.shape != expected.shape:
        return f"reference output shape {list(got.shape)}, expected {list(expected.shape)}"
    if not np.allclose(got.astype(np.float64), expected.astype(np.float64), rtol, atol, True):
        return "reference output differs from the expected output"
    return None


def _finite_samples(x: np.ndarray, y: np.ndarray, notes: list[str]):
    """Samples whose input holds NaN or infinity are left out when others remain: CKKS encodes
    finite reals, and hec refuses such an input (ONNX's Cast cases mix them in)."""
    finite = np.isfinite(x.astype(np.float64).reshape(len(x), -1)).all(axis=1)
    if finite.all() or not finite.any():
        return x, y
    notes.append(f"{int((~finite).sum())} of {len(x)} samples with NaN or infinity left out")
    return x[finite], y[finite]


def _array(value):
    """Case data as numpy: some cases store exotic dtypes as ``TensorProto``."""
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _default_opset(model: onnx.ModelProto) -> int:
    return next(i.version for i in model.opset_import if i.domain in ("", "ai.onnx"))


def _encrypted_input(model: onnx.ModelProto, inputs: list, notes: list[str]) -> np.ndarray:
    """Keep the first floating-point graph input; the others become initializers."""
    graph = model.graph
    chosen = next(
        (
            i
            for i, v in enumerate(graph.input)
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type in _FLOAT_TYPES
        ),
        None,
    )
    if chosen is None:
        raise NotAdaptable("no floating-point tensor input to encrypt")
    constants = []
    for i, (info, data) in enumerate(zip(graph.input, inputs, strict=True)):
        if i == chosen:
            continue
        if not info.type.HasField("tensor_type") or not isinstance(data, np.ndarray | np.generic):
            raise NotAdaptable(f"input '{info.name}' is not a tensor (sequence or optional)")
        graph.initializer.append(numpy_helper.from_array(np.asarray(data), info.name))
        constants.append(info.name)
    keep = graph.input[chosen]
    del graph.input[:]
    graph.input.append(keep)
    if chosen:
        notes.append(f"encrypted input: '{keep.name}' (first floating-point input)")
    if constants:
        notes.append(f"inputs {', '.join(constants)} became constants")
    return np.asarray(inputs[chosen])


def _drop_unused_optional_outputs(model: onnx.ModelProto) -> list[str]:
    """A node's optional outputs nothing reads are left out, as an exporter writes them
    (LayerNormalization's Mean, Dropout's mask, MaxPool's indices once dropped above)."""
    graph = model.graph
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    opset = _default_opset(model)
    removed = []
    for node in graph.node:
        try:
            params = onnx.defs.get_schema(node.op_type, opset, node.domain).outputs
        except onnx.defs.SchemaError:
            continue
        optional = onnx.defs.OpSchema.FormalParameterOption.Optional
        for i, name in enumerate(node.output):
            if name and name not in read and params[min(i, len(params) - 1)].option == optional:
                node.output[i] = ""
                removed.append(name)
        while node.output and not node.output[-1]:
            del node.output[-1]
    return [f"unused optional outputs {', '.join(removed)} left out"] if removed else []


def _change_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """The model at opset ``target``: ONNX's converter where it can, else the import restated."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = version_converter.convert_version(model, target)
    except Exception:
        converted = copy.deepcopy(model)
        for imp in converted.opset_import:
            if imp.domain in ("", "ai.onnx"):
                imp.version = target
    converted.ir_version = min(model.ir_version, 10)  # IR 10 holds opsets up to 21
    return converted


Build = Callable[[], tuple[onnx.ModelProto, np.ndarray, np.ndarray, list[str]]]


def _batch_variants(
    model: onnx.ModelProto, x: np.ndarray, y: np.ndarray
) -> list[tuple[str, Build]]:
    """The batch adaptations worth trying for ``x`` (expected output ``y``), best first."""
    variants: list[tuple[str, Build]] = []
    if x.ndim >= 2:
        variants.append(("leading axis as batch", lambda: _split(model, x, y)))
    if len(model.graph.node) == 1:  # a user's model names its axes counting the batch axis
        variants.append(
            ("added batch axis, axes shifted", lambda: _add_axis(model, x, y, True, False))
        )
    variants.append(("added batch axis", lambda: _add_axis(model, x, y, False, False)))
    if len(model.graph.node) == 1:
        variants.append(
            ("added batch axis, constants too", lambda: _add_axis(model, x, y, True, True))
        )
    return variants


def _set_shape(info: onnx.ValueInfoProto, shape: tuple[int, ...]) -> None:
    dims = info.type.tensor_type.shape
    del dims.dim[:]
    for d in shape:
        dims.dim.add().dim_value = int(d)


def _set_input_shape(model: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    """The input's shape (batch axis first); the output's is declared from a reference run."""
    _set_shape(model.graph.input[0], shape)
    del model.graph.output[0].type.tensor_type.shape.dim[:]
    del model.graph.value_info[:]


def _split(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray):
    """The leading axis is the batch: one sample (batch 1) at a time."""
    out = copy.deepcopy(model)
    _set_input_shape(out, (1, *x.shape[1:]))
    notes = [f"batch of {len(x)} split into {len(x)} samples"] if len(x) > 1 else []
    return out, x, y, notes


def _add_axis(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, shift: bool, consts: bool):
    """A batch axis of size 1 in front of ``x``; ``shift``: the node's axes follow it;
    ``consts``: constants of ``x``'s rank get the axis too (operands of Concat, Sum, ...)."""
    out = copy.deepcopy(model)
    _set_input_shape(out, (1, *x.shape))
    notes = ["batch axis of size 1 added"]
    if shift:
        notes += _shift_axes(out, x.ndim)
    if consts:
        notes += _const_batch_axis(out, x.ndim)
    return out, x[None], y[None], notes


def _shift_axes(model: onnx.ModelProto, rank: int) -> list[str]:
    """Rewrite the single node for an input one axis longer in front."""
    node = model.graph.node[0]
    schema = onnx.defs.get_schema(node.op_type, _default_opset(model), "")
    notes = []
    given = {a.name for a in node.attribute}
    default = schema.attributes.get("axis")
    if "axis" not in given and default is not None and default.default_value.type:
        node.attribute.append(helper.make_attribute("axis", default.default_value.i))
    if node.op_type == "Transpose" and "perm" not in given:  # default: every axis reversed
        node.attribute.append(helper.make_attribute("perm", list(range(rank))[::-1]))
    for attr in node.attribute:
        if attr.name == "axis" and attr.type == onnx.AttributeProto.INT and attr.i >= 0:
            attr.i += 1
            notes.append(f"attribute axis -> {attr.i}")
        elif attr.name == "axes" and attr.type == onnx.AttributeProto.INTS:
            attr.ints[:] = [a + 1 if a >= 0 else a for a in attr.ints]
            notes.append(f"attribute axes -> {list(attr.ints)}")
        elif attr.name == "perm":
            attr.ints[:] = [0, *(p + 1 for p in attr.ints)]
            notes.append(f"attribute perm -> {list(attr.ints)}")
        elif attr.name == "equation" and node.op_type == "Einsum":
            notes += _einsum_batch(attr)
    inits = {t.name: t for t in model.graph.initializer}
    names = [p.name for p in schema.inputs]
    for j, name in enumerate(node.input):
        if not name or name not in inits:
            continue
        role = names[min(j, len(names) - 1)]
        arr = numpy_helper.to_array(inits[name])
        new = _shift_operand(role, arr, rank)
        if new is not None:
            inits[name].CopyFrom(numpy_helper.from_array(new.astype(arr.dtype), name))
            notes.append(f"input {role} -> {new.tolist()}")
    if node.op_type == "Slice" and (len(node.input) < 4 or not node.input[3]):
        starts = numpy_helper.to_array(inits[node.input[1]])
        axes = np.arange(1, len(starts) + 1, dtype=np.int64)
        model.graph.initializer.append(numpy_helper.from_array(axes, "batch_axes"))
        while len(node.input) < 3:
            node.input.append("")
        node.input[3:] = ["batch_axes", *node.input[4:]]
        notes.append(f"input axes -> {axes.tolist()}")
    return notes


def _shift_operand(role: str, arr: np.ndarray, rank: int) -> np.ndarray | None:
    """An axis-like constant for an input with one more leading axis (``None``: unchanged)."""
    if role in ("axes", "axis"):
        return np.where(arr >= 0, arr + 1, arr)
    if role == "pads" and arr.size == 2 * rank:
        return np.concatenate([[0], arr[:rank], [0], arr[rank:]])
    if role == "shape" and arr.ndim == 1:  # Reshape, Expand: the batch axis stays 1
        return np.concatenate([[1], arr])
    if role in ("repeats", "sizes") and arr.ndim == 1 and arr.size == rank:
        return np.concatenate([[1], arr])
    if role == "scales" and arr.size == rank:
        return np.concatenate([[1.0], arr])
    if role == "roi" and arr.size == 2 * rank:
        return np.concatenate([[0.0], arr[:rank], [1.0], arr[rank:]])
    return None


def _einsum_batch(attr: onnx.AttributeProto) -> list[str]:
    """A fresh batch letter in front of the first operand and of the output."""
    eq = attr.s.decode().replace(" ", "")
    if "->" not in eq:  # implicit output: the letters used once, in alphabetical order
        letters = [c for c in eq if c.isalpha()]
        once = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
        eq = f"{eq}->{'...' if '...' in eq else ''}{once}"
    letter = next(c for c in string.ascii_lowercase if c not in eq)
    lhs, rhs = eq.split("->")
    operands = lhs.split(",")
    operands[0] = letter + operands[0]
    attr.s = f"{','.join(operands)}->{letter}{rhs}".encode()
    return [f"equation -> {attr.s.decode()}"]


def _const_batch_axis(model: onnx.ModelProto, rank: int) -> list[str]:
    """Floating-point constants of the input's rank get a leading axis of size 1."""
    notes = []
    for t in model.graph.initializer:
        arr = numpy_helper.to_array(t)
        if arr.ndim == rank and t.data_type in _FLOAT_TYPES:
            t.CopyFrom(numpy_helper.from_array(arr[None], t.name))
            notes.append(f"constant {t.name} given the batch axis")
    return notes
