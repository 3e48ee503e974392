"""Evaluate a batch program on OpenFHE, one element ciphertext at a time, in schedule order.

Each task computes one ciphertext with its op's kernel from the batch dialect's table
(``batch_kernels``, which the generated ``openfhe_program.py`` copies): a row of a
``weighted_sum`` is a multiply-accumulate loop, a row of a ``signed_sum`` additions and
subtractions, element-wise ops one call each. A ciphertext is dropped as soon as
its last reader has run (``Schedule.free_after``), and an input ciphertext is taken from its
source only just before its first reader (``Schedule.load_before``): with a source that
encrypts or reads on demand (``Client.element_encryptor``), the inputs are never all alive at
once. That is what keeps thousands of ciphertexts within memory.
Needs the relinearization key only (no rotation keys exist in batch packing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from hec.backend_openfhe.batch_kernels import BATCH_KERNELS, op_row
from hec.backend_openfhe.batch_schedule import ElementGraph, Schedule, late_inputs
from hec.ir import BatchCipherType
from hec.ir.types import type_as

__all__ = ["BatchExecutor", "InputSource"]

ProgressFn = Callable[[int, int], None]


class InputSource(Protocol):
    """The ciphertexts of one program input, element by element (a list will do).

    Element ``e`` is read once, when first needed, then set to ``None``: a list lets go of
    it; a source that encrypts (or reads) on ``source[e]`` holds nothing until then.
    """

    def __len__(self) -> int: ...
    def __getitem__(self, e: int) -> object: ...
    def __setitem__(self, e: int, value: object) -> None: ...


class BatchExecutor:
    """Runs an element graph with crypto context ``cc`` in the order ``schedule`` gives."""

    def __init__(self, cc, eg: ElementGraph, schedule: Schedule) -> None:
        self.cc = cc
        self.eg = eg
        self.schedule = schedule
        # per input ciphertext: (program input, element)
        self._input_of = {
            int(ct): (i, e)
            for i, v in enumerate(eg.program.inputs)
            for e, ct in enumerate(eg.ct_of[id(v)].tolist())
        }
        self._operands = [[eg.ct_of[id(x)] for x in op.inputs] for op in eg.program.ops]
        unknown = sorted({op.kind for op in eg.program.ops} - BATCH_KERNELS.keys())
        if unknown:
            raise ValueError(f"the OpenFHE backend cannot run batch ops {unknown}")
        self._kernels = [BATCH_KERNELS[op.kind] for op in eg.program.ops]
        self._arguments = [BATCH_KERNELS[op.kind].arguments(op) for op in eg.program.ops]

    def run(self, inputs: list[InputSource], progress: ProgressFn | None = None) -> list[list]:
        """``inputs[i][e]`` is element ``e`` of program input ``i``; returns the outputs alike.

        Each input element is read when first needed and its entry set to ``None``: the
        evaluator owns the ciphertext from then on, so that it can be freed after its last
        reader (a caller's list would keep them all alive).
        """
        self._check_inputs(inputs)
        env: dict[int, object] = {}
        order, free_after = self.schedule.order, self.schedule.free_after
        n = len(order)
        step = max(1, n // 200)
        for k, ct in enumerate(order.tolist()):
            self.load(self.schedule.load_before[k], inputs, env)
            env[ct] = self.compute(ct, env)
            for dead in free_after[k]:
                del env[dead]
            if progress is not None and (k % step == 0 or k == n - 1):
                progress(k + 1, n)
        self.load(late_inputs(self.eg, self.schedule), inputs, env)
        return [[env[ct] for ct in self.eg.ct_of[id(v)].tolist()] for v in self.eg.program.outputs]

    def _check_inputs(self, inputs: list[InputSource]) -> None:
        for v, cts in zip(self.eg.program.inputs, inputs, strict=True):
            size = type_as(v.type, BatchCipherType).size
            if len(cts) != size:
                raise ValueError(f"input {v.name}: {len(cts)} ciphertexts for {size}")

    def load(self, cts: list[int], inputs: list[InputSource], env: dict[int, object]) -> None:
        """Bring input ciphertexts ``cts`` into ``env`` from their sources."""
        for ct in cts:
            i, e = self._input_of[ct]
            env[ct] = inputs[i][e]
            if env[ct] is None:
                raise ValueError(f"input element {e} was already taken from its source")
            inputs[i][e] = None

    def compute(self, ct: int, env: dict[int, object]):
        """The ciphertext ``ct`` from the ciphertexts it reads (all present in ``env``)."""
        i = int(self.eg.op_of[ct])
        e = int(self.eg.element_of[ct])
        kernel = self._kernels[i]
        if kernel.rows:
            row = op_row(self.eg.program.ops[i], e)
            return kernel.run(self.cc, _Elements(env, self._operands[i][0]), *row)
        args = [env[int(x[e])] for x in self._operands[i]]
        return kernel.run(self.cc, *args, *self._arguments[i])


class _Elements:
    """The ciphertexts of one tensor, by element, as present in ``env`` (a row kernel reads
    only the elements its row names: the others may be freed or not loaded yet)."""

    def __init__(self, env: dict[int, object], cts: np.ndarray) -> None:
        self._env, self._cts = env, cts

    def __getitem__(self, j: int) -> object:
        return self._env[int(self._cts[j])]
