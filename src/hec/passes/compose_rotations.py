"""compose-rotations: rotate by powers of two only, so the client makes fewer rotation keys.

Every rotation key is as large as a ciphertext times the key-switching digits (6-28 MB at rings
2^14-2^15), and a program needs one per distinct rotation amount: hundreds of MB to GB. With
``basis="pow2"`` each rotation by ``k`` that is not ``±2^i`` becomes a chain of rotations by
the signed powers of two of ``k``'s non-adjacent form (the fewest non-zero signed binary
digits), largest first, so at most ``2·log2(slots)`` keys remain. Chains from the same
ciphertext share their common prefixes (rotations by 5 = 4 + 1 and 6 = 4 + 2 compute
``rot(x, 4)`` once), and the backend still hoists several rotations of one ciphertext.
The price is extra rotations (key switches): the report and the benchmark show both sides.

Rotations compose exactly: ``rot(rot(x, a), b) = rot(x, a + b)``, on ``slots`` slots and on
sample-block rows alike (block-local amounts are exact shifts and stay exact).

Preserves: the slot function, exactly. Requires: a scheduled slot graph (no ``matvec``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from hec.errors import ParameterError
from hec.ir import CipherType, Graph, Op, Value
from hec.ir.slot_ops import rotation_amounts
from hec.ir.types import type_as
from hec.passes.schedule_rotations import signed_rotation

__all__ = ["ComposeRotations", "naf_steps", "ROTATION_KEY_BASES"]

ROTATION_KEY_BASES = ("all", "pow2")


def naf_steps(k: int) -> list[int]:
    """``k`` as signed powers of two (non-adjacent form), largest magnitude first."""
    sign, n, steps, bit = (1 if k > 0 else -1), abs(k), [], 0
    while n:
        if n & 1:
            digit = 2 - (n & 3)  # +1 if n = 1 (mod 4), -1 if n = 3 (mod 4)
            steps.append(sign * digit * (1 << bit))
            n -= digit
        n >>= 1
        bit += 1
    return steps[::-1]


def _is_pow2(k: int) -> bool:
    return k != 0 and abs(k) & (abs(k) - 1) == 0


@dataclass(frozen=True)
class ComposeRotations:
    """Replace rotations outside the key basis by chains of rotations inside it.

    Args:
        basis: ``"pow2"`` (keys for ``±2^i`` only) or ``"all"`` (nothing to do).
        block_local: amounts are exact shifts (sample blocks); otherwise they are taken modulo
            the slot count, and a step that is a whole turn is dropped.
        max_keys: a cap on the number of keys instead of composing everything: amounts keep
            their own key, most rotations saved first, as long as they and the powers of two
            the others need stay within the cap (``basis`` is then ignored).
    """

    basis: str = "pow2"
    block_local: bool = False
    max_keys: int | None = None
    name: ClassVar[str] = "compose-rotations"
    dialect: ClassVar[str] = "slot"

    def run(self, graph: Graph) -> bool:
        if self.basis not in ROTATION_KEY_BASES:
            raise ParameterError(
                f"rotation key basis {self.basis!r} is not one of {ROTATION_KEY_BASES}"
            )
        if self.basis == "all" and self.max_keys is None:
            return False
        direct = self._direct_keys(graph) if self.max_keys is not None else set()
        self._split_sums(graph, direct)
        ops: list[Op] = []
        made: dict[tuple[int, int], Value] = {}  # (source, amount so far) -> rotated value
        changed = False
        for op in graph.ops:
            if op.kind != "rotate" or _is_pow2(op.attrs["k"]) or op.attrs["k"] in direct:
                ops.append(op)
                continue
            src, t = op.inputs[0], op.result.type
            assert isinstance(t, CipherType)
            cur, done = src, 0
            for step in self._steps(op.attrs["k"], t.slots):
                done += step
                if (id(src), done) not in made:
                    new = Op("rotate", [cur], [t], {"k": step}, origin=op.origin)
                    ops.append(new)
                    made[id(src), done] = new.result
                cur = made[id(src), done]
            graph.replace_all_uses_with(op.result, cur)
            src.uses.remove(op)
            changed = True
        graph.ops = ops
        return changed

    @staticmethod
    def _split_sums(graph: Graph, direct: set[int]) -> None:
        """A ``rotate_sum`` with an amount to compose becomes its rotations and additions
        (a chain's intermediate rotations must be complete key switches)."""
        ops: list[Op] = []
        for op in graph.ops:
            ks = op.attrs.get("ks", ()) if op.kind == "rotate_sum" else ()
            if all(_is_pow2(k) or k in direct for k in ks):
                ops.append(op)
                continue
            t = op.result.type
            total: Value | None = None
            for x, k in zip(op.inputs, ks, strict=True):
                x.uses.remove(op)
                term = Op("rotate", [x], [t], {"k": k}, origin=op.origin)
                ops.append(term)
                if total is not None:
                    ops.append(Op("add", [total, term.result], [t], origin=op.origin))
                    total = ops[-1].result
                else:
                    total = term.result
            assert total is not None
            total.type = op.result.type
            graph.replace_all_uses_with(op.result, total)
        graph.ops = ops

    def _direct_keys(self, graph: Graph) -> set[int]:
        """The amounts that keep their own key under ``max_keys`` (greedy by rotations saved)."""
        rotations = [op for op in graph.ops if rotation_amounts(op)]
        uses = Counter(k for op in rotations for k in rotation_amounts(op))
        slots = {type_as(op.result.type, CipherType).slots for op in rotations}
        width = max(slots, default=1)
        steps = {k: set(self._steps(k, width)) if not _is_pow2(k) else {k} for k in uses}

        def keys(direct: set[int]) -> int:
            return len(direct | set().union(*(steps[k] for k in uses if k not in direct)))

        assert self.max_keys is not None
        if len(uses) <= self.max_keys:
            return set(uses)
        direct: set[int] = set()
        if keys(direct) > self.max_keys:
            raise ParameterError(
                f"the program's rotations need at least {keys(direct)} keys (powers of two), "
                f"more than --max-rotation-keys {self.max_keys}"
            )
        saved = sorted(uses, key=lambda k: (-(len(steps[k]) - 1) * uses[k], abs(k)))
        for k in saved:
            if len(steps[k]) > 1 and keys(direct | {k}) <= self.max_keys:
                direct.add(k)
        return direct

    def _steps(self, k: int, slots: int) -> list[int]:
        if self.block_local:
            return naf_steps(k)
        steps = [signed_rotation(s, slots) for s in naf_steps(signed_rotation(k, slots))]
        return [s for s in steps if s]
