"""Graphs to JSON-able structures plus a dict of named arrays, and back (artifact storage)."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import numpy as np

from hec.ir.core import Graph, Op, Value
from hec.ir.types import BatchCipherType, CipherType, Layout, TensorType, Type

__all__ = ["graph_to_json", "graph_from_json"]


def _type_to_json(t: Type) -> dict[str, Any]:
    if isinstance(t, TensorType):
        return {"tensor": list(t.shape), "dtype": t.dtype}
    if isinstance(t, BatchCipherType):
        return {
            "ctensor": list(t.shape),
            "batch": t.batch,
            "level": t.level,
            "scale_deg": t.scale_deg,
            "parts": t.parts,
        }
    layout = t.layout
    return {
        "cipher": t.slots,
        "level": t.level,
        "scale_deg": t.scale_deg,
        "layout": None if layout is None else _layout_to_json(layout),
    }


def _layout_to_json(layout: Layout) -> dict[str, Any]:
    d: dict[str, Any] = {"shape": list(layout.shape), "kind": layout.kind}
    if layout.source is not None:
        d["source"] = list(layout.source)
    return d


def _type_from_json(d: dict[str, Any]) -> Type:
    if "tensor" in d:
        return TensorType(tuple(d["tensor"]), d["dtype"])
    if "ctensor" in d:
        return BatchCipherType(
            tuple(d["ctensor"]), d["batch"], d["level"], d["scale_deg"], d.get("parts", 2)
        )
    lay = d["layout"]
    layout = None
    if lay is not None:
        source = tuple(lay["source"]) if "source" in lay else None
        layout = Layout(tuple(lay["shape"]), d["cipher"], lay["kind"], source)
    return CipherType(d["cipher"], d["level"], d["scale_deg"], layout)


def _attr_to_json(v: Any) -> Any:
    return [_attr_to_json(x) for x in v] if isinstance(v, tuple | list) else v


def _attr_from_json(v: Any) -> Any:
    return tuple(_attr_from_json(x) for x in v) if isinstance(v, list) else v


def graph_to_json(graph: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Return ``(structure, arrays)``: constants are referenced by key ``op<i>.<name>``."""
    ids: dict[int, int] = {}
    for v in graph.values():
        ids[id(v)] = len(ids)
    arrays: dict[str, np.ndarray] = {}
    ops = []
    for i, op in enumerate(graph.ops):
        consts = {}
        for name, arr in op.consts.items():
            key = f"op{i}.{name}"
            arrays[key] = arr
            consts[name] = key
        ops.append(
            {
                "kind": op.kind,
                "inputs": [ids[id(v)] for v in op.inputs],
                "results": [_type_to_json(r.type) for r in op.results],
                "attrs": {k: _attr_to_json(v) for k, v in op.attrs.items()},
                "consts": consts,
                "origin": op.origin,
            }
        )
    structure: dict[str, Any] = {
        "name": graph.name,
        "dialect": graph.dialect,
        "inputs": [{"name": v.name, "type": _type_to_json(v.type)} for v in graph.inputs],
        "ops": ops,
        "outputs": [ids[id(v)] for v in graph.outputs],
    }
    if graph.attrs:  # only when set, so that program.json files without any stay unchanged
        structure["attrs"] = {k: _attr_to_json(v) for k, v in graph.attrs.items()}
    return structure, arrays


class StoredConsts(MutableMapping[str, np.ndarray]):
    """An op's constants as keys into a store (``graph_from_json(..., lazy=True)``): each read
    asks the store, so a large program's constants need not all be in memory at once; a
    constant assigned later is kept as it is."""

    def __init__(self, keys: dict[str, str], store: Any) -> None:
        self._keys, self._store = keys, store
        self._set: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._set:
            return self._set[name]
        return np.asarray(self._store[self._keys[name]])

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self._set[name] = np.asarray(value)

    def __delitem__(self, name: str) -> None:
        if name not in self._set and name not in self._keys:
            raise KeyError(name)
        self._set.pop(name, None)
        self._keys.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._keys, *self._set]))

    def __len__(self) -> int:
        return len(self._keys.keys() | self._set.keys())


def graph_from_json(structure: dict[str, Any], arrays: Any, lazy: bool = False) -> Graph:
    """Rebuild a graph; ``arrays`` maps the keys of ``graph_to_json`` to numpy arrays. With
    ``lazy`` each op reads its constants from ``arrays`` when they are used
    (``StoredConsts``), instead of holding them."""
    g = Graph(structure["name"], structure["dialect"])
    g.attrs = {k: _attr_from_json(v) for k, v in structure.get("attrs", {}).items()}
    values: list[Value] = [
        g.add_input(i["name"], _type_from_json(i["type"])) for i in structure["inputs"]
    ]
    for o in structure["ops"]:
        op = Op(
            o["kind"],
            [values[i] for i in o["inputs"]],
            [_type_from_json(t) for t in o["results"]],
            {k: _attr_from_json(v) for k, v in o["attrs"].items()},
            None if lazy else {name: np.asarray(arrays[key]) for name, key in o["consts"].items()},
            o["origin"],
        )
        if lazy:
            op.consts = StoredConsts(dict(o["consts"]), arrays)
        g.append(op)
        values.extend(op.results)
    g.outputs = [values[i] for i in structure["outputs"]]
    return g
