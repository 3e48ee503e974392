"""The ciphertext file (and HTTP body): a small JSON header, then OpenFHE's BINARY serialization.

::

    HEC-CIPHERTEXT 1\\n
    {"kind": "input", "artifact_hash": ..., "key_id": ..., "samples": 1, ...}\\n
    <OpenFHE BINARY ciphertext, payload_bytes long>

The header travels with the ciphertext (a sidecar file could be lost or swapped in transit), and
binds it to an artifact, a key id and the program's input or output layout. Everything in the
header is checked before OpenFHE sees the payload; what OpenFHE then builds is checked against
the crypto context, OpenFHE's key tag, the level and the slot count before it is evaluated or
decrypted. Parsing the header needs no OpenFHE, so the HTTP front end can refuse a request
without touching the evaluation process.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hec._environment import load_openfhe
from hec.backend_openfhe.artifact import Artifact
from hec.errors import CiphertextError

__all__ = [
    "MAGIC",
    "MAX_HEADER_BYTES",
    "CiphertextHeader",
    "check_header",
    "deserialize",
    "max_bytes",
    "pack",
    "serialize",
    "unpack",
]

MAGIC = b"HEC-CIPHERTEXT 1\n"
MAX_HEADER_BYTES = 16 << 10
KINDS = ("input", "output")

CiphertextHeader = dict[str, Any]


def pack(header: CiphertextHeader, payload: bytes) -> bytes:
    """Envelope ``payload`` with ``header`` (its size and SHA-256 are added here)."""
    full = {
        **header,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    line = json.dumps(full, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + line + b"\n" + payload


def unpack(data: bytes, what: str = "ciphertext") -> tuple[CiphertextHeader, bytes]:
    """Split and check an envelope: magic, header, payload size and SHA-256.

    Raises:
        CiphertextError: anything that is not a complete, unmodified hec ciphertext.
    """
    if not data.startswith(MAGIC):
        raise CiphertextError(f"{what}: not a hec ciphertext (made by `hec encrypt`/`hec eval`)")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER_BYTES)
    if end < 0:
        raise CiphertextError(f"{what}: damaged header (no end within {MAX_HEADER_BYTES} bytes)")
    try:
        header = json.loads(data[len(MAGIC) : end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CiphertextError(f"{what}: damaged header (not JSON)") from None
    if not isinstance(header, dict):
        raise CiphertextError(f"{what}: damaged header (not an object)")
    payload = data[end + 1 :]
    size, digest = header.get("payload_bytes"), header.get("payload_sha256")
    if not isinstance(size, int) or not isinstance(digest, str):
        raise CiphertextError(f"{what}: damaged header (no payload size or digest)")
    if len(payload) != size:
        raise CiphertextError(
            f"{what}: {len(payload)} payload bytes, the header says {size} (truncated or "
            f"padded in transit)"
        )
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CiphertextError(f"{what}: payload modified in transit (SHA-256 mismatch)")
    return header, payload


def max_bytes(artifact: Artifact) -> int:
    """An upper bound on any ciphertext file of ``artifact``: what readers accept at most.

    A fresh ciphertext is two polynomials of ``ring_dim`` 64-bit words per prime, with
    ``depth + 1`` primes at level 0; the header and OpenFHE's framing add a few kilobytes.
    """
    p = artifact.params
    return 2 * p.ring_dim * 8 * (p.depth + 1) + MAX_HEADER_BYTES + (64 << 10)


def check_header(
    header: CiphertextHeader,
    artifact: Artifact,
    key_id: str,
    kind: str,
    what: str = "ciphertext",
) -> int:
    """Check that the header belongs to ``artifact``, keys ``key_id`` and ``kind``; samples.

    Raises:
        CiphertextError: it was made for another artifact, with other keys, for another
            layout, or is an output where an input is expected (or the reverse).
    """
    if header.get("kind") not in KINDS:
        raise CiphertextError(f"{what}: damaged header (kind {header.get('kind')!r})")
    if header["kind"] != kind:
        hint = {
            "input": "hec eval takes what hec encrypt wrote",
            "output": "hec decrypt takes what hec eval wrote",
        }[kind]
        raise CiphertextError(f"{what}: is an {header['kind']} ciphertext, not an {kind} ({hint})")
    made_for = str(header.get("artifact_hash", ""))
    if made_for != artifact.content_hash:
        raise CiphertextError(
            f"{what}: made for another artifact (hash {made_for[:16]}, this is "
            f"{artifact.key_binding}); encrypt it again for this artifact"
        )
    if header.get("key_id") != key_id:
        raise CiphertextError(
            f"{what}: encrypted with other keys (key id {str(header.get('key_id'))[:16]}, these "
            f"keys are {key_id[:16]}); decryption would return garbage"
        )
    want = expected_layout(artifact, kind)
    if header.get("layout") != want:
        raise CiphertextError(
            f"{what}: layout {header.get('layout')} does not match the program's {kind} "
            f"layout {want}"
        )
    samples = header.get("samples")
    if not isinstance(samples, int) or not 1 <= samples <= artifact.params.blocks:
        raise CiphertextError(
            f"{what}: holds {samples!r} samples; this program takes 1 to "
            f"{artifact.params.blocks} per ciphertext"
        )
    return samples


def expected_layout(artifact: Artifact, kind: str) -> dict[str, Any]:
    """The layout fields a header of ``kind`` must carry for ``artifact``."""
    value = artifact.program.inputs[0] if kind == "input" else artifact.program.outputs[0]
    shape = artifact.input_shape if kind == "input" else artifact.output_shape
    return {
        "shape": list(shape),
        "slots": artifact.params.slots,
        "blocks": artifact.params.blocks,
        "level": value.type.level,
    }


def make_header(artifact: Artifact, key_id: str, kind: str, samples: int) -> CiphertextHeader:
    return {
        "format": "hec-ciphertext",
        "kind": kind,
        "artifact_hash": artifact.content_hash,
        "key_id": key_id,
        "samples": samples,
        "layout": expected_layout(artifact, kind),
    }


def serialize(ct) -> bytes:
    openfhe = load_openfhe()
    return openfhe.Serialize(ct, openfhe.BINARY)


def deserialize(payload: bytes, cc, key_tag: str, level: int, batch_size: int, what: str):
    """OpenFHE-deserialize ``payload`` and check what it built before anyone computes with it.

    A ciphertext whose parameters differ from ``cc`` (another context), whose key tag is not
    ``key_tag`` (other keys) or whose level or slot count is not the program's is refused: any
    of these would otherwise fail deep inside OpenFHE or, worse, decrypt to garbage silently.
    """
    openfhe = load_openfhe()
    try:
        ct = openfhe.DeserializeCiphertextString(payload, openfhe.BINARY)
    except (RuntimeError, ValueError, MemoryError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CiphertextError(
            f"{what}: OpenFHE cannot read it ({type(exc).__name__}: {first[-120:]})"
        ) from None
    if ct is None or ct.GetCryptoContext() != cc:
        raise CiphertextError(f"{what}: made for other CKKS parameters than these keys")
    if ct.GetKeyTag() != key_tag:
        raise CiphertextError(
            f"{what}: encrypted under another key (OpenFHE key tag {ct.GetKeyTag()[:16]}, "
            f"expected {key_tag[:16]}); decryption would return garbage"
        )
    got = (ct.GetLevel(), ct.GetNoiseScaleDeg(), ct.GetSlots(), ct.NumberCiphertextElements())
    if got != (level, 1, batch_size, 2):
        raise CiphertextError(
            f"{what}: level {got[0]}, scale degree {got[1]}, {got[2]} slots, {got[3]} "
            f"elements; the program expects level {level}, degree 1, {batch_size} slots, 2"
        )
    return ct
