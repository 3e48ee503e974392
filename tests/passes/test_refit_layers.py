"""refit-layers: the linear layers after degree-2 activations refitted to the original's."""

from __future__ import annotations

import numpy as np

from hec.calibrate import calibrate
from hec.frontend import import_onnx
from hec.ir import interpret
from hec.options import CompileOptions
from hec.passes import PassManager, ReplaceActivations, he_friendly_pipeline
from hec.passes.elementwise import find_regions
from hec.passes.refit_layers import RefitLayers
from hec.recover import prunable_ops, refit_to_reference

from onnx_builders import ModelBuilder


def _mlp():
    """16 → 32 → ReLU → 16 → ReLU → 5, random weights; 400 inputs in [0, 1]."""
    b = ModelBuilder((16,), seed=5)
    h = b.node("Gemm", ["input", b.weight(32, 16), b.weight(32)], transB=1)
    h = b.node("Gemm", [b.node("Relu", [h]), b.weight(16, 32), b.weight(16)], transB=1)
    model = b.build(b.node("Gemm", [b.node("Relu", [h]), b.weight(5, 16)], transB=1))
    x = np.random.default_rng(11).uniform(0, 1, size=(400, 16))
    return model, x


def _degree_two(model, x):
    """The original tensor graph and its conversion with degree 2 everywhere (no refit)."""
    original = import_onnx(model)
    stats = calibrate(model, original, x)
    converted = original.clone()
    for region in find_regions(converted, lambda r: "activation" in r.kinds):
        for op in region.ops:
            if op.kind == "activation":
                op.attrs["degree"] = 2
    ReplaceActivations(stats).run(converted)
    return original, converted


def _error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_refit_lowers_each_layers_error_and_keeps_the_first_layer() -> None:
    model, x = _mlp()
    original, converted = _degree_two(model, x)
    first = prunable_ops(converted)[0].consts["weight"].copy()
    rows = refit_to_reference(converted, original, x)
    assert [r["name"] for r in rows] == [op.origin for op in prunable_ops(original)]
    assert rows[0]["ridge"] is None and rows[0]["error_before"] == 0.0  # nothing to correct
    np.testing.assert_array_equal(prunable_ops(converted)[0].consts["weight"], first)
    for row in rows[1:]:  # after a degree-2 ReLU: worse before, better after
        assert row["error_before"] > 0.01 and row["error_after"] < 0.8 * row["error_before"], row


def test_refit_generalizes_to_inputs_it_was_not_fitted_on() -> None:
    model, x = _mlp()
    original, converted = _degree_two(model, x)
    fit, held = x[:300], x[300:]
    reference = interpret(original, held)[0]
    before = _error(interpret(converted, held)[0], reference)
    refit_to_reference(converted, original, fit)
    after = _error(interpret(converted, held)[0], reference)
    assert after < 0.7 * before, (before, after)


def test_a_strong_ridge_keeps_the_trained_weights() -> None:
    model, x = _mlp()
    original, converted = _degree_two(model, x)
    refit_to_reference(converted, original, x[:8], ridges=(1e6,))  # 8 inputs, 33 weights/neuron
    for op, ref in zip(prunable_ops(converted), prunable_ops(original), strict=True):
        w, w0 = op.consts["weight"], ref.consts["weight"]
        assert _error(w, w0) < 1e-3
    _, converted = _degree_two(model, x)
    refit_to_reference(converted, original, x[:8], ridges=(1e-8,))  # fits the 8 inputs' noise
    moved = [
        _error(op.consts["weight"], ref.consts["weight"])
        for op, ref in zip(prunable_ops(converted), prunable_ops(original), strict=True)
    ]
    assert max(moved) > 0.05


def test_the_budget_pipeline_refits_and_a_fixed_degree_does_not() -> None:
    model, x = _mlp()
    graph = import_onnx(model)
    stats = calibrate(model, graph, x)
    passes = he_friendly_pipeline(CompileOptions(max_accuracy_loss=1.0), stats, x)
    refit = [p for p in passes if isinstance(p, RefitLayers)]
    assert len(refit) == 1 and refit[0].choose.refit
    PassManager(passes).run(graph)
    polys = [op for op in graph.ops if op.kind == "poly" and "source" in op.attrs]
    assert polys and all(op.attrs["accuracy_refit"] for op in polys)
    refitted = [op for op in prunable_ops(graph) if "refit_ridge" in op.attrs]
    assert refitted and len(refitted) == sum(r["ridge"] is not None for r in refit[0].rows)
    for op in refitted:
        assert op.attrs["refit_error_after"] < op.attrs["refit_error_before"]
    # --degree 2: no refit, the trained weights as they are
    fixed = import_onnx(model)
    passes = he_friendly_pipeline(CompileOptions(degree=2), stats, x)
    assert not any(isinstance(p, RefitLayers) for p in passes)
    PassManager(passes).run(fixed)
    for op, ref in zip(prunable_ops(fixed), prunable_ops(import_onnx(model)), strict=True):
        np.testing.assert_array_equal(op.consts["weight"], ref.consts["weight"])
        assert "refit_ridge" not in op.attrs


def _chosen(model, x, refit: bool, budget: float = 3.0):
    from hec.passes.choose_degrees import ChooseDegrees

    graph = import_onnx(model)
    stats = calibrate(model, graph, x)
    passes = he_friendly_pipeline(CompileOptions(max_accuracy_loss=budget), stats, x)
    choose = next(p for p in passes if isinstance(p, ChooseDegrees))
    choose.refit = refit
    PassManager(passes).run(graph)
    polys = [op for op in graph.ops if op.kind == "poly" and "source" in op.attrs]
    return graph, [len(op.attrs["coeffs"]) - 1 for op in polys], polys[0].attrs


def test_degrees_judged_with_the_refit_are_lower_and_hold_on_new_inputs() -> None:
    model, x = _mlp()
    _, plain, _ = _chosen(model, x, refit=False, budget=1.0)
    graph, degrees, attrs = _chosen(model, x, refit=True, budget=1.0)
    assert sum(degrees) < sum(plain) and attrs["budget_met"]  # here: 2, 2 instead of 13, 27
    # the accuracy it judged by is cross-fitted (no input predicted by layers fitted on it):
    # on new inputs the refitted program agrees with the original about as well
    fresh = np.random.default_rng(99).uniform(0, 1, size=(600, 16))
    agree = np.mean(
        interpret(graph, fresh)[0].argmax(1) == interpret(import_onnx(model), fresh)[0].argmax(1)
    )
    assert agree >= attrs["accuracy_chosen"] - 0.03, (agree, attrs["accuracy_chosen"])
