"""Batch dialect -> OpenFHE: one kernel per op kind, read by the executor and the code generator.

A batch op computes each element ciphertext of its result on its own. An element-wise kernel
takes element ``e`` of each operand and the op's literal arguments (``Kernel.arguments``); a
row kernel (``Kernel.rows``: ``weighted_sum``, ``signed_sum``) takes the whole input tensor
(anything indexable by element) and row ``e`` of the op's sparse matrix (``op_row``), and
reads only the elements that row names.

Rows are multiply-accumulate loops, not ``EvalLinearWSum``: it clones every input before
summing, which for a dense row of 400 inputs holds 400 extra ciphertexts (1.8 GB at ring 2^15)
for no gain in time (measured); the loop holds two. Plain scalars are passed as Python floats:
OpenFHE encodes them on the fly, so no plaintext is stored.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hec.backend_openfhe.kernels import SHARED_KERNELS, Kernel, openfhe_chebyshev
from hec.ir import Op

__all__ = [
    "BATCH_KERNELS",
    "BATCH_FUNCTIONS",
    "sparse_row",
    "op_row",
    "weighted_row",
    "signed_row",
    "mul_norelin",
    "relinearize",
]


def sparse_row(indptr, indices, weights, bias, r):
    """Row ``r`` of a CSR matrix with a bias: its columns, their weights and its bias."""
    lo, hi = indptr[r], indptr[r + 1]
    return indices[lo:hi], weights[lo:hi], float(bias[r])


def op_row(op: Op, r: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Row ``r`` of a ``weighted_sum`` or ``signed_sum`` op (``signed_sum``'s weights are ±1)."""
    c = op.consts
    return sparse_row(c["indptr"], c["indices"], c["weights"], c["bias"], r)


def weighted_row(cc, xs, cols, weights, bias):
    """``Σ_j weights_j · xs[cols_j] + bias``: scalar products, additions, one rescale."""
    if len(cols) == 0:  # a constant row: 0 · x keeps the level and scale of its siblings
        y = cc.EvalMult(xs[0], 0.0)
    else:
        y = cc.EvalMult(xs[int(cols[0])], float(weights[0]))
        for j, w in zip(cols[1:].tolist(), weights[1:].tolist(), strict=True):
            cc.EvalAddInPlace(y, cc.EvalMult(xs[j], w))
    cc.RescaleInPlace(y)  # FIXEDMANUAL: the products are at scale Δ²
    return cc.EvalAdd(y, bias) if bias else y


def signed_row(cc, xs, cols, signs, bias):
    """``Σ_j ±xs[cols_j] + bias``: additions and subtractions only, no level used."""
    if len(cols) == 0:
        y = cc.EvalSub(xs[0], xs[0])
    else:
        first = xs[int(cols[0])]
        y = first if signs[0] > 0 else cc.EvalNegate(first)
        for j, s in zip(cols[1:].tolist(), signs[1:].tolist(), strict=True):
            y = cc.EvalAdd(y, xs[j]) if s > 0 else cc.EvalSub(y, xs[j])
    return cc.EvalAdd(y, bias) if bias else y


def mul_norelin(cc, x, y):
    """The product left at three parts: relinearized later, after the tensor has shrunk."""
    return cc.EvalMultNoRelin(x, y)


def relinearize(cc, x):
    return cc.Relinearize(x)


BATCH_KERNELS: dict[str, Kernel] = {
    "weighted_sum": Kernel(weighted_row, rows=True),
    "signed_sum": Kernel(signed_row, rows=True),
    "mul_norelin": Kernel(mul_norelin),
    "relinearize": Kernel(relinearize),
    **SHARED_KERNELS,
}

# What a generated batch program defines, in order: helpers first, then the kernels.
BATCH_FUNCTIONS: tuple[Callable, ...] = (
    openfhe_chebyshev,
    sparse_row,
    *dict.fromkeys(k.run for k in BATCH_KERNELS.values()),
)
