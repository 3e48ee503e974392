"""The slot dialect: what CKKS can do to vectors of ``slots`` numbers.

Every rule below checks the HE state of the inputs (level, scale degree) and returns the state of
the result; the result's layout is the producer's choice and is taken from its declared type.

=============  =====================================================  =======================
kind           meaning                                                level / scale
=============  =====================================================  =======================
rotate{k}      y[i] = x[(i + k) mod slots]                            unchanged
rotate_sum{ks} y = Σ_i rotate(x_i, ks[i]); the key switches share one    unchanged
               ModDown (each stays in the extended basis P·Q until
               the sum, then one division by P: hoisted ModDown)
mul_plain      y = x ⊙ p, constant ``p``                              scale +1
add_plain      y = x + p, constant ``p``                              unchanged
add            y = x + z (same level and scale)                       unchanged
mul            y = x ⊙ z, relinearized (same level, scale 1)          scale 2
rescale        divide by the last prime                               level +1, scale -1
level_reduce   drop ``levels`` primes without rescaling               level + levels
matvec         y = Σ_k d_k ⊙ rot(x, k) + b, rescaled (see lowering)   level +1
poly{coeffs}   y = Σ c_k T_k(x) (Chebyshev, x in [-1, 1]) on each slot  level + poly_depth
readout        copy b of x (``x``'s slots, repeated ``copies`` times)    level +1
               gives output b at slot ``b·slots + anchor`` of a
               ``copies·slots``-slot result (``expand-copies``)
bootstrap      y = x, its levels refreshed (OpenFHE's EvalBootstrap   level ``level``
               from level ``from``; ``place-bootstraps``)
=============  =====================================================  =======================
"""

from __future__ import annotations

from hec.ir.core import Graph, Op, VerifyError, register_op
from hec.ir.types import CipherType

__all__ = [
    "poly_depth",
    "max_degree_for_depth",
    "rotation_offsets",
    "rotation_amounts",
    "key_groups",
    "BOOTSTRAP_GROUP",
]

BOOTSTRAP_GROUP = -1  # a bootstrap op's ``key_group`` (``group-keys``): the bootstrapping keys


# Levels OpenFHE's EvalChebyshevSeries consumes (FIXEDMANUAL, measured on openfhe 1.6.1; the
# test tier checks it): the largest degree evaluated within each depth.
_CHEBYSHEV_DEPTH = ((1, 1), (2, 2), (5, 3), (13, 4), (27, 5), (59, 6), (119, 7), (247, 8))


def poly_depth(coeffs: tuple[float, ...]) -> int:
    """Levels a Chebyshev series of this degree costs on OpenFHE."""
    degree = len(coeffs) - 1
    for max_degree, depth in _CHEBYSHEV_DEPTH:
        if degree <= max_degree:
            return depth
    raise ValueError(f"polynomial degree {degree} is beyond what hec evaluates")


def max_degree_for_depth(depth: int) -> int:
    """The largest Chebyshev degree OpenFHE evaluates within ``depth`` levels."""
    return max((d for d, lv in _CHEBYSHEV_DEPTH if lv <= depth), default=0)


def rotation_offsets(op: Op) -> tuple[int, ...]:
    """The rotation amounts a ``matvec`` op reads, one per stored diagonal."""
    return tuple(op.attrs["offsets"])


def rotation_amounts(op: Op) -> tuple[int, ...]:
    """The rotation amounts (one key switch each) of a slot op: ``rotate``'s ``k``, every term
    of a ``rotate_sum``, none for the others."""
    if op.kind == "rotate":
        return (int(op.attrs["k"]),)
    if op.kind == "rotate_sum":
        return tuple(int(k) for k in op.attrs["ks"])
    return ()


def key_groups(graph: Graph) -> tuple[tuple[int, ...], ...]:
    """The rotation amounts of each key group (the ``key_group`` attributes ``group-keys``
    sets); empty when no op has one: the program loads all its keys at once."""
    groups: dict[int, set[int]] = {}
    for op in graph.ops:
        g = op.attrs.get("key_group")
        if g is not None and g != BOOTSTRAP_GROUP:
            groups.setdefault(int(g), set()).update(rotation_amounts(op))
    return tuple(tuple(sorted(groups[g])) for g in sorted(groups))


def _cipher(op: Op, i: int) -> CipherType:
    t = op.inputs[i].type
    if not isinstance(t, CipherType):
        raise VerifyError(f"{op.kind} ({op.origin}): input {i} is not a ciphertext")
    return t


def _declared(op: Op, level: int, scale_deg: int) -> list[CipherType]:
    t = op.results[0].type
    slots = _cipher(op, 0).slots
    layout = t.layout if isinstance(t, CipherType) else None
    return [CipherType(slots, level, scale_deg, layout)]


def _vector_const(op: Op, name: str) -> None:
    c = op.consts[name]
    if c.shape[-1] != _cipher(op, 0).slots:
        raise VerifyError(f"{op.kind} ({op.origin}): constant {name} has {c.shape[-1]} slots")


@register_op("rotate", "slot", 1)
def _rotate(op: Op) -> list[CipherType]:
    x = _cipher(op, 0)
    # Exactly 0, not 0 mod slots: block-local programs rotate by whole blocks (see
    # schedule_rotations), which moves data when a ciphertext holds several blocks.
    if op.attrs["k"] == 0:
        raise VerifyError(f"rotate ({op.origin}): rotation by 0")
    return _declared(op, x.level, x.scale_deg)


@register_op("rotate_sum", "slot", -1)
def _rotate_sum(op: Op) -> list[CipherType]:
    ks = op.attrs["ks"]
    if len(op.inputs) < 2 or len(ks) != len(op.inputs):
        raise VerifyError(
            f"rotate_sum ({op.origin}): {len(op.inputs)} terms, {len(ks)} amounts "
            "(at least 2 terms, one amount each)"
        )
    if 0 in ks:
        raise VerifyError(f"rotate_sum ({op.origin}): rotation by 0")
    x = _cipher(op, 0)
    for i in range(1, len(op.inputs)):
        t = _cipher(op, i)
        if (x.level, x.scale_deg, x.slots) != (t.level, t.scale_deg, t.slots):
            raise VerifyError(f"rotate_sum ({op.origin}): operands differ: {x} vs {t}")
    return _declared(op, x.level, x.scale_deg)


@register_op("mul_plain", "slot", 1)
def _mul_plain(op: Op) -> list[CipherType]:
    x = _cipher(op, 0)
    _vector_const(op, "p")
    return _declared(op, x.level, x.scale_deg + 1)


@register_op("add_plain", "slot", 1)
def _add_plain(op: Op) -> list[CipherType]:
    x = _cipher(op, 0)
    _vector_const(op, "p")
    return _declared(op, x.level, x.scale_deg)


def _aligned(op: Op) -> tuple[CipherType, CipherType]:
    x, z = _cipher(op, 0), _cipher(op, 1)
    if (x.level, x.scale_deg, x.slots) != (z.level, z.scale_deg, z.slots):
        raise VerifyError(f"{op.kind} ({op.origin}): operands differ: {x} vs {z}")
    return x, z


@register_op("add", "slot", 2)
def _add(op: Op) -> list[CipherType]:
    x, _ = _aligned(op)
    return _declared(op, x.level, x.scale_deg)


@register_op("mul", "slot", 2)
def _mul(op: Op) -> list[CipherType]:
    x, _ = _aligned(op)
    if x.scale_deg != 1:
        raise VerifyError(f"mul ({op.origin}): operands must be rescaled first")
    return _declared(op, x.level, 2)


@register_op("rescale", "slot", 1)
def _rescale(op: Op) -> list[CipherType]:
    x = _cipher(op, 0)
    if x.scale_deg < 2:
        raise VerifyError(f"rescale ({op.origin}): nothing to rescale at scale Δ^{x.scale_deg}")
    return _declared(op, x.level + 1, x.scale_deg - 1)


@register_op("level_reduce", "slot", 1)
def _level_reduce(op: Op) -> list[CipherType]:
    x = _cipher(op, 0)
    if op.attrs["levels"] < 1 or x.scale_deg != 1:
        raise VerifyError(f"level_reduce ({op.origin}): needs levels >= 1 at scale Δ")
    return _declared(op, x.level + op.attrs["levels"], 1)


@register_op("matvec", "slot", 1)
def _matvec(op: Op) -> list[CipherType]:
    x = _cipher(op, 0)
    if x.scale_deg != 1:
        raise VerifyError(f"matvec ({op.origin}): input must be at scale Δ")
    diags = op.consts["diags"]
    if diags.shape != (len(op.attrs["offsets"]), x.slots):
        raise VerifyError(f"matvec ({op.origin}): diagonals {diags.shape} do not match offsets")
    _vector_const(op, "bias")
    half = op.attrs.get("period")
    if half is not None:  # a periodic output: rows in the first half, the bias in both
        bias = op.consts["bias"]
        if half * 2 != x.slots or diags[:, half:].any() or (bias[half:] != bias[:half]).any():
            raise VerifyError(
                f"matvec ({op.origin}): period {half} needs rows in the first half of "
                f"{x.slots} slots and the bias repeated in the second"
            )
    return _declared(op, x.level + 1, 1)


@register_op("poly", "slot", 1)
def _poly(op: Op) -> list[CipherType]:
    x = _cipher(op, 0)
    if x.scale_deg != 1:
        raise VerifyError(f"poly ({op.origin}): input must be at scale Δ")
    return _declared(op, x.level + poly_depth(tuple(op.attrs["coeffs"])), 1)


@register_op("readout", "slot", 1)
def _readout(op: Op) -> list[CipherType]:
    x = _cipher(op, 0)
    if x.scale_deg != 1:
        raise VerifyError(f"readout ({op.origin}): input must be at scale Δ")
    w, copies = op.consts["weights"], op.attrs["copies"]
    if w.ndim != 2 or w.shape[1] != x.slots or not 0 < w.shape[0] <= copies:
        raise VerifyError(f"readout ({op.origin}): weights {w.shape} for {copies} copies")
    if op.consts["bias"].shape != (w.shape[0],):
        raise VerifyError(f"readout ({op.origin}): one bias per output needed")
    t = op.results[0].type
    layout = t.layout if isinstance(t, CipherType) else None
    return [CipherType(x.slots * copies, x.level + 1, 1, layout)]


@register_op("bootstrap", "slot", 1)
def _bootstrap(op: Op) -> list[CipherType]:
    x = _cipher(op, 0)
    if x.scale_deg != 1:
        raise VerifyError(f"bootstrap ({op.origin}): input must be at scale Δ")
    if x.level > op.attrs["from"]:
        raise VerifyError(
            f"bootstrap ({op.origin}): input at level {x.level}, past level {op.attrs['from']}"
        )
    if op.attrs["level"] < op.attrs["lands"]:
        raise VerifyError(f"bootstrap ({op.origin}): result above the level it lands at")
    return _declared(op, op.attrs["level"], 1)
