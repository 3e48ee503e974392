"""The copies readout: one copy of the input per output, each output read in its own copy."""

from __future__ import annotations

import numpy as np
import pytest

import hec
from hec.backend_openfhe.report_schema import Choice, ProgramReport
from hec.frontend.reference import onnxruntime_outputs
from hec.options import CompileOptions
from hec.passes.stencil_sums import tree_rounds

from cli_helpers import assert_one_line_error, generated_program_logits
from cli_helpers import hec as hec_cli
from conftest import EXAMPLE, assert_matches_reference
from onnx_builders import conv_pool_conv


def _covered(rounds: list[tuple[int, ...]]) -> dict[int, int]:
    """How many times each offset is summed into slot 0 by the rounds."""
    cov = {0: 1}
    for shifts in rounds:
        new: dict[int, int] = {}
        for c, n in cov.items():
            for d in (0, *shifts):
                new[c + d] = new.get(c + d, 0) + n
        cov = new
    return cov


@pytest.mark.parametrize("seed", range(6))
def test_tree_rounds_sum_every_tap_once_and_only_zeros_besides(seed) -> None:
    rng = np.random.default_rng(seed)
    grid = [112 * i + 4 * j + 784 * c for c in range(2) for i in range(5) for j in range(5)]
    taps = sorted({0, *(int(t) for t in rng.choice(grid, size=rng.integers(2, 40)))})
    room = 2048
    cov = _covered(tree_rounds(tuple(taps), room))
    assert all(cov.get(t) == 1 for t in taps)
    assert max(cov) < room  # never past the copy
    assert all(n == 1 or t not in taps for t, n in cov.items())


def test_tree_rounds_of_a_full_grid_cost_log2_per_axis() -> None:
    grid = tuple(sorted(112 * i + 4 * j for i in range(5) for j in range(5)))
    rounds = tree_rounds(grid, 1024)
    assert sum(map(len, rounds)) == 6  # 5 columns: 3 rotations, 5 rows: 3
    # with no zero slots to spare the rounds sum only taps (sum_rounds' progressions)
    tight = tree_rounds(grid, grid[-1] + 1)
    assert all(n == 1 for n in _covered(tight).values())


@pytest.fixture(scope="module")
def model():
    return conv_pool_conv(c1=2, c2=3, k=3, pool=2, size=12)


def test_copies_readout_equals_onnxruntime_with_fewer_rotations(model, tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(8, 1, 12, 12)).astype(np.float32)
    matrix = hec.compile(model, tmp_path / "matrix")
    copies = hec.compile(model, tmp_path / "copies", CompileOptions(readout="copies"))
    assert_matches_reference(hec.simulate(copies, x), onnxruntime_outputs(model, x), rel=1e-6)
    assert copies.report.readout == Choice(kind="copies", choice="copies")
    # 5 outputs: 8 copies of the program's 512 slots (2x12x12 elements, direct input)
    direct = CompileOptions(readout="copies", input_layout="direct")
    assert hec.compile(model, tmp_path / "direct", direct).report.ckks.slots == 8 * 512
    last = {r.name: r for r in copies.report.layers}
    dense = next(name for name in last if "Gemm" in name)
    assert last[dense].plaintext_multiplies == 1  # one plaintext for the 5 dot products
    assert copies.report.totals.rotations < matrix.report.totals.rotations


def test_auto_keeps_the_faster_readout(model, tmp_path) -> None:
    art = hec.compile(model, tmp_path / "auto", CompileOptions(readout="auto"))
    assert art.report.readout.choice == "auto"
    assert art.report.readout.kind in ("matrix", "copies")


def test_copies_that_do_not_fit_are_a_one_line_error(tmp_path) -> None:
    """LeNet-5 unpruned: 4,704-element tensors, 8,192 slots, 16 copies: too many slots."""
    lenet = EXAMPLE.parent / "lenet5_digits"
    args = ["compile", str(lenet / "model.onnx"), "--calib", str(lenet / "calib.npz")]
    proc = hec_cli(*args, "--readout", "copies", "-o", str(tmp_path / "art"))
    assert_one_line_error(proc, "copies readout", "65536 slots")
    assert not (tmp_path / "art" / "program.json").exists()


@pytest.mark.slow
def test_encrypted_copies_readout(model, tmp_path) -> None:
    from hec.runtime import Client, Server

    x = np.random.default_rng(1).normal(size=(2, 1, 12, 12)).astype(np.float32)
    art = hec.compile(model, tmp_path / "art", CompileOptions(readout="copies"))
    ref = onnxruntime_outputs(model, x)
    client = Client(art)
    server = Server(art, client.context)
    for i in range(len(x)):
        dec = client.decrypt(server.evaluate(client.encrypt(x[i])))
        np.testing.assert_allclose(dec.values, ref[i], atol=1e-3 * np.abs(ref).max(), rtol=0)
    # the generated stand-alone program reads the outputs from their copies too
    logits = generated_program_logits(tmp_path / "art", x[0], tmp_path)
    np.testing.assert_allclose(logits, ref[0], atol=1e-3 * np.abs(ref).max(), rtol=0)


def test_copies_and_sample_blocks_are_refused_together(model, tmp_path) -> None:
    from hec.errors import LayoutError

    with pytest.raises(LayoutError, match="choose one"):
        hec.compile(model, tmp_path / "art", CompileOptions(readout="copies", sample_blocks=True))


def test_cli_compile_readout_copies_says_so(model, tmp_path) -> None:
    import onnx

    onnx.save(model, str(tmp_path / "m.onnx"))
    proc = hec_cli(
        "compile", str(tmp_path / "m.onnx"), "--readout", "copies", "-o", str(tmp_path / "a")
    )
    assert proc.returncode == 0, proc.stderr
    assert "readout: copies (8 copies of the input" in proc.stdout
    report = ProgramReport.read(tmp_path / "a")
    assert report.readout == Choice(kind="copies", choice="copies")
