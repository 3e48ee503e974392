"""hec inspect, hec calibrate-costs and the per-layer predictions they read."""

from __future__ import annotations

import json
import re
import xml.dom.minidom

import numpy as np
import pytest

import hec
from hec.backend_openfhe.cost_model import estimated_seconds, op_costs

from cli_helpers import assert_one_line_error
from cli_helpers import hec as hec_cli
from conftest import EXAMPLE


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return hec.compile(EXAMPLE / "model.onnx", tmp_path_factory.mktemp("inspect") / "out")


def test_report_predicts_every_layer_and_the_total_is_their_sum(art) -> None:
    layers = art.report.layers
    assert all(layer.predicted_ms > 0 for layer in layers)
    total = sum(layer.predicted_ms for layer in layers) / 1e3
    assert total == pytest.approx(art.report.estimates.evaluation_seconds, abs=2e-3)
    assert total == pytest.approx(estimated_seconds(art.report), abs=2e-3)


def test_a_calibrated_table_replaces_the_reference_costs(art, tmp_path, monkeypatch) -> None:
    ck = art.report.ckks
    reference, basis = op_costs(ck)
    assert "reference" in basis
    table = tmp_path / "costs.json"
    doubled = {k: 2 * v for k, v in reference.items()}
    table.write_text(json.dumps({f"{ck.ring_dim}/{ck.depth}": {"ms": doubled}}))
    monkeypatch.setenv("HEC_COST_TABLE", str(table))
    costs, basis = op_costs(ck)
    assert "calibrated" in basis and costs == pytest.approx(doubled)
    assert estimated_seconds(art.report) == pytest.approx(
        2 * sum(layer.predicted_ms for layer in art.report.layers) / 1e3, rel=1e-3
    )
    table.write_text(json.dumps({"1024/1": {"ms": doubled}}))  # another ring: not used
    assert "reference" in op_costs(ck)[1]


def test_inspect_prints_the_layers_and_writes_an_html_report(art, tmp_path) -> None:
    n = len(art.report.layers)
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"layer_ms": [10.0 * (i + 1) for i in range(n)]}))
    html = tmp_path / "r.html"
    proc = hec_cli("inspect", str(art.path), "--run", str(run), "--html", str(html))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for column in ("diag", "rot", "hoisted", "pt-mul", "ct-mul", "pred ms", "meas ms", "key MB"):
        assert column in lines[0]
    total = next(line for line in lines if line.startswith("total")).split()
    assert total[3:5] == [
        str(art.report.totals.diagonals),
        str(art.report.totals.rotations),
    ]
    assert float(total[-3]) == pytest.approx(10.0 * n * (n + 1) / 2)  # measured: their sum
    page = html.read_text()
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) == 2 and "measured ms" in svgs[0]
    for svg in svgs:
        xml.dom.minidom.parseString(svg)  # well-formed
    run.write_text(json.dumps({"layer_ms": [1.0]}))
    proc = hec_cli("inspect", str(art.path), "--run", str(run))
    assert proc.returncode != 0 and "layers differ" in proc.stderr


def test_calibrate_costs_stores_a_table_the_cost_model_reads(tmp_path) -> None:
    table = tmp_path / "costs.json"
    proc = hec_cli(
        "calibrate-costs", "--depth", "1", "--repeats", "1", env={"HEC_COST_TABLE": str(table)}
    )
    assert proc.returncode == 0, proc.stderr
    entry = next(iter(json.loads(table.read_text()).values()))
    ms = entry["ms"]
    assert ms["rotations"] > ms["plaintext_multiplies"] > 0 and ms["hoisted_rotations"] < 0
    assert str(table) in proc.stdout


def test_calibrate_costs_refuses_a_ring_too_small_in_one_line(tmp_path) -> None:
    proc = hec_cli(
        "calibrate-costs", "--depth", "9", "--ring-dim", "8192", "--repeats", "1",
        env={"HEC_COST_TABLE": str(tmp_path / "costs.json")},
    )  # fmt: skip
    assert_one_line_error(proc)
    assert "OpenFHE asks for 32768" in proc.stderr
    assert not (tmp_path / "costs.json").exists()


def test_costs_are_measured_on_the_artifacts_own_chain() -> None:
    """A --precision program's chain (32-bit scale, 44-bit first prime) fits ring 2^14 at depth
    7, where the default 40-bit chain does not: calibrate-costs measures on the artifact's."""
    from hec.backend_openfhe.measure_costs import measure_op_costs
    from hec.backend_openfhe.params import CKKSParams
    from hec.errors import ParameterError

    chain = CKKSParams(16384, 7, 8192, scaling_bits=32, first_mod_bits=44)
    entry = measure_op_costs(7, 16384, repeats=1, chain=chain)
    assert entry["ring_dim"] == 16384 and entry["ms"]["rotations"] > 0
    assert "summed_rotations" in entry["ms"]
    with pytest.raises(ParameterError, match="too small for depth 7 at 40-bit"):
        measure_op_costs(7, 16384, repeats=1)


def test_inspect_refuses_a_missing_artifact_in_one_line(tmp_path) -> None:
    assert_one_line_error(hec_cli("inspect", str(tmp_path / "nothing")))


@pytest.mark.slow
def test_encrypted_run_reports_time_per_layer(art) -> None:
    x = np.load(EXAMPLE / "test.npz")["x"][:1]
    result = hec.run(art, x)
    layer_ms = result.stats["layer_ms"]
    assert len(layer_ms) == len(art.report.layers) and all(t > 0 for t in layer_ms)
    assert sum(layer_ms) == pytest.approx(result.timings["evaluate"] * 1e3, rel=0.05)
    assert result.stats["precision_bits"] == pytest.approx(result.precision_bits.min())
