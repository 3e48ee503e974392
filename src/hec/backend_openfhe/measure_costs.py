"""Measure OpenFHE's per-operation costs on this machine (``hec calibrate-costs``).

Each operation runs ``repeats`` times on a fresh ciphertext (level 0, all primes) of a context
built exactly as programs build theirs (``make_context``), one thread unless
``OMP_NUM_THREADS`` says otherwise; the median is kept. The keys are the report counts
``cost_model`` multiplies: a rotation, the saving per rotation when 8 share one hoisted
decomposition or one ModDown (``rotate_sum``), plaintext and scalar multiplies, additions, the
tensor product and its relinearization, rescale, level reduction and the encoding of a
constant.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from hec.backend_openfhe.cost_model import CALIBRATED, cost_table_path
from hec.backend_openfhe.params import CKKSParams, make_context, min_ring_dim
from hec.backend_openfhe.slot_kernels import rotate_sum
from hec.errors import ParameterError

__all__ = ["measure_op_costs", "store_op_costs"]

_HOISTED = 8  # rotations sharing one decomposition, as in ENVIRONMENT.md's measurement


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def measure_op_costs(
    depth: int, ring_dim: int | None = None, repeats: int = 5, chain: CKKSParams | None = None
) -> dict[str, Any]:
    """Milliseconds per operation at ``ring_dim`` (default: the smallest 128-bit one for
    ``depth``) and ``depth``, with ``chain``'s scale, first prime and key-switching digits (an
    artifact's; default 40-bit scaling); returns a table entry.

    Raises:
        ParameterError: the ring is too small for that chain at 128-bit security.
    """
    ring_dim = ring_dim or min_ring_dim(depth)
    slots = ring_dim // 2
    steps = list(range(1, _HOISTED + 1))
    params = CKKSParams(ring_dim, depth, slots, rotation_indices=tuple(steps))
    if chain is not None:
        params = replace(
            params,
            scaling_bits=chain.scaling_bits,
            first_mod_bits=chain.first_mod_bits,
            digits=chain.digits,
        )
    try:
        cc = make_context(params)
    except RuntimeError as exc:  # OpenFHE's security check names the ring it would take
        asks = re.search(r"recommendation \((\d+)\)", str(exc))
        raise ParameterError(
            f"ring {ring_dim} is too small for depth {depth} at {params.scaling_bits}-bit "
            f"scaling and 128-bit security"
            + (f" (OpenFHE asks for {asks[1]})" if asks else "")
            + ": give a larger --ring-dim, or the ARTIFACT whose chain to measure"
        ) from None
    keys = cc.KeyGen()
    cc.EvalMultKeyGen(keys.secretKey)
    cc.EvalRotateKeyGen(keys.secretKey, steps)
    values = np.random.default_rng(0).uniform(-1, 1, slots).tolist()
    pt = cc.MakeCKKSPackedPlaintext(values)
    ct = cc.Encrypt(keys.publicKey, pt)
    ct2 = cc.EvalMult(ct, pt)  # at scale Δ², as a map's sum is before its rescale
    m = cc.GetCyclotomicOrder()

    def hoisted():
        digits = cc.EvalFastRotationPrecompute(ct)
        for k in steps:
            cc.EvalFastRotation(ct, k, m, digits)

    rotate = _median_ms(lambda: cc.EvalRotate(ct, 1), repeats)
    addition = _median_ms(lambda: cc.EvalAdd(ct, ct), repeats)
    # 8 rotations summed with one ModDown: 8 rotations, 7 additions, 7 savings
    summed = _median_ms(lambda: rotate_sum(cc, *[ct] * _HOISTED, tuple(steps)), repeats)
    product = _median_ms(lambda: cc.EvalMultNoRelin(ct, ct), repeats)
    three = cc.EvalMultNoRelin(ct, ct)
    ms = {
        "rotations": rotate,
        "hoisted_rotations": _median_ms(hoisted, repeats) / _HOISTED - rotate,
        "summed_rotations": (summed - _HOISTED * rotate) / (_HOISTED - 1) - addition,
        "plaintext_multiplies": _median_ms(lambda: cc.EvalMult(ct, pt), repeats),
        "plaintext_additions": _median_ms(lambda: cc.EvalAdd(ct, pt), repeats),
        "ciphertext_multiplies": product,
        "relinearizations": _median_ms(lambda: cc.Relinearize(three), repeats),
        "scalar_multiplies": _median_ms(lambda: cc.EvalMult(ct, 0.5), repeats),
        "additions": addition,
        "rescales": _median_ms(lambda: cc.Rescale(ct2), repeats),
        "level_reductions": _median_ms(lambda: cc.LevelReduce(ct, None, 1), repeats),
        "plaintext_encodings": _median_ms(lambda: cc.MakeCKKSPackedPlaintext(values), repeats),
    }
    assert set(ms) == set(CALIBRATED)
    return {
        "ring_dim": ring_dim,
        "depth": depth,
        "ms": {k: round(v, 4) for k, v in ms.items()},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "load": round(os.getloadavg()[0], 2),
        "repeats": repeats,
    }


def store_op_costs(entry: dict[str, Any]) -> str:
    """Add ``entry`` to the cost table (replacing one for the same ring and depth); its path."""
    path = cost_table_path()
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    table[f"{entry['ring_dim']}/{entry['depth']}"] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return str(path)
