"""Pruning the bundled CryptoNets digits model end to end: `hec optimize --prune`, the pruned
ONNX model in onnxruntime, the compiled program (simulator, and encrypted in the slow tier)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import hec
from hec.backend_openfhe.report_schema import ProgramReport
from hec.cli.main import cli
from hec.frontend.reference import onnxruntime_outputs
from hec.runtime import Client, Server

from cli_helpers import hec as hec_cli
from conftest import EXAMPLE, assert_matches_reference


def _optimize(out, *options: str):
    """`hec optimize` on the bundled CryptoNets model (calibration data, the given options)."""
    args = ["optimize", str(EXAMPLE / "model.onnx"), "--calib", str(EXAMPLE / "calib.npz")]
    result = CliRunner().invoke(cli, [*args, *options, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "pruned.onnx"
    result = _optimize(out, "--eval", str(EXAMPLE / "test.npz"), "--prune", "0.5")
    return out, result.output


def test_cli_reports_compiled_savings_and_accuracy(pruned) -> None:
    out, output = pruned
    report = json.loads(out.with_suffix(".report.json").read_text())["pruning"]
    assert report["sparsity"] >= 0.5
    before, after = report["totals"]["before"], report["totals"]["after"]
    assert after["plaintext_multiplies"] < before["plaintext_multiplies"]
    assert report["accuracy"]["samples"] == 360
    assert report["accuracy"]["after"] > 0.9  # refit keeps a real classifier at 50%
    assert all("before" in row and "after" in row for row in report["layers"])
    assert "plaintext multiplies" in output and "before pruning" in output


def test_pruned_program_equals_onnxruntime_on_the_pruned_model(pruned, tmp_path) -> None:
    out, _ = pruned
    x = np.load(EXAMPLE / "test.npz")["x"][:40]
    art = hec.compile(out, tmp_path / "art")
    assert_matches_reference(hec.simulate(art, x), onnxruntime_outputs(out, x), rel=1e-5)


def test_compile_prune_flag_counts_the_same_program(pruned, tmp_path) -> None:
    """`hec compile --prune` prunes the same way `hec optimize --prune` does."""
    result = CliRunner().invoke(
        cli,
        [
            "compile",
            str(EXAMPLE / "model.onnx"),
            "--calib",
            str(EXAMPLE / "calib.npz"),
            "--prune",
            "0.5",
            "-o",
            str(tmp_path / "art"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = ProgramReport.read(tmp_path / "art")
    counted = report.pruning["totals"]["after"]
    for key in ("rotations", "plaintext_multiplies", "rotation_keys"):
        assert getattr(report.totals, key) == counted[key], key


def test_rotation_budget_shared_by_loss_beats_one_global_order() -> None:
    """Under a tight rotation budget (16 of the unpruned program's 27), sharing it among the
    maps by the calibration loss keeps a classifier (after the refit, before any training);
    cutting one global order of blocks leaves the output layer one residue class of its
    diagonals and the network near chance. Both programs are within the budget."""
    from hec.frontend import import_onnx
    from hec.ir import interpret
    from hec.optimize import make_he_friendly
    from hec.options import CompileOptions
    from hec.passes.prune_blocks import PruneBlocks
    from hec.prune import compiled_figures
    from hec.recover import refit

    x = np.load(EXAMPLE / "calib.npz")["x"]
    test = np.load(EXAMPLE / "test.npz")
    graph = import_onnx(EXAMPLE / "model.onnx")
    make_he_friendly(EXAMPLE / "model.onnx", graph, CompileOptions(), x)
    accuracy, kept = {}, {}
    for allocation in ("loss", "global"):
        g = graph.clone()
        rows = PruneBlocks(
            0.0, "slots", 16, calibration=x, fold=True, input_layout="auto", allocation=allocation
        ).prune(g)
        assert compiled_figures(g, CompileOptions(), "slots").totals.rotations <= 16
        refit(g, graph, x)
        logits = interpret(g, test["x"])[0].reshape(len(test["x"]), -1)
        accuracy[allocation] = float(np.mean(logits.argmax(1) == test["y"]))
        kept[allocation] = [r["blocks_kept"] for r in rows]
    assert accuracy["loss"] > 0.75, kept
    assert accuracy["loss"] > accuracy["global"] + 0.2, (accuracy, kept)


def test_reported_recovery_error_is_the_refits_not_the_fine_tunings() -> None:
    """Fine-tuning trains for the task, not to reproduce the original layers: the report's
    recovered error is measured right after the refit, whether fine-tuning follows or not."""
    pytest.importorskip("torch")
    from hec.frontend import import_onnx
    from hec.optimize import make_he_friendly
    from hec.options import CompileOptions
    from hec.prune import PruneOptions, prune_graph
    from hec.recover import prunable_ops

    data = np.load(EXAMPLE / "calib.npz")
    graph = import_onnx(EXAMPLE / "model.onnx")
    make_he_friendly(EXAMPLE / "model.onnx", graph, CompileOptions(), data["x"])
    errors, weights = {}, {}
    for epochs in (0, 2):
        g = graph.clone()
        options = PruneOptions(0.5, "batch", fine_tune_epochs=epochs, learning_rate=1e-2)
        report = prune_graph(g, data["x"], options, train=(data["x"], data["y"]), count=False)
        errors[epochs] = [r["reconstruction_error"]["recovered"] for r in report["layers"]]
        weights[epochs] = [op.consts["weight"] for op in prunable_ops(g)]
    moved = [not np.allclose(a, b) for a, b in zip(weights[0], weights[2], strict=True)]
    assert any(moved)  # fine-tuning did change the weights
    np.testing.assert_allclose(errors[2], errors[0], rtol=1e-12)


def test_fine_tuning_after_pruning_uses_the_calibration_labels(tmp_path) -> None:
    """Without --train, fine-tuning after pruning trains on the calibration data and its labels
    (it used to drop them and fail after the pruning, minutes in)."""
    pytest.importorskip("torch")
    out = tmp_path / "pruned.onnx"
    result = _optimize(out, "--prune", "0.5", "--packing", "batch", "--fine-tune", "1")
    report = json.loads(out.with_suffix(".report.json").read_text())["pruning"]
    assert report["fine_tune"]["epochs"] == 1 and len(report["fine_tune"]["losses"]) == 1
    refit = 100 * report["accuracy_before_fine_tune"]
    assert f"after the refit {refit:.2f}%, fine-tuned" in result.output  # both, for the user


def test_fine_tuning_without_labels_is_refused_before_any_work(tmp_path) -> None:
    pytest.importorskip("torch")
    unlabelled = tmp_path / "x_only.npz"
    np.savez(unlabelled, x=np.load(EXAMPLE / "calib.npz")["x"])
    out = tmp_path / "pruned.onnx"
    args = ["optimize", str(EXAMPLE / "model.onnx"), "--calib", str(unlabelled)]
    proc = hec_cli(*args, "--prune", "0.5", "--fine-tune", "1", "-o", str(out))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # said before any calibration or pruning progress
    assert "needs labels" in lines[0] and "--train" in lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_encrypted_pruned_program(pruned, tmp_path) -> None:
    out, _ = pruned
    x = np.load(EXAMPLE / "test.npz")["x"][:3]
    ref = onnxruntime_outputs(out, x)
    art = hec.compile(out, tmp_path / "art")
    client = Client(art)
    server = Server(art, client.context)
    for i in range(len(x)):
        dec = client.decrypt(server.evaluate(client.encrypt(x[i])))
        np.testing.assert_allclose(dec.values, ref[i], atol=1e-2, rtol=0, err_msg=f"image {i}")


def test_budget_tries_one_input_neurons_and_keeps_the_lower_loss() -> None:
    """Under a rotation budget the allocation also runs with the hidden dense layer reduced to
    one input a neuron (anchored outputs, culled constants): both structures are measured by
    the calibration loss, the lower is kept, and the compiled program is within the budget."""
    from hec.frontend import import_onnx
    from hec.optimize import make_he_friendly
    from hec.options import CompileOptions
    from hec.passes.one_input_neurons import hidden_dense_ops
    from hec.prune import PruneOptions, compiled_figures, prune_graph
    from hec.recover import prunable_ops

    x = np.load(EXAMPLE / "calib.npz")["x"]
    graph = import_onnx(EXAMPLE / "model.onnx")
    make_he_friendly(EXAMPLE / "model.onnx", graph, CompileOptions(), x)
    report = prune_graph(graph, x, PruneOptions(0.0, rotation_budget=8), count=False)
    structures = report["structures"]
    losses = structures["calibration_loss"]
    assert set(losses) == {"as_is", "one_input_neurons"}
    assert structures["kept"] == min(losses, key=losses.get)
    hidden = hidden_dense_ops(graph)[0].consts["weight"]
    one_input = bool((np.count_nonzero(hidden, axis=0) <= 1).all())
    assert one_input == (structures["kept"] == "one_input_neurons")
    assert compiled_figures(graph, CompileOptions(), "slots").totals.rotations <= 8
    weights = [op.consts["weight"] for op in prunable_ops(graph)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert report["sparsity"] == pytest.approx(zeros)  # culled weights count as pruned


def test_cli_says_which_structure_a_budget_kept(tmp_path) -> None:
    result = _optimize(tmp_path / "pruned.onnx", "--rotation-budget", "12")
    report = json.loads((tmp_path / "pruned.report.json").read_text())["pruning"]
    line = next(x for x in result.output.splitlines() if x.startswith("structure kept:"))
    assert str(report["structures"]["calibration_loss"]["as_is"]) in line


def test_budget_under_a_copies_readout_leaves_the_output_layer_whole() -> None:
    """With ``readout="copies"`` the output layer costs a fixed sum of rotations, whatever
    its weights (CryptoNets: 9, over the ~100 features spread across the conv's output):
    the budget is spent on the layers before it and counted on the copies program, and the
    output layer keeps every weight that reads a live input."""
    from hec.frontend import import_onnx
    from hec.optimize import make_he_friendly
    from hec.options import CompileOptions
    from hec.prune import PruneOptions, compiled_figures, prune_graph
    from hec.recover import prunable_ops

    x = np.load(EXAMPLE / "calib.npz")["x"]
    graph = import_onnx(EXAMPLE / "model.onnx")
    copies = CompileOptions(readout="copies")
    make_he_friendly(EXAMPLE / "model.onnx", graph, copies, x)
    dense = prunable_ops(graph)[-1].consts["weight"].copy()
    report = prune_graph(graph, x, PruneOptions(0.0, rotation_budget=12), copies)
    figures = compiled_figures(graph, copies, "slots")
    assert figures.readout.kind == "copies"
    assert figures.totals.rotations <= 12
    assert report["totals"]["after"]["rotations"] == figures.totals.rotations
    last = report["layers"][-1]
    assert last["block"] == "none" and last["blocks"] == 0
    # its 8 conv channels all fit the copies: the one count tried
    assert set(report["structures"]["channels_tried"]) == {8}
    kept = prunable_ops(graph)[-1].consts["weight"]
    live_rows = kept.any(axis=1)  # inputs the pruned network still computes
    assert live_rows.any()
    assert (kept[live_rows] != 0).sum() == (dense[live_rows] != 0).sum()
