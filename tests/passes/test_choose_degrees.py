"""choose-degrees: activation degrees picked from an accuracy budget on the calibration data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from hec.backend_openfhe.report_schema import ProgramReport
from hec.calibrate import calibrate
from hec.frontend import import_onnx
from hec.ir import interpret
from hec.metrics import predictions
from hec.optimize import conversion_layers
from hec.options import CompileOptions
from hec.passes import PassManager, ReplaceActivations, he_friendly_pipeline
from hec.passes.choose_degrees import (
    DEFAULT_ACCURACY_LOSS,
    MIN_LABELLED_INPUTS,
    ChooseDegrees,
    degree_summary,
    fit_error_hint,
    series_products,
)
from hec.passes.elementwise import find_regions

from cli_helpers import hec
from onnx_builders import ModelBuilder, run_onnxruntime

MNIST = Path(__file__).resolve().parents[2] / "examples" / "lenet5_mnist"


def _mlp(act: str = "Relu"):
    """16 → 24 → act → 16 → act → 5, random weights; 300 inputs in [0, 1]."""
    b = ModelBuilder((16,), seed=3)
    h = b.node("Gemm", ["input", b.weight(24, 16), b.weight(24)], transB=1)
    h = b.node("Gemm", [b.node(act, [h]), b.weight(16, 24), b.weight(16)], transB=1)
    model = b.build(b.node("Gemm", [b.node(act, [h]), b.weight(5, 16)], transB=1))
    x = np.random.default_rng(7).uniform(0, 1, size=(300, 16))
    return model, x


def _convert(model, x, options, labels=None, with_inputs=True, refit=False):
    """Converted by the HE-friendly pipeline; ``refit=False`` (the search tests): the degrees
    judged and the graph converted without refitting the linear layers (test_refit_layers.py)."""
    graph = import_onnx(model)
    stats = calibrate(model, graph, x)
    passes = he_friendly_pipeline(options, stats, x if with_inputs else None, labels)
    for p in passes:
        if isinstance(p, ChooseDegrees):
            p.refit = refit
    PassManager(passes).run(graph)
    return graph, conversion_layers(graph, stats), passes


def _with_degrees(model, x, degrees):
    """The model converted with these degrees, one per activation, set by hand."""
    graph = import_onnx(model)
    stats = calibrate(model, graph, x)
    regions = find_regions(graph, lambda r: "activation" in r.kinds)
    for region, degree in zip(regions, degrees, strict=True):
        for op in region.ops:
            if op.kind == "activation":
                op.attrs["degree"] = degree
    ReplaceActivations(stats).run(graph)
    return graph


def _agreement(model, graph, x) -> float:
    return float(
        np.mean(predictions(interpret(graph, x)[0]) == run_onnxruntime(model, x).argmax(1))
    )


def test_a_large_budget_keeps_degree_two_everywhere() -> None:
    model, x = _mlp()
    graph, rows, passes = _convert(model, x, CompileOptions(max_accuracy_loss=100.0))
    assert isinstance(passes[0], ChooseDegrees)
    assert [r["degree"] for r in rows] == [2, 2]
    choice = rows[0]["degree_choice"]
    assert choice["metric"] == "agreement" and choice["met"] and choice["budget"] == 100.0
    assert choice["candidates"] == [2, 5, 13, 27] and choice["samples"] == len(x)
    assert choice["tried"] == [{"step": 0, "degree": 2, "accuracy": choice["chosen"], "kept": True}]
    assert choice["chosen"] == pytest.approx(_agreement(model, graph, x), abs=1e-6)


def test_a_tight_budget_raises_a_degree_and_each_raise_is_needed() -> None:
    model, x = _mlp()
    assert _agreement(model, _with_degrees(model, x, [2, 2]), x) < 0.95  # degree 2 loses > 5 pt
    graph, rows, _ = _convert(model, x, CompileOptions(max_accuracy_loss=5.0))
    degrees = [r["degree"] for r in rows]
    assert degrees != [2, 2] and all(r["degree_choice"]["met"] for r in rows)
    reached = _agreement(model, graph, x)
    assert reached >= 0.95 and rows[0]["degree_choice"]["chosen"] == pytest.approx(reached)
    # the cheapest within the budget found: lowering any raised degree breaks it
    cands = rows[0]["degree_choice"]["candidates"]
    for i, degree in enumerate(degrees):
        if degree > 2:
            lower = [*degrees[:i], cands[cands.index(degree) - 1], *degrees[i + 1 :]]
            assert _agreement(model, _with_degrees(model, x, lower), x) < 0.95, lower
    # each activation's trials: the start, then its raises, each with the network's accuracy
    for row in rows:
        tried = row["degree_choice"]["tried"]
        assert tried[0]["step"] == 0 and tried[0]["degree"] == 2 and tried[0]["kept"]
        kept = [t["degree"] for t in tried if t["kept"]]
        assert kept[-1] == row["degree"]


def test_labels_measure_top1_accuracy_against_them() -> None:
    model, x = _mlp()
    labels = run_onnxruntime(model, x).argmax(1)
    labels[:30] = (labels[:30] + 1) % 5  # the original is right on 90%
    _, rows, _ = _convert(model, x, CompileOptions(max_accuracy_loss=5.0), labels)
    choice = rows[0]["degree_choice"]
    assert choice["metric"] == "labels" and choice["original"] == pytest.approx(0.9)
    assert choice["met"] and choice["chosen"] >= 0.9 - 0.05 - 1e-9
    line = degree_summary(rows)
    assert line is not None and line.startswith("activations: degrees ")
    assert "(original 90.0%, budget 5 points)" in line


def test_degree_and_error_budget_given_keep_their_meaning() -> None:
    model, x = _mlp()
    _, rows, passes = _convert(model, x, CompileOptions(degree=5, max_accuracy_loss=0.0))
    assert not any(isinstance(p, ChooseDegrees) for p in passes)
    assert [r["degree"] for r in rows] == [5, 5] and "degree_choice" not in rows[0]
    _, rows, passes = _convert(model, x, CompileOptions(error_budget=0.05))
    assert not any(isinstance(p, ChooseDegrees) for p in passes)
    graph = import_onnx(model)
    stats = calibrate(model, graph, x)
    ReplaceActivations(stats, error_budget=0.05).run(graph)
    before = [r["degree"] for r in conversion_layers(graph, stats)]  # the fit-error rule
    assert [r["degree"] for r in rows] == before and "degree_choice" not in rows[0]
    assert degree_summary(rows) is None


def test_the_budget_applies_when_asked_for() -> None:
    """Without --max-accuracy-loss the budget is the default only where the calibration data
    can judge it (labels, enough inputs, ReLUs); asked for, it applies."""
    model, x = _mlp("Relu")
    _, rows, _ = _convert(model, x, CompileOptions())  # no labels
    assert "degree_choice" not in rows[0]
    _, rows, _ = _convert(model, x, CompileOptions(max_accuracy_loss=1.0))
    assert rows[0]["degree_choice"]["budget"] == 1.0
    tanh, x = _mlp("Tanh")
    _, rows, _ = _convert(tanh, x, CompileOptions(max_accuracy_loss=1.0))  # asked for
    assert rows[0]["degree_choice"]["budget"] == 1.0
    # without the calibration inputs the pipeline cannot measure: the fit-error rule
    _, rows, passes = _convert(model, x, CompileOptions(max_accuracy_loss=1.0), with_inputs=False)
    assert "degree_choice" not in rows[0]
    assert not any(isinstance(p, ChooseDegrees) for p in passes)


def test_the_default_budget_needs_enough_labelled_relu_inputs() -> None:
    """The default 1-point budget: labels for at least MIN_LABELLED_INPUTS inputs of a ReLU
    model; fewer inputs, no labels or another activation keep the fit-error rule."""
    model, x = _mlp("Relu")
    many = np.random.default_rng(1).uniform(0, 1, size=(MIN_LABELLED_INPUTS, 16))
    labels = run_onnxruntime(model, many).argmax(1)
    _, rows, _ = _convert(model, many, CompileOptions(), labels)
    assert rows[0]["degree_choice"]["budget"] == DEFAULT_ACCURACY_LOSS
    assert rows[0]["degree_choice"]["samples"] == MIN_LABELLED_INPUTS
    few = many[: MIN_LABELLED_INPUTS - 1]
    _, rows, _ = _convert(model, few, CompileOptions(), labels[: len(few)])
    assert "degree_choice" not in rows[0]
    tanh, _ = _mlp("Tanh")
    _, rows, _ = _convert(tanh, many, CompileOptions(), run_onnxruntime(tanh, many).argmax(1))
    assert "degree_choice" not in rows[0]


def test_raises_are_costed_in_levels_along_the_longest_path() -> None:
    model, x = _mlp()
    _, _, passes = _convert(model, x, CompileOptions(max_accuracy_loss=0.0))
    trace = passes[0].trace
    levels = {2: 1, 5: 3, 13: 4, 27: 5}  # what each degree costs (two activations in a chain)
    assert trace and all(t["depth"] == sum(levels[d] for d in t["degrees"]) for t in trace)
    assert series_products(2) == 1 and series_products(5) < series_products(13)


def test_lenet5_mnist_reaches_the_budget_on_a_few_images() -> None:
    data = np.load(MNIST / "calib.npz")
    x, y = data["x"][:60], data["y"][:60]
    proto = onnx.load(str(MNIST / "model.onnx"))
    graph, rows, passes = _convert(proto, x, CompileOptions(max_accuracy_loss=1.0), labels=y)
    choice = rows[0]["degree_choice"]
    assert [r["replaces"] for r in rows] == ["relu"] * 4 and choice["metric"] == "labels"
    assert passes[0].trace[0]["accuracy"] < choice["original"] - 0.01  # degree 2: too lossy
    assert choice["met"] and choice["chosen"] >= choice["original"] - 0.01 - 1e-9
    assert any(r["degree"] > 2 for r in rows)
    converted = float(np.mean(interpret(graph, x)[0].argmax(1) == y))
    assert converted == pytest.approx(choice["chosen"])


def test_compile_cli_prints_the_choice_and_reports_it(tmp_path) -> None:
    model, x = _mlp()
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    np.savez(tmp_path / "calib.npz", x=x.astype(np.float32))
    out = tmp_path / "art"
    args = ["compile", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz")]
    proc = hec(*args, "--max-accuracy-loss", "100", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "activations: degrees 2,2 chosen for agreement with the original" in proc.stdout
    assert "budget 100 points" in proc.stdout
    report = ProgramReport.read(out)  # the schema reads the rows back
    assert [r["degree_choice"]["tried"][0]["degree"] for r in report.activations] == [2, 2]
    raw = json.loads((out / "report.json").read_text())
    assert raw["activations"][1]["degree_choice"]["met"] is True
    proc = hec(*args, "--max-accuracy-loss", "100", "--degree", "5", "-o", str(tmp_path / "d5"))
    assert proc.returncode == 0, proc.stderr
    assert "activations: degrees" not in proc.stdout
    rows = json.loads((tmp_path / "d5" / "report.json").read_text())["activations"]
    assert [r["degree"] for r in rows] == [5, 5] and "degree_choice" not in rows[0]


def test_compile_cli_says_why_few_labels_keep_the_fit_error_rule(tmp_path) -> None:
    model, x = _mlp()
    y = run_onnxruntime(model, x).argmax(1)
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    np.savez(tmp_path / "calib.npz", x=x.astype(np.float32), y=y)
    args = ["compile", str(tmp_path / "m.onnx"), "--calib", str(tmp_path / "calib.npz")]
    proc = hec(*args, "-o", str(tmp_path / "art"))
    assert proc.returncode == 0, proc.stderr
    assert "fit-error budget" in proc.stdout and f"({len(x)} given)" in proc.stdout
    assert "--max-accuracy-loss 1" in proc.stdout
    proc = hec(*args, "--error-budget", "0.05", "-o", str(tmp_path / "e"))  # asked: no hint
    assert proc.returncode == 0 and "fit-error budget" not in proc.stdout


def test_the_hint_is_for_relu_models_with_too_few_labels() -> None:
    relu = [{"replaces": "relu"}, {"replaces": "maxpool"}]
    assert fit_error_hint(relu, MIN_LABELLED_INPUTS - 1) is not None
    assert fit_error_hint(relu, MIN_LABELLED_INPUTS) is None  # the budget applied there
    assert fit_error_hint([{"replaces": "relu"}, {"replaces": "tanh"}], 10) is None
    assert fit_error_hint([], 10) is None
