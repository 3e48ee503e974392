"""Adaptation pass: the adapted model on encrypted images equals the original on plain images."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import helper

from hec.vit.adapt import AdaptToKey, adapt_model
from hec.vit.errors import AdaptationCheckError, NotAPatchEmbeddingError, PatchSizeError
from hec.vit.keys import BlockKey
from hec.vit.onnx_vit import build_vit_onnx
from hec.vit.transforms import encrypt

from .vit_testlib import run_onnx

SETTINGS = [
    dict(block_scramble=bs, pixel_shuffle=ps, negpos=neg, channel_shuffle=cs, shared=sh)
    for bs, ps, neg, cs, sh in itertools.product(
        [False, True], [False, True], ["none", "pixel", "block"], [False, True], [True, False]
    )
]


def _setting_id(s: dict) -> str:
    return "-".join(k for k, v in s.items() if v is True) + f"-negpos:{s['negpos']}"


@pytest.mark.parametrize("embed", ["conv", "matmul"])
def test_digits_every_transform_combination(digits: np.ndarray, embed: str) -> None:
    model = build_vit_onnx((8, 8), 1, 2, embed=embed, seed=1)
    x = digits[:32]
    ref = run_onnx(model, x)
    assert ref.std(axis=0).mean() > 0.05  # logits depend on the image, so equality means something
    for setting in SETTINGS:
        key = BlockKey(seed=21, image_size=(8, 8), channels=1, patch=2, restrict=2, **setting)
        adapted = adapt_model(model, key, verify=False)
        got = run_onnx(adapted, encrypt(x, key))
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=_setting_id(setting))


@pytest.mark.parametrize("embed", ["conv", "matmul"])
@pytest.mark.parametrize("restrict", [3, None])
def test_photo_patches_rgb_every_transform_combination(
    photo_patches: np.ndarray, embed: str, restrict: int | None
) -> None:
    model = build_vit_onnx((16, 16), 3, 4, embed=embed, dim=24, heads=3, seed=2)
    ref = run_onnx(model, photo_patches / np.float32(255))
    for setting in SETTINGS:
        key = BlockKey(
            seed=5, image_size=(16, 16), channels=3, patch=4, restrict=restrict, **setting
        )
        # Clients encrypt their uint8 images; the model reads them scaled to [0, 1].
        enc = encrypt(photo_patches, key) / np.float32(255)
        got = run_onnx(adapt_model(model, key, verify=False), enc)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=_setting_id(setting))


@pytest.mark.parametrize("pool,pos", [("mean", True), ("mean", False), ("cls", False)])
def test_other_poolings_and_no_position_embedding(digits: np.ndarray, pool: str, pos: bool) -> None:
    model = build_vit_onnx(embed="conv", pool=pool, pos_embed=pos, seed=3)
    key = BlockKey(seed=4, image_size=(8, 8), channels=1, patch=2)
    adapted = AdaptToKey(key).run(model)  # verify=True checks with onnxruntime too
    np.testing.assert_allclose(
        run_onnx(adapted, encrypt(digits[:16], key)), run_onnx(model, digits[:16]), atol=1e-5
    )
    if not pos and pool == "cls":
        assert "Gather" in [n.op_type for n in adapted.graph.node[:4]]


def test_shared_key_keeps_structure_and_permutes_position_embedding() -> None:
    model = build_vit_onnx(embed="conv", seed=4)
    key = BlockKey(seed=9, image_size=(8, 8), channels=1, patch=2)
    adapted = adapt_model(model, key)
    assert [n.op_type for n in adapted.graph.node] == [n.op_type for n in model.graph.node]
    sizes = lambda m: sorted(np.prod(t.dims) for t in m.graph.initializer)  # noqa: E731
    assert sizes(adapted) == sizes(model)
    pos = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}["pos"]
    new_pos = next(
        onnx.numpy_helper.to_array(t)
        for t in adapted.graph.initializer
        if t.name.startswith("vit_key/pos")
    )
    np.testing.assert_array_equal(new_pos[0, 0], pos[0, 0])  # the class token keeps its own
    np.testing.assert_array_equal(new_pos[0, 1:], pos[0, 1:][key.material().block_perm])
    assert model.graph.node[0].input[1] == "pe_w"  # the input model is left unchanged


def test_per_block_key_grows_a_per_position_embedding() -> None:
    model = build_vit_onnx(embed="conv", dim=16, seed=4)
    key = BlockKey(seed=9, image_size=(8, 8), channels=1, patch=2, shared=False)
    adapted = adapt_model(model, key)
    weight = next(t for t in adapted.graph.initializer if t.name.startswith("vit_key/pe_weight"))
    assert list(weight.dims) == [16, 4, 16]  # (blocks, L, D)
    assert "Conv" not in [n.op_type for n in adapted.graph.node]


def test_not_a_patch_embedding_is_refused() -> None:
    model = build_vit_onnx(seed=5)
    relu = helper.make_node("Relu", ["raw"], ["image"], name="pre_relu")
    model.graph.node.insert(0, relu)
    model.graph.input[0].name = "raw"
    key = BlockKey(seed=1, image_size=(8, 8), channels=1, patch=2)
    with pytest.raises(NotAPatchEmbeddingError, match="node 'pre_relu' \\(Relu\\)"):
        adapt_model(model, key)


def test_overlapping_conv_is_refused() -> None:
    model = build_vit_onnx(seed=5)
    conv = model.graph.node[0]
    for attr in conv.attribute:
        if attr.name == "strides":
            attr.ints[:] = [1, 1]
    key = BlockKey(seed=1, image_size=(8, 8), channels=1, patch=2)
    with pytest.raises(NotAPatchEmbeddingError, match="kernel equal to its stride"):
        adapt_model(model, key, verify=False)


@pytest.mark.parametrize("embed", ["conv", "matmul"])
def test_patch_size_mismatch_names_node_and_fix(embed: str) -> None:
    model = build_vit_onnx(patch=4, embed=embed, seed=6)
    key = BlockKey(seed=1, image_size=(8, 8), channels=1, patch=2)
    with pytest.raises(PatchSizeError, match="patch size is 4 .* --patch 4"):
        adapt_model(model, key)


def test_image_size_and_channel_mismatch() -> None:
    model = build_vit_onnx(seed=6)
    with pytest.raises(PatchSizeError, match="--channels 1 --image-size 8 8"):
        adapt_model(model, BlockKey(seed=1, image_size=(8, 8), channels=3, patch=2))
    with pytest.raises(PatchSizeError, match="--image-size 8 8"):
        adapt_model(model, BlockKey(seed=1, image_size=(16, 16), channels=1, patch=2))


def test_order_dependent_head_fails_the_check_with_scrambling_only() -> None:
    model = build_vit_onnx(pool="flatten", seed=7)
    scrambled = BlockKey(seed=1, image_size=(8, 8), channels=1, patch=2)
    with pytest.raises(AdaptationCheckError, match="--no-block-scramble"):
        adapt_model(model, scrambled)
    # Without block scrambling the token order is unchanged, and the head is fine.
    adapt_model(
        model, BlockKey(seed=1, image_size=(8, 8), channels=1, patch=2, block_scramble=False)
    )


def test_channels_last_input_is_named() -> None:
    model = build_vit_onnx(channels=3, seed=6)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_value, dims[3].dim_value = 8, 3
    key = BlockKey(seed=1, image_size=(8, 8), channels=3, patch=2)
    with pytest.raises(PatchSizeError, match="channels last"):
        adapt_model(model, key, verify=False)
