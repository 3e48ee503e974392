"""Trained models with ReLU / SiLU / MaxPool made HE-friendly (the conversion's acceptance tests).

Accuracy is measured on the held-out digits split against the original model in onnxruntime;
the compiled program is checked against the converted model run by onnxruntime.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import REPO, assert_matches_reference

import hec
from hec.calibrate import load_dataset
from hec.frontend.reference import onnxruntime_outputs
from hec.optimize import optimize

LENET = REPO / "examples" / "lenet5_digits"
SILU = REPO / "examples" / "cnn_silu_digits"
MODELS = [m for m in (LENET, SILU) if (m / "model.onnx").exists()]


def _data(folder):
    x, y = load_dataset(folder / "calib.npz")
    xt, yt = load_dataset(folder / "test.npz")
    return x, y, xt, yt


@pytest.fixture(scope="module", params=MODELS, ids=lambda p: p.name)
def converted(request, tmp_path_factory):
    folder = request.param
    x, y, xt, yt = _data(folder)
    out = tmp_path_factory.mktemp(folder.name) / "model.he.onnx"
    report = optimize(folder / "model.onnx", out, x, y, hec.CompileOptions(degree=2),
                      evaluation=(xt, yt))
    return folder, out, report


def test_accuracy_within_one_and_a_half_points(converted) -> None:
    _, _, report = converted
    acc = report["accuracy"]
    assert acc["samples"] == 360
    assert acc["converted"] >= acc["original"] - 0.015, acc


def test_converted_onnx_runs_in_onnxruntime_and_compiles_to_it(converted, tmp_path) -> None:
    folder, he_model, _ = converted
    onnx.checker.check_model(onnx.load(str(he_model)))
    _, _, xt, _ = _data(folder)
    reference = onnxruntime_outputs(he_model, xt[:40])
    art = hec.compile(he_model, tmp_path / "out")
    assert art.report["totals"]["polynomials"] + art.report["totals"]["ciphertext_multiplies"] > 0
    assert_matches_reference(hec.simulate(art, xt[:40]), reference, rel=1e-5)


def test_compile_with_calib_equals_optimize_then_compile(converted, tmp_path) -> None:
    folder, he_model, _ = converted
    x, y, xt, _ = _data(folder)
    direct = hec.compile(folder / "model.onnx", tmp_path / "direct",
                         hec.CompileOptions(degree=2), calibration=x, labels=y)
    via_onnx = hec.compile(he_model, tmp_path / "via")
    assert direct.report["totals"] == via_onnx.report["totals"]
    np.testing.assert_allclose(hec.simulate(direct, xt[:20]), hec.simulate(via_onnx, xt[:20]),
                               rtol=1e-9, atol=1e-9)
    assert direct.report["accuracy"]["samples"] == len(x)


@pytest.mark.train
def test_fine_tuning_recovers_accuracy(tmp_path) -> None:
    pytest.importorskip("torch")
    x, y, xt, yt = _data(LENET)
    train = load_dataset(LENET / "train.npz")
    report = optimize(LENET / "model.onnx", tmp_path / "ft.onnx", x, y,
                      hec.CompileOptions(degree=2), evaluation=(xt, yt), fine_tune_epochs=2,
                      train=train)
    before, after = report["accuracy_before_fine_tune"], report["accuracy"]
    assert after["converted"] > before["converted"]
    assert report["fine_tune"]["losses"][-1] < report["fine_tune"]["losses"][0]
    reference = onnxruntime_outputs(tmp_path / "ft.onnx", xt[:10])  # still a valid model
    assert reference.shape == (10, 10)
