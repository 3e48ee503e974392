"""Material made for something else is refused before anything is evaluated or decrypted.

A small program (dense 8x8 then x²) with two independent key sets A and B for the same
artifact: keys for another artifact, ciphertexts under other keys, for another layout or of the
wrong kind, and modified artifacts each raise a ``HecError`` that says what is wrong. CKKS would
otherwise decrypt with the wrong key to garbage, silently.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

import hec
from hec.backend_openfhe import load_artifact
from hec.errors import ArtifactError, CiphertextError, KeysError
from hec.options import CompileOptions
from hec.runtime import Client, Server
from hec.runtime import ciphertext_file as cf

from op_cases import CASES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    model, x = CASES["square_pow"]()
    art = hec.compile(model, root / "art")
    other_art = hec.compile(model, root / "other", CompileOptions(baby_step=1))
    assert other_art.content_hash != art.content_hash
    for name in ("a", "b"):
        Client(art).save_keys(root / name)
    server = Server.from_eval_keys(art, root / "a" / "public")
    client_a = Client.from_keys(art, root / "a", secret=True)
    client_b = Client.from_keys(art, root / "b", secret=True)
    return {
        "root": root,
        "art": art,
        "other": other_art,
        "x": x,
        "server": server,
        "a": client_a,
        "b": client_b,
    }


def _reheader(data: bytes, **changes) -> bytes:
    """A forged envelope: same payload, header fields replaced (digest kept consistent)."""
    header, payload = cf.unpack(data)
    header.update(changes)
    for k in ("payload_bytes", "payload_sha256"):
        header.pop(k)
    return cf.pack(header, payload)


def test_round_trip_through_bytes(setup) -> None:
    art, a, server, x = setup["art"], setup["a"], setup["server"], setup["x"]
    out = a.decrypt_bytes(server.evaluate_bytes(a.encrypt_to_bytes(x[0])))
    np.testing.assert_allclose(out.values, hec.simulate(art, x[:1]), atol=1e-3)


def test_keys_for_another_artifact(setup) -> None:
    other, root = setup["other"], setup["root"]
    with pytest.raises(KeysError, match="another artifact"):
        Client.from_keys(other, root / "a", secret=False)
    with pytest.raises(KeysError, match="another artifact"):
        Server.from_eval_keys(other, root / "a" / "public")


def test_public_and_secret_from_different_keygens(setup, tmp_path) -> None:
    art, root = setup["art"], setup["root"]
    shutil.copytree(root / "a" / "public", tmp_path / "public")
    shutil.copytree(root / "b" / "secret", tmp_path / "secret")
    with pytest.raises(KeysError, match="different keygen runs"):
        Client.from_keys(art, tmp_path, secret=True)


def test_ciphertext_under_other_keys(setup) -> None:
    server, a, b, x = setup["server"], setup["a"], setup["b"], setup["x"]
    from_b = b.encrypt_to_bytes(x[0])
    with pytest.raises(CiphertextError, match="other keys"):
        server.evaluate_bytes(from_b)
    # The header is only a label: relabelled, OpenFHE's own key tag still gives it away.
    with pytest.raises(CiphertextError, match="another key"):
        server.evaluate_bytes(_reheader(from_b, key_id=a.key_id))
    result_a = server.evaluate_bytes(a.encrypt_to_bytes(x[0]))
    with pytest.raises(CiphertextError, match="other keys"):
        b.decrypt_bytes(result_a)
    with pytest.raises(CiphertextError, match="another key"):
        b.decrypt_bytes(_reheader(result_a, key_id=b.key_id))


def test_ciphertext_for_another_artifact_or_layout(setup) -> None:
    server, a, x, other = setup["server"], setup["a"], setup["x"], setup["other"]
    data = a.encrypt_to_bytes(x[0])
    with pytest.raises(CiphertextError, match="another artifact"):
        server.evaluate_bytes(_reheader(data, artifact_hash=other.content_hash))
    layout = cf.make_header(setup["art"], a.key_id, "input", 1)["layout"]
    with pytest.raises(CiphertextError, match="layout"):
        server.evaluate_bytes(_reheader(data, layout={**layout, "shape": [2, 4]}))
    with pytest.raises(CiphertextError, match="samples"):
        server.evaluate_bytes(_reheader(data, samples=2))
    result = server.evaluate_bytes(data)
    with pytest.raises(CiphertextError, match="output ciphertext, not an input"):
        server.evaluate_bytes(result)
    with pytest.raises(CiphertextError, match="input ciphertext, not an output"):
        a.decrypt_bytes(data)
    # An output payload relabelled as an input: level and size give it away.
    with pytest.raises(CiphertextError, match="level"):
        server.evaluate_bytes(_reheader(result, kind="input", layout=layout))


def test_truncated_or_modified_ciphertext(setup) -> None:
    server, a, x = setup["server"], setup["a"], setup["x"]
    data = a.encrypt_to_bytes(x[0])
    with pytest.raises(CiphertextError, match="truncated"):
        server.evaluate_bytes(data[:-100])
    flipped = bytearray(data)
    flipped[-5] ^= 1
    with pytest.raises(CiphertextError, match="modified"):
        server.evaluate_bytes(bytes(flipped))
    with pytest.raises(CiphertextError, match="not a hec ciphertext"):
        server.evaluate_bytes(b"\x01" + data)


def _copy_artifact(art, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(art.path, copy)
    return copy


def test_modified_artifact_is_refused(setup, tmp_path) -> None:
    art = setup["art"]
    copy = _copy_artifact(art, tmp_path)
    data = bytearray((copy / "constants.npz").read_bytes())
    data[len(data) // 2] ^= 0x40
    (copy / "constants.npz").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="constants.npz changed"):
        load_artifact(copy)
    copy = _copy_artifact(art, tmp_path / "2")
    params = copy / "params.json"
    params.write_text(params.read_text().replace('"depth": 2', '"depth": 3'))
    with pytest.raises(ArtifactError, match="params.json changed"):
        load_artifact(copy)
    copy = _copy_artifact(art, tmp_path / "3")
    (copy / "program.json").write_bytes((copy / "program.json").read_bytes()[:100])
    with pytest.raises(ArtifactError, match="program.json changed"):
        load_artifact(copy)


def test_mismatched_manifest_is_refused(setup, tmp_path) -> None:
    """A manifest taken from another artifact, or one whose content hash was edited."""
    art, other = setup["art"], setup["other"]
    copy = _copy_artifact(art, tmp_path)
    shutil.copy(other.path / "manifest.json", copy / "manifest.json")
    with pytest.raises(ArtifactError, match="changed since it was compiled"):
        load_artifact(copy)
    copy = _copy_artifact(art, tmp_path / "2")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["content_hash"] = hashlib.sha256(b"other").hexdigest()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="content hash"):
        load_artifact(copy)


def test_artifact_hash_is_deterministic_and_covers_every_file(setup) -> None:
    art = setup["art"]
    again = load_artifact(art.path)
    assert again.content_hash == art.content_hash and len(art.content_hash) == 64
    manifest = json.loads((art.path / "manifest.json").read_text())
    listed = set(manifest["files"])
    on_disk = {p.name for p in art.path.iterdir() if p.is_file()} - {"manifest.json"}
    assert listed == on_disk


def test_keygen_keeps_or_replaces_keys_on_request(setup, tmp_path) -> None:
    from cli_helpers import assert_one_line_error
    from cli_helpers import hec as hec_cli

    art, keydir = setup["art"], tmp_path / "keys"
    assert hec_cli("keygen", str(art.path), "--keys", str(keydir)).returncode == 0
    first = (keydir / "public" / "keys.json").read_text()
    assert_one_line_error(hec_cli("keygen", str(art.path), "--keys", str(keydir)), "already holds")
    (keydir / "public" / "stale.bin").write_bytes(b"old")
    assert hec_cli("keygen", str(art.path), "--keys", str(keydir), "--overwrite").returncode == 0
    assert not (keydir / "public" / "stale.bin").exists()
    assert (keydir / "public" / "keys.json").read_text() != first  # a new key id
