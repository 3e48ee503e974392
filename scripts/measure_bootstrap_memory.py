"""Measure OpenFHE's bootstrapping memory at ring 2^16: the precomputation and the keys.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_bootstrap_memory.py 16384 3 [--keys]
        [--bootstrap] [--secret UNIFORM_TERNARY]

Prints one JSON line: the slots, the level budget, the levels ``EvalBootstrap`` consumes, the
seconds and bytes (resident memory grown) of ``EvalBootstrapSetup``'s precomputation; with
``--keys``, how many rotation keys ``EvalBootstrapKeyGen`` makes, how long it takes and the bytes
they hold; with ``--bootstrap`` (implies ``--keys``), the seconds of one ``EvalBootstrap`` of
uniform values in [-8, 8] and the largest error of the refreshed values. Run one
configuration per process (a process does not give freed memory back). The key counts in
``hec.backend_openfhe.params._BOOTSTRAP_KEYS_MEASURED`` and the precomputation model of
``bootstrap_precompute_bytes`` (docs/bootstrapping.md) come from this script.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from hec._environment import load_openfhe
from hec.backend_openfhe.params import (
    BOOTSTRAP_FIRST_MOD_BITS,
    BOOTSTRAP_RING_DIM,
    BOOTSTRAP_SCALING_BITS,
    BOOTSTRAP_SECRET_DIST,
    CKKSParams,
    bootstrap_precompute_bytes,
    make_context,
)


def resident_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slots", type=int)
    parser.add_argument("budget", type=int, help="levels of CoeffsToSlots and of SlotsToCoeffs")
    parser.add_argument("--keys", action="store_true", help="also generate the keys")
    parser.add_argument(
        "--bootstrap", action="store_true", help="also bootstrap values in [-8, 8] once"
    )
    parser.add_argument("--depth", type=int, default=22)
    parser.add_argument("--digits", type=int, default=4)
    parser.add_argument(
        "--secret",
        default=BOOTSTRAP_SECRET_DIST,
        choices=["UNIFORM_TERNARY", "SPARSE_ENCAPSULATED"],
        help="OpenFHE's secret-key distribution (default: hec's bootstrapping chain's)",
    )
    args = parser.parse_args()
    openfhe = load_openfhe()
    budget = (args.budget, args.budget)
    params = CKKSParams(
        ring_dim=BOOTSTRAP_RING_DIM,
        depth=args.depth,
        slots=args.slots,
        scaling_bits=BOOTSTRAP_SCALING_BITS,
        first_mod_bits=BOOTSTRAP_FIRST_MOD_BITS,
        needs_relinearization=True,
        digits=args.digits,
        bootstrap=budget,
        secret_dist=args.secret,
    )
    before = resident_bytes()
    start = time.perf_counter()
    cc = make_context(params)  # with the precomputation
    row = {
        "slots": args.slots,
        "budget": list(budget),
        "secret": args.secret,
        "bootstrap_depth": int(
            openfhe.CryptoContext.GetBootstrapDepth(list(budget), getattr(openfhe, args.secret))
        ),
        "setup_s": round(time.perf_counter() - start, 1),
        "precompute_bytes": resident_bytes() - before,
        "precompute_bytes_estimated": bootstrap_precompute_bytes(params),
    }
    if args.keys or args.bootstrap:
        pair = cc.KeyGen()
        cc.EvalMultKeyGen(pair.secretKey)
        before = resident_bytes()
        start = time.perf_counter()
        cc.EvalBootstrapKeyGen(pair.secretKey, args.slots)
        row["keygen_s"] = round(time.perf_counter() - start, 1)
        row["key_bytes"] = resident_bytes() - before
        row["keys"] = len(cc.GetExistingEvalAutomorphismKeyIndices(pair.secretKey.GetKeyTag()))
    if args.bootstrap:
        x = np.random.default_rng(0).uniform(-8, 8, args.slots)
        at = params.depth - 1  # EvalBootstrap reads the chain's last two primes
        pt = cc.MakeCKKSPackedPlaintext(list(x), 1, at, None, args.slots)
        ct = cc.Encrypt(pair.publicKey, pt)
        start = time.perf_counter()
        out = cc.EvalBootstrap(ct)
        row["bootstrap_s"] = round(time.perf_counter() - start, 1)
        y = cc.Decrypt(pair.secretKey, out)
        y.SetLength(args.slots)
        row["bootstrap_error"] = float(np.max(np.abs(np.array(y.GetRealPackedValue()) - x)))
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
