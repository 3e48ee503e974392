"""The program's figures, per layer and in total: what ``report.json`` holds.

A *layer* is a run of consecutive slot ops with the same origin (the ONNX nodes a fused map or
an activation came from). ``report.json`` is the single source that the CLI summary, ``hec
inspect`` and the benchmarks read; nothing else recounts operations.
"""

from __future__ import annotations

from collections import Counter
from itertools import groupby
from typing import Any

from hec.backend_openfhe.batch_memory import MemoryPlan
from hec.backend_openfhe.batch_schedule import ElementGraph, Schedule
from hec.backend_openfhe.params import CKKSParams, bootstrap_key_count, key_switch_key_bytes
from hec.ir import BatchCipherType, CipherType, Graph, Op
from hec.ir.slot_ops import rotation_amounts
from hec.ir.types import type_as

__all__ = ["program_report", "batch_program_report", "COUNTED", "BATCH_COUNTED"]

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


def _ckks(params: CKKSParams, per_ciphertext: str, inputs: int) -> dict[str, Any]:
    """The ``ckks`` section of either packing's report: the parameters, and how many inputs
    a ciphertext holds under ``per_ciphertext`` (``samples_per_ciphertext`` or ``batch``)."""
    return {
        "ring_dim": params.ring_dim,
        "slots": params.slots,
        per_ciphertext: inputs,
        "depth": params.depth,
        "scaling_bits": params.scaling_bits,
        "first_mod_bits": params.first_mod_bits,
        "log_q_bits": params.log_q_bits,
        "security": params.security,
        "scaling_technique": "FIXEDMANUAL",
    }


def _counts(ops: list[Op], rotations_of: Counter) -> dict[str, int]:
    kinds = Counter(op.kind for op in ops)
    counts = {key: kinds[kind] for key, kind in COUNTED.items()}
    # a rotate_sum of m terms: m rotations (key switches) and m - 1 additions, of which the
    # m - 1 after the first share its ModDown (``summed_rotations``, cheaper)
    summed = [len(op.inputs) for op in ops if op.kind == "rotate_sum"]
    counts["rotations"] += sum(summed)
    counts["additions"] += sum(summed) - len(summed)
    # schedule-rotations turns each non-zero diagonal of a map into one mul_plain (pre-rotated),
    # or merges several into one plaintext (a short map's fold: attribute ``diagonals``)
    counts["diagonals"] = sum(op.attrs.get("diagonals", 1) for op in ops if op.kind == "mul_plain")
    counts["hoisted_rotations"] = sum(
        1 for op in ops if op.kind == "rotate" and rotations_of[id(op.inputs[0])] > 1
    )
    counts["summed_rotations"] = sum(summed) - len(summed)
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
                "rotation_keys": len({k for op in ops for k in rotation_amounts(op)}),
            }
        )
    totals = _counts(graph.ops, rotations_of)
    totals["rotation_keys"] = len(params.rotation_indices)
    totals["rotation_key_bytes"] = len(params.rotation_indices) * key_switch_key_bytes(params)
    totals["depth"] = params.depth
    report: dict[str, Any] = {
        "packing": "slots",
        "ckks": _ckks(params, "samples_per_ciphertext", params.blocks),
        "totals": totals,
        "layers": layers,
        "rotation_indices": list(params.rotation_indices),
    }
    boots = [op for op in graph.ops if op.kind == "bootstrap"]
    if boots:
        keys = bootstrap_key_count(params)
        report["bootstraps"] = {
            "level_budget": list(params.bootstrap),
            "secret_dist": params.secret_dist,
            "keys_estimated": keys,
            "key_bytes_estimated": keys * key_switch_key_bytes(params),
            "each": [
                {
                    "name": op.origin,
                    "slots": type_as(op.result.type, CipherType).slots,
                    "level_in": type_as(op.inputs[0].type, CipherType).level,
                    "level_out": type_as(op.result.type, CipherType).level,
                    "why": op.attrs["why"],
                    "before": next((u.origin for u in op.result.uses), ""),
                    "input_range": "activation input, about [-1, 1]"
                    if all(u.kind in ("poly", "mul") for u in op.result.uses)
                    else "unknown",
                }
                for op in boots
            ],
        }
    return report


def _layer_kind(ops: list[Op]) -> str:
    kinds = {op.kind for op in ops}
    if "bootstrap" in kinds:
        return "bootstrap"
    if "poly" in kinds:
        return "polynomial"
    if "mul" in kinds:
        return (
            "square"
            if all(op.inputs[0] is op.inputs[1] for op in ops if op.kind == "mul")
            else "multiply"
        )
    if kinds & {"mul_plain", "rotate", "rotate_sum"}:
        return "linear"
    return "add" if "add" in kinds else "align"


# -- batch packing ----------------------------------------------------------------------------
# report key -> what one task (one element ciphertext) of a batch op costs; every batch report
# has the slot report's keys too (rotations and rotation keys are 0), so tables can mix them.
BATCH_COUNTED = (
    "scalar_multiplies",
    "additions",
    "plaintext_additions",
    "ciphertext_multiplies",
    "relinearizations",
    "rescales",
    "level_reductions",
    "polynomials",
)


def _task_counts(op: Op, row: int) -> dict[str, int]:
    """HE operations of one task of a batch op (see ``execute_batch``)."""
    if op.kind in ("weighted_sum", "signed_sum"):
        c = op.consts
        lo, hi = int(c["indptr"][row]), int(c["indptr"][row + 1])
        n, bias = hi - lo, int(c["bias"][row] != 0.0)
        if op.kind == "weighted_sum":  # n multiplies, n - 1 adds, one rescale
            return {
                "scalar_multiplies": max(n, 1),
                "additions": max(n - 1, 0),
                "rescales": 1,
                "plaintext_additions": bias,
            }
        negate = int(n > 0 and c["weights"][lo] < 0)
        return {"additions": max(n - 1, 0) + int(n == 0) + negate, "plaintext_additions": bias}
    if op.kind == "mul":  # EvalMult / EvalSquare relinearize at once
        return {"ciphertext_multiplies": 1, "relinearizations": 1}
    key = {
        "mul_norelin": "ciphertext_multiplies",
        "relinearize": "relinearizations",
        "add": "additions",
        "mul": "ciphertext_multiplies",
        "rescale": "rescales",
        "level_reduce": "level_reductions",
        "poly": "polynomials",
    }[op.kind]
    return {key: 1}


def batch_program_report(
    graph: Graph, params: CKKSParams, plan: MemoryPlan, eg: ElementGraph, schedule: Schedule
) -> dict[str, Any]:
    """Counts per layer and in total for a batch program, from the tasks its schedule runs.

    ``plan``, ``eg`` and ``schedule`` come from ``batch_memory.plan_memory``; only scheduled
    tasks are counted (a ciphertext no output needs is never computed).
    """
    per_op: list[Counter] = [Counter() for _ in graph.ops]
    tasks: Counter[int] = Counter()
    for ct in schedule.order.tolist():
        i = int(eg.op_of[ct])
        per_op[i].update(_task_counts(graph.ops[i], int(eg.element_of[ct])))
        tasks[i] += 1
    zero = {"rotations": 0, "hoisted_rotations": 0, "plaintext_multiplies": 0, "diagonals": 0}
    layers: list[dict[str, Any]] = []
    index = {id(op): i for i, op in enumerate(graph.ops)}
    for origin, group in groupby(graph.ops, key=lambda op: op.origin):
        ops = list(group)
        counts = sum((per_op[index[id(op)]] for op in ops), Counter())
        layers.append(
            {
                "name": origin or "(level alignment)",
                "kind": _batch_layer_kind(ops),
                "level_in": min(type_as(v.type, BatchCipherType).level for v in ops[0].inputs),
                "level_out": max(type_as(op.result.type, BatchCipherType).level for op in ops),
                **zero,
                **{k: counts[k] for k in BATCH_COUNTED},
                "rotation_keys": 0,
                "ciphertexts": sum(tasks[index[id(op)]] for op in ops),
            }
        )
    totals = {**zero, **{k: sum(lay[k] for lay in layers) for k in BATCH_COUNTED}}
    totals.update(
        rotation_keys=0,
        rotation_key_bytes=0,
        depth=params.depth,
        ciphertexts=plan.ciphertexts_computed,
    )
    return {
        "packing": "batch",
        "ckks": _ckks(params, "batch", params.slots),
        "totals": totals,
        "layers": layers,
        "memory": plan.to_json(),
        "rotation_indices": [],
    }


def _batch_layer_kind(ops: list[Op]) -> str:
    kinds = {op.kind for op in ops}
    if "poly" in kinds:
        return "polynomial"
    products = [op for op in ops if op.kind in ("mul", "mul_norelin")]
    if products:
        return "square" if all(op.inputs[0] is op.inputs[1] for op in products) else "multiply"
    if kinds & {"weighted_sum", "signed_sum"}:
        return "linear"
    if kinds <= {"rescale", "relinearize"}:  # a product's, deferred by lazy-relinearize
        return "deferred"
    return "add" if "add" in kinds else "align"
