"""Both torch exporters' ViT graphs: adaptation is exact on every transform setting."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest

from hec.vit.adapt import adapt_model
from hec.vit.keys import BlockKey
from hec.vit.transforms import encrypt

from .vit_testlib import FIXTURES, run_onnx

GRAPHS = sorted(p.name for p in FIXTURES.glob("vit_*.onnx"))
SETTINGS = list(itertools.product([False, True], ["none", "pixel", "block"], [True, False]))


def test_fixtures_cover_both_exporters_and_both_embeddings() -> None:
    assert len(GRAPHS) == 8
    for p in GRAPHS:
        assert (FIXTURES / p).stat().st_size < 300_000
    producers = {onnx.load(str(FIXTURES / p)).producer_name for p in GRAPHS}
    assert producers == {"pytorch"}
    ops = {p: {n.op_type for n in onnx.load(str(FIXTURES / p)).graph.node} for p in GRAPHS}
    assert all("Conv" in ops[p] for p in GRAPHS if "_conv_" in p)
    assert all("Conv" not in ops[p] for p in GRAPHS if "_linear_" in p)


@pytest.mark.parametrize("name", GRAPHS)
def test_adapted_exporter_graph_matches(
    name: str, digits: np.ndarray, photo_patches: np.ndarray
) -> None:
    model = onnx.load(str(FIXTURES / name))
    if "digits" in name:
        x, shape, patch, restrict = digits[:48], (8, 8), 2, 2
    else:
        x, shape, patch, restrict = photo_patches / np.float32(255), (16, 16), 4, 12
    c = x.shape[1]
    ref = run_onnx(model, x)
    for i, (scramble, negpos, shared) in enumerate(SETTINGS):
        key = BlockKey(
            seed=100 + i,
            image_size=shape,
            channels=c,
            patch=patch,
            restrict=restrict,
            block_scramble=scramble,
            negpos=negpos,
            shared=shared,
        )
        adapted = adapt_model(model, key, verify=False)
        got = run_onnx(adapted, encrypt(x, key))
        np.testing.assert_allclose(
            got,
            ref,
            rtol=1e-5,
            atol=1e-5,
            err_msg=f"{name} scramble={scramble} negpos={negpos} shared={shared}",
        )


@pytest.mark.parametrize("name", [g for g in GRAPHS if "digits" in g])
def test_trained_digits_model_keeps_its_accuracy(name: str, digits: np.ndarray) -> None:
    from sklearn.datasets import load_digits

    labels = load_digits().target[1200:]
    x = digits[1200:]
    model = onnx.load(str(FIXTURES / name))
    key = BlockKey.generate((8, 8), 1, 2)
    plain_pred = run_onnx(model, x).argmax(1)
    enc = encrypt(x, key)
    assert (run_onnx(model, enc).argmax(1) == labels).mean() < 0.5  # unadapted: the key matters
    adapted_pred = run_onnx(adapt_model(model, key), enc).argmax(1)
    np.testing.assert_array_equal(adapted_pred, plain_pred)
    assert (plain_pred == labels).mean() > 0.8
