"""Evaluate a scheduled slot program on OpenFHE ciphertexts.

One call per slot op. Rotations of a ciphertext that is rotated more than once share one
hoisted decomposition (``EvalFastRotationPrecompute``); a ciphertext is dropped after its last
use; plaintext constants are encoded at the level where they are used and cached within a
memory budget, so a batch of inputs pays the encoding once. Needs evaluation keys only.

With ``blocks > 1`` (sample blocks) a ciphertext holds ``blocks`` samples in consecutive runs of
``slots`` slots, and every constant is tiled ``blocks`` times: a tiled vector is periodic in
``slots``, so rotating it by any amount equals rotating each block, and each block of a
block-local program computes its own sample.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import numpy as np

from hec.ir import Graph, Op

__all__ = ["OpenFHEExecutor", "openfhe_chebyshev", "PLAINTEXT_CACHE_BYTES"]

PLAINTEXT_CACHE_BYTES = 2 << 30  # encoded constants kept across evaluations (the rest re-encoded)


def openfhe_chebyshev(coeffs: tuple[float, ...]) -> list[float]:
    """OpenFHE's series is ``c0/2 + Σ c_k T_k``; ours (numpy's) is ``c0 + Σ c_k T_k``."""
    return [2.0 * coeffs[0], *map(float, coeffs[1:])]


ProgressFn = Callable[[int, int], None]


class OpenFHEExecutor:
    """Runs ``graph`` with crypto context ``cc`` (which must hold the evaluation keys)."""

    def __init__(
        self,
        cc,
        graph: Graph,
        depth: int,
        plaintext_cache_bytes: int = PLAINTEXT_CACHE_BYTES,
        blocks: int = 1,
    ) -> None:
        self.cc = cc
        self._blocks = blocks
        self.graph = graph
        self._depth = depth
        self._cyclotomic_order = cc.GetCyclotomicOrder()
        self._ring_dim = cc.GetRingDimension()
        self._cache: dict[tuple[int, str, int], object] = {}
        self._cache_budget = plaintext_cache_bytes
        self._last_use = graph.last_uses()
        self._rotations = Counter(id(op.inputs[0]) for op in graph.ops if op.kind == "rotate")

    def run(
        self, inputs: list, progress: ProgressFn | None = None, layer_seconds: list | None = None
    ) -> list:
        """Evaluate; ``layer_seconds`` (a list) receives the time of each report layer (runs of
        consecutive ops with one origin, as ``report.program_report`` groups them)."""
        env: dict[int, object] = {
            id(v): ct for v, ct in zip(self.graph.inputs, inputs, strict=True)
        }
        digits: dict[int, object] = {}
        keep = {id(v) for v in self.graph.outputs}
        n = len(self.graph.ops)
        clock = time.perf_counter()
        for i, op in enumerate(self.graph.ops):
            if layer_seconds is not None and i and op.origin != self.graph.ops[i - 1].origin:
                layer_seconds.append(time.perf_counter() - clock)
                clock = time.perf_counter()
            args = [env[id(v)] for v in op.inputs]
            if op.kind == "rotate" and self._rotations[id(op.inputs[0])] > 1:
                key = id(op.inputs[0])
                if key not in digits:
                    digits[key] = self.cc.EvalFastRotationPrecompute(args[0])
                out = self.cc.EvalFastRotation(
                    args[0], op.attrs["k"], self._cyclotomic_order, digits[key]
                )
            else:
                out = self._apply(op, i, args)
            if out.GetLevel() != op.result.type.level:  # the IR's levels are OpenFHE's
                raise RuntimeError(
                    f"{op.kind} ({op.origin}): OpenFHE is at level "
                    f"{out.GetLevel()}, the program expects "
                    f"{op.result.type.level}"
                )
            env[id(op.result)] = out
            for v in op.inputs:
                if self._last_use[id(v)] == i and id(v) not in keep:
                    env.pop(id(v), None)
                    digits.pop(id(v), None)
            if progress is not None:
                progress(i + 1, n)
        if layer_seconds is not None:
            layer_seconds.append(time.perf_counter() - clock)
        return [env[id(v)] for v in self.graph.outputs]

    def _apply(self, op: Op, i: int, args: list):
        cc, k = self.cc, op.kind
        if k == "rotate":
            return cc.EvalRotate(args[0], op.attrs["k"])
        if k == "mul_plain":
            return cc.EvalMult(args[0], self._plaintext(op, i, "p"))
        if k == "add_plain":
            return cc.EvalAdd(args[0], self._plaintext(op, i, "p"))
        if k == "add":
            return cc.EvalAdd(args[0], args[1])
        if k == "mul":
            return cc.EvalSquare(args[0]) if args[0] is args[1] else cc.EvalMult(*args)
        if k == "rescale":
            return cc.Rescale(args[0])
        if k == "level_reduce":
            return cc.LevelReduce(args[0], None, op.attrs["levels"])
        if k == "poly":
            return cc.EvalChebyshevSeries(args[0], openfhe_chebyshev(op.attrs["coeffs"]), -1, 1)
        raise ValueError(f"the OpenFHE backend cannot run slot op {k!r}")

    def _plaintext(self, op: Op, i: int, name: str):
        """Encode constant ``name`` of op ``i`` at its operand's level and scale degree."""
        t = op.inputs[0].type
        scale_deg = t.scale_deg if op.kind == "add_plain" else 1
        key = (i, name, t.level)
        pt = self._cache.get(key)
        if pt is None:
            values = np.tile(np.asarray(op.consts[name], dtype=np.float64), self._blocks).tolist()
            pt = self.cc.MakeCKKSPackedPlaintext(values, scale_deg, t.level)
            towers = self._depth + 1 - t.level  # one 64-bit word per coefficient per prime
            size = self._ring_dim * 8 * towers
            if size <= self._cache_budget:
                self._cache[key] = pt
                self._cache_budget -= size
        return pt
