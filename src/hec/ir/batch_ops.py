"""The batch dialect: tensors of ciphertexts, one ciphertext per tensor element (batch packing).

Slot ``i`` of every ciphertext holds input ``i`` of the batch, so every op acts on whole
ciphertexts and never needs a rotation. A value's ``BatchCipherType`` carries its shape and one
HE state (level, scale degree) shared by all its element ciphertexts.

=============  ============================================================  ===================
kind           meaning (per output element ``i``)                            level / scale
=============  ============================================================  ===================
weighted_sum   y_i = Σ_j A_ij x_j + b_i, scalar weights, then rescaled       level +1 (in at Δ)
signed_sum     y_i = Σ_j s_ij x_j + b_i with s_ij = ±1 (additions only)      unchanged
add            y_i = x_i + z_i (same level and scale)                        unchanged
mul            y_i = x_i · z_i, relinearized (at scale Δ)                    scale 2
mul_norelin    y_i = x_i · z_i, 3 parts: relinearized later (at scale Δ)     scale 2, parts 3
relinearize    3 parts back to 2 (a key switch)                              parts 2
rescale        divide by the last prime                                      level +1, scale -1
level_reduce   drop ``levels`` primes without rescaling                      level + levels
poly{coeffs}   y_i = Σ c_k T_k(x_i) (Chebyshev)                              level + poly_depth
=============  ============================================================  ===================

Sums and rescales keep the number of parts (a linear map of 3-part ciphertexts is one);
products, polynomials, level reductions and adds need 2-part operands.

The sparse matrix of ``weighted_sum`` and ``signed_sum`` is stored as CSR constants ``indptr``,
``indices``, ``weights`` (rows are output elements, columns input elements, row-major flat
order) and ``bias``. A ``signed_sum`` row holding a single +1 and no bias is a pure gather: the
backend reuses the input ciphertext and does no work.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from hec.ir.core import Op, VerifyError, register_op
from hec.ir.slot_ops import poly_depth
from hec.ir.types import BatchCipherType

__all__ = ["sparse_consts", "sparse_matrix", "is_signed"]


def sparse_consts(A: sp.spmatrix, bias: np.ndarray) -> dict[str, np.ndarray]:
    """The constants of a ``weighted_sum``/``signed_sum`` computing ``A x + bias``."""
    A = sp.csr_matrix(A)
    A.eliminate_zeros()
    A.sort_indices()
    return {
        "indptr": A.indptr.astype(np.int64),
        "indices": A.indices.astype(np.int64),
        "weights": A.data.astype(np.float64),
        "bias": np.asarray(bias, dtype=np.float64),
    }


def sparse_matrix(op: Op) -> sp.csr_matrix:
    """The matrix ``A`` of a ``weighted_sum``/``signed_sum`` op, ``[out.size, in.size]``."""
    c = op.consts
    shape = (len(c["indptr"]) - 1, _operand(op, 0).size)
    return sp.csr_matrix((c["weights"], c["indices"], c["indptr"]), shape=shape)


def is_signed(A: sp.spmatrix) -> bool:
    """Whether every stored entry of ``A`` is +1 or -1 (a sum needing no multiplication)."""
    return bool(np.all(np.abs(sp.csr_matrix(A).data) == 1.0))


def _operand(op: Op, i: int) -> BatchCipherType:
    t = op.inputs[i].type
    if not isinstance(t, BatchCipherType):
        raise VerifyError(f"{op.kind} ({op.origin}): input {i} is not a tensor of ciphertexts")
    return t


def _declared(
    op: Op,
    level: int,
    scale_deg: int,
    shape: tuple[int, ...] | None = None,
    parts: int | None = None,
):
    x = _operand(op, 0)
    if shape is None:
        t = op.results[0].type
        shape = t.shape if isinstance(t, BatchCipherType) else x.shape
    return [BatchCipherType(shape, x.batch, level, scale_deg, x.parts if parts is None else parts)]


def _two_parts(op: Op) -> None:
    for i in range(len(op.inputs)):
        if _operand(op, i).parts != 2:
            raise VerifyError(f"{op.kind} ({op.origin}): input {i} must be relinearized first")


def _check_matrix(op: Op) -> None:
    c, x = op.consts, _operand(op, 0)
    out = op.results[0].type
    rows = len(c["indptr"]) - 1
    where = f"{op.kind} ({op.origin})"
    if not isinstance(out, BatchCipherType) or out.size != rows:
        raise VerifyError(f"{where}: {rows} matrix rows for result {out}")
    n = len(c["indices"])
    if c["bias"].shape != (rows,) or c["indptr"][-1] != n or len(c["weights"]) != n:
        raise VerifyError(f"{where}: malformed sparse matrix constants")
    if len(c["indices"]) and not 0 <= c["indices"].min() <= c["indices"].max() < x.size:
        raise VerifyError(f"{where}: column index outside the input's {x.size} elements")


@register_op("weighted_sum", "batch", 1)
def _weighted_sum(op: Op) -> list[BatchCipherType]:
    x = _operand(op, 0)
    _check_matrix(op)
    if x.scale_deg != 1:
        raise VerifyError(f"weighted_sum ({op.origin}): input must be at scale Δ")
    return _declared(op, x.level + 1, 1)


@register_op("signed_sum", "batch", 1)
def _signed_sum(op: Op) -> list[BatchCipherType]:
    x = _operand(op, 0)
    _check_matrix(op)
    if not np.all(np.abs(op.consts["weights"]) == 1.0):
        raise VerifyError(f"signed_sum ({op.origin}): weights other than +1 and -1")
    return _declared(op, x.level, x.scale_deg)


def _aligned(op: Op) -> BatchCipherType:
    """Both operands' state; shapes may differ if the element counts agree (a reshape is free)."""
    x, z = _operand(op, 0), _operand(op, 1)
    _two_parts(op)
    if (x.size, x.batch, x.level, x.scale_deg) != (z.size, z.batch, z.level, z.scale_deg):
        raise VerifyError(f"{op.kind} ({op.origin}): operands differ: {x} vs {z}")
    return x


@register_op("add", "batch", 2)
def _add(op: Op) -> list[BatchCipherType]:
    x = _aligned(op)
    return _declared(op, x.level, x.scale_deg, x.shape)


@register_op("mul", "batch", 2)
def _mul(op: Op) -> list[BatchCipherType]:
    x = _aligned(op)
    if x.scale_deg != 1:
        raise VerifyError(f"mul ({op.origin}): operands must be rescaled first")
    return _declared(op, x.level, 2, x.shape)


@register_op("mul_norelin", "batch", 2)
def _mul_norelin(op: Op) -> list[BatchCipherType]:
    x = _aligned(op)
    if x.scale_deg != 1:
        raise VerifyError(f"mul_norelin ({op.origin}): operands must be rescaled first")
    return _declared(op, x.level, 2, x.shape, parts=3)


@register_op("relinearize", "batch", 1)
def _relinearize(op: Op) -> list[BatchCipherType]:
    x = _operand(op, 0)
    if x.parts != 3:
        raise VerifyError(f"relinearize ({op.origin}): input has {x.parts} parts, not 3")
    return _declared(op, x.level, x.scale_deg, x.shape, parts=2)


@register_op("rescale", "batch", 1)
def _rescale(op: Op) -> list[BatchCipherType]:
    x = _operand(op, 0)
    if x.scale_deg < 2:
        raise VerifyError(f"rescale ({op.origin}): nothing to rescale at scale Δ^{x.scale_deg}")
    return _declared(op, x.level + 1, x.scale_deg - 1, x.shape)


@register_op("level_reduce", "batch", 1)
def _level_reduce(op: Op) -> list[BatchCipherType]:
    x = _operand(op, 0)
    _two_parts(op)
    if op.attrs["levels"] < 1 or x.scale_deg != 1:
        raise VerifyError(f"level_reduce ({op.origin}): needs levels >= 1 at scale Δ")
    return _declared(op, x.level + op.attrs["levels"], 1, x.shape)


@register_op("poly", "batch", 1)
def _poly(op: Op) -> list[BatchCipherType]:
    x = _operand(op, 0)
    _two_parts(op)
    if x.scale_deg != 1:
        raise VerifyError(f"poly ({op.origin}): input must be at scale Δ")
    return _declared(op, x.level + poly_depth(tuple(op.attrs["coeffs"])), 1, x.shape)
