"""Evaluate a batch program on OpenFHE, one element ciphertext at a time, in schedule order.

Each task computes one ciphertext: a row of a ``weighted_sum`` is a multiply-accumulate loop
(``EvalMult`` by a scalar, ``EvalAddInPlace``, one rescale), a row of a ``signed_sum`` additions
and subtractions, element-wise ops one call each. Not ``EvalLinearWSum``: it clones every input
before summing, which for a dense row of 400 inputs holds 400 extra ciphertexts (1.8 GB at ring
2^15) for no gain in time (measured); the loop holds two. A ciphertext is dropped as soon as
its last reader has run (``Schedule.free_after``), and an input ciphertext is taken from its
source only just before its first reader (``Schedule.load_before``): with a source that
encrypts or reads on demand (``Client.element_encryptor``), the inputs are never all alive at
once. That is what keeps thousands of ciphertexts within memory. Plain scalars are passed as
Python floats: OpenFHE encodes them on the fly, so no plaintext is stored.
Needs the relinearization key only (no rotation keys exist in batch packing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from hec.backend_openfhe.batch_schedule import ElementGraph, Schedule, late_inputs
from hec.backend_openfhe.execute import openfhe_chebyshev
from hec.ir import Op

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
            if len(cts) != v.type.size:
                raise ValueError(f"input {v.name}: {len(cts)} ciphertexts for {v.type.size}")

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
        op = self.eg.program.ops[i]
        e = int(self.eg.element_of[ct])
        args = [env[int(x[e])] for x in self._operands[i]] if op.kind not in _ROWS else None
        cc = self.cc
        if op.kind == "weighted_sum":
            return self._weighted_row(op, e, self._operands[i][0], env)
        if op.kind == "signed_sum":
            return self._signed_row(op, e, self._operands[i][0], env)
        assert args is not None
        if op.kind == "mul":
            same = self._operands[i][0][e] == self._operands[i][1][e]
            return cc.EvalSquare(args[0]) if same else cc.EvalMult(args[0], args[1])
        if op.kind == "mul_norelin":
            return cc.EvalMultNoRelin(args[0], args[1])
        if op.kind == "relinearize":
            return cc.Relinearize(args[0])
        if op.kind == "rescale":
            return cc.Rescale(args[0])
        if op.kind == "add":
            return cc.EvalAdd(args[0], args[1])
        if op.kind == "level_reduce":
            return cc.LevelReduce(args[0], None, op.attrs["levels"])
        if op.kind == "poly":
            return cc.EvalChebyshevSeries(args[0], openfhe_chebyshev(op.attrs["coeffs"]), -1, 1)
        raise ValueError(f"the OpenFHE backend cannot run batch op {op.kind!r}")

    def _row(self, op: Op, r: int) -> tuple[np.ndarray, np.ndarray, float]:
        c = op.consts
        lo, hi = c["indptr"][r], c["indptr"][r + 1]
        return c["indices"][lo:hi], c["weights"][lo:hi], float(c["bias"][r])

    def _weighted_row(self, op: Op, r: int, ins: np.ndarray, env: dict[int, object]):
        cols, weights, bias = self._row(op, r)
        cc = self.cc
        if len(cols) == 0:  # a constant row: 0 · x keeps the level and scale of its siblings
            out = cc.EvalMult(env[int(ins[0])], 0.0)
        else:
            out = cc.EvalMult(env[int(ins[cols[0]])], float(weights[0]))
            for j, w in zip(cols[1:].tolist(), weights[1:].tolist(), strict=True):
                cc.EvalAddInPlace(out, cc.EvalMult(env[int(ins[j])], w))
        cc.RescaleInPlace(out)  # FIXEDMANUAL: the products are at scale Δ²
        return cc.EvalAdd(out, bias) if bias else out

    def _signed_row(self, op: Op, r: int, ins: np.ndarray, env: dict[int, object]):
        cols, signs, bias = self._row(op, r)
        cc = self.cc
        if len(cols) == 0:
            x = env[int(ins[0])]
            out = cc.EvalSub(x, x)
        else:
            first = env[int(ins[cols[0]])]
            out = first if signs[0] > 0 else cc.EvalNegate(first)
            for j, s in zip(cols[1:], signs[1:], strict=True):
                out = (cc.EvalAdd if s > 0 else cc.EvalSub)(out, env[int(ins[j])])
        return cc.EvalAdd(out, bias) if bias else out


_ROWS = ("weighted_sum", "signed_sum")
