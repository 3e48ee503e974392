"""What ``hec run``, ``hec optimize`` and ``hec compile --calib`` report: accuracy on labelled
inputs, one-output classifiers, inputs outside the fitted intervals, fixed-batch exports, and
one-line errors for calibration data of the wrong shape."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

import hec as hec_api
from hec.metrics import accuracy, ends_with_sigmoid, predictions

from cli_helpers import assert_one_line_error, hec
from conftest import EXAMPLE
from onnx_builders import ModelBuilder, run_onnxruntime


def _fixed_batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model as torch exports it without ``dynamic_axes``: batch fixed to 1."""
    fixed = onnx.ModelProto.FromString(model.SerializeToString())
    for v in (*fixed.graph.input, *fixed.graph.output):
        v.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.checker.check_model(fixed)
    return fixed


def _relu_net(final: str | None = None, outputs: int = 3) -> onnx.ModelProto:
    b = ModelBuilder((2, 6, 6), seed=1)
    t = b.node("Relu", ["input"])
    t = b.node("MaxPool", [t], kernel_shape=[2, 2], strides=[2, 2])
    t = b.node("Flatten", [t])
    t = b.node("Gemm", [t, b.weight(outputs, 18), b.weight(outputs)], transB=1)
    return b.build(b.node(final, [t]) if final else t)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("reports")
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, (200, 2, 6, 6))
    model = _relu_net()
    onnx.save(model, str(d / "dynamic.onnx"))
    onnx.save(_fixed_batch_one(model), str(d / "fixed.onnx"))
    y = run_onnxruntime(model, x).argmax(1)
    np.savez(d / "calib.npz", x=x, y=y)
    np.savez(d / "rank.npz", x=x.reshape(200, -1))
    np.savez(d / "size.npz", x=x[:, :, :5, :5])
    return d


# -- calibration data of the wrong shape: one line, for both commands, both cases ------------
@pytest.mark.parametrize("bad", ["rank", "size"])
@pytest.mark.parametrize("command", ["optimize", "compile"])
def test_calibration_data_of_the_wrong_shape_is_one_line(data, tmp_path, command, bad) -> None:
    proc = hec(
        command,
        str(data / "dynamic.onnx"),
        "-o",
        str(tmp_path / "out.onnx" if command == "optimize" else tmp_path / "out"),
        "--calib",
        str(data / f"{bad}.npz"),
    )
    assert_one_line_error(proc, "--calib", "the model takes [N, 2, 6, 6]")


def test_evaluation_data_of_the_wrong_shape_is_one_line(data, tmp_path) -> None:
    proc = hec(
        "optimize",
        str(data / "dynamic.onnx"),
        "-o",
        str(tmp_path / "out.onnx"),
        "--calib",
        str(data / "calib.npz"),
        "--eval",
        str(data / "size.npz"),
    )
    assert_one_line_error(proc, "--eval", "the model takes [N, 2, 6, 6]")


# -- a model exported with a fixed batch of 1 --------------------------------------------------
def test_fixed_batch_model_optimizes_compiles_and_compares(data, tmp_path) -> None:
    proc = hec(
        "optimize", str(data / "fixed.onnx"), "-o", str(tmp_path / "he.onnx"), "--calib",
        str(data / "calib.npz"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "he.report.json").read_text())
    assert report["accuracy"]["original"] == 1.0  # the labels are the original's predictions
    proc = hec(
        "compile", str(data / "fixed.onnx"), "-o", str(tmp_path / "art"), "--calib",
        str(data / "calib.npz"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = hec(
        "run", str(tmp_path / "art"), "--input", str(data / "calib.npz"), "--simulate",
        "--compare-onnx", str(data / "fixed.onnx"), "--output", str(tmp_path / "y.npy"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    simulated = np.load(tmp_path / "y.npy")
    y = np.load(data / "calib.npz")["y"]
    # accuracy of the simulated run and of onnxruntime on the same labelled inputs
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("accuracy on 200"))
    sim_acc = float(re.search(r"simulated ([\d.]+)%", line).group(1))
    ort_acc = float(re.search(r"onnxruntime ([\d.]+)%", line).group(1))
    assert sim_acc == pytest.approx(100 * np.mean(simulated.argmax(1) == y), abs=0.006)
    assert ort_acc == 100.0
    agree = int(np.sum(simulated.argmax(1) == y))
    assert f"argmax agrees with onnxruntime on {agree}/200" in proc.stdout


def test_run_simulate_prints_accuracy_on_labelled_npz(tmp_path) -> None:
    art = tmp_path / "cryptonets"
    assert hec("compile", str(EXAMPLE / "model.onnx"), "-o", str(art)).returncode == 0
    proc = hec("run", str(art), "--input", str(EXAMPLE / "test.npz"), "--simulate")
    assert proc.returncode == 0, proc.stderr
    with np.load(EXAMPLE / "test.npz") as d:
        x, y = d["x"], d["y"]
    expected = 100 * np.mean(hec_api.simulate(art, x).argmax(1) == y)
    assert f"accuracy on {len(x)} labelled inputs: simulated {expected:.2f}%" in proc.stdout
    assert expected > 80


# -- one-output binary classifiers ---------------------------------------------------------
def test_predictions_threshold_one_output() -> None:
    logits = np.array([[-2.0], [0.5], [3.0], [-0.1]])
    np.testing.assert_array_equal(predictions(logits), [0, 1, 1, 0])
    probabilities = 1 / (1 + np.exp(-logits))
    np.testing.assert_array_equal(predictions(probabilities, probability=True), [0, 1, 1, 0])
    np.testing.assert_array_equal(predictions(probabilities, threshold=0.9), [0, 0, 1, 0])
    several = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    np.testing.assert_array_equal(predictions(several), [1, 0])
    assert accuracy(probabilities, np.array([[0.0], [1.0], [1.0], [1.0]]), True) == 0.75


def test_one_output_sigmoid_classifier_accuracy(tmp_path) -> None:
    model = _relu_net("Sigmoid", outputs=1)
    assert ends_with_sigmoid(model)
    onnx.save(model, str(tmp_path / "binary.onnx"))
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, (300, 2, 6, 6))
    prob = run_onnxruntime(model, x)[:, 0]
    y = (prob > 0.5).astype(np.int64)
    assert 0.05 < y.mean() < 0.95  # an argmax of one output (always 0) would score 1 - mean
    np.savez(tmp_path / "calib.npz", x=x, y=y)
    proc = hec(
        "optimize", str(tmp_path / "binary.onnx"), "-o", str(tmp_path / "he.onnx"), "--calib",
        str(tmp_path / "calib.npz"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    acc = json.loads((tmp_path / "he.report.json").read_text())["accuracy"]
    assert acc["original"] == 1.0
    assert acc["converted"] > 0.8
    proc = hec(
        "compile", str(tmp_path / "binary.onnx"), "-o", str(tmp_path / "art"), "--calib",
        str(tmp_path / "calib.npz"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = hec(
        "run", str(tmp_path / "art"), "--input", str(tmp_path / "calib.npz"), "--simulate",
        "--compare-onnx", str(tmp_path / "binary.onnx"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("accuracy on 300"))
    assert float(re.search(r"simulated ([\d.]+)%", line).group(1)) > 80
    assert "onnxruntime 100.00%" in line


# -- inputs outside the fitted intervals, counted per input ----------------------------------
def test_optimize_eval_counts_inputs_outside_each_interval(data, tmp_path) -> None:
    rng = np.random.default_rng(2)
    x_eval = rng.uniform(-3, 3, (50, 2, 6, 6))
    wide = [3, 17, 41]  # these inputs get one value far outside the calibrated range
    for i in wide:
        x_eval[i, 1, 2, 3] = 9.0
    np.savez(tmp_path / "eval.npz", x=x_eval, y=np.zeros(50, np.int64))
    proc = hec(
        "optimize", str(data / "dynamic.onnx"), "-o", str(tmp_path / "he.onnx"), "--calib",
        str(data / "calib.npz"), "--eval", str(tmp_path / "eval.npz"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    relu = next(r for r in json.loads((tmp_path / "he.report.json").read_text())["layers"]
                if r["replaces"] == "relu")  # fmt: skip
    a, b = relu["interval"]
    # the Relu reads the graph input: an input is outside when any of its values is
    x32 = x_eval.astype(np.float32).reshape(50, -1)
    expected = int(np.sum(np.any((x32 < a) | (x32 > b), axis=1)))
    assert expected >= len(wide)
    outside = relu["inputs_outside"]
    assert {k: outside["evaluation"][k] for k in ("inputs", "outside", "fraction")} == {
        "inputs": 50,
        "outside": expected,
        "fraction": expected / 50,
    }
    assert outside["calibration"]["inputs"] == 200 and outside["calibration"]["outside"] == 0
    assert "inputs outside" in proc.stdout
    assert "200 calibration / 50 evaluation inputs" in proc.stdout


def test_converted_graph_knows_its_one_output_is_a_probability() -> None:
    from hec.frontend import import_onnx
    from hec.metrics import graph_ends_with_sigmoid
    from hec.optimize import make_he_friendly
    from hec.options import CompileOptions
    from hec.prune import _accuracy

    model = _relu_net("Sigmoid", outputs=1)
    x = np.random.default_rng(1).uniform(-3, 3, (300, 2, 6, 6))
    y = (run_onnxruntime(model, x)[:, 0] > 0.5).astype(np.int64)
    graph = import_onnx(model)
    assert graph_ends_with_sigmoid(graph)
    assert not graph_ends_with_sigmoid(import_onnx(_relu_net()))
    make_he_friendly(model, graph, CompileOptions(), x)
    assert graph_ends_with_sigmoid(graph)  # the polynomial that replaced it
    assert _accuracy(graph, x, y) > 0.8  # pruning's accuracy thresholds at 0.5, too
