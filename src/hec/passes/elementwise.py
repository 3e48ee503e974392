"""Element-wise regions: connected groups of element-wise ops computing ``f(root)`` slot by slot.

A region starts at a root value and takes every later op whose inputs are the root or region
values and whose kind acts on each element alone (scalar ``scale_shift``, ``add``, ``mul``,
``poly``, ``activation``); it qualifies when exactly one of its values is used outside. Such a
region is a scalar function of the root, whatever the exporter wrote: GELU as ``x·(1+erf(x/√2))/2``,
SiLU as ``x·sigmoid(x)``, a polynomial in Horner or Clenshaw form. ``fuse-polynomials`` and
``replace-activations`` both rewrite a region into ``scale_shift(root) → poly``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.polynomial import Chebyshev

from hec.ir import Graph, Op, TensorType, Value
from hec.ir.tensor_ops import ACTIVATIONS

__all__ = ["Region", "find_regions", "region_function", "region_polynomial", "replace_region"]

_ELEMENTWISE = {"scale_shift", "add", "mul", "poly", "activation"}
# what a region is evaluated on: sample values, or a Chebyshev series of the root
_Operand = TypeVar("_Operand", np.ndarray, Chebyshev)


@dataclass
class Region:
    root: Value
    ops: list[Op]  # program order
    output: Value

    @property
    def kinds(self) -> set[str]:
        return {op.kind for op in self.ops}

    @property
    def origin(self) -> str:
        """The ONNX nodes involved (helper nodes ``name#step`` of exported models folded)."""
        return "+".join(dict.fromkeys(op.origin.split("#")[0] for op in self.ops if op.origin))


def _scalar(op: Op) -> bool:
    return op.kind != "scale_shift" or all(c.size == 1 for c in op.consts.values())


def find_regions(graph: Graph, nonlinear: Callable[[Region], bool]) -> list[Region]:
    """Disjoint regions, earliest roots first, for which ``nonlinear(region)`` holds."""
    claimed: set[int] = set()
    regions: list[Region] = []
    position = {id(op): i for i, op in enumerate(graph.ops)}
    for root in list(graph.values()):
        start = position[id(root.producer)] + 1 if root.producer is not None else 0
        inside, members = {id(root)}, []
        for op in graph.ops[start:]:
            if (
                id(op) not in claimed
                and op.kind in _ELEMENTWISE
                and _scalar(op)
                and all(id(v) in inside for v in op.inputs)
            ):
                members.append(op)
                inside.add(id(op.result))
        member_ids = {id(op) for op in members}
        escaping = [
            op.result
            for op in members
            if op.result in graph.outputs or any(id(u) not in member_ids for u in op.result.uses)
        ]
        if len(escaping) != 1:
            continue
        region = Region(root, _ancestors(members, escaping[0]), escaping[0])
        if nonlinear(region):
            regions.append(region)
            claimed.update(id(op) for op in region.ops)
    return regions


def _ancestors(members: list[Op], output: Value) -> list[Op]:
    """The members ``output`` depends on (others are dead or belong to no result)."""
    needed, keep = {id(output)}, []
    for op in reversed(members):
        if id(op.result) in needed:
            keep.append(op)
            needed.update(id(v) for v in op.inputs)
    return keep[::-1]


def _apply(
    op: Op, args: list[_Operand], poly_eval: Callable[[tuple[float, ...], _Operand], _Operand]
) -> _Operand:
    if op.kind == "scale_shift":
        return args[0] * float(op.consts["scale"].reshape(())) + float(
            op.consts["shift"].reshape(())
        )
    if op.kind == "add":
        return args[0] + args[1]
    if op.kind == "mul":
        return args[0] * args[1]
    if op.kind == "poly":
        return poly_eval(op.attrs["coeffs"], args[0])
    raise ValueError(f"{op.kind} has no symbolic form")


def _chebval(coeffs: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    """``Σ c_k T_k(x)`` with ``_apply``'s argument order (numpy's ``chebval`` takes x first)."""
    return np.polynomial.chebyshev.chebval(x, coeffs)


def region_function(region: Region) -> Callable[[np.ndarray], np.ndarray]:
    """The region as a numpy function of the root's value."""

    def f(x: np.ndarray) -> np.ndarray:
        env = {id(region.root): np.asarray(x, dtype=np.float64)}
        for op in region.ops:
            args = [env[id(v)] for v in op.inputs]
            if op.kind == "activation":
                env[id(op.result)] = ACTIVATIONS[op.attrs["fn"]](
                    args[0], op.attrs.get("alpha", 0.0)
                )
            else:
                env[id(op.result)] = _apply(op, args, _chebval)
        return env[id(region.output)]

    return f


def _compose(coeffs: tuple[float, ...], p: Chebyshev) -> Chebyshev:
    """``Σ c_k T_k(p)`` by Clenshaw's recurrence on series (stable, stays in the basis)."""
    b1 = b2 = p * 0
    for c in reversed(coeffs[1:]):
        b1, b2 = 2 * p * b1 - b2 + c, b1
    return p * b1 - b2 + coeffs[0]


def region_polynomial(region: Region, domain: tuple[float, float]) -> Chebyshev:
    """The region as an exact Chebyshev series on ``domain`` (needs no activation inside)."""
    env: dict[int, Chebyshev] = {id(region.root): Chebyshev.identity(domain=list(domain))}
    for op in region.ops:
        env[id(op.result)] = _apply(op, [env[id(v)] for v in op.inputs], _compose)
    return env[id(region.output)]


def replace_region(
    graph: Graph, region: Region, domain: tuple[float, float], coeffs: np.ndarray, attrs: dict
) -> Value:
    """Replace ``region`` by ``t = affine(root)`` (``domain`` → [-1, 1]) and ``poly(t)``."""
    a, b = domain
    shape = region.root.shape
    first = graph.ops.index(region.ops[0])
    new_ops = []
    t = region.root
    if (a, b) != (-1.0, 1.0):
        alpha, beta = 2.0 / (b - a), -(a + b) / (b - a)
        new_ops.append(
            Op(
                "scale_shift",
                [t],
                [TensorType(shape)],
                {},
                {"scale": np.array(alpha), "shift": np.array(beta)},
                region.origin,
                [f"{region.output.name}/t"],
            )
        )
        t = new_ops[-1].result
    new_ops.append(
        Op(
            "poly",
            [t],
            [TensorType(shape)],
            {"coeffs": tuple(float(c) for c in coeffs), **attrs},
            None,
            region.origin,
            [region.output.name],
        )
    )
    result = new_ops[-1].result
    graph.replace_all_uses_with(region.output, result)
    for op in reversed(region.ops):
        for v in op.inputs:
            v.uses.remove(op)
        graph.ops.remove(op)
    graph.ops[first:first] = new_ops
    return result
