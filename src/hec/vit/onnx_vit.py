"""A small Vision Transformer written directly with ``onnx.helper`` (no torch needed).

Tests and examples use it to check the adaptation pass against onnxruntime on every key setting.
It covers both patch-embedding forms the pass accepts — ``Conv`` with kernel = stride = patch, and
reshape + transpose + ``MatMul`` (flattening each patch in ``(channel, row, column)`` order, unlike
the key's ``(row, column, channel)``, so the pass has to find the column order itself) — and a few
variants that the pass must refuse or handle differently (no position embedding, mean pooling, a
head that reads tokens by position).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from numpy.typing import ArrayLike
from onnx import TensorProto, helper, numpy_helper

__all__ = ["build_vit_onnx"]

_OPSET = 17
_IR_VERSION = 9  # onnxruntime 1.2x accepts IR 9 with opset 17 (see ENVIRONMENT.md)


def build_vit_onnx(
    image_size: tuple[int, int] = (8, 8),
    channels: int = 1,
    patch: int = 2,
    dim: int = 16,
    depth: int = 1,
    heads: int = 2,
    classes: int = 10,
    embed: str = "conv",
    pool: str = "cls",
    pos_embed: bool = True,
    seed: int = 0,
) -> onnx.ModelProto:
    """Build a ViT classifier with random weights.

    Args:
        image_size, channels, patch: input ``(N, channels, H, W)`` cut into ``patch``-sized patches.
        dim, depth, heads, classes: transformer width, blocks, attention heads, outputs.
        embed: ``"conv"`` (Conv kernel = stride = patch) or ``"matmul"`` (reshape + MatMul).
        pool: ``"cls"`` (class token), ``"mean"`` (mean of patch tokens) or ``"flatten"``
            (a head over all tokens in order, which token permutations do *not* preserve).
        pos_embed: add a learned position embedding per token.
        seed: weight seed.

    Returns:
        A checked ONNX model with input ``image`` and output ``logits``; batch size is symbolic.
    """
    rng = np.random.default_rng(seed)
    h, w = image_size
    gh, gw = h // patch, w // patch
    nb, length = gh * gw, patch * patch * channels
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def init(name: str, value: ArrayLike) -> str:
        dtype = np.int64 if np.asarray(value).dtype.kind == "i" else np.float32
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def rand(name: str, *shape: int, scale: float = 0.3) -> str:
        return init(name, rng.normal(0.0, scale, shape))

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=f"{out}_node", **attrs))
        return out

    if embed == "conv":
        x = node(
            "Conv",
            ["image", rand("pe_w", dim, channels, patch, patch), rand("pe_b", dim, scale=0.1)],
            "pe_conv",
            kernel_shape=[patch, patch],
            strides=[patch, patch],
        )
        x = node("Reshape", [x, init("pe_shape", [0, dim, nb])], "pe_flat")
        tokens = node("Transpose", [x], "tokens", perm=[0, 2, 1])
    elif embed == "matmul":
        x = node(
            "Reshape",
            ["image", init("pe_split", [-1, channels, gh, patch, gw, patch])],
            "pe_split_out",
        )
        x = node("Transpose", [x], "pe_perm", perm=[0, 2, 4, 1, 3, 5])
        x = node("Reshape", [x, init("pe_rows", [-1, nb, length])], "patches")
        x = node("MatMul", [x, rand("pe_w", length, dim)], "pe_mm")
        tokens = node("Add", [x, rand("pe_b", dim, scale=0.1)], "tokens")
    else:
        raise ValueError(f"embed must be conv or matmul, got {embed!r}")

    seq, n_tok = tokens, nb
    if pool == "cls":
        batch = node("Shape", [tokens], "batch", start=0, end=1)
        cls_shape = node("Concat", [batch, init("cls_tail", [1, dim])], "cls_shape", axis=0)
        cls = node("Expand", [rand("cls", 1, 1, dim), cls_shape], "cls_tok")
        seq, n_tok = node("Concat", [cls, tokens], "seq", axis=1), nb + 1
    if pos_embed:
        seq = node("Add", [seq, rand("pos", 1, n_tok, dim)], "seq_pos")

    dh = dim // heads
    for b in range(depth):
        p = f"b{b}_"
        y = node(
            "LayerNormalization",
            [seq, init(p + "ln1_g", np.ones(dim)), init(p + "ln1_b", np.zeros(dim))],
            p + "ln1",
            axis=-1,
        )
        qkv = []
        for name in "qkv":
            t = node("MatMul", [y, rand(p + name + "_w", dim, dim)], p + name)
            t = node("Reshape", [t, init(p + name + "_hs", [0, 0, heads, dh])], p + name + "_h")
            perm = [0, 2, 3, 1] if name == "k" else [0, 2, 1, 3]
            qkv.append(node("Transpose", [t], p + name + "_t", perm=perm))
        s = node("MatMul", [qkv[0], qkv[1]], p + "scores")
        s = node("Mul", [s, init(p + "scale", np.array(dh**-0.5))], p + "scaled")
        a = node("Softmax", [s], p + "attn", axis=-1)
        o = node("MatMul", [a, qkv[2]], p + "ctx")
        o = node("Transpose", [o], p + "ctx_t", perm=[0, 2, 1, 3])
        o = node("Reshape", [o, init(p + "merge", [0, 0, dim])], p + "ctx_m")
        o = node("MatMul", [o, rand(p + "o_w", dim, dim)], p + "attn_out")
        seq = node("Add", [seq, o], p + "res1")
        y = node(
            "LayerNormalization",
            [seq, init(p + "ln2_g", np.ones(dim)), init(p + "ln2_b", np.zeros(dim))],
            p + "ln2",
            axis=-1,
        )
        y = node(
            "Add",
            [
                node("MatMul", [y, rand(p + "fc1_w", dim, 2 * dim)], p + "fc1"),
                rand(p + "fc1_b", 2 * dim, scale=0.1),
            ],
            p + "fc1_b_out",
        )
        # GELU as x * sigmoid(1.702 x): opset 17 has no Gelu op.
        g = node(
            "Sigmoid", [node("Mul", [y, init(p + "gelu_k", np.array(1.702))], p + "gk")], p + "gs"
        )
        y = node("Mul", [y, g], p + "gelu")
        y = node("MatMul", [y, rand(p + "fc2_w", 2 * dim, dim)], p + "fc2")
        seq = node("Add", [seq, y], p + "res2")

    seq = node(
        "LayerNormalization",
        [seq, init("lnf_g", np.ones(dim)), init("lnf_b", np.zeros(dim))],
        "lnf",
        axis=-1,
    )
    if pool == "cls":
        feat = node("Gather", [seq, init("cls_index", np.array(0))], "feat", axis=1)
    elif pool == "mean":
        feat = node("ReduceMean", [seq], "feat", axes=[1], keepdims=0)
    elif pool == "flatten":
        feat = node("Reshape", [seq, init("flat_shape", [0, n_tok * dim])], "feat")
    else:
        raise ValueError(f"pool must be cls, mean or flatten, got {pool!r}")
    feat_dim = n_tok * dim if pool == "flatten" else dim
    node(
        "Add",
        [
            node("MatMul", [feat, rand("head_w", feat_dim, classes)], "head"),
            rand("head_b", classes, scale=0.1),
        ],
        "logits",
    )

    graph = helper.make_graph(
        nodes,
        "tiny_vit",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="hec.vit.onnx_vit"
    )
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model
