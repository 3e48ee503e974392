"""CKKS parameters chosen from the program, and the OpenFHE context they describe.

The depth is the deepest level any value reaches; the batch size is the program's slot count
(slot packing) or its batch (batch packing: one input per slot);
OpenFHE then picks the smallest ring dimension that keeps ``log2 Q·P`` within its 128-bit table
(we raise it if the slots need more room). Scaling technique is ``FIXEDMANUAL``: the program says
where to rescale, so the level in every ciphertext's type is exactly what OpenFHE will see.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hec._environment import load_openfhe
from hec.errors import ParameterError
from hec.ir import BatchCipherType, CipherType, Graph
from hec.ir.slot_ops import rotation_amounts
from hec.ir.types import type_as

__all__ = [
    "BOOTSTRAP_RING_DIM",
    "BootstrapChain",
    "CKKSParams",
    "bootstrap_chain",
    "bootstrap_key_count",
    "bootstrap_precompute_bytes",
    "choose_params",
    "enable_features",
    "fits_leveled",
    "default_digits",
    "key_switch_digits",
    "key_switch_key_bytes",
    "make_context",
    "min_ring_dim",
    "program_depth",
    "rotation_indices",
]

SECURITY_LEVELS = ("HEStd_128_classic", "HEStd_192_classic", "HEStd_256_classic")
MAX_RING_DIM = 1 << 17


@dataclass(frozen=True)
class CKKSParams:
    """Everything needed to rebuild the same crypto context on the client and the server."""

    ring_dim: int
    depth: int
    slots: int
    scaling_bits: int = 40
    first_mod_bits: int = 60
    security: str = "HEStd_128_classic"
    rotation_indices: tuple[int, ...] = ()
    needs_relinearization: bool = False
    needs_poly: bool = False
    # Samples per ciphertext: > 1 when the program is block-local and the ring's N/2 slots
    # hold ``blocks`` copies of the ``slots``-slot layout side by side (sample blocks).
    blocks: int = 1
    # OpenFHE's number of key-switching digits (dnum); 0: its default (``key_switch_digits``).
    # More digits need a smaller auxiliary modulus P, which can let a deep program fit a
    # smaller ring at 128-bit security (``choose_params``).
    digits: int = 0
    # OpenFHE's CoeffsToSlots/SlotsToCoeffs level budget when the program bootstraps
    # (``bootstrap`` ops); empty: a leveled program (no bootstrapping keys or set-up).
    bootstrap: tuple[int, ...] = ()
    # The rotation keys per key group (``group-keys``): the client writes each group's keys
    # (and the bootstrapping keys) to a file of its own, the server loads one at a time.
    # Empty: all keys in one file, loaded at once.
    key_groups: tuple[tuple[int, ...], ...] = ()
    # OpenFHE's secret-key distribution (a ``SecretKeyDist`` name); empty: its default, the
    # uniform ternary secret of the HE standard. A bootstrapping program always names its own
    # (``bootstrap_chain``: ``SPARSE_ENCAPSULATED`` since 2026-12-06); one that does not, such
    # as a params.json written before the field existed, was made with ``UNIFORM_TERNARY``.
    secret_dist: str = ""
    log_q_bits: int = field(init=False)

    def __post_init__(self) -> None:
        # The moduli are primes of exactly these sizes; OpenFHE's GetModulus() overflows a
        # float above 1024 bits, so the size is computed, not read.
        object.__setattr__(self, "log_q_bits", self.first_mod_bits + self.depth * self.scaling_bits)
        if self.bootstrap and not self.secret_dist:
            object.__setattr__(self, "secret_dist", "UNIFORM_TERNARY")

    @property
    def batch_size(self) -> int:
        """OpenFHE's batch size: the slots one ciphertext's plaintext vector spans."""
        return self.slots * self.blocks

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["rotation_indices"] = list(self.rotation_indices)
        if not self.digits:  # OpenFHE's default: the files of earlier versions, unchanged
            del d["digits"]
        if self.bootstrap:
            d["bootstrap"] = list(self.bootstrap)
        else:  # a leveled program: the files of earlier versions, unchanged
            del d["bootstrap"]
        if self.key_groups:
            d["key_groups"] = [list(g) for g in self.key_groups]
        else:  # keys loaded at once: the files of earlier versions, unchanged
            del d["key_groups"]
        if not self.secret_dist:  # OpenFHE's default: the files of earlier versions, unchanged
            del d["secret_dist"]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CKKSParams:
        d = {k: v for k, v in d.items() if k != "log_q_bits"}
        d["rotation_indices"] = tuple(d["rotation_indices"])
        d["bootstrap"] = tuple(d.get("bootstrap", ()))
        d["key_groups"] = tuple(tuple(g) for g in d.get("key_groups", ()))
        return cls(**d)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


_AUX_PRIME_BITS = 60  # OpenFHE's default size of the primes of P


def key_switch_digits(params: CKKSParams) -> tuple[int, int]:
    """OpenFHE's number of key-switching digits and of auxiliary primes for ``params``.

    Hybrid key switching: ``dnum`` digits (OpenFHE's default: 3 above depth 3, 2 at depths
    1-3) and enough 60-bit primes in ``P`` to cover the widest digit
    (``tests/runtime/test_resources.py`` checks the sizes against the files OpenFHE writes).
    """
    towers = params.depth + 1
    dnum = params.digits or default_digits(params.depth)
    per_digit = math.ceil(towers / dnum)
    # The first digit holds the first (largest) prime: the widest digit sets P's size.
    widest = params.first_mod_bits + (per_digit - 1) * params.scaling_bits
    return dnum, math.ceil(widest / _AUX_PRIME_BITS)


def default_digits(depth: int) -> int:
    """OpenFHE's default number of key-switching digits for ``depth``."""
    return 3 if depth > 3 else (2 if depth > 0 else 1)


def key_switch_key_bytes(params: CKKSParams) -> int:
    """Bytes of one rotation (or relinearization) key: ``2·dnum`` polynomials over the
    ``depth + 1`` primes of Q and the auxiliary primes of P, 64-bit words."""
    dnum, aux = key_switch_digits(params)
    return 2 * dnum * params.ring_dim * (params.depth + 1 + aux) * 8


def program_depth(graph: Graph) -> int:
    """The number of rescales on the deepest path (the multiplicative depth to provision)."""
    return max(
        (v.type.level for v in graph.values() if isinstance(v.type, CipherType | BatchCipherType)),
        default=0,
    )


def rotation_indices(graph: Graph) -> tuple[int, ...]:
    """The rotation amounts the program uses: the only rotation keys the client makes."""
    return tuple(sorted({k for op in graph.ops for k in rotation_amounts(op)}))


def _cc_params(
    openfhe,
    depth: int,
    slots: int,
    scaling_bits: int,
    first_mod_bits: int,
    security: str,
    ring_dim: int | None,
    digits: int = 0,
    secret_dist: str = "",
):
    p = openfhe.CCParamsCKKSRNS()
    if secret_dist:
        p.SetSecretKeyDist(getattr(openfhe, secret_dist))
    if digits:
        p.SetNumLargeDigits(digits)
    p.SetMultiplicativeDepth(max(depth, 1))
    p.SetScalingModSize(scaling_bits)
    p.SetFirstModSize(first_mod_bits)
    p.SetScalingTechnique(openfhe.FIXEDMANUAL)
    p.SetSecurityLevel(getattr(openfhe, security))
    p.SetBatchSize(slots)
    if ring_dim is not None:
        p.SetRingDim(ring_dim)
    return p


def make_context(params: CKKSParams, precompute: bool = True):
    """Build the OpenFHE crypto context for ``params`` (client and server build the same);
    ``precompute``: see ``enable_features``."""
    openfhe = load_openfhe()
    cc = openfhe.GenCryptoContext(
        _cc_params(
            openfhe,
            params.depth,
            params.batch_size,
            params.scaling_bits,
            params.first_mod_bits,
            params.security,
            params.ring_dim,
            params.digits,
            params.secret_dist,
        )
    )
    enable_features(cc, params, precompute)
    return cc


def enable_features(cc, params: CKKSParams, precompute: bool = True) -> None:
    """Switch on what ``params``' program uses; for a bootstrapping program also OpenFHE's
    bootstrapping set-up, which a deserialized context does not carry (the client, the server
    and the generated program all call this). Its precomputation (``precompute``; gigabytes:
    ``bootstrap_precompute_bytes``) is needed to bootstrap only, not to make keys, encrypt or
    decrypt: a client skips it, a server makes it with ``cc.EvalBootstrapPrecompute``."""
    openfhe = load_openfhe()
    features = [openfhe.PKE, openfhe.KEYSWITCH, openfhe.LEVELEDSHE]
    if params.needs_poly or params.bootstrap:
        features.append(openfhe.ADVANCEDSHE)
    if params.bootstrap:
        features.append(openfhe.FHE)
    for f in features:
        cc.Enable(f)
    if params.bootstrap:
        cc.EvalBootstrapSetup(list(params.bootstrap), [0, 0], params.batch_size, 0, precompute)


# Bootstrapping (``bootstrap_chain``). OpenFHE bootstraps at ring 2^16 for 128-bit security (its
# modulus needs ~1,300 bits). The scale is 59 bits: measured at ring 2^16, 64 slots, level budget
# [1, 1], inputs in [-1, 1], the refreshed values are 1.8e-4 off at 59 bits, 1.7e-2 at 52 and
# garbage at 45-50 bits; the first prime may exceed the scale by at most OpenFHE's correction
# factor (6-9 bits), so 60.
BOOTSTRAP_RING_DIM = 1 << 16
BOOTSTRAP_SCALING_BITS = 59
BOOTSTRAP_FIRST_MOD_BITS = 60
# Sparse-secret encapsulation (Bossuat, Troncoso-Pastoriza and Hubaux, ACNS 2022): the secret
# key stays the HE standard's uniform ternary one; only inside ``EvalBootstrap`` a key switch at
# the first prime alone (60 bits, far below what a sparse secret needs for 128 bits at ring
# 2^16) moves the ciphertext to a sparse secret, whose smaller overflow makes the modular
# reduction 4 levels shallower. Measured at 16,384 slots, budget [3, 3]: 16 levels instead of 20,
# 18 s instead of about 30 per bootstrap, 2.6e-5 instead of 2e-4 off on inputs in [-8, 8].
BOOTSTRAP_SECRET_DIST = "SPARSE_ENCAPSULATED"


@dataclass(frozen=True)
class BootstrapChain:
    """The modulus chain of a bootstrapping program with ``slots`` slots.

    ``depth`` is the context's multiplicative depth (the most 128-bit security leaves at
    ring 2^16); OpenFHE's ``EvalBootstrap`` takes a ciphertext at level ``depth - 1`` (its
    last two primes) and returns it at level ``lands``, so ``depth - 1 - lands`` levels of the
    program run between two bootstraps (values are kept off the last level, whose single
    prime, one bit above the scale, would hold nothing bigger than 1).
    """

    slots: int
    level_budget: tuple[int, int]
    depth: int
    digits: int
    lands: int
    secret_dist: str = BOOTSTRAP_SECRET_DIST

    @property
    def max_level(self) -> int:
        """The deepest level a value of the program may reach."""
        return self.depth - 1

    @property
    def levels_between(self) -> int:
        """Levels of work one bootstrap buys."""
        return self.max_level - self.lands


def _level_budget(slots: int) -> tuple[int, int]:
    """CoeffsToSlots/SlotsToCoeffs levels: a budget of ``b`` levels precomputes about
    ``b·2·slots^(1/b)`` diagonals and costs ``2b`` levels of the chain (measured at ring 2^16,
    ``docs/bootstrapping.md``): one level each up to 128 slots (3.1 GB at 128; 6.2 GB and 77
    keys at 256, where two levels take 1.4 GB and 44 keys), two up to 1,024 (2.9 GB), three
    above (3.7 GB at 16,384, where two take 11.6)."""
    if slots <= 1 << 7:
        return (1, 1)
    return (2, 2) if slots <= 1 << 10 else (3, 3)


# Key-switching digits of a bootstrapping chain: at ring 2^16 OpenFHE's default 3 digits leave
# depth 20, 4 digits depth 22 (5: 22, 6: 17; measured with budget [1, 1]).
_BOOTSTRAP_DIGITS = 4


@functools.lru_cache(maxsize=16)
def bootstrap_chain(slots: int, security: str = "HEStd_128_classic") -> BootstrapChain:
    """The deepest chain OpenFHE accepts at ring 2^16 for bootstrapping ``slots`` slots.

    Raises:
        ParameterError: no chain leaves room for work between bootstraps.
    """
    openfhe = load_openfhe()
    budget = _level_budget(slots)
    dist = getattr(openfhe, BOOTSTRAP_SECRET_DIST)
    boot_depth = int(openfhe.CryptoContext.GetBootstrapDepth(list(budget), dist))
    # EvalBootstrap returns a product at scale Δ² one level above its consumed depth
    # (measured: level 15 of 16 with budget [1, 1] at depth 20 and 22); rescaled, it is at
    # level ``boot_depth``, scale Δ (the executor checks every level against OpenFHE's)
    lands = boot_depth
    for depth in range(boot_depth + 10, lands + 2, -1):  # the deepest first
        params = _cc_params(
            openfhe,
            depth,
            slots,
            BOOTSTRAP_SCALING_BITS,
            BOOTSTRAP_FIRST_MOD_BITS,
            security,
            BOOTSTRAP_RING_DIM,
            _BOOTSTRAP_DIGITS,
            BOOTSTRAP_SECRET_DIST,
        )
        try:
            openfhe.GenCryptoContext(params)
        except RuntimeError:
            continue
        return BootstrapChain(slots, budget, depth, _BOOTSTRAP_DIGITS, lands)
    raise ParameterError(
        f"OpenFHE leaves no levels between bootstraps of {slots} slots at {security}"
    )


# Rotation keys ``EvalBootstrapKeyGen`` made at ring 2^16 (depth 22, 4 digits; OpenFHE 1.6.1),
# by (slots, level budget, secret distribution); measured 2026-12-05 (uniform) and 2026-12-06
# (encapsulated) with ``scripts/measure_bootstrap_memory.py --keys``.
_BOOTSTRAP_KEYS_MEASURED: dict[tuple[int, tuple[int, ...], str], int] = {
    (64, (1, 1), "UNIFORM_TERNARY"): 46,
    (256, (1, 1), "UNIFORM_TERNARY"): 75,
    (1024, (2, 2), "UNIFORM_TERNARY"): 41,
    (4096, (2, 2), "UNIFORM_TERNARY"): 70,
    (4096, (3, 3), "UNIFORM_TERNARY"): 51,
    (16384, (2, 2), "UNIFORM_TERNARY"): 67,
    (16384, (3, 3), "UNIFORM_TERNARY"): 64,
    (16384, (4, 4), "UNIFORM_TERNARY"): 78,
    (64, (1, 1), "SPARSE_ENCAPSULATED"): 48,
    (128, (1, 1), "SPARSE_ENCAPSULATED"): 47,
    (256, (1, 1), "SPARSE_ENCAPSULATED"): 77,
    (256, (2, 2), "SPARSE_ENCAPSULATED"): 44,
    (1024, (2, 2), "SPARSE_ENCAPSULATED"): 43,
    (4096, (3, 3), "SPARSE_ENCAPSULATED"): 53,
    (16384, (3, 3), "SPARSE_ENCAPSULATED"): 66,
}


def bootstrap_key_count(params: CKKSParams) -> int:
    """Rotation keys ``EvalBootstrapKeyGen`` adds for ``params`` (0 for a leveled program):
    measured where the slot count and level budget were (``_BOOTSTRAP_KEYS_MEASURED``), else
    estimated from the baby and giant steps of CoeffsToSlots and SlotsToCoeffs per level of
    their budget and the automorphisms that fold a sparse vector over the ring's slots (within
    about 30% of the measured counts, either way)."""
    if not params.bootstrap:
        return 0
    measured = _BOOTSTRAP_KEYS_MEASURED.get(
        (params.batch_size, tuple(params.bootstrap), params.secret_dist)
    )
    if measured is not None and params.ring_dim == BOOTSTRAP_RING_DIM:
        return measured
    levels = params.bootstrap[0]
    radix = params.batch_size ** (1 / levels)  # what each level of the transforms merges
    steps = levels * 4 * math.ceil(math.sqrt(radix))  # baby and giant steps of both
    folds = int(math.log2(params.ring_dim // (2 * params.batch_size)))
    # and the conjugation key; encapsulation's two key switches to and from the sparse secret
    return steps + folds + 1 + (2 if params.secret_dist == "SPARSE_ENCAPSULATED" else 0)


def bootstrap_precompute_bytes(params: CKKSParams) -> int:
    """Memory of OpenFHE's bootstrapping precomputation (``EvalBootstrapSetup``, or
    ``EvalBootstrapPrecompute``): the diagonals of CoeffsToSlots and SlotsToCoeffs encoded as
    plaintexts over the chain. A level of a transform merging ``2^e`` slots has ``2^(e+1) - 1``
    diagonals; the budget splits ``log2(slots)`` over its levels as evenly as it can. Each
    diagonal holds ``depth + 1`` towers, half that with a one-level budget (OpenFHE's plain
    linear transform). Fitted to measurements at ring 2^16 (``scripts/
    measure_bootstrap_memory.py``): 11.6 GB for 16,384 slots with budget [2, 2] (this gives
    12.3), 3.5 with [3, 3] (3.8), 5.5 for 4,096 with [2, 2] (6.1), 5.7 for 256 with [1, 1]
    (6.2), 1.5 for 64 with [1, 1] (1.5)."""
    if not params.bootstrap:
        return 0
    bits = int(math.log2(params.batch_size))
    total = 0.0
    for levels in params.bootstrap:
        parts = [bits // levels + (1 if i < bits % levels else 0) for i in range(levels)]
        towers = (params.depth + 1) * (0.5 if levels == 1 else 1.0)
        total += sum(2 ** (e + 1) - 1 for e in parts) * towers
    return int(total * params.ring_dim * 8)


@functools.lru_cache(maxsize=64)  # asked by every lowering of a compile (each candidate)
def fits_leveled(
    depth: int, scaling_bits: int, first_mod_bits: int, security: str, ring_dim: int
) -> bool:
    """Whether a leveled program of ``depth`` fits ``ring_dim`` at ``security`` with some
    number of key-switching digits (the most digits make the smallest auxiliary modulus)."""
    openfhe = load_openfhe()
    for digits in (0, depth + 1):
        params = _cc_params(openfhe, depth, 8, scaling_bits, first_mod_bits, security, None, digits)
        try:
            if int(openfhe.GenCryptoContext(params).GetRingDimension()) <= ring_dim:
                return True
        except RuntimeError:
            pass
    return False


def min_ring_dim(
    depth: int,
    scaling_bits: int = 40,
    first_mod_bits: int = 60,
    security: str = "HEStd_128_classic",
) -> int:
    """The smallest ring dimension OpenFHE accepts for ``depth`` at ``security``."""
    openfhe = load_openfhe()
    try:
        cc = openfhe.GenCryptoContext(
            _cc_params(openfhe, max(depth, 1), 8, scaling_bits, first_mod_bits, security, None)
        )
    except RuntimeError as exc:
        raise ParameterError(
            f"OpenFHE accepts no parameters for depth {depth} at {security}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    return int(cc.GetRingDimension())


def choose_params(
    graph: Graph,
    scaling_bits: int = 40,
    first_mod_bits: int = 60,
    security: str = "HEStd_128_classic",
    sample_blocks: bool = False,
) -> CKKSParams:
    """Pick parameters for a scheduled slot program (asks OpenFHE for the ring dimension).

    With ``sample_blocks`` (a block-local program) the batch size is the ring's ``N/2`` slots
    and each ciphertext carries ``N / (2·slots)`` samples; the ring stays what security needs.
    """
    if security not in SECURITY_LEVELS:
        raise ParameterError(f"security level {security!r} is not one of {SECURITY_LEVELS}")
    if not 20 <= scaling_bits < first_mod_bits <= 60:
        raise ParameterError(
            f"need 20 <= scaling bits ({scaling_bits}) < first modulus bits "
            f"({first_mod_bits}) <= 60"
        )
    kinds = {op.kind for op in graph.ops}
    if "matvec" in kinds:
        raise ValueError("the program still has matvec ops; run schedule-rotations first")
    openfhe = load_openfhe()
    t = graph.inputs[0].type
    slots = t.batch if isinstance(t, BatchCipherType) else type_as(t, CipherType).slots
    if "bootstrap" in kinds or graph.attrs.get("bootstrap"):  # ``place-bootstraps``' chain
        if sample_blocks:
            raise ParameterError("sample blocks and bootstrapping do not combine; drop one")
        chain = bootstrap_chain(slots, security)
        return CKKSParams(
            ring_dim=BOOTSTRAP_RING_DIM,
            depth=chain.depth,
            slots=slots,
            scaling_bits=BOOTSTRAP_SCALING_BITS,
            first_mod_bits=BOOTSTRAP_FIRST_MOD_BITS,
            security=security,
            rotation_indices=rotation_indices(graph),
            needs_relinearization=True,  # bootstrapping multiplies ciphertexts
            needs_poly="poly" in kinds,
            digits=chain.digits,
            bootstrap=chain.level_budget,
            secret_dist=chain.secret_dist,
        )
    depth = max(program_depth(graph), 1)
    ring_dim = None
    try:
        # the security-minimal ring first (OpenFHE refuses a batch larger than it offers)
        ring_dim, digits = _smallest_ring(openfhe, depth, scaling_bits, first_mod_bits, security)
        ring_dim = max(ring_dim, 2 * slots)
        openfhe.GenCryptoContext(
            _cc_params(
                openfhe, depth, slots, scaling_bits, first_mod_bits, security, ring_dim, digits
            )
        )
    except RuntimeError as exc:
        raise ParameterError(
            f"OpenFHE accepts no parameters for depth {depth}, {slots} slots "
            f"at {security}: {(str(exc).splitlines() or [type(exc).__name__])[0]}"
        ) from None
    if ring_dim > MAX_RING_DIM:
        raise ParameterError(
            f"depth {depth} needs ring dimension {ring_dim} at {security}; "
            f"reduce the network's depth (fewer polynomial layers)"
        )
    blocks = ring_dim // (2 * slots) if sample_blocks else 1
    if blocks > 1:
        try:  # full packing at the same ring: the context the client and server will build
            openfhe.GenCryptoContext(
                _cc_params(
                    openfhe,
                    depth,
                    slots * blocks,
                    scaling_bits,
                    first_mod_bits,
                    security,
                    ring_dim,
                    digits,
                )
            )
        except RuntimeError as exc:
            raise ParameterError(
                f"OpenFHE refuses {slots * blocks} slots at ring {ring_dim}: "
                f"{(str(exc).splitlines() or [type(exc).__name__])[0]}"
            ) from None
    return CKKSParams(
        ring_dim=ring_dim,
        depth=depth,
        slots=slots,
        scaling_bits=scaling_bits,
        first_mod_bits=first_mod_bits,
        security=security,
        rotation_indices=rotation_indices(graph),
        needs_relinearization=bool(kinds & {"mul", "poly", "relinearize"}),
        needs_poly="poly" in kinds,
        blocks=blocks,
        digits=digits,
    )


def _smallest_ring(
    openfhe, depth: int, scaling_bits: int, first_mod_bits: int, security: str
) -> tuple[int, int]:
    """The smallest ring OpenFHE accepts for the modulus at ``security``, and the number of
    key-switching digits that gets it (0: OpenFHE's default; more only where they shrink it).

    More digits shrink ``P`` (it covers one digit of ``Q``), which leaves more of the ring's
    128-bit budget to ``Q``. They cost: a rotation key grows with the digits, and so does a
    rotation's inner product; a ring half as large halves every ciphertext and makes every
    operation about twice as fast. Measured (one thread, depth 9, 32-bit scale): ring 2^15 with
    3 digits, rotation 52 ms, hoisted 30 ms, ct x pt 1.6 ms; ring 2^14 with 10 digits: 48, 20
    and 0.74 ms. So the smallest ring wins, with the fewest digits that reach it."""

    def ring(digits: int) -> int | None:
        params = _cc_params(openfhe, depth, 8, scaling_bits, first_mod_bits, security, None, digits)
        try:
            return int(openfhe.GenCryptoContext(params).GetRingDimension())
        except RuntimeError:
            if not digits:
                raise
            return None

    best, best_digits = ring(0), 0
    assert best is not None
    for digits in range(default_digits(depth) + 1, depth + 2):  # at most a digit per prime
        smaller = ring(digits)
        if smaller is not None and smaller < best:
            best, best_digits = smaller, digits
    return best, best_digits
