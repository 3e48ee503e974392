"""The command line as a user runs it: summaries, report.json, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from hec.backend_openfhe.report_schema import ProgramReport

from cli_helpers import assert_one_line_error, hec
from conftest import EXAMPLE, REPO
from onnx_builders import ModelBuilder
from op_cases import CASES


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "cryptonets"
    proc = hec("compile", str(EXAMPLE / "model.onnx"), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "rotation keys" in proc.stdout and "total" in proc.stdout
    return out


def test_compile_writes_report(compiled: Path) -> None:
    report = ProgramReport.read(compiled)  # every field the schema requires is there
    totals = report.totals
    assert report.ckks.security == "HEStd_128_classic"
    assert report.ckks.ring_dim >= 2 * report.ckks.slots
    assert totals.rotation_keys == len(report.rotation_indices)
    assert sum(layer.rotations for layer in report.layers) == totals.rotations
    for name in ("program.txt", "tensor_ir.txt", "openfhe_program.py", "params.json"):
        assert (compiled / name).is_file()


def test_run_simulate_writes_output(compiled: Path, tmp_path: Path) -> None:
    x = np.load(EXAMPLE / "test.npz")["x"][:4]
    np.save(tmp_path / "x.npy", x)
    proc = hec(
        "run",
        str(compiled),
        "--input",
        str(tmp_path / "x.npy"),
        "--simulate",
        "--output",
        str(tmp_path / "y.npy"),
        "--compare-onnx",
        str(EXAMPLE / "model.onnx"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "agrees with onnxruntime on 4/4" in proc.stdout
    assert np.load(tmp_path / "y.npy").shape == (4, 10)


def test_run_takes_an_npz_dataset(compiled: Path) -> None:
    proc = hec("run", str(compiled), "--input", str(EXAMPLE / "test.npz"), "--simulate")
    assert proc.returncode == 0, proc.stderr
    assert "simulated run of 360 sample(s)" in proc.stdout


@pytest.mark.slow
def test_run_encrypted_one_sample(compiled: Path, tmp_path: Path) -> None:
    proc = hec(
        "run",
        str(compiled),
        "--input",
        str(EXAMPLE / "sample.npy"),
        "--output",
        str(tmp_path / "y.npy"),
        "--compare-onnx",
        str(EXAMPLE / "model.onnx"),
        "--compare-simulator",
    )
    assert proc.returncode == 0, proc.stderr
    assert "agrees with onnxruntime on 1/1" in proc.stdout
    assert "agrees with simulator on 1/1" in proc.stdout
    diff = float(proc.stdout.split("agrees with simulator on 1/1; max |diff| ")[1].split()[0])
    assert diff < 1e-2
    assert "keygen" in proc.stdout and "evaluate" in proc.stdout


def test_dump_ir_after(tmp_path: Path) -> None:
    proc = hec(
        "compile",
        str(EXAMPLE / "model.onnx"),
        "-o",
        str(tmp_path / "o"),
        "--dump-ir-after",
        str(tmp_path / "dumps"),
    )
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "dumps").iterdir())
    # fuse-polynomials (01) finds nothing to change in this model, check-input-layout (02) and
    # check-ranges (03) never change anything and place-bootstraps (05) has nothing to do in a
    # shallow program, so they write no dump; choose-kernels records each map's kernel
    assert names == [
        "00-input.txt",
        "04-lower-to-slots.txt",
        "06-choose-kernels.txt",
        "07-schedule-rotations.txt",
    ]
    kernels = (tmp_path / "dumps" / "06-choose-kernels.txt").read_text()
    assert "kernel='bsgs'" in kernels and "baby_step=" in kernels


def test_unsupported_op_is_one_line(tmp_path: Path) -> None:
    b = ModelBuilder((4,))
    # a Softmax inside the network (a final one runs on the client: test_client_tail.py)
    hidden = b.node("Softmax", [b.node("Gemm", ["input", b.weight(4, 4)])])
    onnx.save(b.build(b.node("Gemm", [hidden, b.weight(4, 2)])), str(tmp_path / "softmax.onnx"))
    proc = hec("compile", str(tmp_path / "softmax.onnx"), "-o", str(tmp_path / "o"))
    assert_one_line_error(proc, "Softmax_2", "op Softmax", "final Softmax")
    assert not (tmp_path / "o").exists()


def test_activation_without_calibration_is_one_line(tmp_path: Path) -> None:
    b = ModelBuilder((4,))
    onnx.save(
        b.build(b.node("Relu", [b.node("Gemm", ["input", b.weight(4, 4)])])),
        str(tmp_path / "relu.onnx"),
    )
    proc = hec("compile", str(tmp_path / "relu.onnx"), "-o", str(tmp_path / "o"))
    assert_one_line_error(proc, "Relu_2", "--calib")


def test_missing_model_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(
        hec("compile", str(tmp_path / "none.onnx"), "-o", str(tmp_path)),
        "none.onnx",
        "no such file",
    )


def test_wrong_input_shape_is_one_line(compiled: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 8, 8), np.float32))
    assert_one_line_error(
        hec("run", str(compiled), "--input", str(tmp_path / "bad.npy"), "--simulate"),
        "does not match",
    )


def test_missing_input_and_artifact_are_one_line(compiled: Path, tmp_path: Path) -> None:
    assert_one_line_error(hec("run", str(compiled), "--input", str(tmp_path / "x.npy")), "x.npy")
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8)))
    assert_one_line_error(
        hec("run", str(tmp_path / "nothing"), "--input", str(tmp_path / "x.npy")), "hec compile"
    )


def test_corrupted_artifact_is_one_line(compiled: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(compiled, broken)
    (broken / "program.json").write_text("{ not json")
    np.save(tmp_path / "x.npy", np.zeros((1, 8, 8)))
    assert_one_line_error(
        hec("run", str(broken), "--input", str(tmp_path / "x.npy"), "--simulate"), "corrupted"
    )


def test_broken_openfhe_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "openfhe"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ImportError('libgomp.so.1: cannot open shared object file')\n"
    )
    model, _ = CASES["gemm_plain"]()
    onnx.save(model, str(tmp_path / "m.onnx"))
    proc = hec(
        "compile",
        str(tmp_path / "m.onnx"),
        "-o",
        str(tmp_path / "o"),
        env={"PYTHONPATH": str(tmp_path / "fake")},
    )
    assert_one_line_error(proc, "cannot import openfhe", "libgomp")
    assert proc.returncode == 3


def _other_python() -> str | None:
    for cand in ("python3.11", "python3.12"):
        path = shutil.which(cand)
        root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
        found = [path] if path else sorted(map(str, root.glob(f"{cand[6:]}*/bin/{cand}")))
        for p in found:
            ok = subprocess.run(
                [p, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
            )
            if ok.returncode == 0 and "(3, 10)" not in ok.stdout:
                return p
    return None


def test_wrong_python_gets_a_clear_message() -> None:
    other = _other_python()
    if other is None:
        pytest.skip("no Python other than 3.10 on this machine")
    proc = subprocess.run(
        [other, "-c", "import hec"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "hec needs Python 3.10" in last and "make setup" in last


# -- batch packing -------------------------------------------------------------------------
def test_compile_batch_prints_its_summary_and_simulates(tmp_path: Path) -> None:
    out = tmp_path / "batch"
    proc = hec(
        "compile",
        str(EXAMPLE / "model.onnx"),
        "-o",
        str(out),
        "--packing",
        "batch",
        "--batch-size",
        "100",
    )
    assert proc.returncode == 0, proc.stderr
    assert "batch of 128 inputs (one per slot)" in proc.stdout and "no rotation keys" in proc.stdout
    assert "sc-mul" in proc.stdout and "predicted peak" in proc.stdout
    report = ProgramReport.read(out)
    assert report.packing == "batch" and report.totals.rotation_keys == 0
    np.save(tmp_path / "x.npy", np.load(EXAMPLE / "test.npz")["x"][:5])
    run = hec(
        "run",
        str(out),
        "--input",
        str(tmp_path / "x.npy"),
        "--simulate",
        "--compare-onnx",
        str(EXAMPLE / "model.onnx"),
        "--report",
        str(tmp_path / "run.json"),
    )
    assert run.returncode == 0, run.stderr
    assert "argmax agrees with onnxruntime on 5/5" in run.stdout
    assert "simulate" in json.loads((tmp_path / "run.json").read_text())["timings"]
    assert report.estimates.images_per_evaluation == 128


def test_batch_memory_refusals_are_one_line_errors(tmp_path: Path) -> None:
    proc = hec(
        "compile",
        str(EXAMPLE / "model.onnx"),
        "-o",
        str(tmp_path / "b"),
        "--packing",
        "batch",
        "--memory-limit",
        "200MB",
    )
    assert_one_line_error(proc, "batch packing needs", "GB at its peak", "--packing slots")
    bad = hec(
        "compile",
        str(EXAMPLE / "model.onnx"),
        "-o",
        str(tmp_path / "c"),
        "--packing",
        "batch",
        "--memory-limit",
        "lots",
    )
    assert_one_line_error(bad, "'lots' is not a size")
