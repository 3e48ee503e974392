"""Evaluate a scheduled slot program on OpenFHE ciphertexts.

One kernel call per slot op, through the slot dialect's table (``slot_kernels``, which the
generated ``openfhe_program.py`` copies). Rotations of a ciphertext that is rotated more than
once share one hoisted decomposition (``rotation_digits``); a ciphertext is dropped after its
last use (an addition whose first operand ends there adds into it in place); plaintext
constants are encoded at the level where they are used and cached within a memory budget, so a
batch of inputs pays the encoding once. Needs evaluation keys only.

With ``blocks > 1`` (sample blocks) a ciphertext holds ``blocks`` samples in consecutive runs of
``slots`` slots, and every constant is tiled ``blocks`` times: a tiled vector is periodic in
``slots``, so rotating it by any amount equals rotating each block, and each block of a
block-local program computes its own sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hec.backend_openfhe.kernels import encode
from hec.backend_openfhe.slot_kernels import SLOT_KERNELS, Plaintext, hoisted, rotation_digits
from hec.ir import CipherType, Graph, Op
from hec.ir.types import type_as

__all__ = ["OpenFHEExecutor", "PLAINTEXT_CACHE_BYTES", "plaintext_cache_budget"]

PLAINTEXT_CACHE_BYTES = 2 << 30  # encoded constants kept across evaluations (the rest re-encoded)


def plaintext_cache_budget(graph: Graph) -> int:
    """Bytes of encoded constants a server keeps for ``graph``: the program's
    ``plaintext_cache_bytes`` attribute (set under a memory limit), else the default."""
    return int(graph.attrs.get("plaintext_cache_bytes", PLAINTEXT_CACHE_BYTES))


# progress(done, total[, note]): ops done; a bootstrapping program adds a note at each bootstrap
ProgressFn = Callable[..., None]


def _bootstrap_note(done: int, total: int, elapsed: float, first: float) -> str:
    """``bootstrap k of n``, the time so far and, after the first, the time left estimated
    from the pace between bootstraps (a bootstrap and the layers up to the next: they
    dominate a bootstrapping program's time; the work before the first is not like them).
    ``first``: the time the first bootstrap started."""
    note = f"bootstrap {done + 1} of {total}, {elapsed:.0f} s elapsed"
    if done:
        note += f", ~{(elapsed - first) / done * (total - done):.0f} s left"
    return note


class _BootstrapPace:
    """The progress notes of a run's ``total`` bootstraps, in order (``note``: the time
    elapsed when the next one starts)."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.first = total, 0, 0.0

    def note(self, elapsed: float) -> str:
        if not self.done:
            self.first = elapsed
        note = _bootstrap_note(self.done, self.total, elapsed, self.first)
        self.done += 1
        return note


class OpenFHEExecutor:
    """Runs ``graph`` with crypto context ``cc`` (which must hold the evaluation keys)."""

    def __init__(
        self,
        cc,
        graph: Graph,
        depth: int,
        plaintext_cache_bytes: int | None = None,
        blocks: int = 1,
        load_keys: Callable[[int], None] | None = None,
    ) -> None:
        self.cc = cc
        # a grouped program (``group-keys``): called with an op's ``key_group`` before the
        # first op of each stretch that needs another group than the one loaded
        self._load_keys = load_keys
        self._loaded: int | None = None
        self._blocks = blocks
        self.graph = graph
        self._depth = depth
        self._ring_dim = cc.GetRingDimension()
        self._cache: dict[tuple[int, str, int], object] = {}
        # the budget ``within_memory`` chose for this program (``plaintext_cache_bytes``), or
        # the default
        if plaintext_cache_bytes is None:
            plaintext_cache_bytes = plaintext_cache_budget(graph)
        self._cache_budget = plaintext_cache_bytes
        self._last_use = graph.last_uses()
        self._hoisted = hoisted(graph)
        unknown = sorted({op.kind for op in graph.ops} - SLOT_KERNELS.keys())
        if unknown:
            raise ValueError(f"the OpenFHE backend cannot run slot ops {unknown}")

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
        protected = keep | {id(v) for v in self.graph.inputs}  # the caller's ciphertexts
        n = len(self.graph.ops)
        clock = start = time.perf_counter()
        # each evaluation loads its first group: another grouped program in this process
        # may have cleared OpenFHE's keys since the last one
        self._loaded = None
        pace = _BootstrapPace(sum(op.kind == "bootstrap" for op in self.graph.ops))
        for i, op in enumerate(self.graph.ops):
            if op.kind == "bootstrap" and progress is not None:
                progress(i, n, pace.note(time.perf_counter() - start))
            if layer_seconds is not None and i and op.origin != self.graph.ops[i - 1].origin:
                layer_seconds.append(time.perf_counter() - clock)
                clock = time.perf_counter()
            group = op.attrs.get("key_group")
            if group is not None and group != self._loaded and self._load_keys is not None:
                self._load_keys(group)
                self._loaded = group
            kernel = SLOT_KERNELS[op.kind]
            args: list[Any] = [env[id(v)] for v in op.inputs]
            for a in kernel.arguments(op):
                args.append(self._plaintext(op, i, a) if isinstance(a, Plaintext) else a)
            if op.kind == "rotate" and id(op.inputs[0]) in self._hoisted:
                key = id(op.inputs[0])
                if key not in digits:
                    digits[key] = rotation_digits(self.cc, args[0])
                args.append(digits[key])
            lhs = id(op.inputs[0])
            if op.kind == "add" and self._last_use[lhs] == i and lhs not in protected:
                # the first operand ends here: the sum overwrites it (no new ciphertext;
                # BSGS accumulates hundreds of products a map, 0.13 instead of 0.17 ms each)
                self.cc.EvalAddInPlace(args[0], args[1])
                out = args[0]
            else:
                out = kernel.run(self.cc, *args)
            level = type_as(op.result.type, CipherType).level
            if out.GetLevel() != level:  # the IR's levels are OpenFHE's
                raise RuntimeError(
                    f"{op.kind} ({op.origin}): OpenFHE is at level "
                    f"{out.GetLevel()}, the program expects {level}"
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

    def encode_constants(self) -> int:
        """Encode every plaintext constant now, as far as the cache budget holds them (a
        server's set-up: the first evaluation then pays no encoding); returns how many."""
        before = len(self._cache)
        for i, op in enumerate(self.graph.ops):
            for a in SLOT_KERNELS[op.kind].arguments(op):
                # one the cache cannot keep is encoded when its op runs, not here too
                if isinstance(a, Plaintext) and self._encoded_bytes(a) <= self._cache_budget:
                    self._plaintext(op, i, a)
        return len(self._cache) - before

    def _encoded_bytes(self, p: Plaintext) -> int:
        towers = self._depth + 1 - p.level  # one 64-bit word per coefficient per prime
        return self._ring_dim * 8 * towers

    def _plaintext(self, op: Op, i: int, p: Plaintext):
        """Encode constant ``p`` of op ``i`` (tiled to the sample blocks), cached."""
        key = (i, p.const, p.level)
        pt = self._cache.get(key)
        if pt is None:
            pt = encode(self.cc, np.tile(op.consts[p.const], self._blocks), p.scale_deg, p.level)
            size = self._encoded_bytes(p)
            if size <= self._cache_budget:
                self._cache[key] = pt
                self._cache_budget -= size
        return pt
