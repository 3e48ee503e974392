"""Hostile ciphertexts: the loader answers every one with a ``CiphertextError``, or accepts it.

Mutations of a real ciphertext file: truncation, byte flips in the header and the payload,
payload flips with the digest recomputed (what a deliberate attacker sends, so that OpenFHE's
own parser is reached), header fields replaced by arbitrary JSON, and garbage. What passes
every check can only differ from the original in polynomial coefficients, which evaluates to
noise and crashes nothing.
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hec
from hec.errors import CiphertextError
from hec.runtime import Client, Server
from hec.runtime import ciphertext_file as cf

from cli_helpers import assert_one_line_error
from cli_helpers import hec as hec_cli
from op_cases import CASES

_EXAMPLES = os.environ.get("HEC_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_EXAMPLES or 80),
    deadline=None,
    derandomize=_EXAMPLES is None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def loader(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-ct")
    model, x = CASES["square_pow"]()
    art = hec.compile(model, root / "art")
    Client(art).save_keys(root / "keys")
    client = Client.from_keys(art, root / "keys", secret=True)
    server = Server.from_eval_keys(art, root / "keys" / "public")
    data = client.encrypt_to_bytes(x[0])
    return {"root": root, "art": art, "client": client, "server": server, "data": data}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@st.composite
def hostile(draw, data: bytes) -> bytes:
    header, payload = cf.unpack(data)
    kind = draw(st.sampled_from(["truncate", "flip", "payload", "field", "garbage"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 6))):
            out[draw(st.integers(0, min(len(out) - 1, 2000)))] = draw(st.integers(0, 255))
        return bytes(out)
    if kind == "payload":  # digest recomputed: OpenFHE's parser sees the mutation
        body = bytearray(payload)
        for _ in range(draw(st.integers(1, 6))):
            front = draw(st.booleans())
            i = draw(st.integers(0, min(len(body) - 1, 600) if front else len(body) - 1))
            body[i] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            cut = draw(st.integers(0, len(body)))
            body = body[:cut] + body[cut + draw(st.integers(0, 64)) :]
        header = {k: v for k, v in header.items() if not k.startswith("payload_")}
        return cf.pack(header, bytes(body))
    if kind == "field":
        header = dict(header)
        header[draw(st.sampled_from(sorted(header) + ["extra"]))] = draw(JSON)
        line = json.dumps(header).encode()
        return cf.MAGIC + line + b"\n" + payload
    return cf.MAGIC + draw(st.binary(max_size=300))


@FUZZ
@given(st.data())
def test_hostile_ciphertexts_are_refused_or_harmless(loader, data) -> None:
    mutated = data.draw(hostile(loader["data"]))
    try:
        ct, samples = loader["server"].load_request(mutated, "fuzz")
    except CiphertextError as exc:
        assert str(exc).startswith("fuzz: ") and "\n" not in str(exc)
        return
    # Accepted: a well-formed input ciphertext of this program and these keys.
    assert samples == 1 and ct.GetLevel() == 0


@FUZZ
@given(st.data())
def test_hostile_results_are_refused_before_decryption(loader, data) -> None:
    result = loader["server"].evaluate_bytes(loader["data"]) if "result" not in loader else None
    loader.setdefault("result", result)
    mutated = data.draw(hostile(loader["result"]))
    try:
        dec = loader["client"].decrypt_bytes(mutated, "fuzz")
    except CiphertextError as exc:
        assert str(exc).startswith("fuzz: ")
        return
    assert dec.values.shape == (1, *loader["art"].output_shape)


def test_cli_gives_one_line_for_hostile_ciphertexts(loader) -> None:
    root, art, data = loader["root"], loader["art"], loader["data"]
    header, payload = cf.unpack(data)
    header = {k: v for k, v in header.items() if not k.startswith("payload_")}
    cases = {
        "truncated.ct": data[: len(data) // 2],
        "garbage.ct": os.urandom(4096),
        "forged.ct": cf.pack(header, payload[:200] + b"\xff" * 8 + payload[208:]),
        "huge.ct": data + bytes(4 << 20),
    }
    for name, content in cases.items():
        (root / name).write_bytes(content)
        proc = hec_cli(
            "eval",
            str(art.path),
            "--eval-keys",
            str(root / "keys" / "public"),
            str(root / name),
            "-o",
            str(root / "y.ct"),
        )
        assert_one_line_error(proc, name)
    proc = hec_cli("decrypt", str(art.path), "--keys", str(root / "keys"), str(root / "garbage.ct"))
    assert_one_line_error(proc, "garbage.ct")
