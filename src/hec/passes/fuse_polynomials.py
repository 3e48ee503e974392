"""fuse-polynomials: element-wise polynomial subgraphs become one ``poly`` op.

However a polynomial was written (``x*x + x``, Horner, the Clenshaw chains ``hec optimize``
emits), the region computing it is a polynomial of its root, computed exactly as a Chebyshev
series (see ``elementwise.py``). The result is ``scale_shift`` (root → t in [-1, 1]) and
``poly(t)``, so the lowering evaluates it at the depth of its degree instead of one level per
multiplication. When the region starts with a scalar affine map of the root (as replaced
activations do), that map defines the interval, so the series stays well conditioned.

Preserves: the function, exactly (to float rounding). Requires: tensor graph.
Golden: ``tests/passes/golden/fuse_polynomials.txt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hec.ir import Graph
from hec.passes.elementwise import Region, find_regions, region_polynomial, replace_region

__all__ = ["FusePolynomials"]


def _canonical(region: Region) -> bool:
    kinds = [op.kind for op in region.ops]
    return kinds in (["poly"], ["scale_shift", "poly"])


def _domain(region: Region) -> tuple[float, float]:
    """The interval that the region's leading chain of scalar affine maps sends to [-1, 1].

    Replaced activations start with ``t = α·x + β``; exported to ONNX that is a Mul then an Add,
    so the chain is composed before reading the interval off it. Without one: [-1, 1].
    """
    alpha, beta, current = 1.0, 0.0, region.root
    for op in region.ops:
        if op.kind != "scale_shift" or op.inputs[0] is not current:
            break
        if current is not region.root and len(current.uses) > 1:
            break  # ``current`` is the variable the rest of the region works on
        scale = float(op.consts["scale"].reshape(()))
        alpha, beta = alpha * scale, beta * scale + float(op.consts["shift"].reshape(()))
        current = op.result
    if current is region.root or alpha == 0.0:
        return -1.0, 1.0
    lo, hi = sorted(((-1.0 - beta) / alpha, (1.0 - beta) / alpha))
    return lo, hi


@dataclass(frozen=True)
class FusePolynomials:
    """Collapse element-wise polynomial regions into ``scale_shift`` + ``poly``.

    Args:
        max_degree: leave regions whose degree would exceed this alone.
    """

    max_degree: int = 59
    name: ClassVar[str] = "fuse-polynomials"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        def wanted(region: Region) -> bool:
            return (
                ("mul" in region.kinds or "poly" in region.kinds)
                and "activation" not in region.kinds
                and not _canonical(region)
            )

        changed = False
        for region in find_regions(graph, wanted):
            domain = _domain(region)
            series = region_polynomial(region, domain)
            coef: np.ndarray = series.coef
            tol = 1e-13 * max(1.0, float(np.abs(coef).max()))
            coef = coef[: max(1, int(np.flatnonzero(np.abs(coef) > tol).max(initial=0)) + 1)]
            if len(coef) - 1 > self.max_degree:
                continue
            attrs = (
                {k: v for k, v in region.ops[-1].attrs.items() if k != "coeffs"}
                if region.ops[-1].kind == "poly"
                else {}
            )
            replace_region(graph, region, domain, coef, attrs)
            changed = True
        return changed
