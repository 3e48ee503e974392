"""The artifact directory: parameters, round trip, and the generated OpenFHE program."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hec
from hec.backend_openfhe import load_artifact
from hec.errors import ArtifactError
from hec.ir.slot_ops import rotation_amounts

from cli_helpers import generated_program_logits
from onnx_builders import run_onnxruntime
from op_cases import CASES


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    model, x = CASES["cryptonets_like"]()
    out = tmp_path_factory.mktemp("art") / "out"
    return hec.compile(model, out), model, x


def test_parameters_are_128_bit_and_minimal(artifact) -> None:
    art, _, _ = artifact
    p = art.params
    assert p.security == "HEStd_128_classic"
    assert p.depth == 5  # conv, square, pool+fc, square, fc
    assert p.ring_dim == 1 << 14  # ENVIRONMENT.md: 2^14 holds depth 5 at 128 bits
    used = {k for op in art.program.ops for k in rotation_amounts(op)}
    assert set(p.rotation_indices) == used


def test_round_trip_preserves_the_program(artifact) -> None:
    art, _, x = artifact
    again = load_artifact(art.path)
    assert str(again.program) == str(art.program)
    assert again.params == art.params
    np.testing.assert_array_equal(hec.simulate(again, x), hec.simulate(art, x))


def test_truncated_constants_are_detected(artifact, tmp_path) -> None:
    art, _, _ = artifact
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(art.path, copy)
    data = (copy / "constants.npz").read_bytes()
    (copy / "constants.npz").write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactError, match="corrupted"):
        load_artifact(copy)


def test_newer_format_is_refused(artifact, tmp_path) -> None:
    art, _, _ = artifact
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(art.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format 99"):
        load_artifact(copy)


@pytest.mark.slow
def test_generated_program_runs_and_agrees(artifact, tmp_path) -> None:
    art, model, x = artifact
    logits = generated_program_logits(art.path, x[0], tmp_path)
    ref = run_onnxruntime(model, x[:1])[0]
    np.testing.assert_allclose(logits, ref, atol=1e-2)
