"""compose-rotations (``--rotation-keys pow2``): same results, keys for powers of two only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import hec
from hec.errors import ParameterError
from hec.frontend.reference import onnxruntime_outputs
from hec.ir.slot_ops import rotation_amounts
from hec.passes.compose_rotations import naf_steps

from conftest import EXAMPLE
from op_cases import CASES


def _pow2(k: int) -> bool:
    return k != 0 and abs(k) & (abs(k) - 1) == 0


@given(st.integers(-(1 << 17), 1 << 17))
def test_naf_steps_sum_to_k_with_no_two_adjacent_powers(k: int) -> None:
    steps = naf_steps(k)
    assert sum(steps) == k and all(_pow2(s) for s in steps)
    bits = sorted(abs(s).bit_length() for s in steps)
    assert all(b - a >= 2 for a, b in zip(bits, bits[1:], strict=False))  # non-adjacent form
    assert len(steps) <= (abs(k).bit_length() + 2) // 2 + 1


@pytest.mark.parametrize("sample_blocks", [False, True])
def test_pow2_keys_leave_cryptonets_unchanged(sample_blocks: bool, tmp_path) -> None:
    x = np.load(EXAMPLE / "test.npz")["x"][:30]
    arts = {
        keys: hec.compile(
            EXAMPLE / "model.onnx",
            tmp_path / keys,
            hec.CompileOptions(rotation_keys=keys, sample_blocks=sample_blocks),
        )
        for keys in ("all", "pow2")
    }
    full, pow2 = arts["all"], arts["pow2"]
    np.testing.assert_allclose(hec.simulate(pow2, x), hec.simulate(full, x), rtol=1e-9, atol=1e-9)
    assert all(_pow2(k) for k in pow2.params.rotation_indices)
    used = {k for op in pow2.program.ops for k in rotation_amounts(op)}
    assert used == set(pow2.params.rotation_indices)  # every key is used
    t_full, t_pow2 = full.report.totals, pow2.report.totals
    assert t_pow2.rotation_keys < t_full.rotation_keys
    assert t_pow2.rotation_key_bytes < t_full.rotation_key_bytes
    assert t_pow2.rotations > t_full.rotations  # the price, shown in the report


@pytest.mark.parametrize("name", ["conv_strided_asymmetric", "matmul_add_3d", "pad_modes"])
def test_pow2_keys_leave_op_cases_unchanged(name: str, tmp_path) -> None:
    model, x = CASES[name]()
    options = hec.CompileOptions(rotation_keys="pow2", input_layout="direct")
    pow2 = hec.compile(model, tmp_path / "p", options)
    full = hec.compile(model, tmp_path / "f", hec.CompileOptions(input_layout="direct"))
    np.testing.assert_allclose(hec.simulate(pow2, x), hec.simulate(full, x), rtol=1e-9, atol=1e-9)
    assert all(_pow2(k) for k in pow2.params.rotation_indices)


@pytest.mark.slow
def test_pow2_keys_encrypted_match_onnxruntime(tmp_path) -> None:
    x = np.load(EXAMPLE / "test.npz")["x"][:2]
    art = hec.compile(EXAMPLE / "model.onnx", tmp_path, hec.CompileOptions(rotation_keys="pow2"))
    result = hec.run(art, x)
    ref = onnxruntime_outputs(EXAMPLE / "model.onnx", x)
    np.testing.assert_allclose(result.logits, ref, atol=1e-2)


def test_a_key_cap_keeps_the_most_useful_keys_and_the_results(tmp_path) -> None:
    x = np.load(EXAMPLE / "test.npz")["x"][:20]
    base = hec.CompileOptions(input_layout="direct")
    arts = {
        cap: hec.compile(
            EXAMPLE / "model.onnx", tmp_path / str(cap), replace(base, max_rotation_keys=cap)
        )
        for cap in (None, 20)
    }
    full, capped = arts[None], arts[20]
    assert full.report.totals.rotation_keys > 20 >= capped.report.totals.rotation_keys
    pow2 = hec.compile(EXAMPLE / "model.onnx", tmp_path / "p", replace(base, rotation_keys="pow2"))
    rotations = [a.report.totals.rotations for a in (full, capped, pow2)]
    assert rotations[0] < rotations[1] < rotations[2]  # a cap costs less than composing all
    np.testing.assert_allclose(hec.simulate(capped, x), hec.simulate(full, x), rtol=1e-9, atol=1e-9)
    used = {k for op in capped.program.ops for k in rotation_amounts(op)}
    assert used == set(capped.params.rotation_indices)
    with pytest.raises(ParameterError, match="at least"):
        hec.compile(EXAMPLE / "model.onnx", tmp_path / "x", replace(base, max_rotation_keys=4))
