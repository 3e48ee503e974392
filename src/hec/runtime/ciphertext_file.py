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
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hec._environment import load_openfhe
from hec.backend_openfhe.artifact import Artifact
from hec.backend_openfhe.params import CKKSParams
from hec.errors import CiphertextError
from hec.ir.types import encrypted_type

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
        "level": encrypted_type(value.type).level,
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


def deserialize(payload: bytes, cc, key_tag: str, level: int, params: CKKSParams, what: str):
    """OpenFHE-deserialize ``payload`` and check what it built before anyone computes with it.

    The payload must have the size of a ciphertext at ``level`` (two polynomials per remaining
    prime). OpenFHE parses it first in a throwaway process (``hec._parse_sandbox``: OpenFHE can
    abort on crafted bytes), then here under a bounded address space (a forged length field
    fails to allocate instead of exhausting the machine). The result must belong to ``cc``
    (same parameters), carry ``key_tag`` (same keys) and be at ``level`` with ``batch_size``
    slots: anything else would fail deep inside OpenFHE or, worse, decrypt to garbage.
    """
    openfhe = load_openfhe()
    expected = 2 * params.ring_dim * 8 * (params.depth + 1 - level)
    if abs(len(payload) - expected) > _FRAMING_SLACK:
        raise CiphertextError(
            f"{what}: {len(payload)} bytes of ciphertext where one at level {level} of this "
            f"program has about {expected}"
        )
    _parse_in_sandbox(openfhe.Serialize(cc, openfhe.BINARY), payload, what)
    try:
        with _bounded_address_space(_PARSE_MARGIN + 4 * len(payload)):
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
    want = (level, 1, params.batch_size, 2)
    if got != want:
        raise CiphertextError(
            f"{what}: level {got[0]}, scale degree {got[1]}, {got[2]} slots, {got[3]} "
            f"elements; the program expects level {level}, degree 1, {want[2]} slots, 2"
        )
    return ct


def _parse_in_sandbox(context: bytes, payload: bytes, what: str) -> None:
    """Let a child process parse ``payload`` first: OpenFHE may abort on crafted bytes."""
    import struct
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hec._parse_sandbox"],
            input=struct.pack("<Q", len(context)) + context + payload,
            capture_output=True,
            timeout=120,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise CiphertextError(f"{what}: OpenFHE did not finish parsing it") from None
    if proc.returncode < 0:
        raise CiphertextError(
            f"{what}: OpenFHE's parser crashed on it (signal {-proc.returncode}); "
            f"not a ciphertext of this program"
        )
    if proc.returncode != 0:
        reason = proc.stdout.decode(errors="replace").strip().splitlines() or ["unreadable"]
        raise CiphertextError(f"{what}: OpenFHE cannot read it ({reason[0]})")


_FRAMING_SLACK = 64 << 10  # OpenFHE's framing around the polynomials: about 1.5 kB measured
_PARSE_MARGIN = 1 << 30


@contextmanager
def _bounded_address_space(extra: int) -> Iterator[None]:
    """Limit this process's address space to its current size + ``extra`` bytes, then restore.

    Parsing untrusted bytes is single-threaded work; the limit only makes an allocation that a
    forged size asks for fail (``MemoryError``) instead of succeeding and filling the memory.
    """
    try:
        import resource

        with open("/proc/self/status") as f:
            vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, StopIteration, ValueError):
        yield  # no /proc or no rlimits: parse without the bound
        return
    limit = vm + extra
    if soft != resource.RLIM_INFINITY and soft <= limit:
        yield  # already at least as strict (e.g. a server worker's own limit)
        return
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
