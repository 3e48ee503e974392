"""The OpenFHE calls that slot and batch programs share, written once.

A kernel is a plain function ``kernel(cc, *ciphertexts, *arguments)`` that performs one IR op
(or, in batch packing, one element of it) on OpenFHE. Each dialect's table (``slot_kernels``,
``batch_kernels``) maps its op kinds to such functions. Both consumers read the same table: the
executors call the functions, and the code generator copies their source into
``openfhe_program.py`` followed by a straight-line body of calls to them, so the generated
program computes exactly what the executor computes. A kernel may therefore use only ``np`` and
the other functions its dialect emits (the generated program imports nothing but openfhe and
numpy), and carries no type hints (``cc`` and ciphertexts are OpenFHE objects; the copies stay
plain Python).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hec.ir import Op

__all__ = [
    "Kernel",
    "openfhe_chebyshev",
    "encode",
    "add",
    "mul",
    "rescale",
    "level_reduce",
    "poly",
    "SHARED_KERNELS",
]


def _no_arguments(op: Op) -> tuple:
    return ()


@dataclass(frozen=True)
class Kernel:
    """``run(cc, *operands, *arguments(op))`` performs an op on OpenFHE (in batch packing, one
    element ciphertext of it).

    Arguments are literals (a rotation amount, levels, Chebyshev coefficients) or what the
    dialect's table says its caller supplies (a plaintext in slot packing). With ``rows`` (batch
    only), the operand is the whole input tensor and the arguments are the op's sparse row of the
    element (``batch_kernels.op_row``), not ``arguments(op)``.
    """

    run: Callable
    arguments: Callable[[Op], tuple] = _no_arguments
    rows: bool = False


def openfhe_chebyshev(coeffs: tuple[float, ...]) -> list[float]:
    """OpenFHE's series is ``c0/2 + Σ c_k T_k``; ours (numpy's) is ``c0 + Σ c_k T_k``."""
    return [2.0 * coeffs[0], *map(float, coeffs[1:])]


def encode(cc, values, scale_deg, level):
    """A plaintext of ``values`` at ``level`` and scale Δ^``scale_deg``, as the ciphertext it
    meets (OpenFHE's FIXEDMANUAL scaling checks both)."""
    return cc.MakeCKKSPackedPlaintext(
        np.asarray(values, dtype=np.float64).tolist(), scale_deg, level
    )


def add(cc, x, y):
    return cc.EvalAdd(x, y)


def mul(cc, x, y):
    """The product, relinearized; a square when both operands are the same ciphertext."""
    return cc.EvalSquare(x) if x is y else cc.EvalMult(x, y)


def rescale(cc, x):
    return cc.Rescale(x)


def level_reduce(cc, x, levels):
    return cc.LevelReduce(x, None, levels)


def poly(cc, x, coeffs):
    """Chebyshev series ``Σ c_k T_k(x)`` on ``[-1, 1]``."""
    return cc.EvalChebyshevSeries(x, openfhe_chebyshev(coeffs), -1, 1)


# The kernels of op kinds that mean the same in both dialects.
SHARED_KERNELS: dict[str, Kernel] = {
    "add": Kernel(add),
    "mul": Kernel(mul),
    "rescale": Kernel(rescale),
    "level_reduce": Kernel(level_reduce, lambda op: (int(op.attrs["levels"]),)),
    "poly": Kernel(poly, lambda op: (tuple(map(float, op.attrs["coeffs"])),)),
}
