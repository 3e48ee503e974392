"""Undo the scale drift of OpenFHE's fixed scaling in a slot program's constants.

With ``FIXEDMANUAL`` scaling every ciphertext is taken to be at scale ``Δ = 2^s``, but a rescale
divides by the level's prime ``q``, which is only near ``2^s`` (primes ``≡ 1 mod 2N`` lie about
``N · s · ln 2`` apart): each rescale multiplies the value by ``2^s / q``, a relative error of
``~1e-5`` at ``s = 34`` that products and squares then amplify. At 40-bit scales it is ``~1e-7``
and harmless; at the small scales ``--precision`` picks it dominates the logit error.

The primes are known once the parameters are (OpenFHE generates them deterministically), so the
error is known too, and the plaintexts can absorb it:

* every value carries a factor ``f`` (what decryption gives over the true value): 1 for the
  input; a rescale at level ``ℓ`` multiplies it by ``2^s / q_(L-ℓ)``; a product multiplies the
  factors; a rotation or level reduction keeps it;
* a plaintext product ``x · p`` is rescaled at ``x``'s level, so ``p`` is encoded as
  ``p · q / (2^s · f(x))``: after that rescale the factor is exactly 1 again;
* a plaintext sum ``x + p`` encodes ``p · f(x)``, matching the ciphertext it meets.

A sum of two ciphertexts whose factors differ (a residual join of paths through different
rescales) cannot be fixed by a plaintext: it is counted and left. Each rescale records its
factor (``attrs['factor']``), so the simulator reproduces the drift exactly; the program then
computes the exact values, up to CKKS noise. Polynomials (``EvalChebyshevSeries``) rescale
inside OpenFHE and keep their own drift.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from hec._environment import load_openfhe
from hec.backend_openfhe.params import CKKSParams, make_context
from hec.ir import CipherType, Graph
from hec.ir.types import type_as

__all__ = ["rescale_primes", "compensate_scale_drift"]


def rescale_primes(params: CKKSParams) -> list[int]:
    """The primes of ``Q`` OpenFHE makes for ``params``, first (largest) first.

    Python's OpenFHE bindings do not expose them, but the context's JSON serialization holds
    them (the element parameters' ``p[i].cm``)."""
    openfhe = load_openfhe()
    cc = make_context(params)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cc.json"
        if not openfhe.SerializeToFile(str(path), cc, openfhe.JSON):
            raise RuntimeError("OpenFHE could not serialize the crypto context")
        tree = json.loads(path.read_text())
    towers = _find(tree, "elp")["ptr_wrapper"]["data"]["p"]
    primes = [int(t["ptr_wrapper"]["data"]["value0"]["cm"]["v"]) for t in towers]
    if len(primes) != params.depth + 1:
        raise RuntimeError(f"expected {params.depth + 1} primes, OpenFHE has {len(primes)}")
    return primes


def _find(tree, key: str):
    """The first value under ``key`` in a JSON tree (depth first)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if key in node:
                return node[key]
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    raise RuntimeError(f"no '{key}' in OpenFHE's serialized crypto context")


def compensate_scale_drift(program: Graph, params: CKKSParams) -> int:
    """Rewrite ``program``'s plaintext constants (in place) so that its rescales leave every
    value at exactly scale ``2^s``; returns the number of ciphertext sums left unfixed."""
    primes = rescale_primes(params)
    delta = 2.0**params.scaling_bits
    top = params.depth
    factor: dict[int, float] = {id(v): 1.0 for v in program.inputs}
    unfixed = 0
    for op in program.ops:
        f = [factor[id(v)] for v in op.inputs]
        if op.kind == "rescale":
            level = type_as(op.inputs[0].type, CipherType).level
            op.attrs["factor"] = delta / primes[top - level]
            out = f[0] * op.attrs["factor"]
        elif op.kind == "mul_plain":
            level = type_as(op.inputs[0].type, CipherType).level
            out = primes[top - level] / delta  # the rescale at this level brings it to 1
            op.consts["p"] = op.consts["p"] * (out / f[0])
        elif op.kind == "add_plain":
            op.consts["p"] = op.consts["p"] * f[0]
            out = f[0]
        elif op.kind == "mul":
            out = f[0] * f[1]
        elif op.kind == "add":
            if not np.isclose(f[0], f[1], rtol=1e-12, atol=0):
                unfixed += 1
            out = f[0]
        else:  # rotate, level_reduce (no scaling), poly (its own rescales inside OpenFHE)
            out = f[0]
        for r in op.results:
            factor[id(r)] = out
    return unfixed
