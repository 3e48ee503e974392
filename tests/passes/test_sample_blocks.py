"""Sample blocks: B samples side by side in one ciphertext compute what each computes alone.

The simulator runs a block-local program on rows of ``B·slots`` slots (constants tiled, rotations
wrapping around the whole row, as OpenFHE does with a full batch) and must give, block by
block, the per-sample results; the default (mod-``slots``) program must not, which shows the
check has teeth. The encrypted tier runs 16 digits in one ciphertext.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hec
from hec.ir import CipherType, Graph, Layout
from hec.options import CompileOptions
from hec.passes.schedule_rotations import ScheduleRotations
from hec.runtime.simulator import check_block_local, simulate_blocks, simulate_slots

from conftest import EXAMPLE
from onnx_builders import run_onnxruntime
from op_cases import CASES

BLOCKS_CASES = [
    "conv_strided_asymmetric",
    "gemm_trans_b",
    "avgpool_pads",
    "pad_modes",
    "residual_across_levels",
    "cryptonets_like",
    "matmul_add_3d",
]


@pytest.mark.parametrize("name", BLOCKS_CASES)
def test_blocks_equal_single_runs_and_onnxruntime(name: str, tmp_path) -> None:
    model, x = CASES[name]()
    art = hec.compile(model, tmp_path / "out", CompileOptions(sample_blocks=True))
    blocks = art.params.blocks
    assert blocks == art.params.ring_dim // (2 * art.params.slots) > 1
    assert art.params.batch_size == art.params.ring_dim // 2
    # ``blocks`` different samples: the op case's inputs repeated, each scaled differently.
    scale = np.linspace(0.5, 1.5, blocks).reshape(-1, *[1] * (x.ndim - 1))
    xs = np.resize(x, (blocks, *x.shape[1:])) * scale
    together = art.output_layout.unpack(
        simulate_blocks(art.program, art.input_layout.pack(xs), blocks)
    )
    np.testing.assert_array_equal(together, hec.simulate(art, xs))
    ref = run_onnxruntime(model, xs)
    np.testing.assert_allclose(together, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


def test_default_program_is_not_block_local(tmp_path) -> None:
    """Without block-local shifts, wrap-around mod ``slots`` reads the neighbour's block."""
    art = hec.compile(EXAMPLE / "model.onnx", tmp_path / "out")
    assert art.params.blocks == 1 and art.params.batch_size == art.params.slots
    with pytest.raises(RuntimeError, match="neighbour"):
        check_block_local(art.program, 16)


def test_sample_blocks_cost_little(tmp_path) -> None:
    # the same scheduling without block-locality: direct input layout, no folded short maps
    plain = CompileOptions(input_layout="direct", fold_short_maps=False)
    one = hec.compile(EXAMPLE / "model.onnx", tmp_path / "one", plain)
    many = hec.compile(
        EXAMPLE / "model.onnx", tmp_path / "many", CompileOptions(sample_blocks=True)
    )
    a, b = one.report.totals, many.report.totals
    assert many.params.blocks == 16 and many.params.depth == one.params.depth
    # Exact shifts split a diagonal at most in two; the schedule keeps rotations close.
    assert a.plaintext_multiplies <= b.plaintext_multiplies <= 2 * a.plaintext_multiplies
    assert b.rotation_keys <= 2 * a.rotation_keys
    assert many.report.ckks.samples_per_ciphertext == 16


@settings(max_examples=60, deadline=None)
@given(
    st.integers(3, 6),  # log2 slots
    st.integers(2, 4),  # blocks
    st.data(),
)
def test_block_local_schedule_of_random_maps(log_slots: int, blocks: int, data) -> None:
    """Random sparse maps with exact shifts, any baby step: each block computes its own map."""
    S = 1 << log_slots
    size_in, size_out = data.draw(st.integers(1, S)), data.draw(st.integers(1, S))
    nnz = data.draw(st.integers(1, 3 * S))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    rows, cols = rng.integers(0, size_out, nnz), rng.integers(0, size_in, nnz)
    M = np.zeros((S, S))
    M[rows, cols] = rng.normal(size=nnz)
    r, c = np.nonzero(M)
    shifts = c - r  # exact, in (-S, S)
    offsets = np.unique(shifts)
    diags = np.zeros((len(offsets), S))
    diags[np.searchsorted(offsets, shifts), r] = M[r, c]
    g = Graph("m", "slot")
    x = g.add_input("x", CipherType(S, 0, 1, Layout((size_in,), S)))
    y = g.add(
        "matvec",
        [x],
        CipherType(S, 1, 1, Layout((size_out,), S)),
        {"offsets": tuple(int(o) for o in offsets)},
        {"diags": diags, "bias": np.zeros(S)},
    )
    g.outputs = [y]
    baby = data.draw(st.one_of(st.none(), st.integers(1, S)))
    ScheduleRotations(baby, block_local=True).run(g)
    g.verify()
    xs = np.zeros((blocks, S))
    xs[:, :size_in] = rng.normal(size=(blocks, size_in))
    out = simulate_blocks(g, xs, blocks)
    np.testing.assert_allclose(out[:, :size_out], (xs @ M.T)[:, :size_out], atol=1e-9)
    np.testing.assert_allclose(simulate_slots(g, xs)[0][:, :size_out], out[:, :size_out], atol=1e-9)


@pytest.mark.slow
def test_sixteen_digits_in_one_ciphertext(tmp_path) -> None:
    from hec.runtime import Client, Server

    art = hec.compile(EXAMPLE / "model.onnx", tmp_path / "out", CompileOptions(sample_blocks=True))
    data = np.load(EXAMPLE / "test.npz")
    x = data["x"][: art.params.blocks]
    ref = run_onnxruntime(onnx.load(str(EXAMPLE / "model.onnx")), x)
    client = Client(art)
    server = Server(art, client.context, client.key_id, client.key_tag)
    full = client.decrypt_bytes(server.evaluate_bytes(client.encrypt_to_bytes(x)))
    np.testing.assert_allclose(full.values, ref, atol=1e-2)
    assert (full.values.argmax(1) == ref.argmax(1)).all()


@pytest.mark.slow
def test_partly_filled_ciphertext(tmp_path) -> None:
    """Fewer samples than blocks: the header says how many, decryption returns as many."""
    from hec.runtime import Client, Server

    model, x = CASES["cryptonets_like"]()
    art = hec.compile(model, tmp_path / "out", CompileOptions(sample_blocks=True))
    assert art.params.blocks > len(x)
    client = Client(art)
    server = Server(art, client.context, client.key_id, client.key_tag)
    part = client.decrypt_bytes(server.evaluate_bytes(client.encrypt_to_bytes(x)))
    assert part.values.shape == (len(x), *art.output_shape)
    np.testing.assert_allclose(part.values, run_onnxruntime(model, x), atol=1e-2)
