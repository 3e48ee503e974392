"""Graphs from their text form: what ``print_graph`` writes, in every dialect, read back.

``parse_graph(text, constants=None, structure_only=False)`` returns the graph, verified; bad
text raises ``ParseError`` with a one-line message naming the line and what was expected there.

*Exact text* (``print_graph(graph, exact=True)``) holds everything: constants inline, long
attribute tuples in full, floats as ``repr``, gathered layouts with their source map. Parsing it
gives a graph that computes the same thing and prints back to the same text.

*Default text* (golden dumps, ``program.txt``) prints a digest in place of each constant, long
attribute tuple and gathered layout's source map. Each digest is looked up in ``constants``, a
mapping from the digest to the array, tuple or source map it stands for (``digest_table(graph)``
in ``hec.ir.printer`` builds it for a graph; ``digest`` over a program's arrays covers its
constants). A digest absent from it is a ``ParseError``, unless ``structure_only=True``: then a
stand-in of the printed shape takes its place (a zero array of the printed dtype, a tuple of
zeros, a source map using the printed number of slots) and, when ``constants`` is a ``dict``, is
added to it under that digest. ``print_graph(graph, digests=constants)`` then prints each
stand-in as the digest it stands for, so a dump read for its structure prints back unchanged.
Stand-ins hold no real values, so an op reading one is taken as typed where the verifier's rules
read values that zeros do not satisfy (a sparse matrix's row pointers); the rest is checked.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np

from hec.errors import ParseError
from hec.ir.core import Graph, Op, Value, VerifyError, op_def
from hec.ir.types import BatchCipherType, CipherType, Layout, TensorType, Type

__all__ = ["parse_graph", "ParseError"]

_DIMS = r"(scalar|\d+(?:x\d+)*)"
_HEADER = re.compile(r"(tensor|slot|batch) graph ([^(]*)\(")
_REF = re.compile(r"%\w+")
_KEY = re.compile(r"[A-Za-z_][\w.]*")
_NUMBER = re.compile(r"[-+]?(?:inf|nan|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
_INT = re.compile(r"[-+]?\d+")
_LONG = re.compile(r"(\d+) items\]#([0-9a-f]{8})")
_TENSOR = re.compile(rf"tensor<{_DIMS}x(\w+)>")
_CTENSOR = re.compile(
    rf"ctensor<{_DIMS}, batch=(\d+), level=(\d+), scale=Δ\^(\d+)(?:, parts=(\d+))?>"
)
_CIPHER = re.compile(r"cipher<(\d+)")
_STATE = re.compile(r", level=(\d+), scale=Δ\^(\d+)>")
_LAYOUT = re.compile(r", (\w+)<(\d+(?:x\d+)*)?")
_USED = re.compile(r", (\d+) slots used>#([0-9a-f]{8})")
_CONST = re.compile(rf"=([a-z])(\d+)\[{_DIMS}\]")
_DIGEST = re.compile(r"#([0-9a-f]{8})")


def _dims(text: str | None) -> tuple[int, ...]:
    return () if text in (None, "", "scalar") else tuple(int(d) for d in text.split("x"))


class _Line:
    """A cursor over one line of text; every failure names the line and what was expected."""

    def __init__(self, text: str, number: int) -> None:
        self.text, self.number, self.pos = text, number, 0

    def error(self, expected: str) -> ParseError:
        rest = self.text[self.pos : self.pos + 24]
        found = repr(rest) if rest else "the end of the line"
        return ParseError(f"line {self.number}: expected {expected}, found {found}")

    def take(self, literal: str) -> bool:
        if self.text.startswith(literal, self.pos):
            self.pos += len(literal)
            return True
        return False

    def expect(self, literal: str) -> None:
        if not self.take(literal):
            raise self.error(repr(literal))

    def match(self, pattern: re.Pattern[str], expected: str) -> re.Match[str]:
        m = pattern.match(self.text, self.pos)
        if m is None:
            raise self.error(expected)
        self.pos = m.end()
        return m

    def peek(self, pattern: re.Pattern[str]) -> bool:
        return pattern.match(self.text, self.pos) is not None

    def rest(self) -> str:
        text, self.pos = self.text[self.pos :], len(self.text)
        return text

    def end(self) -> None:
        if self.pos != len(self.text):
            raise self.error("the end of the line")


class _Parser:
    def __init__(self, constants: Mapping[str, Any] | None, structure_only: bool) -> None:
        # the caller's dict itself, so that stand-ins reach it
        self.known = constants if isinstance(constants, dict) else dict(constants or {})
        self.structure_only = structure_only
        self.values: dict[str, Value] = {}
        self.sources: set[tuple[int, ...]] = set()
        self.invented: set[str] = set()  # digests given a stand-in
        self.reads_stand_in = False  # whether the line being read uses one

    # -- digests --------------------------------------------------------------------------
    def lookup(self, line: _Line, key: str, what: str, stand_in: Callable[[], Any]) -> Any:
        """What digest ``key`` stands for, or (structure only) a stand-in remembered under it."""
        if key in self.known:
            self.reads_stand_in |= key in self.invented
            return self.known[key]
        if not self.structure_only:
            raise ParseError(
                f"line {line.number}: {what} #{key} is not among the constants given "
                "(pass them, or structure_only=True to read the structure alone)"
            )
        self.known[key] = stand_in()
        self.invented.add(key)
        self.reads_stand_in = True
        return self.known[key]

    # -- attribute values -----------------------------------------------------------------
    def value(self, line: _Line) -> Any:
        if line.take("["):
            if line.peek(_LONG):
                m = line.match(_LONG, "")
                n = int(m[1])
                v = self.lookup(line, m[2], "attribute tuple", partial(tuple, [0] * n))
                return v if isinstance(v, tuple) else _tuple(np.asarray(v).tolist())
            items: list[Any] = []
            if not line.take("]"):
                items.append(self.value(line))
                while line.take(", "):
                    items.append(self.value(line))
                line.expect("]")
            return tuple(items)
        for word, v in (("None", None), ("True", True), ("False", False)):
            if line.take(word):
                return v
        if line.text[line.pos : line.pos + 1] in ("'", '"'):
            return _string(line)
        text = line.match(_NUMBER, "a value (number, string, list, True, False or None)")[0]
        return int(text) if _INT.fullmatch(text) else float(text)

    def attrs(self, line: _Line) -> dict[str, Any]:
        line.expect("{")
        attrs: dict[str, Any] = {}
        while True:
            key = line.match(_KEY, "an attribute name")[0]
            line.expect("=")
            attrs[key] = self.value(line)
            if line.take("}"):
                return attrs
            line.expect(", ")

    # -- types ----------------------------------------------------------------------------
    def type(self, line: _Line) -> Type:
        if line.peek(_TENSOR):
            m = line.match(_TENSOR, "")
            return TensorType(_dims(m[1]), m[2])
        if line.peek(_CTENSOR):
            m = line.match(_CTENSOR, "")
            parts = int(m[5]) if m[5] else 2
            return BatchCipherType(_dims(m[1]), int(m[2]), int(m[3]), int(m[4]), parts)
        slots = int(line.match(_CIPHER, "a type (tensor<...>, cipher<...> or ctensor<...>)")[1])
        layout = self.layout(line, slots) if line.peek(_LAYOUT) else None
        m = line.match(_STATE, "', level=<n>, scale=Δ^<n>>'")
        return CipherType(slots, int(m[1]), int(m[2]), layout)

    def layout(self, line: _Line, slots: int) -> Layout:
        m = line.match(_LAYOUT, "")
        kind, shape = m[1], _dims(m[2])
        source: Any = None
        if line.take(", source="):
            source = self.value(line)
            line.expect(">")
        elif line.peek(_USED):
            used = line.match(_USED, "")
            n, key = int(used[1]), used[2]
            stand_in = partial(self.stand_in_source, shape, slots, n)
            source = self.lookup(line, key, "layout", stand_in)
            source = source if isinstance(source, tuple) else _tuple(np.asarray(source).tolist())
        else:
            line.expect(">")
        try:
            return Layout(shape, slots, kind, source)
        except ValueError as e:
            raise ParseError(f"line {line.number}: {e}") from None

    def stand_in_source(self, shape: tuple[int, ...], slots: int, used: int) -> tuple[int, ...]:
        """A source map using ``used`` slots, unlike every other stand-in (they stay distinct)."""
        size = max(math.prod(shape), 1)
        base = [i % size for i in range(used)] + [-1] * (slots - used)
        for k in range(max(slots, 1)):
            source = tuple(base[k:] + base[:k])
            if source not in self.sources:
                break
        self.sources.add(source)
        return source

    # -- constants ------------------------------------------------------------------------
    def const(self, line: _Line) -> np.ndarray:
        m = line.match(_CONST, "'=' and a constant such as f64[4x8]")
        dtype, shape = np.dtype(f"{m[1]}{int(m[2]) // 8}"), _dims(m[3])
        if line.take("{"):
            close = line.text.find("}", line.pos)
            if close < 0:
                raise line.error("'}' closing the constant's values")
            body = line.text[line.pos : close]
            line.pos = close + 1
            items = body.split(", ") if body else []
            if len(items) != math.prod(shape):
                raise ParseError(
                    f"line {line.number}: {len(items)} values for a constant of shape {shape}"
                )
            convert: dict[str, Callable[[str], Any]] = {
                "b": {"True": True, "False": False}.__getitem__,
                "f": float,
            }
            try:
                values = [convert.get(dtype.kind, int)(s) for s in items]
                return np.array(values, dtype=dtype).reshape(shape)
            except (KeyError, ValueError):
                raise line.error(f"{dtype} values") from None
        key = line.match(_DIGEST, "'#<digest>' or '{values}'")[1]
        arr = np.asarray(self.lookup(line, key, "constant", partial(np.zeros, shape, dtype)))
        if arr.shape != shape:
            raise ParseError(f"line {line.number}: constant #{key} has shape {arr.shape}")
        return arr if arr.dtype == dtype else arr.astype(dtype)

    # -- lines ----------------------------------------------------------------------------
    def ref(self, line: _Line) -> Value:
        name = line.match(_REF, "a value such as %3")[0]
        if name not in self.values:
            raise ParseError(f"line {line.number}: {name} is used before it is defined")
        return self.values[name]

    def define(self, line: _Line, name: str, value: Value) -> None:
        if name in self.values:
            raise ParseError(f"line {line.number}: {name} is defined twice")
        self.values[name] = value

    def header(self, line: _Line) -> Graph:
        m = line.match(_HEADER, "'<dialect> graph <name>('")
        graph = Graph(m[2], m[1])
        if not line.take(")"):
            while True:
                name = line.match(_REF, "an input such as %0")[0]
                line.expect(": ")
                self.define(line, name, graph.add_input(name, self.type(line)))
                if line.take(")"):
                    break
                line.expect(", ")
        if line.take(" attributes "):
            graph.attrs = self.attrs(line)
        line.expect(" {")
        line.end()
        return graph

    def op(self, line: _Line, graph: Graph) -> None:
        self.reads_stand_in = False
        names = [line.match(_REF, "a result such as %3 or 'return'")[0]]
        while line.take(", "):
            names.append(line.match(_REF, "a result such as %4")[0])
        line.expect(" = ")
        kind = line.match(_KEY, "an op kind")[0]
        line.expect("(")
        inputs: list[Value] = []
        if not line.take(")"):
            inputs.append(self.ref(line))
            while line.take(", "):
                inputs.append(self.ref(line))
            line.expect(")")
        attrs: dict[str, Any] = {}
        if line.text.startswith(" {", line.pos):
            line.pos += 1
            attrs = self.attrs(line)
        consts: dict[str, np.ndarray] = {}
        while not line.take(" : "):
            if not line.take(" "):
                raise line.error("' : ' and the result types")
            name = line.match(_KEY, "a constant name or ': '")[0]
            consts[name] = self.const(line)
        types = [self.type(line)]
        while line.take(", "):
            types.append(self.type(line))
        origin = line.rest() if line.take("  # ") else ""
        line.end()
        if len(types) != len(names):
            raise ParseError(f"line {line.number}: {len(names)} results, {len(types)} types")
        op = Op(kind, inputs, types, attrs, consts, origin, names)
        self.check(line, graph, op)
        graph.append(op)
        for name, v in zip(names, op.results, strict=True):
            self.define(line, name, v)

    def check(self, line: _Line, graph: Graph, op: Op) -> None:
        """The verifier's rules for one op, failing on its line.

        An op reading a stand-in is taken as typed when its rules fail: they may read values
        (a sparse matrix's row pointers) that zeros do not satisfy.
        """
        try:
            d = op_def(graph.dialect, op.kind)
            if d.arity >= 0 and len(op.inputs) != d.arity:
                raise VerifyError(f"{len(op.inputs)} inputs, expected {d.arity}")
            expected = d.infer(op)
        except VerifyError as e:
            if self.reads_stand_in:
                return
            raise ParseError(f"line {line.number}: {e}") from None
        except (KeyError, IndexError, TypeError, ValueError) as e:
            if self.reads_stand_in:
                return
            raise ParseError(f"line {line.number}: {op.kind} is malformed ({e!r})") from None
        for r, t in zip(op.results, expected, strict=True):
            if r.type != t:
                raise ParseError(f"line {line.number}: result type {r.type}, expected {t}")


def _tuple(v: Any) -> Any:
    return tuple(_tuple(x) for x in v) if isinstance(v, list) else v


def _string(line: _Line) -> str:
    quote, end = line.text[line.pos], line.pos + 1
    while end < len(line.text) and line.text[end] != quote:
        end += 2 if line.text[end] == "\\" else 1
    if end >= len(line.text):
        raise line.error("a closing quote")
    literal, line.pos = line.text[line.pos : end + 1], end + 1
    return ast.literal_eval(literal)


def parse_graph(
    text: str, constants: Mapping[str, Any] | None = None, structure_only: bool = False
) -> Graph:
    """The graph ``text`` describes (see the module docstring for ``constants`` and stand-ins)."""
    parser = _Parser(constants, structure_only)
    lines = [(n, s) for n, s in enumerate(text.split("\n"), 1) if s.strip()]
    if not lines:
        raise ParseError("line 1: expected '<dialect> graph <name>(', found an empty text")
    graph = parser.header(_Line(lines[0][1], lines[0][0]))
    for i, (number, s) in enumerate(lines[1:], 1):
        line = _Line(s, number)
        if line.take("  return"):
            if line.take(" ") and line.pos < len(s):
                graph.outputs.append(parser.ref(line))
                while line.take(", "):
                    graph.outputs.append(parser.ref(line))
            line.end()
            after = lines[i + 1 :] or [(number + 1, "")]
            if after[0][1] != "}":
                raise _Line(after[0][1], after[0][0]).error("'}' closing the graph")
            if len(after) > 1:
                raise ParseError(f"line {after[1][0]}: expected nothing after the graph")
            if not parser.invented:  # each op passed the verifier's rules; this checks the rest
                graph.verify()
            return graph
        if s == "}":
            raise line.error("'  return <values>' before the closing '}'")
        line.expect("  ")
        parser.op(line, graph)
    raise ParseError(f"line {lines[-1][0] + 1}: expected '  return' and '}}' ending the graph")
