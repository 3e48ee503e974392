"""lower-to-batch: the tensor graph becomes a batch graph (one ciphertext per tensor element).

Batch packing puts input ``i`` of the batch in slot ``i`` of every ciphertext, so element ``e``
of a tensor is one ciphertext and an affine map ``y = A x + b`` is, per output element,
``y_i = Σ_j A_ij x_j + b_i``: ciphertext-by-scalar multiplies and additions, never a rotation.
Its cost is the number of non-zeros of ``A`` (not the number of diagonals, as in slot packing),
and a map whose entries are all ±1 (a sum pooling, a reshape, a crop) costs additions only and
no level. Activations act element by element. The walk is the one ``lower-to-slots`` uses
(``chain_lowering``); what differs is how a chain of linear layers is materialized.

**Fusion rule.** Fusing a chain multiplies its matrices, which always saves depth but can add
non-zeros: an average pool followed by a dense layer fuses into a dense matrix four times the
dense layer's size. So each chain is cut into segments, each emitted as one op, by dynamic
programming over the cut points, minimizing

1. the number of levels (segments that multiply, ``weighted_sum``; a ±1 segment, ``signed_sum``,
   costs none): depth drives the ring dimension and the size of every ciphertext, so fusion
   never gives it up, and
2. then the estimated time: scalar multiplies + additions + rescales, weighted by their measured
   relative cost (``RELATIVE_COST``).

**Constant elements.** A row of a materialized map with no entry is a constant (its bias): a
filter pruned to zero, say. Such elements are tracked through element-wise polynomials and
products, and a linear map reading them gets their values folded into its bias instead (a
first factor zeroes their columns), so nothing reads their ciphertexts and the schedule, which
computes only what an output needs, never computes them (MOFHEI's culling, in the lowering).

Before that, every factor whose rows each hold one magnitude is split into signs and a diagonal
(``avgpool = diag(1/k) · sum-pool``), so the diagonal can move into the next factor while the
signs stay a free sum: CryptoNets' pool + dense becomes 384 additions and 4,096 multiplies
instead of 16,384 multiplies, at the same depth.

Preserves: the function computed, exactly (up to float rounding of the matrix products).
Requires: a tensor graph. Produces: a batch graph whose values carry level and scale.
Golden: ``tests/passes/golden/*.lower-to-batch.txt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from hec.errors import LayoutError
from hec.ir import BatchCipherType, Graph, Value
from hec.ir.batch_ops import is_signed, sparse_consts
from hec.ir.types import type_as
from hec.passes.chain_lowering import (
    ChainLowering,
    PendingMap,
    is_identity_map,
    require_polynomial,
)

__all__ = ["LowerToBatch", "plan_segments", "segment_cost", "RELATIVE_COST"]

# Relative time of the HE primitives a linear map costs in batch packing, measured with
# OpenFHE 1.6.1 at ring 2^14, depth 5, one thread: ciphertext x scalar 1.0 ms, ciphertext +
# ciphertext 0.8 ms, rescale 6 ms (an NTT round trip, hence the weight).
RELATIVE_COST = {"multiply": 1.0, "add": 0.8, "rescale": 6.0}

Factor = tuple[sp.csr_matrix, np.ndarray]


@dataclass(frozen=True)
class LowerToBatch:
    """Lower a tensor graph to the batch dialect (batch packing: one sample per slot).

    Args:
        batch: slots per ciphertext, i.e. the most inputs one evaluation carries (a power of
            two, at most half the ring dimension).
    """

    batch: int
    name: ClassVar[str] = "lower-to-batch"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        require_polynomial(graph)
        if self.batch < 1 or self.batch & (self.batch - 1):
            raise LayoutError(f"batch size {self.batch} is not a power of two")
        graph.become(_BatchLowering(graph, self.batch).lower())
        graph.attrs.update(batch=self.batch)  # inputs per evaluation, one per slot
        return True


def segment_cost(A: sp.csr_matrix, b: np.ndarray) -> tuple[int, float]:
    """``(levels, estimated time)`` of emitting ``A x + b`` as one op (see the module doc)."""
    if is_identity_map(A, b):
        return 0, 0.0
    nnz_rows = np.diff(A.indptr)
    adds = float(np.maximum(nnz_rows - 1, 0).sum() + np.count_nonzero(b))
    if is_signed(A):
        # an empty row becomes x - x (one addition), a lone -1 a negation (about one addition)
        lone_negative = np.count_nonzero((nnz_rows == 1) & (_row_sums(A) < 0))
        adds += np.count_nonzero(nnz_rows == 0) + lone_negative
        return 0, adds * RELATIVE_COST["add"]
    multiplies = A.nnz + np.count_nonzero(nnz_rows == 0)  # an empty row is 0 · x
    rows = A.shape[0]
    cost = (
        multiplies * RELATIVE_COST["multiply"]
        + adds * RELATIVE_COST["add"]
        + rows * RELATIVE_COST["rescale"]
    )
    return 1, float(cost)


def plan_segments(factors: list[Factor]) -> list[Factor]:
    """Cut a chain of affine factors into segments (the fusion rule); returns their products."""
    factors = [f for A, b in factors for f in _sign_split(A, b)]
    m = len(factors)
    # best[j]: cheapest (levels, time) for factors[:j], and where its last segment starts
    best: list[tuple[tuple[int, float], int]] = [((0, 0.0), 0)] + [((1 << 30, 0.0), 0)] * m
    products: dict[tuple[int, int], Factor] = {}
    for i in range(m):
        A, b = factors[i]
        for j in range(i + 1, m + 1):
            if j > i + 1:
                Aj, bj = factors[j - 1]
                A, b = (Aj @ A).tocsr(), Aj @ b + bj
            products[i, j] = (A, b)
            levels, time = segment_cost(A, b)
            prev = best[i][0]
            cand = (prev[0] + levels, prev[1] + time)
            # ties go to the longer segment (fewer ops, and what slot packing would do)
            if cand < best[j][0] or (cand == best[j][0] and i < best[j][1]):
                best[j] = (cand, i)
    cuts, j = [], m
    while j > 0:
        i = best[j][1]
        cuts.append((i, j))
        j = i
    return [products[c] for c in reversed(cuts) if not is_identity_map(*products[c])]


def _sign_split(A: sp.csr_matrix, b: np.ndarray) -> list[Factor]:
    """``[(sign(A), 0), (diag(m), b)]`` when every row of ``A`` has one magnitude ``m_i``."""
    A = sp.csr_matrix(A)
    if A.nnz == 0 or is_signed(A):
        return [(A, b)]
    mags = np.abs(A.data)
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    row_mag = np.ones(A.shape[0])
    row_mag[rows] = mags  # any entry of the row; checked against all of them below
    if not np.allclose(mags, row_mag[rows], rtol=1e-12, atol=0.0):
        return [(A, b)]
    signs = sp.csr_matrix((np.sign(A.data), A.indices, A.indptr), shape=A.shape)
    return [(signs, np.zeros(A.shape[0])), (sp.diags(row_mag, format="csr"), b)]


def _row_sums(A: sp.csr_matrix) -> np.ndarray:
    return np.asarray(A.sum(axis=1)).reshape(-1)


class _BatchLowering(ChainLowering):
    """The shared walk; a materialized chain becomes ``signed_sum``/``weighted_sum`` ops."""

    dialect = "batch"

    def __init__(self, graph: Graph, batch: int) -> None:
        super().__init__(graph)
        self.batch = batch

    def cipher_type(self, shape: tuple[int, ...], level: int) -> BatchCipherType:
        return BatchCipherType(shape, self.batch, level, 1)

    # -- constant elements ----------------------------------------------------------------
    # id(ciphertext value) -> (mask of its elements known constant, their values)
    constants: dict[int, tuple[np.ndarray, np.ndarray]]

    def lower(self) -> Graph:
        self.constants = {}
        return super().lower()

    def _folded(self, p: PendingMap) -> PendingMap:
        """``p`` reading its source's constant elements as constants: ``x ↦ D x + c`` first,
        with ``D`` zeroing their columns and ``c`` holding their values (exact: those
        elements hold ``c``)."""
        known = self.constants.get(id(p.src))
        if known is None:
            return p
        mask, values = known
        c = np.zeros(mask.size)
        c[mask] = values
        first = (sp.diags((~mask).astype(np.float64), format="csr"), c)
        return PendingMap(p.src, p.size, (first, *p.factors), ("", *p.origins))

    def _record(self, v: Value, mask: np.ndarray, values: np.ndarray) -> None:
        if mask.any():
            self.constants[id(v)] = (mask, values[mask] if values.size == mask.size else values)

    def _poly(self, op) -> None:
        super()._poly(op)
        x, y = self.pending[id(op.inputs[0])].src, self.pending[id(op.result)].src
        known = self.constants.get(id(x))
        if known is not None and y.producer is not None and y.producer.kind == "poly":
            mask, values = known  # a polynomial of a constant is a constant
            self._record(y, mask, np.polynomial.chebyshev.chebval(values, op.attrs["coeffs"]))

    def _square_or_product(self, tensor, x: Value, y: Value, origin: str) -> Value:
        out = super()._square_or_product(tensor, x, y, origin)
        kx, ky = self.constants.get(id(x)), self.constants.get(id(y))
        if kx is not None and ky is not None:
            mask = kx[0] & ky[0]
            vx, vy = np.zeros(mask.size), np.zeros(mask.size)
            vx[kx[0]], vy[ky[0]] = kx[1], ky[1]
            self._record(out, mask, vx * vy)
        return out

    def materialize_pending(
        self, p: PendingMap, shape: tuple[int, ...], tensor: Value | None = None
    ) -> Value:
        if p.is_identity:
            return p.src
        p = self._folded(p)
        factors = list(p.factors) or [(p.A, p.b)]
        segments = plan_segments(factors)
        x = p.src
        for k, (A, b) in enumerate(segments):
            # constant rows of the previous segment: into this one's bias, not read
            A, b = self._fold_constants(x, sp.csr_matrix(A), b) if k else (A, b)
            out_shape = shape if k == len(segments) - 1 else (A.shape[0],)
            t = type_as(x.type, BatchCipherType)
            if is_signed(A):
                kind, result = "signed_sum", BatchCipherType(out_shape, self.batch, t.level, 1)
            else:
                kind, result = (
                    "weighted_sum",
                    BatchCipherType(out_shape, self.batch, t.level + 1, 1),
                )
            x = self._emit(kind, [x], result, p.origin, consts=sparse_consts(A, b))
            self._record(x, np.diff(sp.csr_matrix(A).indptr) == 0, b)  # rows reading nothing
        return x

    def _fold_constants(self, x: Value, A: sp.csr_matrix, b: np.ndarray) -> Factor:
        """``A x + b`` with ``x``'s constant elements moved into the bias."""
        known = self.constants.get(id(x))
        if known is None:
            return A, b
        mask, values = known
        full = np.zeros(mask.size)
        full[mask] = values
        kept = (A @ sp.diags((~mask).astype(np.float64))).tocsr()
        kept.eliminate_zeros()
        return kept, b + A @ full
