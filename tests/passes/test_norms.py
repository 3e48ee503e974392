"""replace-norms: LayerNormalization, InstanceNormalization and GroupNormalization with
calibrated constants in place of the per-sample standard deviation.

The imported op equals onnxruntime; a model whose per-sample scale is nearly constant compiles
and its simulated output stays within the stated error of onnxruntime, with the error the report
states; one whose scale varies widely is refused in one line that says why; without calibration
data the error says to pass --calib.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hec
import hec.passes.calibrate_norms as calibrate_norms
from hec.calibrate import calibrate
from hec.errors import HecError
from hec.frontend import import_onnx
from hec.ir import interpret
from hec.options import CompileOptions
from hec.passes import PassManager
from hec.passes.calibrate_norms import NormalizationRefused, ReplaceNorms

from onnx_builders import run_onnxruntime

RNG = np.random.default_rng(0)

# op, per-sample input shape, statistics groups G, attributes, opset
NORMS = {
    "layer": ("LayerNormalization", (4, 8), 4, {"axis": -1}, 17),
    "layer_all_axes": ("LayerNormalization", (3, 2, 4), 1, {"axis": 1}, 17),
    "instance": ("InstanceNormalization", (3, 4, 4), 3, {}, 17),
    "group": ("GroupNormalization", (4, 3, 3), 2, {"num_groups": 2}, 21),
}
# Stated error of an accepted model (per-sample scale within ±2%): relative RMS of the logits
# against onnxruntime and argmax agreement, on the calibration data.
MAX_RELATIVE_RMS = 0.05
MIN_AGREEMENT = 0.95


def _affine_shapes(case: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    op, shape, groups, attrs, _ = NORMS[case]
    if op == "LayerNormalization":
        normed = shape[attrs["axis"] % (len(shape) + 1) - 1 :]
        return normed, normed
    return (shape[0],), (shape[0],)


def _model(case: str, head: bool = True, seed: int = 1) -> onnx.ModelProto:
    """input → normalization (→ flatten → dense 5 when ``head``)."""
    op, shape, _, attrs, opset = NORMS[case]
    rng = np.random.default_rng(seed)
    s_shape, b_shape = _affine_shapes(case)
    inits = [
        numpy_helper.from_array(rng.uniform(0.5, 1.5, s_shape).astype(np.float32), "scale"),
        numpy_helper.from_array(rng.normal(0, 0.5, b_shape).astype(np.float32), "bias"),
    ]
    nodes = [helper.make_node(op, ["x", "scale", "bias"], ["y"], name=f"{case}_norm", **attrs)]
    out, out_shape = "y", ["N", *shape]
    if head:
        width = int(np.prod(shape))
        w = rng.normal(0, 0.5, (width, 5)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, "w"))
        nodes += [
            helper.make_node("Flatten", ["y"], ["f"], name="flatten"),
            helper.make_node("Gemm", ["f", "w"], ["logits"], name="dense"),
        ]
        out, out_shape = "logits", ["N", 5]
    graph = helper.make_graph(
        nodes,
        case,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10 if opset >= 21 else 9
    onnx.checker.check_model(model)
    return model


def _data(case: str, n: int, spread: float, seed: int = 2) -> np.ndarray:
    """Inputs whose per-sample, per-group scale is ``exp(U(-spread, spread))`` times a fixed
    per-group scale (offsets vary freely: centering is exact)."""
    _, shape, groups, _, _ = NORMS[case]
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, groups, int(np.prod(shape)) // groups))
    z = (z - z.mean(-1, keepdims=True)) / z.std(-1, keepdims=True)
    base = rng.uniform(0.5, 2.0, size=(1, groups, 1))
    z = z * base * np.exp(rng.uniform(-spread, spread, size=(n, groups, 1)))
    return (z + rng.normal(0, 1.0, size=(n, groups, 1))).reshape(n, *shape)


@pytest.mark.parametrize("case", sorted(NORMS))
def test_imported_normalization_equals_onnxruntime(case: str) -> None:
    model = _model(case, head=False)
    x = _data(case, 32, 1.0)
    ref = run_onnxruntime(model, x)
    np.testing.assert_allclose(interpret(import_onnx(model), x)[0], ref, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("case", sorted(NORMS))
def test_nearly_constant_scale_is_accepted_within_stated_error(case: str, tmp_path) -> None:
    model = _model(case)
    x = _data(case, 300, 0.02)
    art = hec.compile(model, tmp_path / "art", CompileOptions(), calibration=x)
    (row,) = [r for r in art.report.activations if "relative_error" in r]
    assert row["replaces"] == NORMS[case][0] and row["depth"] == 0
    assert row["relative_error"] <= CompileOptions().norm_tolerance
    ref = run_onnxruntime(model, x)
    got = hec.simulate(art, x).reshape(ref.shape)
    rel = np.sqrt(np.mean((got - ref) ** 2) / np.mean(ref**2))
    agreement = np.mean(got.argmax(1) == ref.argmax(1))
    print(
        f"\nMEASURED {case}: op error {row['relative_error']:.4f} variation "
        f"{row['scale_variation']:.4f} logits {rel:.4f} agreement {agreement:.4f}"
    )
    assert rel <= MAX_RELATIVE_RMS and agreement >= MIN_AGREEMENT
    assert row["model_agreement"] == pytest.approx(agreement, abs=0.01)


@pytest.mark.parametrize("case", sorted(NORMS))
def test_widely_varying_scale_is_refused_in_one_line(case: str, tmp_path) -> None:
    model = _model(case)
    x = _data(case, 300, 0.7)
    with pytest.raises(NormalizationRefused) as info:
        hec.compile(model, tmp_path / "art", CompileOptions(), calibration=x)
    message = str(info.value)
    assert "\n" not in message and f"'{case}_norm'" in message
    assert "per-sample scale varies by" in message
    assert "cannot be replaced by constants" in message


def test_reported_error_is_the_op_output_error(tmp_path) -> None:
    """The report's relative error is what the compiled op's output is off on the calibration
    data (model = the normalization alone), with a tolerance raised to accept wide scales."""
    model = _model("instance", head=False)
    x = _data("instance", 200, 0.5)
    art = hec.compile(model, tmp_path / "art", CompileOptions(norm_tolerance=1.0), calibration=x)
    (row,) = art.report.activations
    ref = run_onnxruntime(model, x)
    got = hec.simulate(art, x).reshape(ref.shape)
    measured = np.sqrt(np.mean((got - ref) ** 2) / np.mean(ref**2))
    assert row["relative_error"] > 0.1
    assert row["relative_error"] == pytest.approx(measured, rel=1e-3)


def test_long_rows_are_centred_without_a_dense_matrix(tmp_path, monkeypatch) -> None:
    """Rows longer than the dense limit: mean, broadcast, subtraction; same program output."""
    model = _model("layer")
    x = _data("layer", 200, 0.02)
    dense = hec.simulate(hec.compile(model, tmp_path / "a", calibration=x), x)
    monkeypatch.setattr(calibrate_norms, "_DENSE_CENTERING", 4)
    graph = import_onnx(model)
    PassManager([ReplaceNorms(calibrate(model, graph, x))]).run(graph)
    assert {"reduce", "add"} <= {op.kind for op in graph.ops}
    art = hec.compile(model, tmp_path / "b", calibration=x)
    np.testing.assert_allclose(hec.simulate(art, x), dense, atol=1e-6)


def test_without_calibration_data_the_error_says_to_pass_calib(tmp_path) -> None:
    with pytest.raises(HecError, match=r"'layer_norm'.*LayerNormalization.*--calib") as info:
        hec.compile(_model("layer"), tmp_path / "art")
    assert "\n" not in str(info.value)


def test_replacement_keeps_exact_centering() -> None:
    """Inputs whose scale is exactly the calibrated one: the replaced op is exact."""
    model = _model("layer", head=False)
    x = _data("layer", 50, 0.0)
    graph = import_onnx(model)
    stats = calibrate(model, graph, x)
    PassManager([ReplaceNorms(stats)]).run(graph)
    assert "normalize" not in {op.kind for op in graph.ops}
    np.testing.assert_allclose(interpret(graph, x)[0], run_onnxruntime(model, x), atol=1e-4)


def test_cli_refuses_in_one_line_and_the_tolerance_option_accepts(tmp_path) -> None:
    """``hec compile --calib``: one line that says why; ``--norm-tolerance`` raises the bar."""
    from cli_helpers import assert_one_line_error
    from cli_helpers import hec as run_hec

    onnx.save(_model("layer"), str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "calib.npz", x=_data("layer", 200, 0.7))
    args = ["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "art"), "--calib"]
    proc = run_hec(*args, str(tmp_path / "calib.npz"))
    assert_one_line_error(proc, "per-sample scale varies by", "--norm-tolerance")
    proc = run_hec(*args, str(tmp_path / "calib.npz"), "--norm-tolerance", "0.9")
    assert proc.returncode == 0, proc.stderr
    assert "LayerNormalization" in proc.stdout


@pytest.mark.slow
def test_layer_norm_encrypted_matches_simulation(tmp_path) -> None:
    """OpenFHE run of the LayerNormalization network: the simulator's output to CKKS
    precision, onnxruntime's within the stated error."""
    model = _model("layer")
    x = _data("layer", 200, 0.02)
    art = hec.compile(model, tmp_path / "art", CompileOptions(), calibration=x)
    result = hec.run(art, x[:1])
    np.testing.assert_allclose(result.logits, hec.simulate(art, x[:1]), atol=1e-3, rtol=0)
    ref = run_onnxruntime(model, x[:1])
    assert np.sqrt(np.mean((result.logits - ref) ** 2) / np.mean(ref**2)) <= MAX_RELATIVE_RMS
