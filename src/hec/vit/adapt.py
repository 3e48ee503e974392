"""Adapt a ViT ONNX model to one block-wise key, so that it gives on encrypted images exactly the
logits the original gives on plain images.

The math (``L`` values per block, flattened ``(row, column, channel)``). The key sends plain block
``pi(k)`` to encrypted position ``k`` and there computes
``e_k[i] = s_k[i] * y[perm_k[i]] + m_k[i] * M``, with ``m_k`` the flip mask, ``s_k = 1 - 2 m_k``
and ``M`` the negative-positive maximum (1 on [0, 1] data). Since ``s * s = 1`` and ``s * m = -m``,
the plain block is ``y[perm_k[i]] = s_k[i] * e_k[i] + m_k[i] * M``. The patch embedding
``t = W y + b`` is linear, so the token built from encrypted position ``k`` equals the plain token
of block ``pi(k)`` when

    W'_k[:, i] = s_k[i] * W[:, perm_k[i]]               (permute columns, flip their signs)
    b'_k       = b + M * sum_i m_k[i] W[:, perm_k[i]]   (flipped columns' share goes to the bias)

Then the token sequence is the plain one permuted by ``pi``. A transformer without
position-dependent ops after the position embedding is permutation-equivariant, and class-token or
mean pooling is invariant, so giving token ``k`` the position embedding of ``pi(k)``
(``pos'_k = pos_{pi(k)}``) reproduces the plain logits. Models with no position embedding get a
``Gather`` that restores token order after the embedding instead.

Which keys this covers: when every block has the same shuffle and flips (``BlockKey.shared`` with
``negpos`` ``"none"`` or ``"pixel"``), ``W'_k`` and ``b'_k`` are the same for every ``k`` and the
embedding keeps its form (same weights count). Per-block keys (``shared=False``, or whole-block
negative-positive ``negpos="block"``) need a different ``W'_k`` at each position: the embedding is
rewritten as a per-position ``MatMul`` with ``num_blocks`` times the weights — exact, but larger.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hec.errors import ModelError
from hec.vit.errors import AdaptationCheckError, NotAPatchEmbeddingError, PatchSizeError
from hec.vit.keys import BlockKey
from hec.vit.transforms import encrypt

__all__ = ["AdaptToKey", "adapt_model", "PatchEmbedding", "find_patch_embedding"]

# Ops that only move values; allowed between the image and a MatMul patch embedding.
_MOVEMENT = {"Reshape", "Transpose", "Flatten", "Identity", "Squeeze", "Unsqueeze"}
# Ops allowed between the patch embedding and the position-embedding Add.
_TO_POS = _MOVEMENT | {"Concat", "Add"}


@dataclass(frozen=True)
class PatchEmbedding:
    """Where and how the model embeds patches.

    Attributes:
        node: the Conv or MatMul node.
        kind: ``"conv"`` or ``"matmul"``.
        weight: ``(D, L)`` embedding matrix, columns in the key's ``(row, column, channel)`` order.
        bias: ``(D,)`` (zeros for a MatMul; its bias Add, if any, is left alone).
        token_block: ``(T,)``; token ``j`` of the embedding output embeds image block
            ``token_block[j]`` (row-major grid).
        columns: MatMul only: ``columns[r]`` is the key-order index of weight row ``r``.
    """

    node: onnx.NodeProto
    kind: str
    weight: np.ndarray
    bias: np.ndarray
    token_block: np.ndarray
    columns: np.ndarray | None = None


@dataclass(frozen=True)
class AdaptToKey:
    """Pass ``vit-adapt-key``: rewrite a ViT ONNX model for images encrypted with ``key``.

    Preserves: the logits, exactly in real arithmetic (float32 rounding aside; measured below 1e-5
    on the test models) for the adapted model on ``encrypt(x, key)`` against the original on ``x``.
    Requires: one NCHW image input feeding a patch embedding (Conv with kernel = stride = patch, no
    padding, or data-movement ops then a MatMul with a constant weight) whose patch size, channels
    and image size equal the key's; data on the scale where negative-positive is ``max_value - x``.
    Guarantees: same inputs and outputs; with ``verify`` the equality is checked with onnxruntime
    on random images. Golden/numeric tests: ``tests/vit/test_vit_adapt.py``.

    Attributes:
        key: the shared key the encrypted images were made with.
        max_value: the model-input value that negative-positive subtracts from (1.0 for [0, 1]).
        verify: check the adapted model against the original with onnxruntime.
        atol: tolerance of that check, relative to the largest output magnitude (at least 1).
    """

    key: BlockKey
    max_value: float = 1.0
    verify: bool = True
    atol: float = 1e-4
    name: ClassVar[str] = "vit-adapt-key"

    def run(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """Return the adapted copy of ``model`` (the argument is left unchanged)."""
        adapted = onnx.ModelProto()
        adapted.CopyFrom(model)
        graph = _Graph(adapted)
        emb = find_patch_embedding(adapted, self.key)
        mat = self.key.material()
        nb = self.key.num_blocks

        # Per encrypted position k: W'_k = W[:, perm_k] * s_k, b'_k = b + M * W[:, perm_k] @ m_k.
        w_perm = emb.weight[:, mat.perm]  # (D, nb, L)
        signs = 1.0 - 2.0 * mat.flip  # (nb, L)
        w_new = (w_perm * signs[None]).transpose(1, 0, 2)  # (nb, D, L)
        b_new = emb.bias[None] + self.max_value * np.einsum("dkl,kl->kd", w_perm, mat.flip)
        uniform = mat.uniform

        if emb.kind == "conv":
            _rewrite_conv(graph, emb, self.key, w_new, b_new, uniform)
        else:
            _rewrite_matmul(graph, emb, w_new, b_new, uniform)

        # Token j reads encrypted block token_block[j], which holds plain block
        # block_perm[token_block[j]], embedded in the plain model by token inv[...].
        inv = np.argsort(emb.token_block)
        token_perm = inv[mat.block_perm[emb.token_block]]
        if not np.array_equal(token_perm, np.arange(nb)):
            _permute_tokens(graph, emb, token_perm, self.key.grid)
        graph.prune_initializers()
        if self.verify:
            self._check(model, adapted)
        return adapted

    def _check(self, original: onnx.ModelProto, adapted: onnx.ModelProto) -> None:
        import onnxruntime as ort

        c, h, w = self.key.image_shape
        dims = original.graph.input[_image_input(original).index].type.tensor_type.shape.dim
        batch = dims[0].dim_value if dims[0].HasField("dim_value") and dims[0].dim_value else 3
        rng = np.random.default_rng(0)
        x = (rng.random((batch, c, h, w)) * self.max_value).astype(np.float32)
        xe = encrypt(x, self.key, max_value=self.max_value)
        name = _image_input(original).name
        ref = _session(original, ort).run(None, {name: x})
        got = _session(adapted, ort).run(None, {name: xe})
        for out, r, g in zip(original.graph.output, ref, got, strict=True):
            err = float(np.max(np.abs(r - g))) if r.size else 0.0
            scale = max(1.0, float(np.max(np.abs(r))) if r.size else 1.0)
            if err > self.atol * scale:
                raise AdaptationCheckError(
                    f"adapted model differs from the original on output '{out.name}' by {err:.3g} "
                    f"(tolerance {self.atol * scale:.3g}): the layers after the patch embedding "
                    f"depend on token order in a way a key permutation cannot follow; use a key "
                    f"without block scrambling (--no-block-scramble) or a model with class-token "
                    f"or mean pooling"
                )


def adapt_model(
    model: onnx.ModelProto | str | Path,
    key: BlockKey,
    *,
    max_value: float = 1.0,
    verify: bool = True,
) -> onnx.ModelProto:
    """Adapt ``model`` (a ModelProto or ONNX file path) to ``key``; see ``AdaptToKey``."""
    if not isinstance(model, onnx.ModelProto):
        path = Path(model)
        try:
            model = onnx.load(str(path))
        except FileNotFoundError:
            raise ModelError(f"{path}: file not found") from None
        except Exception as exc:  # onnx raises DecodeError and others for corrupt files
            raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    return AdaptToKey(key, max_value=max_value, verify=verify).run(model)


# --- locating the patch embedding --------------------------------------------------------------


@dataclass(frozen=True)
class _ImageInput:
    name: str
    index: int


def _image_input(model: onnx.ModelProto) -> _ImageInput:
    init_names = {i.name for i in model.graph.initializer}
    inputs = [(i, v) for i, v in enumerate(model.graph.input) if v.name not in init_names]
    rank4 = [(i, v) for i, v in inputs if len(v.type.tensor_type.shape.dim) == 4]
    if len(inputs) != 1 or len(rank4) != 1:
        names = ", ".join(v.name for _, v in inputs) or "none"
        raise NotAPatchEmbeddingError(
            f"model inputs ({names}): expected exactly one 4-D image input (N, C, H, W)"
        )
    return _ImageInput(rank4[0][1].name, rank4[0][0])


def find_patch_embedding(model: onnx.ModelProto, key: BlockKey) -> PatchEmbedding:
    """Locate and read the model's patch embedding, checking it against ``key``.

    Raises:
        NotAPatchEmbeddingError: the image does not go straight into a patch embedding.
        PatchSizeError: patch size, channels or image size differ from the key's.
    """
    graph = _Graph(model)
    image = _image_input(model)
    _check_input_shape(model.graph.input[image.index], key)
    name = image.name
    while True:
        # Shape/Size read only the tensor's shape (exporters use them for the batch size).
        users = [n for n in graph.users(name) if n.op_type not in ("Shape", "Size")]
        if len(users) != 1:
            raise NotAPatchEmbeddingError(
                f"tensor '{name}' feeds {len(users)} nodes; a patch embedding must be the only "
                f"consumer of the image (Conv with kernel = stride = patch, or reshape + MatMul)"
            )
        node = users[0]
        if node.op_type == "Conv":
            if name != image.name:
                raise NotAPatchEmbeddingError(
                    f"node '{node.name}' (Conv) reads the image through reshapes or transposes; "
                    f"a Conv patch embedding must read the NCHW image input directly"
                )
            return _conv_embedding(graph, node, key)
        if node.op_type in ("MatMul", "Gemm") and node.input[0] == name:
            return _matmul_embedding(model, graph, node, key, image.name)
        if node.op_type not in _MOVEMENT or node.input[0] != name:
            raise NotAPatchEmbeddingError(
                f"node '{node.name}' ({node.op_type}) processes the image before any patch "
                f"embedding; 'hec vit adapt' needs the image to go straight into a Conv with "
                f"kernel = stride = patch, or through reshapes into a MatMul"
            )
        name = node.output[0]


def _check_input_shape(vi: onnx.ValueInfoProto, key: BlockKey) -> None:
    dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    got = dims[1:]
    want = list(key.image_shape)
    c, h, w = want
    if got == [h, w, c] and got != want:
        raise PatchSizeError(
            f"input '{vi.name}' is (N, {h}, {w}, {c}), channels last; 'hec vit adapt' needs a "
            f"model whose image input is NCHW (N, {c}, {h}, {w})"
        )
    if any(g is not None and g != w for g, w in zip(got, want, strict=True)):
        shown = "x".join("?" if g is None else str(g) for g in got)
        raise PatchSizeError(
            f"input '{vi.name}' is (N, {shown.replace('x', ', ')}) but the key is for "
            f"{want[0]} channel(s) of {want[1]}x{want[2]}; make a key with --channels {got[0]} "
            f"--image-size {got[1]} {got[2]}"
        )


def _conv_embedding(graph: _Graph, node: onnx.NodeProto, key: BlockKey) -> PatchEmbedding:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    weight = graph.const(node.input[1])
    if weight is None or weight.ndim != 4:
        raise NotAPatchEmbeddingError(
            f"node '{node.name}' (Conv): weight is not a constant 4-D tensor"
        )
    kernel = list(attrs.get("kernel_shape", weight.shape[2:]))
    strides = list(attrs.get("strides", [1, 1]))
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if (
        kernel != strides
        or kernel[0] != kernel[1]
        or any(pads)
        or attrs.get("group", 1) != 1
        or any(d != 1 for d in attrs.get("dilations", [1, 1]))
        or auto_pad not in ("NOTSET", "VALID")
    ):
        raise NotAPatchEmbeddingError(
            f"node '{node.name}' (Conv kernel {kernel}, stride {strides}, pads {pads}) is not a "
            f"patch embedding: it needs a square kernel equal to its stride, no padding, "
            f"dilation 1 and group 1"
        )
    if kernel[0] != key.patch:
        raise PatchSizeError(
            f"node '{node.name}': the model's patch size is {kernel[0]} but the key's block size "
            f"is {key.patch}; make a key with --patch {kernel[0]}"
        )
    d, c = weight.shape[:2]
    if c != key.channels:
        raise PatchSizeError(
            f"node '{node.name}': the model embeds {c} channel(s), the key has "
            f"{key.channels}; make a key with --channels {c}"
        )
    bias = graph.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(d)
    if bias is None:
        raise NotAPatchEmbeddingError(f"node '{node.name}' (Conv): bias is not a constant")
    w_mat = weight.transpose(0, 2, 3, 1).reshape(d, key.block_len).astype(np.float64)
    return PatchEmbedding(node, "conv", w_mat, bias.astype(np.float64), np.arange(key.num_blocks))


def _matmul_embedding(
    model: onnx.ModelProto, graph: _Graph, node: onnx.NodeProto, key: BlockKey, image: str
) -> PatchEmbedding:
    weight = graph.const(node.input[1])
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if weight is None or weight.ndim != 2:
        raise NotAPatchEmbeddingError(
            f"node '{node.name}' ({node.op_type}): weight is not a "
            f"constant matrix, so it is not a patch embedding"
        )
    if node.op_type == "Gemm" and (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0):
        raise NotAPatchEmbeddingError(f"node '{node.name}' (Gemm): transA/alpha not supported")
    if node.op_type == "Gemm" and attrs.get("transB", 0):
        weight = weight.T
    # Which pixel lands in each (token, column)? Run the reshapes on an image of pixel numbers.
    # Two probes of opposite sign catch any op that is not pure data movement.
    c, h, w = key.image_shape
    ids = np.arange(1, c * h * w + 1, dtype=np.float32).reshape(1, c, h, w)
    probe = _intermediate(model, image, node.input[0], [ids, -ids])
    rows = weight.shape[0]
    a, b = (p.reshape(-1, rows) if p.size % rows == 0 else None for p in probe)
    if (
        a is None
        or b is None
        or not np.array_equal(a, -b)
        or not np.array_equal(np.sort(a.ravel()), ids.ravel())
    ):
        raise NotAPatchEmbeddingError(
            f"node '{node.name}' ({node.op_type}): its input is not the image's pixels rearranged "
            f"into one row per patch, so it is not a patch embedding"
        )
    pix = a.astype(np.int64) - 1
    ch, yy, xx = np.unravel_index(pix, (c, h, w))
    size = int(np.sqrt(rows // c)) if rows % c == 0 else 0
    if size * size * c != rows:
        raise NotAPatchEmbeddingError(
            f"node '{node.name}': {rows} inputs per token is not patch*patch*{c}"
        )
    if size != key.patch:
        raise PatchSizeError(
            f"node '{node.name}': the model's patch size is {size} but the key's "
            f"block size is {key.patch}; make a key with --patch {size}"
        )
    blocks = (yy // size) * key.grid[1] + (xx // size)
    offset = ((yy % size) * size + (xx % size)) * c + ch  # key order (row, column, channel)
    if not ((blocks == blocks[:, :1]).all() and (offset == offset[:1]).all()):
        raise NotAPatchEmbeddingError(
            f"node '{node.name}': its rows do not each hold one "
            f"{size}x{size} patch in a common order"
        )
    columns = offset[0]
    w_mat = np.zeros((weight.shape[1], rows))
    w_mat[:, columns] = weight.T
    return PatchEmbedding(node, "matmul", w_mat, np.zeros(weight.shape[1]), blocks[:, 0], columns)


def _intermediate(
    model: onnx.ModelProto, image: str, tensor: str, feeds: list[np.ndarray]
) -> list[np.ndarray]:
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(helper.make_empty_tensor_value_info(tensor))
    sess = _session(probe, ort)
    return [sess.run(None, {image: f})[0] for f in feeds]


def _session(model: onnx.ModelProto, ort: ModuleType):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    # Exactness is checked against the graph as written, not against fused rewrites of it.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


# --- rewriting ---------------------------------------------------------------------------------


class _Graph:
    """Small helpers over a GraphProto: consumers, constants, unique names, node insertion."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model, self.g = model, model.graph
        self.names = {i.name for i in self.g.initializer} | {n.name for n in self.g.node}
        for n in self.g.node:
            self.names.update(n.input)
            self.names.update(n.output)
        self._inits = {i.name: i for i in self.g.initializer}
        self._consts = {n.output[0]: n for n in self.g.node if n.op_type == "Constant"}

    def users(self, tensor: str) -> list[onnx.NodeProto]:
        return [n for n in self.g.node if tensor in n.input]

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        return next((n for n in self.g.node if tensor in n.output), None)

    def const(self, tensor: str) -> np.ndarray | None:
        if tensor in self._inits:
            return numpy_helper.to_array(self._inits[tensor])
        node = self._consts.get(tensor)
        if node is None:
            # TorchScript exports alias equal parameters through Identity nodes.
            producer = self.producer(tensor)
            if producer is not None and producer.op_type == "Identity":
                return self.const(producer.input[0])
            return None
        if node is not None:
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None:
                return numpy_helper.to_array(attr.t)
        return None

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def add_init(self, base: str, value: np.ndarray, like: str | None = None) -> str:
        dtype = np.int64 if value.dtype.kind == "i" else np.float32
        known = self.const(like) if like is not None else None
        if known is not None:
            dtype = known.dtype
        name = self.fresh(base)
        tensor = numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name)
        self.g.initializer.append(tensor)
        self._inits[name] = tensor
        return name

    def insert(self, at: onnx.NodeProto, nodes: Iterable[onnx.NodeProto], after: bool) -> None:
        index = list(self.g.node).index(at) + (1 if after else 0)
        for k, n in enumerate(nodes):
            self.g.node.insert(index + k, n)

    def node(self, op: str, inputs: list[str], base: str, **attrs: Any) -> onnx.NodeProto:
        out = self.fresh(base)
        return helper.make_node(op, inputs, [out], name=self.fresh(base + "_node"), **attrs)

    def prune_initializers(self) -> None:
        # Initializers listed as graph inputs (old IR style) stay: they are part of the signature.
        used = {i for n in self.g.node for i in n.input} | {o.name for o in self.g.output}
        used |= {i.name for i in self.g.input}
        keep = [t for t in self.g.initializer if t.name in used]
        del self.g.initializer[:]
        self.g.initializer.extend(keep)


def _rewrite_conv(
    graph: _Graph,
    emb: PatchEmbedding,
    key: BlockKey,
    w_new: np.ndarray,
    b_new: np.ndarray,
    uniform: bool,
) -> None:
    node, p, c = emb.node, key.patch, key.channels
    d = w_new.shape[1]
    if uniform:
        w4 = w_new[0].reshape(d, p, p, c).transpose(0, 3, 1, 2)
        inputs = [
            node.input[0],
            graph.add_init("vit_key/pe_weight", w4, like=node.input[1]),
            graph.add_init("vit_key/pe_bias", b_new[0], like=node.input[1]),
        ]
        del node.input[:]
        node.input.extend(inputs)
        return
    # Per-position weights: patches (N, nb, 1, L) @ W (nb, L, D) -> (N, nb, 1, D), then back to
    # the Conv's (N, D, gh, gw) layout so everything downstream is untouched.
    gh, gw = key.grid
    nb, length = key.num_blocks, key.block_len
    out = node.output[0]
    shape = lambda base, v: graph.add_init(base, np.array(v, dtype=np.int64))  # noqa: E731
    n1 = graph.node(
        "Reshape",
        [node.input[0], shape("vit_key/split", [-1, c, gh, p, gw, p])],
        "vit_key/split_out",
    )
    n2 = graph.node("Transpose", [n1.output[0]], "vit_key/blocks", perm=[0, 2, 4, 3, 5, 1])
    n3 = graph.node(
        "Reshape", [n2.output[0], shape("vit_key/rows", [-1, nb, 1, length])], "vit_key/patches"
    )
    w3 = graph.add_init("vit_key/pe_weight", w_new.transpose(0, 2, 1), like=node.input[1])
    n4 = graph.node("MatMul", [n3.output[0], w3], "vit_key/embed")
    b3 = graph.add_init("vit_key/pe_bias", b_new[:, None, :], like=node.input[1])
    n5 = graph.node("Add", [n4.output[0], b3], "vit_key/embed_b")
    n6 = graph.node(
        "Reshape", [n5.output[0], shape("vit_key/grid", [-1, gh, gw, d])], "vit_key/grid_out"
    )
    n7 = helper.make_node(
        "Transpose", [n6.output[0]], [out], name=graph.fresh("vit_key/nchw"), perm=[0, 3, 1, 2]
    )
    graph.insert(node, [n1, n2, n3, n4, n5, n6, n7], after=False)
    graph.g.node.remove(node)


def _rewrite_matmul(
    graph: _Graph, emb: PatchEmbedding, w_new: np.ndarray, b_new: np.ndarray, uniform: bool
) -> None:
    node = emb.node
    if node.op_type == "Gemm":
        raise NotAPatchEmbeddingError(f"node '{node.name}' (Gemm): rewrite as MatMul first")
    out = node.output[0]
    d = w_new.shape[1]
    # Rows of the MatMul weight follow the model's column order, not the key's.
    w_rows = w_new[:, :, emb.columns].transpose(0, 2, 1)  # (nb, rows, D), indexed by key position
    mid = graph.fresh("vit_key/embed")
    if uniform:
        node.input[1] = graph.add_init("vit_key/pe_weight", w_rows[0], like=node.input[1])
        node.output[0] = mid
        bias = graph.add_init("vit_key/pe_bias", b_new[0], like=node.input[1])
        graph.insert(
            node,
            [helper.make_node("Add", [mid, bias], [out], name=graph.fresh("vit_key/bias"))],
            after=True,
        )
        return
    # Token j reads encrypted block token_block[j]: it needs that position's weights.
    w_tok = w_rows[emb.token_block]
    b_tok = b_new[emb.token_block]
    shape = lambda base, v: graph.add_init(base, np.array(v, dtype=np.int64))  # noqa: E731
    n1 = graph.node(
        "Reshape", [node.input[0], shape("vit_key/rows", [0, 0, 1, -1])], "vit_key/patches"
    )
    n2 = graph.node(
        "MatMul",
        [n1.output[0], graph.add_init("vit_key/pe_weight", w_tok, like=node.input[1])],
        "vit_key/embed",
    )
    n3 = graph.node(
        "Reshape", [n2.output[0], shape("vit_key/tokens", [0, 0, d])], "vit_key/tokens_out"
    )
    n4 = helper.make_node(
        "Add",
        [n3.output[0], graph.add_init("vit_key/pe_bias", b_tok, like=node.input[1])],
        [out],
        name=graph.fresh("vit_key/bias"),
    )
    graph.insert(node, [n1, n2, n3, n4], after=False)
    graph.g.node.remove(node)


def _permute_tokens(
    graph: _Graph, emb: PatchEmbedding, token_perm: np.ndarray, grid: tuple[int, int]
) -> None:
    """Make token ``j`` behave as plain token ``token_perm[j]``: permute the position embedding, or
    (without one) gather the tokens back into plain order after the embedding."""
    found = _find_pos_embedding(graph, emb)
    nb = len(token_perm)
    if found is not None:
        add, const_name, prefix = found
        pos = graph.const(const_name)
        assert pos is not None  # _find_pos_embedding names a constant
        axis = pos.ndim - 2
        order = np.arange(pos.shape[axis])
        order[prefix : prefix + nb] = prefix + token_perm
        new = graph.add_init("vit_key/pos_embed", np.take(pos, order, axis=axis), like=const_name)
        add.input[list(add.input).index(const_name)] = new
        return
    # No position embedding: restore plain token order right after the embedding.
    out = emb.node.output[0]
    axis = 2 if emb.kind == "conv" else 1
    restore = np.argsort(token_perm)
    mid = graph.fresh("vit_key/unordered")
    producer = graph.producer(out)
    assert producer is not None  # the embedding's node
    producer.output[list(producer.output).index(out)] = mid
    new_nodes = []
    src = mid
    if emb.kind == "conv":
        d = emb.weight.shape[0]
        gh, gw = grid
        flat = graph.node(
            "Reshape",
            [mid, graph.add_init("vit_key/flat", np.array([0, d, nb]))],
            "vit_key/flat_out",
        )
        new_nodes.append(flat)
        src = flat.output[0]
    idx = graph.add_init("vit_key/token_order", restore.astype(np.int64))
    if emb.kind == "conv":
        g = graph.node("Gather", [src, idx], "vit_key/ordered", axis=axis)
        back = helper.make_node(
            "Reshape",
            [g.output[0], graph.add_init("vit_key/grid", np.array([0, d, gh, gw]))],
            [out],
            name=graph.fresh("vit_key/regrid"),
        )
        new_nodes += [g, back]
    else:
        new_nodes.append(
            helper.make_node(
                "Gather", [src, idx], [out], axis=axis, name=graph.fresh("vit_key/ordered")
            )
        )
    graph.insert(producer, new_nodes, after=True)


def _find_pos_embedding(
    graph: _Graph, emb: PatchEmbedding
) -> tuple[onnx.NodeProto, str, int] | None:
    """The Add of a constant ``(1, T, D)`` / ``(T, D)`` downstream of the embedding, and the number
    of tokens (a class token) concatenated before the patch tokens."""
    d = emb.weight.shape[0]
    nb = len(emb.token_block)
    frontier, seen = [emb.node.output[0]], set()
    prefix: int | None = 0  # None: the patch tokens come last, after T - nb others
    while frontier:
        tensor = frontier.pop()
        for user in graph.users(tensor):
            if user.name in seen or user.op_type not in _TO_POS:
                continue
            seen.add(user.name)
            if user.op_type == "Concat":
                before = list(user.input).index(tensor)
                if before == len(user.input) - 1 and before > 0:
                    prefix = None
                elif before > 0:
                    raise NotAPatchEmbeddingError(
                        f"node '{user.name}' (Concat) puts tokens on both sides of the patch "
                        f"tokens; only a class token before or after them is supported"
                    )
            if user.op_type == "Add":
                other = user.input[1] if user.input[0] == tensor else user.input[0]
                value = graph.const(other)
                if (
                    value is not None
                    and value.ndim in (2, 3)
                    and value.shape[-1] == d
                    and value.shape[-2] >= nb
                    and (value.ndim == 2 or value.shape[0] == 1)
                ):
                    return user, other, value.shape[-2] - nb if prefix is None else prefix
            frontier.append(user.output[0])
    return None
