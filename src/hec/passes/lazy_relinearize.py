"""lazy-relinearize: move relinearizations and rescales past the linear maps that shrink a tensor.

In batch packing a square costs one tensor product and one relinearization (a key switch, about
nine tenths of its time, measured) per element, and its rescale another NTT round trip. A linear
map is as happy with 3-part ciphertexts as with 2-part ones, and a sum of ±1 terms as happy at
scale Δ² as at Δ, so both can wait until the tensor has fewer elements:

- a ``rescale`` whose only reader is a shrinking ``signed_sum`` (a sum pooling) moves after it;
- a ``mul`` becomes ``mul_norelin``, and its ``relinearize`` goes where the element count is
  smallest along the chain of single-reader ``rescale`` / ``signed_sum`` / ``weighted_sum`` ops
  that follows, taking only maps that shrink the tensor (a 3-part ciphertext costs 1.5 times as
  much to multiply or add, so a map that grows it is better fed relinearized ciphertexts).

CryptoNets: 544 relinearizations and 1,098 rescales become 42 and 714 (square → sum pool →
dense → relinearize 32 → square → dense → relinearize 10 outputs).

Preserves: the function computed, exactly (the same operations on the same numbers; only where
the key switch and the division by a prime happen changes). Requires: a batch graph from
``lower-to-batch``. Golden: ``tests/passes/golden/cryptonets_like.lazy-relinearize.txt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hec.ir import BatchCipherType, Graph, Op, Value
from hec.ir.types import type_as

__all__ = ["LazyRelinearize"]

_PASS_THROUGH = ("rescale", "signed_sum", "weighted_sum")


@dataclass(frozen=True)
class LazyRelinearize:
    """Defer relinearizations and rescales of products past shrinking linear maps."""

    name: ClassVar[str] = "lazy-relinearize"
    dialect: ClassVar[str] = "batch"

    def run(self, graph: Graph) -> bool:
        changed = False
        for op in list(graph.ops):
            if op.kind == "rescale" and _sink_rescale(graph, op):
                changed = True
        for op in list(graph.ops):
            if op.kind == "mul" and _defer_relinearization(graph, op):
                changed = True
        return changed


def _size(v: Value) -> int:
    """The number of element ciphertexts of ``v`` (a batch graph's value)."""
    return type_as(v.type, BatchCipherType).size


def _only_reader(graph: Graph, v: Value) -> Op | None:
    """The one op reading ``v`` (once), if ``v`` has exactly one and is no graph output."""
    if len(v.uses) != 1 or v in graph.outputs or v.uses[0].inputs.count(v) != 1:
        return None
    return v.uses[0]


def _sink_rescale(graph: Graph, rescale: Op) -> bool:
    """``signed_sum(rescale(x))`` → ``rescale(signed_sum(x))`` when the sum shrinks ``x``."""
    x = rescale.inputs[0]
    reader = _only_reader(graph, rescale.result)
    if reader is None or reader.kind != "signed_sum" or _size(reader.result) >= _size(x):
        return False
    if _only_reader(graph, x) is not rescale:
        return False
    summed = type_as(reader.result.type, BatchCipherType)
    xt = type_as(x.type, BatchCipherType)
    # the sum now reads x at scale Δ² (bias added at that scale); the rescale follows it
    new_sum = Op(
        "signed_sum",
        [x],
        [summed.with_state(xt.level, xt.scale_deg, xt.parts)],
        reader.attrs,
        reader.consts,
        reader.origin,
    )
    new_rescale = Op("rescale", [new_sum.result], [summed], {}, {}, rescale.origin)
    i = graph.ops.index(reader)
    graph.replace_all_uses_with(reader.result, new_rescale.result)
    graph.ops[i : i + 1] = [new_sum, new_rescale]
    reader.inputs[0].uses.remove(reader)
    graph.erase(rescale)
    return True


def _defer_relinearization(graph: Graph, mul: Op) -> bool:
    """``mul`` → ``mul_norelin``; ``relinearize`` after the smallest value of its chain."""
    chain = [mul]
    v = mul.result
    while (reader := _only_reader(graph, v)) is not None and reader.kind in _PASS_THROUGH:
        if reader.kind != "rescale" and _size(reader.result) >= _size(v):
            break
        chain.append(reader)
        v = reader.result
    sizes = [_size(op.result) for op in chain]
    end = sizes.index(min(sizes))
    if end == 0:
        return False
    mul.kind = "mul_norelin"
    for op in chain[: end + 1]:
        t = type_as(op.result.type, BatchCipherType)
        op.result.type = t.with_state(t.level, t.scale_deg, parts=3)
    last = chain[end].result
    users, t = list(last.uses), type_as(last.type, BatchCipherType)
    relin = Op(
        "relinearize",
        [last],
        [t.with_state(t.level, t.scale_deg, parts=2)],
        {},
        {},
        chain[end].origin,
    )
    for user in users:  # every reader of the 3-part value now reads the relinearized one
        user.inputs = [relin.result if x is last else x for x in user.inputs]
        relin.result.uses.append(user)
    last.uses = [relin]
    graph.outputs = [relin.result if x is last else x for x in graph.outputs]
    graph.ops.insert(graph.ops.index(chain[end]) + 1, relin)
    return True
