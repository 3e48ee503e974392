"""Converters of scikit-learn's ``ai.onnx.ml`` ops (as skl2onnx writes them).

Registered under ``"ai.onnx.ml::<op>"``. Each is exact: the server computes the affine part
(``Scaler``, ``LinearRegressor``, the scores of ``LinearClassifier``); what is not affine (a
classifier's post-transform and label, ``ZipMap``, ``Normalizer`` of probabilities) runs on
the client after decryption (``hec.frontend.client_tail``) or is refused here with the reason.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from hec.frontend.context import Context
from hec.frontend.registry import CONVERTERS, converter

__all__ = ["ML_DOMAIN", "linear_classifier_weights"]

ML_DOMAIN = "ai.onnx.ml"
_FLOATS = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _features(ctx: Context, node) -> int:
    x = ctx.value(node.input[0])
    if len(x.shape) != 1:
        raise ctx.unsupported(f"input of shape {[1, *x.shape]} (expects [N, features])")
    return x.shape[0]


@converter(f"{ML_DOMAIN}::Scaler")
def _scaler(ctx: Context, node, attrs) -> list:
    """``y = (x - offset) * scale``, per feature (or one value for all): a scale and shift."""
    x = ctx.value(node.input[0])
    n = _features(ctx, node)
    scale = np.asarray(attrs.get("scale", [1.0]), np.float64)
    offset = np.asarray(attrs.get("offset", [0.0]), np.float64)
    for name, a in (("scale", scale), ("offset", offset)):
        if a.size not in (1, n):
            raise ctx.unsupported(f"{name} has {a.size} values for {n} features")
    scale = np.broadcast_to(scale, (n,)).copy()
    shift = -np.broadcast_to(offset, (n,)) * scale
    return [ctx.emit("scale_shift", [x], x.shape, {}, {"scale": scale, "shift": shift})]


def linear_classifier_weights(attrs: dict, features: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W [features, targets], b [targets])`` of a ``LinearClassifier``/``LinearRegressor``:
    its raw scores are ``x @ W + b``."""
    coef = np.asarray(attrs["coefficients"], np.float64)
    intercepts = attrs.get("intercepts")
    targets = coef.size // features if features else 0
    if targets * features != coef.size or targets == 0:
        raise ValueError(f"{coef.size} coefficients do not split into rows of {features}")
    b = np.zeros(targets) if intercepts is None else np.asarray(intercepts, np.float64)
    if b.size != targets:
        raise ValueError(f"{b.size} intercepts for {targets} targets")
    return coef.reshape(targets, features).T, b


@converter(f"{ML_DOMAIN}::LinearClassifier")
def _linear_classifier(ctx: Context, node, attrs) -> list:
    """The scores output, where it is affine: ``post_transform`` NONE and no label used.

    A classifier's label and non-NONE post-transform are what ``hec compile`` moves to the
    client tail; this converter sees them only when something else reads them on the server.
    """
    x = ctx.value(node.input[0])
    w, b = linear_classifier_weights(attrs, _features(ctx, node))
    post = _text(attrs.get("post_transform", "NONE"))
    if node.output[0]:
        raise ctx.unsupported(
            "its label output (an argmax) is read by a later node on the server; only a "
            "model output can be computed on the client"
        )
    if post != "NONE":
        raise ctx.unsupported(
            f"post_transform {post} is not linear and its result is read by a later node; "
            f"it can only run on the client as the model's last step"
        )
    labels = attrs.get("classlabels_ints") or attrs.get("classlabels_strings") or []
    if w.shape[1] == 1 and len(labels) == 2:
        # one score s for two classes: onnxruntime returns [1 - s, s]
        w = np.concatenate([-w, w], axis=1)
        b = np.array([1.0 - b[0], b[0]])
    return [None, ctx.emit("matmul", [x], (w.shape[1],), {}, {"weight": w, "bias": b})]


@converter(f"{ML_DOMAIN}::LinearRegressor")
def _linear_regressor(ctx: Context, node, attrs) -> list:
    """``y = x @ W + b`` for ``targets`` outputs (``post_transform`` NONE only)."""
    x = ctx.value(node.input[0])
    post = _text(attrs.get("post_transform", "NONE"))
    if post != "NONE":
        raise ctx.unsupported(f"post_transform {post} is not linear (only NONE)")
    w, b = linear_classifier_weights(attrs, _features(ctx, node))
    if w.shape[1] != attrs.get("targets", 1):
        raise ctx.unsupported(f"targets={attrs.get('targets', 1)} but {w.shape[1]} rows")
    return [ctx.emit("matmul", [x], (w.shape[1],), {}, {"weight": w, "bias": b})]


@converter(f"{ML_DOMAIN}::Normalizer")
def _normalizer(ctx: Context, node, attrs) -> list:
    """Refused: dividing by the sample's own norm is not linear (except for one feature)."""
    norm = _text(attrs.get("norm", "MAX"))
    raise ctx.unsupported(
        f"norm {norm} divides each sample by its own {norm} norm, which is not linear in the "
        f"encrypted values; only a Normalizer after the model's scores (run on the client) "
        f"is supported"
    )


def _cast(ctx: Context, node, attrs) -> list:
    """Cast between floating-point types is the identity on CKKS's real numbers."""
    to = attrs.get("to")
    if to not in _FLOATS:
        raise ctx.unsupported(
            f"Cast to {TensorProto.DataType.Name(to)} (only between floating-point types; "
            f"an integer or bool result can only be computed on the client as the last step)"
        )
    return [ctx.value(node.input[0])]


# skl2onnx's MLPClassifier begins with Cast(X, to=FLOAT). The general Cast converter of the
# linear ops module replaces this one when it is registered (whichever is imported first).
if "Cast" not in CONVERTERS:
    CONVERTERS["Cast"] = _cast
