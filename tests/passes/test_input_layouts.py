"""Input layouts (replicated, im2col): the same function, fewer diagonals, the client packs them.

Three-way check per layout: onnxruntime on the model, the tensor interpreter (the compiled
program must equal it to 1e-9: the layout only moves where inputs sit), and, in the slow tier,
the encrypted run (1e-2).
"""

from __future__ import annotations

import numpy as np
import pytest

import hec
from hec.errors import LayoutError, ParameterError
from hec.frontend import import_onnx
from hec.frontend.reference import onnxruntime_outputs
from hec.ir import Layout, interpret
from hec.passes.input_layouts import NotApplicable

from cli_helpers import assert_one_line_error, generated_program_logits
from cli_helpers import hec as hec_cli
from conftest import EXAMPLE, assert_matches_reference
from onnx_builders import ModelBuilder, deep_square_mlp
from op_cases import CASES


def _exact(artifact, model, x) -> None:
    """The program equals the tensor interpreter to 1e-9 and onnxruntime to float32."""
    out = hec.simulate(artifact, x)
    ref = interpret(import_onnx(model), x)[0]
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(ref).max()))
    assert_matches_reference(out, onnxruntime_outputs(model, x))


@pytest.mark.parametrize("kind", ["replicated", "multiplexed", "im2col"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_op_case_computes_the_same_in_every_layout_that_applies(kind, name, tmp_path):
    model, x = CASES[name]()
    try:
        art = hec.compile(model, tmp_path / "out", hec.CompileOptions(input_layout=kind))
    except NotApplicable:
        return  # e.g. replicated needs several output channels and room for the copies
    # a multiplexed input is copies of the input, as a replicated one
    assert art.input_layout.kind == {"multiplexed": "replicated"}.get(kind, kind)
    _exact(art, model, x)


def test_multiplexed_input_makes_a_strided_convolution_one_offset_per_tap_and_gap(
    tmp_path,
) -> None:
    """Orion's conv1 in small: 1 -> 8 channels, 5x5, stride 2, pad 2 on 16x16. Its output is
    multiplexed (4 channels in the gaps of each 16x16 block); one input copy per block leaves
    the offsets (tap row - gap row, tap col - gap col): 6 x 6, whatever the channel."""
    b = ModelBuilder((1, 16, 16), seed=4)
    conv = b.node("Conv", ["input", b.weight(8, 1, 5, 5)], strides=[2, 2], pads=[2, 2, 2, 2])
    model = b.build(b.node("Conv", [b.node("Mul", [conv, conv]), b.weight(2, 8, 3, 3)]))
    x = np.random.default_rng(0).uniform(0, 1, size=(5, 1, 16, 16)).astype(np.float32)
    layers = {}
    for kind in ("direct", "multiplexed"):
        art = hec.compile(model, tmp_path / kind, hec.CompileOptions(input_layout=kind))
        _exact(art, model, x)
        layers[kind] = art.report.layers[0]
    assert layers["multiplexed"].diagonals == 36
    assert layers["direct"].diagonals == 2 * 36  # two blocks of 4 channels, each its offsets
    assert layers["multiplexed"].rotations < layers["direct"].rotations
    assert art.input_layout.pack(x[:1]).reshape(-1)[256:512].tolist() == (
        x[0].reshape(-1).tolist()
    )  # the second copy holds the whole input


def test_replicated_convolution_needs_one_diagonal_per_kernel_tap(tmp_path) -> None:
    model = EXAMPLE / "model.onnx"
    x = np.load(EXAMPLE / "test.npz")["x"][:40]
    layers = {}
    for kind in ("direct", "replicated", "im2col"):
        art = hec.compile(model, tmp_path / kind, hec.CompileOptions(input_layout=kind))
        _exact(art, model, x)
        layers[kind] = art.report.layers[0]
    assert layers["direct"].diagonals == 72  # 8 channels x 9 taps
    assert layers["replicated"].diagonals == 9
    assert layers["im2col"].diagonals == 9  # offsets 0, m, .., 8m
    assert layers["replicated"].rotations < layers["direct"].rotations / 2


def test_auto_keeps_the_cheapest_estimate_and_reports_every_candidate(tmp_path) -> None:
    art = hec.compile(EXAMPLE / "model.onnx", tmp_path / "out")
    choice = art.report.input_layout
    cands = choice.candidates
    assert set(cands) == {"direct", "replicated", "multiplexed", "im2col"}
    assert choice.choice == "auto"
    applies = [k for k in cands if cands[k].get("applies", True)]
    assert "multiplexed" not in applies  # its first convolution's output is not strided
    best = min(applies, key=lambda k: cands[k]["estimated_seconds"])
    assert choice.kind == best == art.input_layout.kind == "replicated"
    assert cands["im2col"]["slots"] == 8192 and cands["direct"]["slots"] == 512
    assert art.report.totals.rotations == cands["replicated"]["rotations"]


def test_replicated_layout_refuses_overlapping_copies_and_auto_falls_back(tmp_path) -> None:
    b = ModelBuilder((2, 6, 6))  # two input channels, valid padding: 72 inputs, 16 per channel
    model = b.build(b.node("Conv", ["input", b.weight(3, 2, 3, 3)]))
    with pytest.raises(NotApplicable, match="overlap"):
        hec.compile(model, tmp_path / "a", hec.CompileOptions(input_layout="replicated"))
    art = hec.compile(model, tmp_path / "b")
    assert art.report.input_layout.candidates["replicated"]["applies"] is False
    assert art.input_layout.kind != "replicated"
    x = np.random.default_rng(0).normal(size=(3, 2, 6, 6))
    _exact(art, model, x)


def test_packing_puts_every_copy_in_place() -> None:
    src = (2, 0, -1, 1, 2, 0, -1, -1)
    layout = Layout((3,), 8, "replicated", src)
    x = np.array([[10.0, 20.0, 30.0]])
    np.testing.assert_array_equal(layout.pack(x)[0], [30, 10, 0, 20, 30, 10, 0, 0])
    np.testing.assert_array_equal(layout.slot_of_element(), [1, 3, 0])
    np.testing.assert_array_equal(layout.unpack(layout.pack(x)), x)
    with pytest.raises(ValueError):
        Layout((3,), 8, "replicated", (3,) * 8)  # element 3 does not exist
    assert "replicated<3, 5 slots used>" in str(layout)


def test_cli_prints_the_choice_and_refuses_in_one_line(tmp_path) -> None:
    proc = hec_cli("compile", str(EXAMPLE / "model.onnx"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert "input layout: replicated (chosen" in proc.stdout and "direct " in proc.stdout
    args = ("--input-layout", "im2col", "--slots", "512")
    proc = hec_cli("compile", str(EXAMPLE / "model.onnx"), "-o", str(tmp_path / "p"), *args)
    assert_one_line_error(proc, "im2col input: layer '", "needs 8192 slots", "--slots gives 512")
    with pytest.raises(LayoutError):
        hec.compile(EXAMPLE / "model.onnx", tmp_path / "q", hec.CompileOptions(input_layout="x"))


def test_a_layout_no_ring_holds_is_refused_before_the_whole_graph_is_read(tmp_path) -> None:
    """im2col of a 1 -> 16 channel 3x3 convolution on 32x32 needs 9 x 16,384 slots: refused
    by check-input-layout, in one line naming the layer, before check-ranges bounds the graph
    (on a ResNet-20 each refused candidate cost minutes there)."""
    b = ModelBuilder((1, 32, 32), seed=1)
    conv = b.node("Conv", ["input", b.weight(16, 1, 3, 3)], pads=[1, 1, 1, 1])
    model = b.build(b.node("Mul", [conv, conv]))
    stages: list[str] = []
    with pytest.raises(NotApplicable) as err:
        hec.compile(
            model,
            tmp_path / "out",
            hec.CompileOptions(input_layout="im2col"),
            progress=lambda stage, *a: stages.append(stage),
        )
    assert str(err.value).startswith("im2col input: layer '")
    assert "needs 262144 slots (9 terms x 16384 outputs)" in str(err.value)
    assert "largest ciphertext 65536" in str(err.value)
    assert "compile: check-input-layout" in stages
    assert not any("check-ranges" in s or "lower-to-slots" in s for s in stages)


def test_when_no_layout_applies_the_first_ones_reason_is_raised(tmp_path) -> None:
    """Every candidate refused: the user reads why direct (the first) failed, here a bad
    --bootstrap, not the last candidate's reason (im2col's slots; a ResNet-20 showed that)."""
    model = deep_square_mlp(layers=2)
    options = hec.CompileOptions(slots=64, bootstrap="sometimes")
    with pytest.raises(ParameterError, match="--bootstrap 'sometimes'"):
        hec.compile(model, tmp_path / "out", options)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["replicated", "im2col"])
def test_encrypted_run_in_a_gathered_layout_matches_onnxruntime(kind, tmp_path) -> None:
    model = EXAMPLE / "model.onnx"
    x = np.load(EXAMPLE / "test.npz")["x"][:2]
    art = hec.compile(model, tmp_path / "out", hec.CompileOptions(input_layout=kind))
    result = hec.run(art, x)
    np.testing.assert_allclose(result.logits, onnxruntime_outputs(model, x), atol=1e-2)


@pytest.mark.slow
def test_generated_program_packs_a_gathered_input(tmp_path) -> None:
    art = hec.compile(EXAMPLE / "model.onnx", tmp_path / "out")
    assert art.input_layout.kind == "replicated"
    x = np.load(EXAMPLE / "test.npz")["x"][:1]
    logits = generated_program_logits(art.path, x[0], tmp_path)
    np.testing.assert_allclose(logits, onnxruntime_outputs(EXAMPLE / "model.onnx", x)[0], atol=1e-2)


def test_a_tensor_too_large_for_one_ciphertext_is_refused_before_calibration(
    tmp_path, monkeypatch
) -> None:
    """Slot packing holds each tensor in one ciphertext: a 3-D max pool on a 48^3 grid is
    refused in one line naming the tensor, before calibration (which took minutes)."""

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibration ran before the size check")

    monkeypatch.setattr("hec.api.calibrated_stats", no_calibration)
    b = ModelBuilder((1, 48, 48, 48))
    model = b.build(b.node("MaxPool", ["input"], kernel_shape=[2, 2, 2], strides=[2, 2, 2]))
    x = np.random.default_rng(0).normal(size=(4, 1, 48, 48, 48))
    with pytest.raises(LayoutError, match="'input' has 110592 elements") as info:
        hec.compile(model, tmp_path / "o", calibration=x)
    assert "\n" not in str(info.value) and "--packing batch" in str(info.value)
