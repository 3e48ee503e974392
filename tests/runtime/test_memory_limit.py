"""A slot program past ``--memory-limit`` gets fewer rotation keys (the others composed of
them) instead of a program the machine cannot hold; past even that, a one-line refusal."""

from __future__ import annotations

import numpy as np
import pytest

import hec
from hec.cli.main import main
from hec.errors import ResourceError
from hec.runtime import resources

from conftest import EXAMPLE


@pytest.fixture(scope="module")
def unlimited(tmp_path_factory):
    return hec.compile(EXAMPLE / "model.onnx", tmp_path_factory.mktemp("mem") / "art")


def test_a_limit_below_the_program_trades_keys_for_rotations(unlimited, tmp_path) -> None:
    est = resources.estimate(unlimited)
    limit = est.server_memory - 3 * est.key_bytes  # three keys too many
    art = hec.compile(
        EXAMPLE / "model.onnx", tmp_path / "art", hec.CompileOptions(memory_limit=limit)
    )
    keys, before = len(art.params.rotation_indices), len(unlimited.params.rotation_indices)
    assert keys <= before - 3
    assert resources.estimate(art).server_memory <= limit
    assert art.report.totals.rotations > unlimited.report.totals.rotations  # composed
    plan = art.report.memory_plan
    assert plan["rotation_keys"] == keys and plan["rotation_keys_before"] == before
    assert plan["estimated_bytes"] <= plan["limit_bytes"] == limit < plan["estimated_bytes_before"]
    x = np.load(EXAMPLE / "test.npz")["x"][:4]
    np.testing.assert_allclose(hec.simulate(art, x), hec.simulate(unlimited, x), atol=1e-9)


def test_a_limit_within_reach_changes_nothing(unlimited, tmp_path) -> None:
    limit = resources.estimate(unlimited).server_memory
    art = hec.compile(
        EXAMPLE / "model.onnx", tmp_path / "art", hec.CompileOptions(memory_limit=limit)
    )
    assert art.params.rotation_indices == unlimited.params.rotation_indices
    assert art.report.memory_plan is None


def test_the_cli_says_what_the_limit_changed(unlimited, tmp_path, capsys) -> None:
    est = resources.estimate(unlimited)
    limit = est.server_memory - 3 * est.key_bytes
    args = ["compile", str(EXAMPLE / "model.onnx"), "-o", str(tmp_path / "c")]
    main([*args, "--memory-limit", str(limit)])
    out = capsys.readouterr().out
    keys = len(unlimited.params.rotation_indices)
    assert f"rotation keys instead of {keys}," in out and "to fit" in out
    assert "--memory-limit)" in out and "groups" not in out  # composing was enough


def test_a_limit_no_key_count_meets_is_one_line_naming_it(tmp_path, capsys) -> None:
    with pytest.raises(ResourceError, match=r"more than the 0\.1 GB limit"):
        hec.compile(
            EXAMPLE / "model.onnx", tmp_path / "a", hec.CompileOptions(memory_limit=100_000_000)
        )
    args = ["compile", str(EXAMPLE / "model.onnx"), "-o", str(tmp_path / "b")]
    with pytest.raises(SystemExit) as exited:
        main([*args, "--memory-limit", "100MB"])
    assert exited.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert "--memory-limit" in err[-1] and "rotation keys" in err[-1] and "ciphertexts" in err[-1]
    assert not (tmp_path / "b").exists()
