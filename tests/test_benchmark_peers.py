"""The peers' adapters (benchmarks/peers/): what runs without the peers installed.

TenSEAL's stages are planned from ``model.onnx`` with numpy and onnx only, so the exactness of
that plan (average pooling folded into the dense layer, the im2col window order) is checked
against onnxruntime here; the encrypted run itself is in the quick benchmark test.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from conftest import EXAMPLE, REPO, assert_matches_reference

sys.path.insert(0, str(REPO / "benchmarks" / "peers"))
sys.path.insert(0, str(REPO / "benchmarks"))

import peers  # noqa: E402
import tenseal_adapter  # noqa: E402
from common import CannotExpress, load_model, load_split  # noqa: E402

from hec.frontend.reference import onnxruntime_outputs  # noqa: E402


def test_tenseal_plan_of_cryptonets_equals_onnxruntime() -> None:
    stages, in_shape = tenseal_adapter.plan(load_model(EXAMPLE))
    assert in_shape == (1, 8, 8)
    kinds = [type(s).__name__ for s in stages]
    # pooling and flatten fold into fc1: conv, square, fc1 (512 -> 32), square, fc2
    assert kinds == ["Conv", "Square", "Dense", "Square", "Dense"]
    assert stages[2].matrix.shape == (32, 512)
    x, _ = load_split(EXAMPLE)
    x = x[:40]
    out = np.array([tenseal_adapter.plain_forward(stages, xi) for xi in x])
    assert_matches_reference(out, onnxruntime_outputs(EXAMPLE / "model.onnx", x), rel=1e-5)


def test_tenseal_parameters_are_128_bit() -> None:
    stages, _ = tenseal_adapter.plan(load_model(EXAMPLE))
    assert tenseal_adapter.levels(stages) == 6  # conv + pack_vectors, square, mm, square, mm
    ring, moduli, scale = tenseal_adapter.parameters(6)
    assert (ring, sum(moduli), scale) == (8192, 218, 26)  # HE standard: log Q <= 218 at 8192
    ring, moduli, scale = tenseal_adapter.parameters(6, min_scale_bits=40)  # hec's precision
    assert (ring, sum(moduli), scale) == (16384, 360, 40)
    ring, moduli, _ = tenseal_adapter.parameters(9)  # 60 + 9 x 40 + 60 > 438: 30-bit scales
    assert ring == 16384 and sum(moduli) <= 438


@pytest.mark.parametrize("example", ["lenet5_digits", "cnn_silu_digits"])
def test_tenseal_says_why_it_cannot_run_multichannel_convolutions(example: str) -> None:
    with pytest.raises(CannotExpress, match="conv2d_im2col only applies"):
        tenseal_adapter.plan(load_model(REPO / "examples" / example))


def test_a_peer_that_is_not_installed_gets_a_row_saying_so(tmp_path, monkeypatch) -> None:
    assert peers.peer_python("hec_no_such_module") is None
    monkeypatch.setitem(peers.PEERS, "Nothing", ("tenseal_adapter.py", "hec_no_such_module", []))
    row = peers.run_peer("Nothing", "m", EXAMPLE, 1, tmp_path, timeout=60)
    assert row == {"model": "m", "tool": "Nothing", "status": peers.NOT_INSTALLED}


@pytest.mark.slow
@pytest.mark.skipif(peers.peer_python("tenseal") is None, reason="tenseal not installed")
def test_tenseal_adapter_runs_encrypted_and_reports(tmp_path) -> None:
    row = peers.run_peer("TenSEAL", "cryptonets", EXAMPLE, 1, tmp_path, timeout=600)
    assert row["status"] == "ok", row
    assert row["ring_dim"] == 8192 and sum(row["coeff_mod_bits"]) == 218
    assert row["acc_plain"] == pytest.approx(0.983, abs=0.01)
    # 26-bit scales: the logits carry errors of a few units on values up to ~80
    assert row["max_abs_err_vs_plain"] < 10
    for key in ("keygen_s", "encrypt_ms", "evaluate_s", "decrypt_ms", "eval_key_mb", "peak_rss_mb"):
        assert row[key] > 0
