"""Read an ONNX file as exporters write it and check it before anything is built from it."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import external_data_helper, shape_inference

from hec.errors import ModelError, ShapeError

__all__ = [
    "load_model",
    "SUPPORTED_OPSETS",
    "encrypted_input",
    "FIXED_BATCH_KEY",
    "has_fixed_batch",
]

SUPPORTED_OPSETS = range(13, 23)
# metadata entry recording that the file itself fixed the batch at 1 (not a dynamic axis pinned
# here): only then may tensors lose the batch axis (dynamo's flat reshapes of one sample)
FIXED_BATCH_KEY = "hec.fixed_batch"


def load_model(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Load (with external data), check, pin the batch axis to 1 and run shape inference."""
    if isinstance(model, onnx.ModelProto):
        proto, where = model, "<in-memory model>"
    else:
        path = Path(model)
        where = str(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such file; give the path of an .onnx model")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf DecodeError and friends: a truncated or foreign file
            raise ModelError(
                f"{path}: not a readable ONNX model ({type(exc).__name__}); "
                f"re-export it or check the file is complete"
            ) from None
        _load_external_data(proto, path)
    opset = _default_opset(proto, where)
    if opset < SUPPORTED_OPSETS.start:
        proto, opset = _upgrade(proto, opset)
    if opset not in SUPPORTED_OPSETS:
        raise ModelError(
            f"{where}: opset {opset} is not supported; re-export with an opset "
            f"between {SUPPORTED_OPSETS.start} and {SUPPORTED_OPSETS.stop - 1}"
        )
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ModelError(f"{where}: invalid ONNX model: {_first_line(exc)}") from None
    proto = _pin_batch(proto, where)
    try:
        return shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except Exception as exc:
        raise ModelError(f"{where}: ONNX shape inference failed: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    """The first line of an exception's message (some of onnx's are empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def encrypted_input(proto: onnx.ModelProto, where: str = "model") -> onnx.ValueInfoProto:
    """The single graph input that is not an initializer: the data the client encrypts."""
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ModelError(
            f"{where}: hec compiles models with exactly one input, this one has "
            f"{len(inputs)} ({names})"
        )
    return inputs[0]


def has_fixed_batch(proto: onnx.ModelProto) -> bool:
    """Whether ``load_model`` found the input's batch axis fixed at 1 in the file."""
    return any(p.key == FIXED_BATCH_KEY for p in proto.metadata_props)


def _upgrade(proto: onnx.ModelProto, opset: int) -> tuple[onnx.ModelProto, int]:
    """An older opset (skl2onnx writes the lowest its ops need, e.g. 9) converted to the first
    supported one by ONNX's own version converter; unchanged when the converter cannot."""
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(proto, SUPPORTED_OPSETS.start)
        onnx.checker.check_model(upgraded)
    except Exception:  # the converter lacks an adapter for one of its ops: refused below
        return proto, opset
    return upgraded, SUPPORTED_OPSETS.start


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    for tensor in external_data_helper._get_all_tensors(proto):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = external_data_helper.ExternalDataInfo(tensor)
        data_file = path.parent / info.location
        if not data_file.is_file():
            raise ModelError(
                f"{path}: tensor '{tensor.name}' keeps its data in {data_file}, "
                f"which is missing; copy it next to the model"
            )
    try:
        external_data_helper.load_external_data_for_model(proto, str(path.parent))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read external data ({exc})") from None


def _default_opset(proto: onnx.ModelProto, where: str) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ModelError(f"{where}: the model imports no default-domain opset")


def _pin_batch(proto: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """Fix the leading (batch) axis of the input to 1; every other axis must be static."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    inp = encrypted_input(proto, where)
    dims = inp.type.tensor_type.shape.dim
    if len(dims) < 2:
        raise ShapeError(
            f"{where}: input '{inp.name}' has rank {len(dims)}; hec expects a "
            f"batch axis followed by the sample's axes"
        )
    batch = dims[0]
    if batch.HasField("dim_value") and batch.dim_value not in (1,):
        raise ShapeError(
            f"{where}: input '{inp.name}' has a fixed batch of {batch.dim_value}; "
            f"export with batch 1 or a dynamic batch axis"
        )
    fixed = batch.HasField("dim_value")
    batch.ClearField("dim_param")
    batch.dim_value = 1
    stale = [p for p in proto.metadata_props if p.key == FIXED_BATCH_KEY]
    for p in stale:
        proto.metadata_props.remove(p)
    if fixed:
        proto.metadata_props.add(key=FIXED_BATCH_KEY, value="1")
    for i, d in enumerate(dims[1:], start=1):
        if not d.HasField("dim_value"):
            raise ShapeError(
                f"{where}: axis {i} of input '{inp.name}' is symbolic "
                f"('{d.dim_param}'); export with a fixed sample shape"
            )
        if d.dim_value < 1:
            raise ShapeError(f"{where}: axis {i} of input '{inp.name}' has size {d.dim_value}")
    # Exporters' value_info may carry symbolic batch dims that clash with the pinned batch;
    # shape inference recomputes every intermediate shape anyway.
    del proto.graph.value_info[:]
    # Outputs keep symbolic dims in dynamic exports (the batch, or one computed from it such
    # as a Flatten's leading axis): leave them unknown so that inference fills them in.
    for out in proto.graph.output:
        for d in out.type.tensor_type.shape.dim:
            if d.HasField("dim_param"):
                d.ClearField("dim_param")
    return proto
