"""An input that overflows CKKS loses only its own result, and says so; a key mismatch stays one.

OpenFHE raises the same "approximation error is too high" when a ciphertext is decrypted with
the wrong secret key and when a value overflowed; the key tag tells them apart.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest

import hec
from hec.errors import CiphertextError, PrecisionError
from hec.options import CompileOptions

from cli_helpers import hec as run_hec
from onnx_builders import ModelBuilder

pytestmark = pytest.mark.slow

_OUTLIER = 1000.0  # times the calibrated range: a degree-13 polynomial there is ~1e36
# the fit-error budget picks degree 13 for the ReLU (the accuracy budget, the default for a
# ReLU classifier, may pick degree 2, whose square of an outlier still fits the modulus)
_DEGREE_13 = CompileOptions(error_budget=0.05)


def _model() -> onnx.ModelProto:
    b = ModelBuilder((6,), seed=3)
    t = b.node("Gemm", ["input", b.weight(4, 6), b.weight(4)], transB=1)
    t = b.node("Relu", [t])
    return b.build(b.node("Gemm", [t, b.weight(2, 4)], transB=1))


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    calib = rng.uniform(-1, 1, (64, 6))
    x = rng.uniform(-1, 1, (3, 6))
    x[1] *= _OUTLIER
    return calib, x


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    calib, _ = _inputs()
    out = tmp_path_factory.mktemp("precision") / "art"
    return hec.compile(_model(), out, _DEGREE_13, calibration=calib)


def test_one_diverging_input_keeps_the_others(artifact) -> None:
    _, x = _inputs()
    sim = hec.simulate(artifact, x)
    assert not np.all(np.abs(sim[1]) < 1e6)  # the simulator sees it blow up
    result = hec.run(artifact, x)
    assert sorted(result.failed) == [1]
    why = result.failed[1]
    assert why.startswith("input 1: precision/overflow failure")
    assert "outside the calibrated range" in why and "not made with these keys" not in why
    assert np.all(np.isnan(result.logits[1]))
    np.testing.assert_allclose(result.logits[[0, 2]], sim[[0, 2]], atol=1e-2)
    assert result.stats["failed_inputs"] == [1]


def test_key_mismatch_is_not_called_a_precision_failure(artifact) -> None:
    from hec.runtime import Client, Server

    _, x = _inputs()
    mine, other = Client(artifact), Client(artifact)
    server = Server(artifact, mine.context)
    good = server.evaluate(mine.encrypt(x[0]))
    with pytest.raises(CiphertextError, match="not made with these keys") as info:
        other.decrypt(good)
    assert not isinstance(info.value, PrecisionError)
    overflowed = server.evaluate(mine.encrypt(x[1]))
    with pytest.raises(PrecisionError, match="precision/overflow"):
        mine.decrypt(overflowed)
    # the wrong key on an overflowed ciphertext is still, first of all, the wrong key
    with pytest.raises(CiphertextError, match="not made with these keys") as info:
        other.decrypt(overflowed)
    assert not isinstance(info.value, PrecisionError)
    np.testing.assert_allclose(
        mine.decrypt(good).values, hec.simulate(artifact, x[:1])[0], atol=1e-2
    )


def test_batch_packing_keeps_the_good_slots(tmp_path) -> None:
    calib, x = _inputs()
    art = hec.compile(
        _model(),
        tmp_path / "batch",
        replace(_DEGREE_13, packing="batch", batch_size=4),
        calibration=calib,
    )
    result = hec.run(art, x)
    assert sorted(result.failed) == [1]
    assert "input 1: precision/overflow failure" in result.failed[1]
    np.testing.assert_allclose(result.logits[[0, 2]], hec.simulate(art, x)[[0, 2]], atol=1e-2)


def test_hec_run_prints_and_saves_the_good_results(artifact, tmp_path) -> None:
    _, x = _inputs()
    y = hec.simulate(artifact, x).argmax(1)  # labels the good inputs' results must match
    np.savez(tmp_path / "x.npz", x=x, y=y)
    proc = run_hec(
        "run",
        str(artifact.path),
        "--input",
        str(tmp_path / "x.npz"),
        "--output",
        str(tmp_path / "out.npy"),
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 3 input(s) failed") and "input(s) 1" in last
    assert "input 1: precision/overflow failure" in proc.stdout
    saved = np.load(tmp_path / "out.npy")
    assert np.all(np.isnan(saved[1]))
    np.testing.assert_allclose(saved[[0, 2]], hec.simulate(artifact, x)[[0, 2]], atol=1e-2)
    rows = [line.split() for line in proc.stdout.splitlines() if line[:2] in ("0 ", "1 ", "2 ")]
    assert [r[1] for r in rows][1] == "failed"
    assert "accuracy on 2 labelled inputs (1 failed, left out): encrypted 100.00%" in proc.stdout


def test_sample_blocks_split_a_ciphertext_that_overflows(tmp_path) -> None:
    calib, x = _inputs()
    art = hec.compile(
        _model(),
        tmp_path / "blocks",
        replace(_DEGREE_13, sample_blocks=True),
        calibration=calib,
    )
    assert art.params.blocks >= len(x)  # the three inputs share one ciphertext
    result = hec.run(art, x)
    assert sorted(result.failed) == [1]
    np.testing.assert_allclose(result.logits[[0, 2]], hec.simulate(art, x)[[0, 2]], atol=1e-2)
    assert result.stats["evaluations"] > 1  # evaluated again without the failing input
