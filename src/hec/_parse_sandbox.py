"""Parse untrusted OpenFHE bytes in a throwaway process first (``python -m hec._parse_sandbox``).

OpenFHE's deserializer can abort the whole process on crafted input (an exception thrown where
C++ cannot unwind it ends in ``std::terminate``), which no ``try`` in Python catches. So a
ciphertext from elsewhere is first parsed here, in a child with bounded memory, and put
through a few key-free operations (addition, a plaintext product) that walk every polynomial
the way evaluation will; only if that succeeds does the caller parse it in-process (the same
bytes parse the same way). Importing this module loads only ``openfhe``.

stdin: 8-byte little-endian context length, the serialized crypto context, the ciphertext.
Exit 0 if it parses and the operations run; 1 with a one-line reason on stdout otherwise.
"""

from __future__ import annotations

import resource
import struct
import sys


def main() -> int:
    data = sys.stdin.buffer.read()
    (n,) = struct.unpack_from("<Q", data)
    context, payload = data[8 : 8 + n], data[8 + n :]
    limit = (2 << 30) + 8 * len(data)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:  # inherited from a server worker's own limit
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import openfhe

    try:
        cc = openfhe.DeserializeCryptoContextString(context, openfhe.BINARY)
        ct = openfhe.DeserializeCiphertextString(payload, openfhe.BINARY)
        if ct.GetCryptoContext() != cc:
            print("made for other CKKS parameters")
            return 1
        for feature in (openfhe.PKE, openfhe.LEVELEDSHE):
            cc.Enable(feature)
        cc.EvalAdd(ct, ct)
        pt = cc.MakeCKKSPackedPlaintext([0.5] * min(8, cc.GetBatchSize()), 1, ct.GetLevel())
        cc.EvalMult(ct, pt)
    except (RuntimeError, ValueError, MemoryError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][-120:]
        print(f"{type(exc).__name__}: {first}".rstrip(": "))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
