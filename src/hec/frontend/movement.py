"""Data-movement ops on encrypted tensors: one converter, exact by construction.

Concat, Slice, Split, Gather (constant indices), Expand, Tile, DepthToSpace, SpaceToDepth,
Where (constant condition) and batch-moving Transposes only copy elements of their encrypted
inputs to other places (or write constants). Instead of one index formula per op, the converter
runs onnx's reference implementation of the node on *index-valued* inputs: element ``j`` of the
``k``-th encrypted input holds ``offset_k + j + 1``, constant data inputs hold 0. Each output
element then names the input element it copies (0: none). Running the node once more with the
encrypted inputs at zero gives the constant part, and a third run on random inputs checks that
the node really is such a selection (anything else is refused). Each encrypted source becomes
one ``select`` op (``y.flat[o] = x.flat[index[o]]``, -1 for zero); several sources are added,
the constant part becomes a ``scale_shift`` shift. All of them are linear, so lowering fuses
them into the neighbouring maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from hec.frontend.context import Context
from hec.frontend.registry import BATCH_FREE, converter
from hec.ir import TensorType, Value
from hec.ir.types import type_as

__all__ = ["MOVEMENT_OPS", "convert_movement"]

# op type -> positions of the inputs that may be encrypted (None: all of them)
MOVEMENT_OPS: dict[str, tuple[int, ...] | None] = {
    "Concat": None,
    "Slice": (0,),
    "Split": (0,),
    "Gather": (0,),
    "GatherElements": (0,),
    "GatherND": (0,),
    "Expand": (0,),
    "Tile": (0,),
    "DepthToSpace": (0,),
    "SpaceToDepth": (0,),
    "Where": (1, 2),
}
BATCH_FREE.update(MOVEMENT_OPS)


def _run(node: onnx.NodeProto, opset: int, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(o) for o in ReferenceEvaluator(node, opsets={"": opset}).run(None, feeds)]


def _gather(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``x.flat[index]`` with 0 where ``index`` is -1 (``x`` batched: ``[B, ...]``)."""
    flat = np.concatenate([x.reshape(x.shape[0], -1), np.zeros((x.shape[0], 1))], axis=1)
    return flat[:, index.reshape(-1)].reshape(x.shape[0], *index.shape)


@converter(*MOVEMENT_OPS)
def convert_movement(ctx: Context, node: onnx.NodeProto, attrs: dict[str, Any]) -> list:
    """Any node that copies elements of its encrypted inputs (see the module docstring)."""
    allowed = MOVEMENT_OPS.get(node.op_type)
    ins = list(node.input)
    sources = list(dict.fromkeys(n for n in ins if n and ctx.is_encrypted(n)))
    for pos, name in enumerate(ins):
        if name in sources and allowed is not None and pos not in allowed:
            raise ctx.unsupported(f"its input {pos} must be a constant, not derived from the input")
    fulls = {n: ctx.full(n) for n in sources}
    sizes = {n: int(np.prod(fulls[n])) for n in sources}
    offsets = dict(zip(sources, np.cumsum([0, *sizes.values()])[:-1].tolist(), strict=True))

    def feeds(data: dict[str, np.ndarray], const_scale: float) -> dict[str, np.ndarray]:
        out = {}
        for name in ins:
            if not name or name in out:
                continue
            if name in data:
                out[name] = data[name]
            else:
                c = ctx.const(name, "operand")
                out[name] = c.astype(np.float64) * const_scale if c.dtype.kind == "f" else c
        return out

    try:
        coded = _run(
            node,
            ctx.opset,
            feeds(
                {
                    n: (offsets[n] + 1 + np.arange(sizes[n], dtype=np.float64)).reshape(fulls[n])
                    for n in sources
                },
                0.0,
            ),
        )
        const_part = _run(node, ctx.opset, feeds({n: np.zeros(fulls[n]) for n in sources}, 1.0))
        rng = np.random.default_rng(0)
        probe = {n: rng.uniform(-1, 1, fulls[n]) for n in sources}
        probed = _run(node, ctx.opset, feeds(probe, 1.0))
    except Exception as exc:  # the reference implementation refusing the operands
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ctx.unsupported(f"onnx's reference implementation failed on it ({first})") from None

    results: list = []
    for out_name, code, const, got in zip(node.output, coded, const_part, probed, strict=False):
        if code.dtype.kind != "f" or np.any(code != np.round(code)):
            raise ctx.unsupported("it computes new values instead of moving elements")
        code = code.astype(np.int64) - 1
        index = {
            n: np.where(
                (code >= offsets[n]) & (code < offsets[n] + sizes[n]), code - offsets[n], -1
            )
            for n in sources
        }
        expected = const.astype(np.float64)[None] + sum(
            _gather(probe[n][None].reshape(1, -1), index[n]) for n in sources
        )
        if got.shape != code.shape or not np.allclose(got[None], expected, rtol=1e-12, atol=1e-12):
            raise ctx.unsupported("it is not a pure selection of its encrypted input's elements")
        if not any((index[n] >= 0).any() for n in sources):
            results.append(const)  # reads no encrypted element: a constant
            continue
        results.append(_emit(ctx, out_name, index, const, fulls))
    return results


def _emit(
    ctx: Context,
    out: str,
    index: dict[str, np.ndarray],
    const: np.ndarray,
    fulls: dict[str, tuple[int, ...]],
) -> Value:
    """One ``select`` per source that is read, their sum and the constant part."""
    full_out = tuple(int(d) for d in next(iter(index.values())).shape)
    if not ctx.fixed_batch:
        _check_per_sample(ctx, index, fulls, full_out)
    shape = ctx.per_sample_shape(full_out, out)
    parts = []
    for name, idx in index.items():
        if not (idx >= 0).any():
            continue
        x = ctx.value(name)
        size = type_as(x.type, TensorType).size
        if idx.size == size and np.array_equal(idx.reshape(-1), np.arange(idx.size)):
            parts.append(
                x if shape == x.shape else ctx.emit("reshape", [x], shape, {"shape": shape})
            )
        else:
            parts.append(
                ctx.emit("select", [x], shape, {"shape": shape}, {"index": idx.reshape(shape)})
            )
    y = parts[0]
    for p in parts[1:]:
        y = ctx.emit("add", [y, p], shape)
    if np.any(const != 0):
        shift = np.asarray(const, np.float64).reshape(shape)
        y = ctx.emit("scale_shift", [y], shape, {}, {"scale": np.ones(()), "shift": shift})
    return y


def _check_per_sample(
    ctx: Context,
    index: dict[str, np.ndarray],
    fulls: dict[str, tuple[int, ...]],
    full_out: tuple[int, ...],
) -> None:
    """With a dynamic batch, every output element must read its own sample: the batch axis
    stays in front and the node must not move elements along it."""
    if not full_out or full_out[0] != 1 or any(f[0] != 1 for f in fulls.values()):
        raise ctx.unsupported(
            f"its result of shape {list(full_out)} changes the batch axis; export with a "
            f"fixed batch of 1 to compile per-sample data movement"
        )
