"""The program's figures, per layer and in total: what ``report.json`` holds.

A *layer* is a run of consecutive slot ops with the same origin (the ONNX nodes a fused map or
an activation came from). ``report.json`` is the single source that the CLI summary, ``hec
inspect`` and the benchmarks read; nothing else recounts operations.
"""

from __future__ import annotations

from collections import Counter
from itertools import groupby
from typing import Any

from hec.backend_openfhe.params import CKKSParams
from hec.ir import CipherType, Graph, Op

__all__ = ["program_report", "COUNTED"]

# report key -> slot op kind
COUNTED = {
    "rotations": "rotate",
    "plaintext_multiplies": "mul_plain",
    "ciphertext_multiplies": "mul",
    "rescales": "rescale",
    "additions": "add",
    "plaintext_additions": "add_plain",
    "level_reductions": "level_reduce",
    "polynomials": "poly",
}


def _counts(ops: list[Op], rotations_of: Counter) -> dict[str, int]:
    kinds = Counter(op.kind for op in ops)
    counts = {key: kinds[kind] for key, kind in COUNTED.items()}
    counts["hoisted_rotations"] = sum(
        1 for op in ops if op.kind == "rotate" and rotations_of[id(op.inputs[0])] > 1
    )
    return counts


def program_report(graph: Graph, params: CKKSParams) -> dict[str, Any]:
    """Counts per layer and in total, rotation keys, depth and CKKS parameters."""
    rotations_of = Counter(id(op.inputs[0]) for op in graph.ops if op.kind == "rotate")
    layers = []
    for origin, group in groupby(graph.ops, key=lambda op: op.origin):
        ops = list(group)
        levels = [v.type.level for op in ops for v in op.results if isinstance(v.type, CipherType)]
        in_levels = [v.type.level for v in ops[0].inputs if isinstance(v.type, CipherType)]
        layers.append(
            {
                "name": origin or "(level alignment)",
                "kind": _layer_kind(ops),
                "level_in": min(in_levels, default=0),
                "level_out": max(levels, default=0),
                **_counts(ops, rotations_of),
                "rotation_keys": len({op.attrs["k"] for op in ops if op.kind == "rotate"}),
            }
        )
    totals = _counts(graph.ops, rotations_of)
    totals["rotation_keys"] = len(params.rotation_indices)
    totals["depth"] = params.depth
    return {
        "packing": "slots",
        "ckks": {
            "ring_dim": params.ring_dim,
            "slots": params.slots,
            "samples_per_ciphertext": params.blocks,
            "depth": params.depth,
            "scaling_bits": params.scaling_bits,
            "first_mod_bits": params.first_mod_bits,
            "log_q_bits": params.log_q_bits,
            "security": params.security,
            "scaling_technique": "FIXEDMANUAL",
        },
        "totals": totals,
        "layers": layers,
        "rotation_indices": list(params.rotation_indices),
    }


def _layer_kind(ops: list[Op]) -> str:
    kinds = {op.kind for op in ops}
    if "poly" in kinds:
        return "polynomial"
    if "mul" in kinds:
        return (
            "square"
            if all(op.inputs[0] is op.inputs[1] for op in ops if op.kind == "mul")
            else "multiply"
        )
    if kinds & {"mul_plain", "rotate"}:
        return "linear"
    return "add" if "add" in kinds else "align"
