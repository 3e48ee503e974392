"""Slot dialect -> OpenFHE: one kernel per op kind, read by the executor and the code generator.

``SLOT_KERNELS[kind]`` says which function performs an op and which arguments it takes after
its ciphertexts (``Kernel.arguments``): literals (a rotation amount, a number of levels,
Chebyshev coefficients) or a ``Plaintext``, a constant of the op that the caller encodes (the
executor from its cache, the generated program from ``constants.npz``). A ciphertext rotated
more than once (``hoisted``) has its rotations share one decomposition: both consumers make the
digits with ``rotation_digits`` before its first rotation and pass them to ``rotate``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from hec.backend_openfhe.kernels import SHARED_KERNELS, Kernel, encode, openfhe_chebyshev
from hec.ir import CipherType, Graph, Op
from hec.ir.types import type_as

__all__ = [
    "Plaintext",
    "SLOT_KERNELS",
    "SLOT_FUNCTIONS",
    "LOWERED_BEFORE_BACKEND",
    "rotate",
    "rotate_sum",
    "rotation_digits",
    "mul_plain",
    "add_plain",
    "hoisted",
    "bootstrap",
]


@dataclass(frozen=True)
class Plaintext:
    """Constant ``const`` of an op, passed encoded at ``level`` and scale Δ^``scale_deg``."""

    const: str
    scale_deg: int
    level: int


def rotation_digits(cc, x):
    """The key-switching decomposition of ``x`` that all its rotations share (hoisting)."""
    return cc.EvalFastRotationPrecompute(x)


def rotate(cc, x, k, digits=None):
    """``x`` rotated left by ``k`` slots; from ``rotation_digits(cc, x)`` when given."""
    if digits is None:
        return cc.EvalRotate(x, k)
    return cc.EvalFastRotation(x, k, cc.GetCyclotomicOrder(), digits)


def rotate_sum(cc, *args):
    """``Σ_i rot(x_i, k_i)`` (``args``: the ``x_i``, then the tuple of ``k_i``). Each key switch
    stops in the extended basis P·Q (``EvalFastRotationExt``), the terms are added there and
    divided by P once (``KeySwitchDown``): one ModDown instead of one per rotation."""
    *xs, ks = args
    total = None
    for x, k in zip(xs, ks, strict=True):
        term = cc.EvalFastRotationExt(x, k, cc.EvalFastRotationPrecompute(x), True)
        total = term if total is None else cc.EvalAdd(total, term)
    return cc.KeySwitchDown(total)


def mul_plain(cc, x, p):
    return cc.EvalMult(x, p)


def add_plain(cc, x, p):
    return cc.EvalAdd(x, p)


def bootstrap(cc, x, reduce, drop):
    """``x`` with its levels refreshed: dropped by ``reduce`` to the level EvalBootstrap reads
    (the chain's last but one), bootstrapped and rescaled, then ``drop`` levels the work after
    it does not need dropped (fewer primes: cheaper operations)."""
    if reduce:
        x = cc.LevelReduce(x, None, reduce)
    y = cc.EvalBootstrap(x)
    if y.GetNoiseScaleDeg() > 1:  # FIXEDMANUAL: the result is a product at scale Δ²
        y = cc.Rescale(y)
    return cc.LevelReduce(y, None, drop) if drop else y


def _bootstrap_arguments(op: Op) -> tuple[int, int]:
    level = type_as(op.inputs[0].type, CipherType).level
    return (op.attrs["from"] - level, op.attrs["level"] - op.attrs["lands"])


def _plaintext(op: Op, scale_deg: int) -> tuple[Plaintext]:
    return (Plaintext("p", scale_deg, type_as(op.inputs[0].type, CipherType).level),)


SLOT_KERNELS: dict[str, Kernel] = {
    "rotate": Kernel(rotate, lambda op: (int(op.attrs["k"]),)),
    "rotate_sum": Kernel(rotate_sum, lambda op: (tuple(int(k) for k in op.attrs["ks"]),)),
    # a product's plaintext is at scale Δ; a sum's at the scale of the ciphertext it meets
    "mul_plain": Kernel(mul_plain, lambda op: _plaintext(op, 1)),
    "add_plain": Kernel(
        add_plain, lambda op: _plaintext(op, type_as(op.inputs[0].type, CipherType).scale_deg)
    ),
    "bootstrap": Kernel(bootstrap, _bootstrap_arguments),
    **SHARED_KERNELS,
}

# Slot op kinds that never reach the backend, and the pass that rewrites them into the above.
LOWERED_BEFORE_BACKEND = {
    "matvec": "schedule-rotations (diagonals and rotations)",
    "readout": "expand-copies (products and sums of copies)",
}

# What a generated slot program defines, in order: helpers first, then the kernels.
SLOT_FUNCTIONS: tuple[Callable, ...] = (
    openfhe_chebyshev,
    encode,
    rotation_digits,
    *dict.fromkeys(k.run for k in SLOT_KERNELS.values()),
)


def hoisted(program: Graph) -> set[int]:
    """Ids of the values rotated more than once: their rotations share ``rotation_digits``."""
    rotated = Counter(id(op.inputs[0]) for op in program.ops if op.kind == "rotate")
    return {v for v, n in rotated.items() if n > 1}
