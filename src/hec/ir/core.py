"""The graph both IRs share: an ordered block of ops over SSA values.

A ``Value`` knows its type, its producer and its uses; an ``Op`` has a kind, inputs, one or more
results, attributes (plain hashable Python values) and constant tensors (numpy, owned by the op).
Which kinds exist and how they type-check is declared in ``tensor_ops`` and ``slot_ops`` through
``register_op``; this module knows none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hec.ir.types import BatchCipherType, CipherType, TensorType, Type

__all__ = ["Value", "Op", "Graph", "OpDef", "register_op", "op_def", "op_kinds", "VerifyError"]


class VerifyError(Exception):
    """The IR is malformed. Always a compiler bug, never a user error."""


@dataclass(frozen=True)
class OpDef:
    """What the verifier knows of an op kind.

    ``infer`` returns the result types the op must have given its inputs, attributes and
    constants (fields it cannot decide, such as a ciphertext's layout, are copied from the op's
    declared result type).
    """

    kind: str
    dialect: str  # "tensor", "slot" or "batch"
    arity: int  # number of inputs, -1 for variadic
    infer: Callable[[Op], list[Type]]


_REGISTRY: dict[tuple[str, str], OpDef] = {}
DIALECTS = ("tensor", "slot", "batch")


def register_op(kind: str, dialect: str, arity: int) -> Callable:
    """Decorator registering ``infer`` for an op kind of a dialect."""

    def wrap(infer: Callable[[Op], list[Type]]) -> Callable[[Op], list[Type]]:
        if (dialect, kind) in _REGISTRY:
            raise ValueError(f"op kind {dialect}.{kind} registered twice")
        _REGISTRY[dialect, kind] = OpDef(kind, dialect, arity, infer)
        return infer

    return wrap


def op_kinds(dialect: str) -> frozenset[str]:
    """Every op kind registered in ``dialect`` (backends check they cover them all)."""
    return frozenset(kind for d, kind in _REGISTRY if d == dialect)


def op_def(dialect: str, kind: str) -> OpDef:
    try:
        return _REGISTRY[dialect, kind]
    except KeyError:
        raise VerifyError(f"unknown op kind {kind!r} in the {dialect} dialect") from None


class Value:
    """An SSA value: defined once (by an op or as a graph input), used by any number of ops."""

    __slots__ = ("name", "type", "producer", "uses")

    def __init__(self, name: str, type: Type, producer: Op | None = None) -> None:
        self.name = name
        self.type = type
        self.producer = producer
        self.uses: list[Op] = []

    @property
    def shape(self) -> tuple[int, ...]:
        t = self.type
        if isinstance(t, TensorType | BatchCipherType):
            return t.shape
        if isinstance(t, CipherType) and t.layout is not None:
            return t.layout.shape
        raise AttributeError(f"value {self.name} holds no tensor")

    def __repr__(self) -> str:
        return f"Value({self.name}: {self.type})"


class Op:
    """One operation. ``origin`` names the ONNX node(s) it came from, for errors and reports."""

    __slots__ = ("kind", "inputs", "results", "attrs", "consts", "origin")

    def __init__(
        self,
        kind: str,
        inputs: Iterable[Value],
        result_types: Iterable[Type],
        attrs: Mapping[str, Any] | None = None,
        consts: Mapping[str, np.ndarray] | None = None,
        origin: str = "",
        result_names: Iterable[str] | None = None,
    ) -> None:
        self.kind = kind
        self.inputs = list(inputs)
        types = list(result_types)
        names = list(result_names) if result_names is not None else [""] * len(types)
        self.results = [Value(n, t, self) for n, t in zip(names, types, strict=True)]
        self.attrs = dict(attrs or {})
        self.consts: MutableMapping[str, np.ndarray] = {
            k: np.asarray(v) for k, v in (consts or {}).items()
        }
        self.origin = origin
        for v in self.inputs:
            v.uses.append(self)

    @property
    def result(self) -> Value:
        if len(self.results) != 1:
            raise VerifyError(f"{self.kind} has {len(self.results)} results, not one")
        return self.results[0]

    def __repr__(self) -> str:
        return f"Op({self.kind}, origin={self.origin!r})"


class Graph:
    """An ordered block of ops in SSA form with typed inputs and outputs, and attributes.

    Every op of a graph belongs to its ``dialect``: ``tensor`` (close to ONNX), ``slot`` (close
    to CKKS, one sample per ciphertext) or ``batch`` (tensors of ciphertexts, one sample per
    slot); lowering builds a new slot or batch graph from a tensor graph.
    """

    def __init__(self, name: str = "main", dialect: str = "tensor") -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}")
        self.name = name
        self.dialect = dialect
        self.inputs: list[Value] = []
        self.ops: list[Op] = []
        self.outputs: list[Value] = []
        # decisions recorded on the whole program (plain hashable values, like op attributes)
        self.attrs: dict[str, Any] = {}

    # -- building -------------------------------------------------------------------------
    def add_input(self, name: str, type: Type) -> Value:
        v = Value(name, type)
        self.inputs.append(v)
        return v

    def append(self, op: Op) -> Op:
        self.ops.append(op)
        return op

    def add(
        self,
        kind: str,
        inputs: Iterable[Value],
        result_type: Type,
        attrs: Mapping[str, Any] | None = None,
        consts: Mapping[str, np.ndarray] | None = None,
        origin: str = "",
        name: str = "",
    ) -> Value:
        """Append a single-result op and return its result."""
        op = Op(kind, inputs, [result_type], attrs, consts, origin, [name])
        return self.append(op).result

    # -- rewriting ------------------------------------------------------------------------
    def replace_all_uses_with(self, old: Value, new: Value) -> None:
        for op in old.uses:
            op.inputs = [new if v is old else v for v in op.inputs]
            new.uses.append(op)
        old.uses = []
        self.outputs = [new if v is old else v for v in self.outputs]

    def erase(self, op: Op) -> None:
        """Remove an op whose results are unused."""
        for r in op.results:
            if r.uses or r in self.outputs:
                raise VerifyError(f"cannot erase {op.kind} ({op.origin}): its result is used")
        for v in op.inputs:
            v.uses.remove(op)
        self.ops.remove(op)

    def replace_op(self, op: Op, new_ops: list[Op], new_result: Value) -> None:
        """Splice ``new_ops`` (already built on ``op``'s inputs) in place of ``op``."""
        i = self.ops.index(op)
        self.replace_all_uses_with(op.result, new_result)
        for v in op.inputs:
            v.uses.remove(op)
        self.ops[i : i + 1] = new_ops

    def become(self, other: Graph) -> None:
        """Take over ``other``'s contents (how a conversion pass replaces the whole program)."""
        self.name, self.dialect, self.attrs = other.name, other.dialect, other.attrs
        self.inputs, self.ops, self.outputs = other.inputs, other.ops, other.outputs

    def clone(self) -> Graph:
        """A structural copy; constant arrays are shared (passes never mutate them in place)."""
        g = Graph(self.name, self.dialect)
        g.attrs = dict(self.attrs)
        vmap: dict[int, Value] = {}
        for v in self.inputs:
            vmap[id(v)] = g.add_input(v.name, v.type)
        for op in self.ops:
            new = Op(
                op.kind,
                [vmap[id(v)] for v in op.inputs],
                [r.type for r in op.results],
                op.attrs,
                None,
                op.origin,
                [r.name for r in op.results],
            )
            new.consts = dict(op.consts)
            g.append(new)
            for r, nr in zip(op.results, new.results, strict=True):
                vmap[id(r)] = nr
        g.outputs = [vmap[id(v)] for v in self.outputs]
        return g

    # -- queries --------------------------------------------------------------------------
    def values(self) -> Iterator[Value]:
        yield from self.inputs
        for op in self.ops:
            yield from op.results

    def last_uses(self) -> dict[int, int]:
        """``id(value) → index of the last op reading it`` (values never read are absent).

        Executors drop a value after its last use; graph outputs must be kept regardless.
        """
        last: dict[int, int] = {}
        for i, op in enumerate(self.ops):
            for v in op.inputs:
                last[id(v)] = i
        return last

    def to_networkx(self):  # -> networkx.DiGraph, imported lazily
        """Dataflow view (nodes are ops, keyed by position) for analyses such as depth."""
        import networkx as nx

        g = nx.DiGraph()
        index = {id(op): i for i, op in enumerate(self.ops)}
        for i, op in enumerate(self.ops):
            g.add_node(i, op=op)
            for v in op.inputs:
                if v.producer is not None:
                    g.add_edge(index[id(v.producer)], i)
        return g

    # -- checking -------------------------------------------------------------------------
    def verify(self) -> None:
        """Check SSA form, use lists, op arity and result types; raise ``VerifyError``."""
        defined: set[int] = {id(v) for v in self.inputs}
        for v in self.inputs:
            if v.producer is not None:
                raise VerifyError(f"graph input {v.name} has a producer")
        for op in self.ops:
            d = op_def(self.dialect, op.kind)
            where = f"{op.kind} ({op.origin or 'no origin'})"
            if d.arity >= 0 and len(op.inputs) != d.arity:
                raise VerifyError(f"{where}: {len(op.inputs)} inputs, expected {d.arity}")
            for v in op.inputs:
                if id(v) not in defined:
                    raise VerifyError(f"{where}: input {v.name or v} used before definition")
                if op not in v.uses:
                    raise VerifyError(f"{where}: use list of {v.name or v} misses it")
            expected = d.infer(op)
            for r, t in zip(op.results, expected, strict=True):
                if r.producer is not op:
                    raise VerifyError(f"{where}: result's producer is wrong")
                if r.type != t:
                    raise VerifyError(f"{where}: result type {r.type}, expected {t}")
                if id(r) in defined:
                    raise VerifyError(f"{where}: result defined twice")
                defined.add(id(r))
        for v in self.values():
            for user in v.uses:
                if v not in user.inputs:
                    raise VerifyError(f"stale use of {v.name or v} by {user.kind}")
        for v in self.outputs:
            if id(v) not in defined:
                raise VerifyError(f"graph output {v.name or v} is not defined")

    def __str__(self) -> str:
        from hec.ir.printer import print_graph

        return print_graph(self)
