"""Trained models with ReLU / SiLU / MaxPool made HE-friendly (the conversion's acceptance tests).

Accuracy is measured on the held-out digits split against the original model in onnxruntime;
the compiled program is checked against the converted model run by onnxruntime. LeNet-5 (ReLU)
keeps its accuracy without training at degree 5; at degree 2, and for the SiLU CNN whose
MaxPool becomes an average, fine-tuning recovers it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

import hec
from hec.calibrate import load_dataset
from hec.frontend.reference import onnxruntime_outputs
from hec.optimize import optimize

from conftest import REPO, assert_matches_reference

LENET = REPO / "examples" / "lenet5_digits"
SILU = REPO / "examples" / "cnn_silu_digits"


def _data(folder):
    x, y = load_dataset(folder / "calib.npz")
    xt, yt = load_dataset(folder / "test.npz")
    return x, y, xt, yt


def _optimize(folder, out, degree, **kwargs):
    x, y, xt, yt = _data(folder)
    return optimize(
        folder / "model.onnx",
        out,
        x,
        y,
        hec.CompileOptions(degree=degree),
        evaluation=(xt, yt),
        **kwargs,
    )


def test_lenet5_keeps_its_accuracy_without_training(tmp_path) -> None:
    acc = _optimize(LENET, tmp_path / "lenet.he.onnx", degree=5)["accuracy"]
    assert acc["samples"] == 360
    assert acc["converted"] >= acc["original"] - 0.015, acc


def test_silu_cnn_maxpool_correction_limits_the_loss(tmp_path) -> None:
    report = _optimize(SILU, tmp_path / "silu.he.onnx", degree=2)
    kinds = [row["replaces"] for row in report["layers"]]
    assert kinds.count("maxpool") == 2 and kinds.count("sigmoid") == 3  # SiLU = x·sigmoid(x)
    acc = report["accuracy"]
    assert acc["converted"] >= acc["original"] - 0.2, acc  # needs fine-tuning for more


@pytest.mark.parametrize("folder", [LENET, SILU], ids=lambda p: p.name)
def test_converted_onnx_runs_in_onnxruntime_and_compiles_to_it(folder, tmp_path) -> None:
    _optimize(folder, tmp_path / "model.he.onnx", degree=2)
    he_model = tmp_path / "model.he.onnx"
    onnx.checker.check_model(onnx.load(str(he_model)))
    _, _, xt, _ = _data(folder)
    reference = onnxruntime_outputs(he_model, xt[:20])
    art = hec.compile(he_model, tmp_path / "out")
    assert art.report.totals.ciphertext_multiplies > 0  # degree 2: one square each
    assert_matches_reference(hec.simulate(art, xt[:20]), reference, rel=1e-5)


def test_compile_with_calib_equals_optimize_then_compile(tmp_path) -> None:
    _optimize(SILU, tmp_path / "silu.he.onnx", degree=5)
    x, y, xt, _ = _data(SILU)
    direct = hec.compile(
        SILU / "model.onnx",
        tmp_path / "direct",
        hec.CompileOptions(degree=5),
        calibration=x,
        labels=y,
    )
    via_onnx = hec.compile(tmp_path / "silu.he.onnx", tmp_path / "via")
    # the same program; its key sizes follow the parameters, which calibration chose for the
    # direct compile (--precision) and the defaults for the other
    same = dataclasses.replace(via_onnx.report.totals, rotation_key_bytes=0)
    assert dataclasses.replace(direct.report.totals, rotation_key_bytes=0) == same
    # the ONNX file stores float32 constants: agreement to float32 rounding
    assert_matches_reference(
        hec.simulate(via_onnx, xt[:20]), hec.simulate(direct, xt[:20]), rel=1e-5
    )
    assert direct.report.accuracy["samples"] == len(x)


@pytest.mark.slow
def test_encrypted_silu_cnn_agrees_with_the_simulator(tmp_path) -> None:
    x, y, xt, _ = _data(SILU)
    art = hec.compile(
        SILU / "model.onnx", tmp_path / "out", hec.CompileOptions(degree=2), calibration=x
    )
    result = hec.run(art, xt[:2])
    np.testing.assert_allclose(result.logits, hec.simulate(art, xt[:2]), atol=1e-2, rtol=0)


@pytest.mark.train
def test_fine_tuning_recovers_accuracy(tmp_path) -> None:
    pytest.importorskip("torch")
    report = _optimize(
        SILU,
        tmp_path / "ft.onnx",
        degree=2,
        fine_tune_epochs=6,
        train=load_dataset(SILU / "train.npz"),
    )
    before, after = report["accuracy_before_fine_tune"], report["accuracy"]
    assert after["converted"] > before["converted"]
    assert after["converted"] >= after["original"] - 0.015, report
    _, _, xt, _ = _data(SILU)
    assert onnxruntime_outputs(tmp_path / "ft.onnx", xt[:10]).shape == (10, 10)


@pytest.mark.train
def test_diverging_fine_tuning_stops_with_one_line_and_keeps_nothing(tmp_path) -> None:
    """Training data far outside the calibrated intervals makes the polynomials blow up: the
    loss is no longer finite, and fine-tuning stops with advice instead of writing NaN weights
    (which later failed in a NumPy reduction)."""
    pytest.importorskip("torch")
    from hec.errors import ParameterError

    x, y = load_dataset(SILU / "train.npz")
    with pytest.raises(ParameterError, match="diverged in epoch 1.*lower --lr"):
        _optimize(SILU, tmp_path / "ft.onnx", degree=2, fine_tune_epochs=1, train=(x * 1e30, y))
    assert not (tmp_path / "ft.onnx").exists()


@pytest.mark.train
def test_a_range_penalty_keeps_polynomial_inputs_in_their_intervals(tmp_path) -> None:
    """Fine-tuning fast enough to push activations out of their intervals: with the range
    penalty, fewer of the evaluation inputs' values fall outside (where a polynomial departs
    from its activation and the compiled program's ranges no longer hold)."""
    pytest.importorskip("torch")
    train = load_dataset(SILU / "train.npz")

    def outside(report) -> float:
        rows = [r for r in report["layers"] if "inputs_outside" in r]
        return sum(r["inputs_outside"]["evaluation"]["values"] for r in rows)

    options = {"degree": 2, "fine_tune_epochs": 2, "train": train, "learning_rate": 2e-2}
    free = _optimize(SILU, tmp_path / "free.onnx", **options)
    kept = _optimize(SILU, tmp_path / "kept.onnx", range_penalty=10.0, **options)
    assert kept["fine_tune"]["range_penalty"] == 10.0 and "range_penalty" not in free["fine_tune"]
    assert outside(free) > 0, "the learning rate no longer pushes values out; raise it"
    assert outside(kept) < outside(free)
