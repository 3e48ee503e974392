"""Memory, disk and time estimates before key generation, and what the CLI does with them."""

from __future__ import annotations

import numpy as np
import pytest

import hec
from hec.cli.main import main
from hec.errors import ResourceError
from hec.runtime import Client, resources
from hec.runtime import ciphertext_file as cf

from conftest import EXAMPLE
from op_cases import CASES


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    model, _ = CASES["square_pow"]()
    return hec.compile(model, tmp_path_factory.mktemp("res") / "art")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["square_pow", "cryptonets_like"])  # depth 2 and 5: 2 and 3 digits
def test_size_estimates_match_what_openfhe_writes(case: str, tmp_path) -> None:
    model, x = CASES[case]()
    art = hec.compile(model, tmp_path / "art")
    est = resources.estimate(art)
    client = Client(art)
    sizes = client.save_keys(tmp_path / "keys")
    n_rot = len(art.params.rotation_indices)
    per_key = sizes["public/rotation_keys.bin"] / n_rot
    assert abs(per_key - est.key_bytes) / est.key_bytes < 0.01
    assert abs(sizes["public/mult_key.bin"] - est.key_bytes) / est.key_bytes < 0.01
    evaluation = sizes["public/rotation_keys.bin"] + sizes["public/mult_key.bin"]
    assert abs(evaluation - est.eval_key_bytes) / est.eval_key_bytes < 0.01
    _, payload = cf.unpack(client.encrypt_to_bytes(x[0]))
    assert abs(len(payload) - est.ciphertext_bytes) / est.ciphertext_bytes < 0.01
    assert est.keygen_memory > est.eval_key_bytes and est.server_memory > est.eval_key_bytes


def test_bundled_model_estimate_is_the_measured_key_size(tmp_path) -> None:
    """ENVIRONMENT.md: ring 2^14, depth 5: 6.3 MB per rotation key (3 digits, 8 primes)."""
    art = hec.compile(EXAMPLE / "model.onnx", tmp_path / "art")
    est = resources.estimate(art)
    assert est.key_bytes == 2 * 3 * 16384 * 8 * 8
    assert est.eval_key_bytes == (len(art.params.rotation_indices) + 1) * est.key_bytes


def test_keygen_is_refused_beyond_the_machine(small, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(resources, "machine_memory", lambda: (64 << 20, 32 << 20))
    with pytest.raises(ResourceError, match="--ignore-resource-check"):
        resources.check_keygen(small, tmp_path / "keys")
    resources.check_keygen(small, tmp_path / "keys", ignore=True)
    err = capsys.readouterr().err
    assert "warning:" in err and "more than this machine" in err and "keygen:" in err


def test_warns_when_memory_is_short_but_exists(small, tmp_path, monkeypatch, capsys) -> None:
    est = resources.estimate(small)
    monkeypatch.setattr(
        resources, "machine_memory", lambda: (4 * est.keygen_memory, est.keygen_memory // 2)
    )
    resources.check_keygen(small, tmp_path / "keys")
    assert "may swap" in capsys.readouterr().err


def test_keygen_refuses_a_full_disk(small, tmp_path, monkeypatch) -> None:
    class Usage:
        free = 1 << 20

    monkeypatch.setattr(resources.shutil, "disk_usage", lambda _: Usage())
    with pytest.raises(ResourceError, match="on disk"):
        resources.check_keygen(small, tmp_path / "keys")


def test_cli_refusal_is_one_line_and_writes_no_keys(small, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(resources, "machine_memory", lambda: (64 << 20, 32 << 20))
    with pytest.raises(SystemExit) as exit_info:
        main(["keygen", str(small.path), "--keys", str(tmp_path / "keys")])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "memory" in err[0]
    assert not (tmp_path / "keys").exists()


def test_estimates_grow_with_the_program(small, tmp_path) -> None:
    model, _ = CASES["cryptonets_like"]()
    big = hec.compile(model, tmp_path / "big")
    a, b = resources.estimate(small), resources.estimate(big)
    assert b.key_bytes > a.key_bytes  # deeper: more primes and digits
    assert b.eval_key_bytes > a.eval_key_bytes and b.keygen_seconds > a.keygen_seconds
    assert b.eval_seconds > a.eval_seconds > 0
    assert np.isfinite([b.server_memory, b.keygen_memory]).all()


@pytest.mark.slow
def test_more_key_switching_digits_fit_a_deep_program_in_a_smaller_ring(tmp_path) -> None:
    """Depth 9 at 31-bit scales: OpenFHE's 3 digits need ring 2^15 (P covers a third of Q);
    one digit a prime shrinks P to one prime and fits 2^14. Keys are as large as predicted."""
    from onnx_builders import ModelBuilder

    b = ModelBuilder((8,), seed=5)
    h = "input"
    for _ in range(4):
        h = b.node("Gemm", [h, b.weight(8, 8, scale=0.3)])
        h = b.node("Mul", [h, h])
    model = b.build(b.node("Gemm", [h, b.weight(8, 3)]))
    options = hec.CompileOptions(scaling_bits=31, first_mod_bits=41)
    art = hec.compile(model, tmp_path / "art", options)
    assert art.params.depth == 9
    assert art.params.ring_dim == 1 << 14 and art.params.digits > 3
    est = resources.estimate(art)
    sizes = Client(art).save_keys(tmp_path / "keys")
    per_key = sizes["public/rotation_keys.bin"] / len(art.params.rotation_indices)
    assert abs(per_key - est.key_bytes) / est.key_bytes < 0.01
    # the generated stand-alone program builds the same context
    assert (
        f"SetNumLargeDigits({art.params.digits})"
        in (tmp_path / "art" / "openfhe_program.py").read_text()
    )
