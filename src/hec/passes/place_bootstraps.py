"""place-bootstraps: keep a slot program within one modulus chain by refreshing its values.

A program deeper than the chain a ring can hold gets OpenFHE bootstrapping: every value whose
next op would take it past the chain's last usable level is refreshed first (``bootstrap``, which
returns it at level ``lands``), every level after it is recomputed, and the level alignment of
joins (``level_reduce`` before an ``add`` or ``mul`` of two values) is redone.

Where. A bootstrap costs seconds (ring 2^16: 7-25 s measured) where the ops between two cost
milliseconds, so the pass minimises their number first: along a chain of layers, refreshing a
value as late as possible gives the fewest bootstraps (any placement needs a bootstrap within
every ``levels_between`` levels of work, and the latest one leaves the most levels to the work
after it). Then the levels the other ops run at: an op on fewer primes is cheaper, so each
bootstrap's result is dropped to the highest level the work up to the next bootstrap (or the
output) allows, its *slack*. Joins of a residual network are handled by the same rule (both
operands are brought to the deeper level, and a value too deep for the next op is refreshed);
that is the fewest bootstraps along every path, not a global optimum over the joins.

Range. OpenFHE bootstraps values within ±8 to 2e-4 but garbles ±128 (measured), and the slot
program does not know most values' ranges; it knows an activation's input is within about
[-1, 1] (lowering maps the polynomial's fitted interval there). A bootstrap the rule above puts
on another value (a map's output, an activation's output) is moved up to the nearest
activation input before it, where that still fits the chain; the report says which
bootstraps refresh a value of unknown range (``input_range``).

When. ``policy="auto"`` bootstraps only a program whose leveled parameters would need a ring
larger than 2^16 (the ring bootstrapping uses anyway): a shallow program is unchanged. ``"on"``
uses the bootstrapping chain for any program (bootstraps where it outgrows the chain),
``"off"`` never bootstraps.

Requires: a slot graph from ``lower-to-slots`` (``matvec`` ops not yet scheduled). Produces:
the same computation (the simulator's result is unchanged: a bootstrap is the identity on
values) with ``bootstrap`` ops; each records why it is there (``attrs["why"]``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from hec.backend_openfhe.params import (
    BOOTSTRAP_RING_DIM,
    BootstrapChain,
    bootstrap_chain,
    fits_leveled,
    program_depth,
)
from hec.errors import ParameterError
from hec.ir import CipherType, Graph, Op, Value
from hec.ir.core import op_def
from hec.ir.slot_ops import max_degree_for_depth
from hec.ir.types import type_as

__all__ = [
    "PlaceBootstraps",
    "BOOTSTRAP_MAX_POLY_DEPTH",
    "BOOTSTRAP_POLICIES",
    "TooDeepBetweenBootstraps",
    "bootstraps_of",
]

BOOTSTRAP_POLICIES = ("auto", "on", "off")
# The deepest activation polynomial that fits, with its layer's map, between two bootstraps at
# activation inputs at any slot count (``bootstrap_chain``: 9 levels between bootstraps of up to
# 128 slots, 7 up to 1,024, 5 above: 4 + 1)
BOOTSTRAP_MAX_POLY_DEPTH = 4


def _level(v: Value) -> int:
    return type_as(v.type, CipherType).level


def _need(op: Op) -> int:
    """Levels ``op`` takes its input down by, counting the rescale a product at scale Δ² is
    waiting for (``mul`` then ``rescale``: the product must be made where a level is left)."""
    t = type_as(op.result.type, CipherType)
    ins = [_level(v) for v in op.inputs if isinstance(v.type, CipherType)]
    return t.level - max(ins) + (t.scale_deg - 1)


@dataclass
class PlaceBootstraps:
    """Place ``bootstrap`` ops so that no value passes the chain's last usable level."""

    policy: str = "auto"
    scaling_bits: int = 40
    first_mod_bits: int = 60
    security: str = "HEStd_128_classic"
    name: ClassVar[str] = "place-bootstraps"
    dialect: ClassVar[str] = "slot"

    def run(self, graph: Graph) -> bool:
        if self.policy not in BOOTSTRAP_POLICIES:
            raise ParameterError(
                f"--bootstrap {self.policy!r} is not one of {', '.join(BOOTSTRAP_POLICIES)}"
            )
        if self.policy == "off" or any(op.kind == "bootstrap" for op in graph.ops):
            return False
        depth = program_depth(graph)
        if self.policy == "auto" and fits_leveled(
            depth, self.scaling_bits, self.first_mod_bits, self.security, BOOTSTRAP_RING_DIM
        ):
            return False
        chain = bootstrap_chain(type_as(graph.inputs[0].type, CipherType).slots, self.security)
        moved: dict[int, str] = {}
        first = _Releveled(graph, chain, {}, moved)
        for _ in range(8):  # each round moves bootstraps of unknown range to polynomial inputs
            more = {
                to: first.bootstraps_for[key]
                for to, key in _moves(graph, first.bootstraps).items()
                if to not in moved
            }
            if not more:
                break
            moved.update(more)
            first = _Releveled(graph, chain, {}, moved)
        if not first.bootstraps:
            graph.attrs["bootstrap"] = "chain"  # the bootstrapping chain, no bootstrap needed
            graph.become(first.graph)
            return True
        landing = {key: chain.lands + first.slack(op) for key, op in first.bootstraps.items()}
        second = _Releveled(graph, chain, landing, moved)
        best = second if len(second.bootstraps) == len(first.bootstraps) else first
        best.graph.attrs["bootstrap"] = "chain"
        graph.become(best.graph)
        return True


class TooDeepBetweenBootstraps(ParameterError):
    """An op needs more levels than a bootstrap leaves; ``max_poly_depth`` is the deepest
    activation polynomial that would fit with its layer's map (``hec.api.compile`` converts
    the model again with that cap when it chose the degrees itself)."""

    def __init__(self, message: str, max_poly_depth: int) -> None:
        super().__init__(message)
        self.max_poly_depth = max_poly_depth


def _within_unit(v: Value) -> bool:
    """Whether ``v`` is an activation's input, known to lie within about [-1, 1]: lowering
    folds the affine map onto a polynomial's fitted interval into the map before it (and a
    degree-2 polynomial's balanced product reads such inputs too)."""
    return bool(v.uses) and all(user.kind in ("poly", "mul") for user in v.uses)


def _moves(graph: Graph, bootstraps: dict[int, Op]) -> dict[int, int]:
    """Values to bootstrap instead of those in ``bootstraps`` whose range is unknown: the
    nearest activation input upstream (a few ops back along the first ciphertext input).

    OpenFHE bootstraps values within ±8 to 2e-4 and garbles ±128 (measured); a polynomial's
    input is within [-1, 1], an activation's output or a map's may be anything. Returns
    ``{value to bootstrap: value whose bootstrap it replaces}`` (original value numbers)."""
    values = list(graph.values())
    number = {id(v): k for k, v in enumerate(values)}
    out = {}
    for key in bootstraps:
        v = values[key]
        if _within_unit(v):
            continue
        for _ in range(6):
            op = v.producer
            if op is None or not op.inputs:
                break
            v = op.inputs[0]
            if _within_unit(v):
                out[number[id(v)]] = key
                break
    return out


def bootstraps_of(graph: Graph) -> Iterator[Op]:
    """The program's bootstrap ops, in order."""
    return (op for op in graph.ops if op.kind == "bootstrap")


class _Releveled:
    """``graph`` rebuilt with every level recomputed and bootstraps where a value would pass
    ``chain.max_level``; ``landing[key]`` raises the result level of the bootstrap of the
    original value number ``key`` (its slack)."""

    def __init__(
        self,
        graph: Graph,
        chain: BootstrapChain,
        landing: dict[int, int],
        moved: dict[int, str],
    ) -> None:
        self.chain = chain
        self.landing = landing
        self.graph = g = Graph(graph.name, graph.dialect)
        g.attrs = dict(graph.attrs)
        self.bootstraps: dict[int, Op] = {}  # original value number -> its bootstrap
        self.bootstraps_for: dict[int, str] = {}  # ... -> the op that needed it
        number = {id(v): k for k, v in enumerate(graph.values())}
        new: dict[int, Value] = {}
        for v in graph.inputs:
            new[id(v)] = g.add_input(v.name, v.type)
        for op in graph.ops:
            if op.kind == "level_reduce":  # level alignment: redone for the new levels
                new[id(op.result)] = new[id(op.inputs[0])]
                continue
            need = _need(op)
            ins = []
            for v in op.inputs:
                x, key = new[id(v)], number[id(v)]
                if (
                    not isinstance(x.type, CipherType)
                    or x.producer
                    and x.producer.kind == ("bootstrap")
                ):
                    ins.append(x)
                    continue
                why = None
                if key in moved:
                    why = (
                        f"moved here, to an activation's input (within about [-1, 1]), from before "
                        f"{moved[key]}, whose input's range is unknown"
                    )
                elif _level(x) + need > chain.max_level:
                    why = (
                        f"{op.kind} ({op.origin or 'no origin'}) needs {need} level(s) at "
                        f"level {_level(x)}; the chain ends at {chain.max_level}"
                    )
                if why is not None:
                    x = self._bootstrap(key, x, op, why)
                    new[id(v)] = x  # later readers take the refreshed value too
                ins.append(x)
            if sum(isinstance(x.type, CipherType) for x in ins) == 2:
                ins = self._aligned(ins, op.origin)
            rebuilt = Op(
                op.kind, ins, [r.type for r in op.results], op.attrs, None, op.origin,
                [r.name for r in op.results],
            )  # fmt: skip
            rebuilt.consts = dict(op.consts)
            rebuilt.results[0].type = op_def(g.dialect, op.kind).infer(rebuilt)[0]
            g.append(rebuilt)
            new[id(op.result)] = rebuilt.result
        g.outputs = [new[id(v)] for v in graph.outputs]
        self._check_outputs()

    def _bootstrap(self, key: int, x: Value, consumer: Op, why: str) -> Value:
        t = type_as(x.type, CipherType)
        if t.scale_deg != 1:  # a product waiting for its rescale: placed before the product
            raise ParameterError(
                f"{consumer.kind} ({consumer.origin}): no level left for a product; "
                "this program cannot be bootstrapped (please report it)"
            )
        level = self.landing.get(key, self.chain.lands)
        attrs = {"from": self.chain.max_level, "lands": self.chain.lands, "level": level}
        op = Op(
            "bootstrap",
            [x],
            [t.with_state(level, 1)],
            {**attrs, "why": why},
            None,
            f"bootstrap before {consumer.origin or consumer.kind}",
        )
        self.graph.append(op)
        self.bootstraps[key] = op
        self.bootstraps_for[key] = f"{consumer.kind} ({consumer.origin or 'no origin'})"
        return op.result

    def _aligned(self, ins: list[Value], origin: str) -> list[Value]:
        """Both operands at the deeper one's level (``level_reduce`` on the other)."""
        level = max(_level(x) for x in ins)
        out = []
        for x in ins:
            if _level(x) < level:
                t = type_as(x.type, CipherType)
                x = self.graph.add(
                    "level_reduce",
                    [x],
                    t.with_state(level, t.scale_deg),
                    {"levels": level - t.level},
                    origin=origin,
                )
            out.append(x)
        return out

    def _check_outputs(self) -> None:
        for v in self.graph.values():
            if isinstance(v.type, CipherType) and _level(v) > self.chain.max_level:
                # one op deeper than the whole chain between bootstraps: an activation whose
                # polynomial (with the map before it) takes more levels than a bootstrap leaves
                fits = max(self.chain.levels_between - 1, 1)
                raise TooDeepBetweenBootstraps(
                    f"{v.producer.origin if v.producer else v.name}: needs more levels than "
                    f"the {self.chain.levels_between} a bootstrap of {self.chain.slots} slots "
                    f"leaves; use activation polynomials of at most {fits} levels "
                    f"(--degree {max_degree_for_depth(fits)} or lower)",
                    fits,
                )

    def slack(self, boot: Op) -> int:
        """Levels the work after ``boot`` (up to the next bootstraps and the outputs) leaves
        unused: ``boot``'s result can start that much deeper."""
        deepest, todo, seen = _level(boot.result), [boot.result], set()
        while todo:
            v = todo.pop()
            for user in v.uses:
                if user.kind == "bootstrap" or id(user) in seen:
                    continue
                seen.add(id(user))
                deepest = max(deepest, _level(user.result))
                todo.append(user.result)
        return self.chain.max_level - deepest
