"""Trained models as real exporters write them (tests/fixtures/real, made by
tests/fixtures/make_real_models.py): each compiles with calibration data, the compiled program's
accuracy on the held-out split stays within 1 point of onnxruntime's on the original file, and the
encrypted run (slow) predicts what the simulator predicts.

The fixtures: a small ResNet, a MobileNet-style depthwise-separable CNN (ReLU6), a 1-D conv net, a
tabular MLP (BatchNorm1d, GELU, Softmax), LeNet-5 (MaxPool) — each from the TorchScript and the
dynamo exporter, with a fixed batch of 1 and a dynamic batch — and scikit-learn LogisticRegression
and MLPClassifier from skl2onnx with and without ZipMap. The tests need only onnx, onnxruntime
and hec (not torch, not scikit-learn).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import hec
from hec import metrics
from hec.calibrate import load_dataset
from hec.errors import HecError
from hec.frontend import import_onnx
from hec.ir.printer import print_graph
from hec.metrics import artifact_output_is_probability

from cli_helpers import hec as hec_cli

REAL = Path(__file__).parent / "fixtures" / "real"
MANIFEST = json.loads((REAL / "manifest.json").read_text())
FIXTURES = sorted(MANIFEST["fixtures"])
TOLERANCE = 0.01  # one accuracy point
ENCRYPTED_SAMPLES = 2
# Encrypted runs of the deep programs (depth 17-22, ring 2^16: resnet, mobilenet, lenet5) take
# 45-140 s per input: they run on one export each (dynamo, fixed batch; the other exports compile
# to the same layers and are checked by the simulator) and on one input; the cheap ones on every
# file and two inputs.
HEAVY = {"resnet", "mobilenet", "lenet5"}
# LeNet-5 with one key per rotation amount needs about 9 GB of rotation keys (104 keys at ring
# 2^16); power-of-two keys (21, 1.9 GB) compose the others. Accuracy does not depend on it.
# MobileNet's ReLU6 (a clip to [0, 6] of inputs reaching [-21, 17]) at the default error budget
# (5%) simulates 91.67% against onnxruntime's 92.78%, 0.1 point past the tolerance; a 2% budget
# (degree 27) gives 92.22%. Choosing degrees from an accuracy budget by default is open work.
MODEL_OPTIONS = {
    "lenet5": hec.CompileOptions(rotation_keys="pow2"),
    "mobilenet": hec.CompileOptions(error_budget=0.02),
}
ENCRYPTED = [
    n
    for n in FIXTURES
    if MANIFEST["fixtures"][n]["model"] not in HEAVY or n.endswith("dynamo_fixed")
]


def _entry(name: str) -> dict:
    return MANIFEST["fixtures"][name]


def _split(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    data = MANIFEST["datasets"][_entry(name)["data"]]
    x, y = load_dataset(REAL / data[split])
    assert y is not None
    return x.astype(np.float32), y


def _predictions(outputs: np.ndarray, art=None) -> np.ndarray:
    """Class of each sample from model or compiled-program outputs ``[B, ...]``: the argmax,
    or for one output per sample (a binary classifier's logit, its client tail cut off) the
    threshold ``hec.metrics`` applies."""
    probability = art is not None and artifact_output_is_probability(art)
    return metrics.predictions(np.asarray(outputs), probability=probability)


def _ort_predictions(path: Path, x: np.ndarray) -> np.ndarray:
    """onnxruntime's classes: argmax of a single output, or a classifier's label output."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    rows = [x[i : i + 1] for i in range(len(x))] if inp.shape[0] == 1 else [x]
    preds = []
    for xb in rows:
        out = sess.run(None, {inp.name: xb})
        if len(sess.get_outputs()) == 1:
            preds.append(_predictions(out[0]))
        else:
            preds.append(np.asarray(out[0]).reshape(-1))
    return np.concatenate(preds)


_COMPILED: dict[str, hec.backend_openfhe.Artifact] = {}


def _compile_key(name: str) -> str:
    """What the compiled program depends on: the imported IR (exactly, node names aside), the
    model's options and its calibration data. Exports that import to the same IR (all four of
    LeNet-5 and conv1d, the dynamo pair and the TorchScript pair of ResNet and MobileNet)
    compile once; each still has its own simulated accuracy checked. Files the importer
    refuses as a whole (a client tail, ZipMap) are compiled by name."""
    entry = _entry(name)
    try:
        ir = print_graph(import_onnx(REAL / entry["file"]), exact=True)
    except HecError:
        return name
    ir = re.sub(r"\s*#[^\n]*", "", ir)
    return hashlib.sha256(f"{entry['model']}|{entry['data']}|{ir}".encode()).hexdigest()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """``compiled(name)``: the fixture compiled with its calibration split (once per module and
    imported IR)."""

    def get(name: str):
        key = _compile_key(name)
        if key not in _COMPILED:
            x, y = _split(name, "calib")
            out = tmp_path_factory.mktemp(name.replace(".", "_"))
            options = MODEL_OPTIONS.get(_entry(name)["model"])
            _COMPILED[key] = hec.compile(
                REAL / _entry(name)["file"], out, options, calibration=x, labels=y
            )
        return _COMPILED[key]

    yield get
    _COMPILED.clear()


def test_manifest_lists_every_file_and_they_stay_small() -> None:
    files = {p.name for p in REAL.glob("*.onnx")}
    assert files == {_entry(n)["file"] for n in FIXTURES}
    for data in MANIFEST["datasets"].values():
        assert (REAL / data["calib"]).is_file() and (REAL / data["test"]).is_file()
    total = sum(p.stat().st_size for p in REAL.iterdir() if p.is_file())
    assert total < 2_000_000, total
    exporters = {
        (_entry(n)["model"], _entry(n)["exporter"], _entry(n)["dynamic_batch"]) for n in FIXTURES
    }
    for model in ("resnet", "mobilenet", "conv1d", "tabular_mlp", "lenet5"):
        for exporter in ("ts", "dynamo"):
            assert {(model, exporter, False), (model, exporter, True)} <= exporters


@pytest.mark.parametrize("name", FIXTURES)
def test_onnxruntime_accuracy_is_the_manifests(name: str) -> None:
    """The files, the data and the recorded accuracy belong together (and are useful)."""
    x, y = _split(name, "test")
    acc = float((_ort_predictions(REAL / _entry(name)["file"], x) == y).mean())
    assert acc == pytest.approx(_entry(name)["ort_accuracy"], abs=1e-6)
    assert acc > 0.75


@pytest.mark.parametrize("name", FIXTURES)
def test_compiles_and_simulates_within_one_point(name: str, compiled) -> None:
    art = compiled(name)
    x, y = _split(name, "test")
    acc = float((_predictions(hec.simulate(art, x), art) == y).mean())
    reference = _entry(name)["ort_accuracy"]
    assert acc >= reference - TOLERANCE, f"simulated {acc:.4f}, onnxruntime {reference:.4f}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ENCRYPTED)
def test_encrypted_predicts_what_the_simulator_predicts(name: str, compiled) -> None:
    art = compiled(name)
    x, _ = _split(name, "test")
    x = x[: 1 if _entry(name)["model"] in HEAVY else ENCRYPTED_SAMPLES]
    simulated = np.asarray(hec.simulate(art, x), dtype=np.float64)
    result = hec.run(art, x)
    np.testing.assert_array_equal(result.predictions, _predictions(simulated, art))
    if "label" in result.outputs:  # a classifier's own label, by its client tail
        np.testing.assert_array_equal(np.ravel(result.outputs["label"]), result.predictions)
    scale = max(1.0, float(np.abs(simulated).max()))
    np.testing.assert_allclose(
        result.logits.reshape(simulated.shape), simulated, atol=1e-2 * scale, rtol=0
    )


def test_cli_compile_with_calib(tmp_path) -> None:
    """The command a user types: ``hec compile MODEL --calib DATA.npz``."""
    name = "conv1d.ts_dynamic"  # compiles in seconds
    data = MANIFEST["datasets"][_entry(name)["data"]]
    proc = hec_cli(
        "compile",
        str(REAL / _entry(name)["file"]),
        "-o",
        str(tmp_path / "out"),
        "--calib",
        str(REAL / data["calib"]),
    )
    assert proc.returncode == 0, proc.stderr
    x, y = _split(name, "test")
    art = hec.load_artifact(tmp_path / "out")
    acc = float((_predictions(hec.simulate(art, x), art) == y).mean())
    assert acc >= _entry(name)["ort_accuracy"] - TOLERANCE
