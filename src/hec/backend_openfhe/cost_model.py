"""Rough evaluation time from a report's operation counts: what ``--packing auto`` compares.

Per-operation costs were measured with OpenFHE 1.6.1 on the 2-core reference machine at ring
2^14 and depth 5, one thread (``ENVIRONMENT.md``, and the batch primitives measured for
``lower-to-batch``). Other parameters scale them by ``ring_dim × primes``, the size of the
polynomials every operation touches; key switching grows a little faster, so this is an order
of magnitude to choose a packing with, not a prediction to report.
"""

from __future__ import annotations

from typing import Any

__all__ = ["estimated_seconds", "MS_PER_OP"]

# report.json total -> milliseconds per operation at ring 2^14, 6 primes
MS_PER_OP = {
    "rotations": 21.0,  # key switch; hoisted ones are discounted below
    "plaintext_multiplies": 0.6,
    "plaintext_additions": 0.5,
    "ciphertext_multiplies": 3.0,  # the tensor product
    "relinearizations": 17.0,  # a key switch
    "scalar_multiplies": 1.0,
    "additions": 0.8,
    "rescales": 6.0,
    "level_reductions": 0.5,
    "polynomials": 100.0,  # a low-degree Chebyshev series: about five products
}
_HOISTED_SAVING_MS = 8.0  # 8 hoisted rotations take 107 ms instead of 185


def estimated_seconds(report: dict[str, Any]) -> float:
    """Seconds one evaluation of the reported program takes (one thread, rough)."""
    totals, ck = report["totals"], report["ckks"]
    totals = {"relinearizations": totals.get("ciphertext_multiplies", 0), **totals}  # slots
    ms = sum(totals.get(key, 0) * cost for key, cost in MS_PER_OP.items())
    ms -= totals.get("hoisted_rotations", 0) * _HOISTED_SAVING_MS
    scale = ck["ring_dim"] / 16384 * (ck["depth"] + 1) / 6
    return ms * scale / 1e3
