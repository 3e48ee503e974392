"""What the generated ``openfhe_program.py`` of slot and batch packing share: the prelude
(imports, constants, crypto context), the kernels' source, the straight-line ``evaluate``
body and the prediction line.

A generated program imports only openfhe and numpy: the functions it needs from hec (the
constants reader, the dialect's kernels) are copied into it verbatim with their source.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

from hec.backend_openfhe.constants_file import stored_rows, unpack_vectors
from hec.backend_openfhe.params import CKKSParams
from hec.ir import Graph, Op

__all__ = ["prelude", "straight_line", "prediction_code"]

# What every generated program starts with: imports, the constants (read by the artifact's own
# reader, embedded verbatim), the crypto context and the kernels of its dialect.
_PRELUDE = """import os
import sys

import numpy as np
import openfhe as fhe

HERE = os.path.dirname(os.path.abspath(__file__))


{unpack_source}

with np.load(os.path.join(HERE, "constants.npz")) as _stored:
    C = unpack_vectors(_stored)
SLOTS = {slots}


def make_context():
    p = fhe.CCParamsCKKSRNS()
{secret}{digits}    p.SetMultiplicativeDepth({depth})
    p.SetScalingModSize({scaling_bits})
    p.SetFirstModSize({first_mod_bits})
    p.SetScalingTechnique(fhe.FIXEDMANUAL)
    p.SetSecurityLevel(fhe.{security})
    p.SetBatchSize(SLOTS)
    p.SetRingDim({ring_dim})
    cc = fhe.GenCryptoContext(p)
    for feature in ({features}):
        cc.Enable(feature)
{setup}    return cc


# The OpenFHE calls of each {dialect} op kind, as hec's executor makes them
# (hec.backend_openfhe.{dialect}_kernels, copied verbatim).


{kernels}"""


def prelude(params: CKKSParams, dialect: str, kernels: Iterable[Callable]) -> str:
    """Imports, constants, ``make_context()`` and the source of ``kernels``."""
    features = "fhe.PKE, fhe.KEYSWITCH, fhe.LEVELEDSHE" + (
        ", fhe.ADVANCEDSHE" if params.needs_poly or params.bootstrap else ""
    )
    secret, setup = "", ""
    if params.bootstrap:  # as params.make_context and enable_features do
        secret = f"    p.SetSecretKeyDist(fhe.{params.secret_dist})\n"
        features += ", fhe.FHE"
        setup = f"    cc.EvalBootstrapSetup({list(params.bootstrap)}, [0, 0], SLOTS)\n"
    return _PRELUDE.format(
        unpack_source=inspect.getsource(stored_rows) + "\n\n" + inspect.getsource(unpack_vectors),
        slots=params.slots,
        depth=params.depth,
        scaling_bits=params.scaling_bits,
        first_mod_bits=params.first_mod_bits,
        security=params.security,
        ring_dim=params.ring_dim,
        digits=f"    p.SetNumLargeDigits({params.digits})\n" if params.digits else "",
        secret=secret,
        setup=setup,
        features=features,
        dialect=dialect,
        kernels="\n\n".join(inspect.getsource(f) for f in kernels),
    )


def straight_line(program: Graph, calls: Callable[[int, Op, list[str], str], list[str]]) -> str:
    """The body of ``evaluate``: ``calls(i, op, input_names, result_name)`` gives the lines
    of op ``i``; a comment names each layer (op origin), and a value is deleted after its last
    use (outputs excepted), as the executors drop it."""
    names = {id(v): f"ct{i}" for i, v in enumerate(program.values())}
    last_use = program.last_uses()
    outputs = {id(v) for v in program.outputs}
    body: list[str] = []
    origin = None
    for i, op in enumerate(program.ops):
        if op.origin != origin:
            origin = op.origin
            body.append(f"    # {origin or 'level alignment'}")
        x = [names[id(v)] for v in op.inputs]
        body.extend(f"    {line}" for line in calls(i, op, x, names[id(op.result)]))
        dead = sorted(
            {
                n
                for v, n in zip(op.inputs, x, strict=True)
                if last_use[id(v)] == i and id(v) not in outputs
            }
        )
        if dead:
            body.append(f"    del {', '.join(dead)}")
    body.append(f"    return {names[id(program.outputs[0])]}")
    return "\n".join(body)


def prediction_code(io: dict[str, Any], row: str) -> dict[str, str]:
    """``word`` and ``predict`` (a Python expression on the output vector ``row``) for the
    generated programs: argmax of several outputs, a threshold on one (``hec.metrics``)."""
    from types import SimpleNamespace

    from hec.metrics import artifact_output_is_probability

    if math.prod(io["output_shape"]) > 1:
        return {"word": "argmax", "predict": f"int(np.argmax({row}))"}
    cut = 0.5 if artifact_output_is_probability(SimpleNamespace(io=io)) else 0.0
    return {"word": "class", "predict": f"int({row}[0] > {cut})"}
