"""Evaluation time from a report's operation counts, per layer: what ``auto`` choices compare and
what ``report.json`` predicts.

Per-operation costs come from ``hec calibrate-costs`` when it has measured this machine at the
program's ring dimension and depth (a JSON table in the user's cache directory, or the file
``HEC_COST_TABLE`` names); otherwise from the reference table below, measured with OpenFHE 1.6.1
on the 2-core reference machine at ring 2^14 and depth 5, one thread (``ENVIRONMENT.md``), and
scaled by ``ring_dim × primes``, the size of the polynomials every operation touches.

Every cost is for a ciphertext at level 0 (all ``depth + 1`` primes); an operation at level
``l`` touches ``depth + 1 - l`` primes and is scaled by that fraction (key switching also works
on the auxiliary primes, so rotations deep in the program are slightly underestimated).

Encoded plaintexts are kept across evaluations up to ``PLAINTEXT_CACHE_BYTES`` (in program
order, as the executor fills its cache); the layers past that budget re-encode theirs every
evaluation, which the prediction counts (it dominates large programs such as LeNet-5's).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hec.backend_openfhe.report_schema import CkksParameters, Layer, ProgramFigures

__all__ = [
    "bootstrap_seconds",
    "estimated_seconds",
    "layer_seconds",
    "predict_layers",
    "predicted_layer_ms",
    "uncached_plaintexts",
    "op_costs",
    "cost_table_path",
    "MS_PER_OP",
    "CALIBRATED",
]

# report.json count -> milliseconds per operation at ring 2^14, 6 primes, level 0
MS_PER_OP = {
    "rotations": 21.0,  # key switch; hoisted ones are discounted below
    "hoisted_rotations": -8.0,  # saving per hoisted rotation: 8 take 107 ms instead of 185
    # saving per rotation that shares a rotate_sum's ModDown: 7.1 ms instead of 11.6 (ring
    # 2^14, 6 primes, 2026-12-05), scaled to this table's 21 ms rotation
    "summed_rotations": -8.0,
    "plaintext_multiplies": 0.6,
    "plaintext_additions": 0.5,
    "ciphertext_multiplies": 3.0,  # the tensor product
    "relinearizations": 17.0,  # a key switch
    "scalar_multiplies": 1.0,
    "additions": 0.8,
    "rescales": 6.0,
    "level_reductions": 0.5,
    "polynomials": 100.0,  # a low-degree Chebyshev series: about five products
    # encoding a constant (first evaluation; every evaluation once the cache is full)
    "plaintext_encodings": 2.0,
}
CALIBRATED = (  # what hec calibrate-costs measures (polynomials keep the reference figure)
    "rotations",
    "hoisted_rotations",
    "summed_rotations",
    "plaintext_multiplies",
    "plaintext_additions",
    "ciphertext_multiplies",
    "relinearizations",
    "scalar_multiplies",
    "additions",
    "rescales",
    "level_reductions",
    "plaintext_encodings",
)
_REFERENCE_RING, _REFERENCE_PRIMES = 16384, 6


def cost_table_path() -> Path:
    """Where ``hec calibrate-costs`` stores its measurements (``HEC_COST_TABLE`` overrides)."""
    if os.environ.get("HEC_COST_TABLE"):
        return Path(os.environ["HEC_COST_TABLE"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "hec" / "op_costs.json"


def _calibrated(ring_dim: int, depth: int) -> dict[str, float] | None:
    try:
        table = json.loads(cost_table_path().read_text())
    except (OSError, ValueError):
        return None
    entry = table.get(f"{ring_dim}/{depth}") if isinstance(table, dict) else None
    return entry.get("ms") if isinstance(entry, dict) else None


def op_costs(ckks: CkksParameters) -> tuple[dict[str, float], str]:
    """Milliseconds per operation (at level 0) for a report's ``ckks`` section, and the basis."""
    measured = _calibrated(ckks.ring_dim, ckks.depth)
    scale = ckks.ring_dim / _REFERENCE_RING * (ckks.depth + 1) / _REFERENCE_PRIMES
    costs = {key: ms * scale for key, ms in MS_PER_OP.items()}
    if measured:
        costs.update({k: float(v) for k, v in measured.items() if k in MS_PER_OP})
        return costs, "calibrated on this machine (hec calibrate-costs)"
    return costs, "reference costs at ring 2^14, scaled (run hec calibrate-costs to measure)"


def layer_seconds(
    layer: Layer, ckks: CkksParameters, costs: dict[str, float], encodes: int = 0
) -> float:
    """Seconds one evaluation spends in ``layer`` (its counts at its input level), with
    ``encodes`` plaintexts encoded anew."""
    if layer.kind == "bootstrap":
        return bootstrap_seconds(ckks.slots)
    counts = {key: getattr(layer, key) or 0 for key in MS_PER_OP if hasattr(layer, key)}
    counts["plaintext_encodings"] = encodes
    if layer.relinearizations is None:  # slot packing relinearizes every product at once
        counts["relinearizations"] = layer.ciphertext_multiplies
    ms = sum(counts.get(key, 0) * cost for key, cost in costs.items())
    primes = ckks.depth + 1
    return ms * (primes - layer.level_in) / primes / 1e3


def bootstrap_seconds(slots: int) -> float:
    """One OpenFHE bootstrap of ``slots`` slots at ring 2^16, one thread (measured on the
    reference machine: 7-8 s at 64 slots with level budget [1, 1], 18-27 s at 1,024)."""
    return 8.0 if slots <= 64 else 20.0


def uncached_plaintexts(report: ProgramFigures) -> list[int]:
    """Per layer, the plaintexts re-encoded every evaluation (past the executor's cache)."""
    from hec.backend_openfhe.execute import PLAINTEXT_CACHE_BYTES

    ck, budget, out = report.ckks, PLAINTEXT_CACHE_BYTES, []
    for layer in report.layers:
        n = layer.plaintext_multiplies + layer.plaintext_additions
        size = ck.ring_dim * 8 * (ck.depth + 1 - layer.level_in)
        cached = min(n, max(budget, 0) // size) if report.packing != "batch" else n
        budget -= cached * size
        out.append(n - cached)
    return out


def predicted_layer_ms(report: ProgramFigures | dict[str, Any]) -> list[float]:
    """Milliseconds one evaluation spends in each layer (rounded as the report holds them)."""
    figures = _typed(report)
    costs, _ = op_costs(figures.ckks)
    encodes = uncached_plaintexts(figures)
    return [
        round(layer_seconds(layer, figures.ckks, costs, n) * 1e3, 3)
        for layer, n in zip(figures.layers, encodes, strict=True)
    ]


def predict_layers(figures: dict[str, Any]) -> str:
    """Write ``predicted_ms`` into every layer of the figures ``compile()`` is assembling (in
    place); returns the basis."""
    for layer, ms in zip(figures["layers"], predicted_layer_ms(figures), strict=True):
        layer["predicted_ms"] = ms
    return op_costs(_typed(figures).ckks)[1]


def estimated_seconds(report: ProgramFigures | dict[str, Any]) -> float:
    """Seconds one evaluation of the reported program takes (one thread): the sum of layers,
    plaintexts cached as far as the executor's budget goes. ``report``: a report, or the
    figures ``compile()`` compares before it writes one."""
    figures = _typed(report)
    costs, _ = op_costs(figures.ckks)
    encodes = uncached_plaintexts(figures)
    return sum(
        layer_seconds(layer, figures.ckks, costs, n)
        for layer, n in zip(figures.layers, encodes, strict=True)
    )


def _typed(report: ProgramFigures | dict[str, Any]) -> ProgramFigures:
    """``compile()`` estimates its candidates' figures while they are still dicts."""
    return report if isinstance(report, ProgramFigures) else ProgramFigures.from_dict(report)
