"""``report.json`` through its schema: round trip, version checks, refused fields."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

import hec
from hec.backend_openfhe import load_artifact
from hec.backend_openfhe.artifact import content_hash
from hec.backend_openfhe.report_schema import SCHEMA_VERSION, ProgramReport
from hec.errors import ArtifactError
from hec.options import CompileOptions

from op_cases import CASES


@pytest.fixture(scope="module", params=["slots", "batch"])
def compiled(request, tmp_path_factory):
    model, _ = CASES["cryptonets_like"]()
    out = tmp_path_factory.mktemp(request.param) / "out"
    return hec.compile(model, out, CompileOptions(packing=request.param))


def test_a_compiled_report_reads_and_writes_back_byte_identically(compiled, tmp_path) -> None:
    text = (compiled.path / "report.json").read_text()
    report = ProgramReport.read(compiled.path)
    assert report == compiled.report
    assert next(iter(json.loads(text))) == "schema_version"  # written first
    assert report.write(tmp_path / "report.json").read_text() == text
    assert ProgramReport.from_dict(json.loads(text)) == report


def test_figures_read_as_attributes(compiled) -> None:
    report = compiled.report
    assert report.schema_version == SCHEMA_VERSION
    assert report.totals.rotations == sum(layer.rotations for layer in report.layers)
    assert report.totals.depth == report.ckks.depth == compiled.params.depth
    if report.packing == "batch":
        assert report.memory is not None and report.ckks.batch == report.ckks.slots
        assert report.totals.ciphertexts == report.memory.ciphertexts_computed
    else:
        assert report.input_layout is not None and report.memory is None
        assert report.totals.rotation_keys == len(report.rotation_indices)


def _rewrite(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2) + "\n")


def test_a_report_without_a_version_is_refused_on_one_line(compiled, tmp_path) -> None:
    path = compiled.report.write(tmp_path / "report.json")
    _rewrite(path, lambda d: d.pop("schema_version"))
    with pytest.raises(ArtifactError, match="no schema_version.*compile the model again") as e:
        ProgramReport.read(tmp_path)
    assert "\n" not in str(e.value)


def test_a_newer_version_and_unknown_fields_are_refused(compiled, tmp_path) -> None:
    path = compiled.report.write(tmp_path / "report.json")
    _rewrite(path, lambda d: d.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(ArtifactError, match=f"version {SCHEMA_VERSION + 1}, this hec reads"):
        ProgramReport.read(path)
    _rewrite(path, lambda d: d.update(schema_version=SCHEMA_VERSION, extra=1))
    with pytest.raises(ArtifactError, match="unknown field 'extra'"):
        ProgramReport.read(path)
    _rewrite(path, lambda d: (d.pop("extra"), d["totals"].pop("rotations")))
    with pytest.raises(ArtifactError, match="totals: field 'rotations' missing"):
        ProgramReport.read(path)


def test_an_artifact_with_an_old_report_says_to_compile_again(compiled, tmp_path) -> None:
    """The integrity check passes (the manifest matches the files), the schema check does not."""
    art = tmp_path / "old"
    shutil.copytree(compiled.path, art)
    _rewrite(art / "report.json", lambda d: d.pop("schema_version"))
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"]["report.json"] = hashlib.sha256(
        (art / "report.json").read_bytes()
    ).hexdigest()
    manifest["content_hash"] = content_hash(manifest["files"])
    (art / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    with pytest.raises(ArtifactError, match="no schema_version"):
        load_artifact(art)
