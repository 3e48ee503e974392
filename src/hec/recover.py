"""Recovery after pruning without a training framework: layer-wise least-squares refit.

Each conv/matmul layer of the pruned graph is refitted, in order, so that on calibration data
it reproduces the *original* model's output of that layer from the inputs the *pruned* model
gives it (so errors of earlier layers are corrected, not compounded). Only surviving weights
and the bias move; a pruned weight stays exactly zero, so the HE cost does not change. Per
output channel ``o`` with surviving inputs ``m``, this is the ridge-regularized normal system
``(Xₘᵀ Xₘ + λI) w = Xₘᵀ y_o`` over im2col patches ``X`` (ones column for the bias).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hec.ir import PRUNABLE_KINDS, Graph, Op
from hec.ir.tensor_ops import conv_output_shape, evaluate_op

__all__ = [
    "layer_inputs",
    "patches",
    "refit",
    "refit_to_reference",
    "reconstruction_errors",
    "RIDGES",
]

# ridge strengths tried by ``refit_to_reference`` (times the mean diagonal of the Gram matrix)
RIDGES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def prunable_ops(graph: Graph) -> list[Op]:
    return [op for op in graph.ops if op.kind in PRUNABLE_KINDS and "weight" in op.consts]


def layer_inputs(
    graph: Graph, x: np.ndarray, ops: list[Op] | None = None, outputs: bool = False
) -> dict[int, np.ndarray]:
    """``id(op) -> its input`` (or output) on ``x``, for the conv/matmul ops of ``graph``."""
    wanted = {id(op) for op in (ops if ops is not None else prunable_ops(graph))}
    env: dict[int, np.ndarray] = {id(graph.inputs[0]): np.asarray(x, dtype=np.float64)}
    found: dict[int, np.ndarray] = {}
    for op in graph.ops:
        args = [env[id(v)] for v in op.inputs]
        env[id(op.result)] = evaluate_op(op, *args)
        if id(op) in wanted:
            found[id(op)] = env[id(op.result)] if outputs else args[0]
    return found


def patches(op: Op, x: np.ndarray) -> np.ndarray:
    """The rows a layer multiplies by its weight: ``[B·positions, fan_in]`` (im2col for conv,
    in the order of ``weight[o].ravel()``); the layer's output is ``patches @ W_flat.T + b``."""
    if op.kind == "matmul":
        return x.reshape(-1, x.shape[-1])
    w = op.consts["weight"]
    kernel, strides, dil = w.shape[2:], op.attrs["strides"], op.attrs["dilations"]
    pads = op.attrs["pads"]
    nd = len(kernel)
    out_sp = conv_output_shape(x.shape[2:], kernel, strides, pads, dil)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])
    cols = []
    for kpos in np.ndindex(*kernel):
        sl = tuple(
            slice(kpos[i] * dil[i], kpos[i] * dil[i] + strides[i] * (out_sp[i] - 1) + 1, strides[i])
            for i in range(nd)
        )
        cols.append(xp[(slice(None), slice(None), *sl)])  # [B, C, *out_sp]
    p = np.stack(cols, axis=2)  # [B, C, K, *out_sp]
    p = p.reshape(p.shape[0], p.shape[1] * p.shape[2], -1)  # [B, C·K, P]
    return p.transpose(0, 2, 1).reshape(-1, p.shape[1])


def _flat_weight(op: Op) -> np.ndarray:
    """The weight as ``[out, fan_in]`` (rows: output channels / neurons)."""
    w = op.consts["weight"]
    return w.T if op.kind == "matmul" else w.reshape(w.shape[0], -1)


def _set_flat_weight(op: Op, wf: np.ndarray, bias: np.ndarray) -> None:
    w = op.consts["weight"]
    new = wf.T if op.kind == "matmul" else wf.reshape(w.shape)
    op.consts = {**op.consts, "weight": np.ascontiguousarray(new), "bias": bias}


def _targets(op: Op, y: np.ndarray) -> np.ndarray:
    """A layer's output as ``[B·positions, out]``."""
    if op.kind == "matmul":
        return y.reshape(-1, y.shape[-1])
    return y.reshape(y.shape[0], y.shape[1], -1).transpose(0, 2, 1).reshape(-1, y.shape[1])


def reconstruction_errors(pruned: Graph, original: Graph, x: np.ndarray) -> list[float]:
    """Per layer: ``‖y_pruned - y_original‖ / ‖y_original‖`` of its output on ``x``."""
    a = layer_inputs(pruned, x, outputs=True)
    b = layer_inputs(original, x, outputs=True)
    return [
        float(np.linalg.norm(a[id(p)] - b[id(o)]) / max(float(np.linalg.norm(b[id(o)])), 1e-30))
        for p, o in zip(prunable_ops(pruned), prunable_ops(original), strict=True)
    ]


def refit(
    pruned: Graph, original: Graph, x: np.ndarray, ridge: float = 1e-4, start: int = 0
) -> list[dict[str, Any]]:
    """Refit ``pruned``'s surviving weights in place, layer by layer (see the module doc).

    ``original`` is the unpruned graph of the same structure. ``start``: the conv/matmul
    layers before this one (in graph order) are left as they are (already refitted). Returns
    per refitted layer the relative reconstruction error of its output before and after.
    """
    ops_p, ops_o = prunable_ops(pruned)[start:], prunable_ops(original)[start:]
    targets = layer_inputs(original, x, ops_o, outputs=True)
    rows = []
    for op, ref in zip(ops_p, ops_o, strict=True):
        xin = layer_inputs(pruned, x, [op])[id(op)]  # what the refitted earlier layers give it
        X = patches(op, xin)
        Y = _targets(op, targets[id(ref)])
        W = _flat_weight(op)
        b = op.consts.get("bias", np.zeros(W.shape[0]))
        before = _rel_err(X @ W.T + b, Y)
        Xa = np.hstack([X, np.ones((len(X), 1))])
        G, R = Xa.T @ Xa, Xa.T @ Y
        lam = ridge * np.trace(G) / len(G)
        newW, newb = np.zeros_like(W), np.array(b, dtype=np.float64)
        for o in range(W.shape[0]):
            keep = np.append(W[o] != 0, True)  # surviving weights and the bias
            sol = np.linalg.solve(G[np.ix_(keep, keep)] + lam * np.eye(keep.sum()), R[keep, o])
            newW[o, keep[:-1]] = sol[:-1]
            newb[o] = sol[-1]
        after = _rel_err(X @ newW.T + newb, Y)
        if after < before:  # the ridge term can only make a near-perfect layer slightly worse
            _set_flat_weight(op, newW, newb)
        else:
            after = before
        rows.append({"name": op.origin, "error_before": before, "error_after": after})
    return rows


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(float(np.linalg.norm(b)), 1e-30))


def refit_to_reference(
    graph: Graph,
    reference: Graph,
    x: np.ndarray,
    ridges: tuple[float, ...] = RIDGES,
    folds: int = 2,
) -> list[dict[str, Any]]:
    """Refit every conv/matmul layer of ``graph`` in place so that its output on ``x`` matches
    ``reference``'s output of the same layer, front to back (each layer sees what the already
    refitted layers before it give it). ``graph`` has the same conv/matmul layers as
    ``reference`` with other ops changed between them (activations replaced by polynomials);
    layers are matched by their ONNX node and weight shape, and one without a single match
    (added by a conversion) is left as it is.

    Unlike ``refit`` (after pruning: ridge toward zero, a pruned weight kept at zero), every
    weight and the bias move, and the ridge pulls toward the layer's current weights:
    ``(XᵀX + λI) W = XᵀY + λ W₀``, so a layer fitted on few inputs (a dense layer with more
    weights per neuron than calibration inputs) stays near the trained one instead of fitting
    the calibration noise. ``λ`` (times the mean diagonal of ``XᵀX``) is picked per layer from
    ``ridges`` by the held-out error over ``folds`` splits of the inputs (input ``i`` in fold
    ``i mod folds``). A layer whose output already matches (the first one) is left as it is,
    and so is one the refit would not improve. Returns per layer: ``name``, ``error_before``,
    ``error_after`` (relative error of its output on ``x``), ``ridge`` (``None``: unchanged).
    """
    x = np.asarray(x, dtype=np.float64)
    ops, refs = _matching_layers(graph, reference)
    targets = layer_inputs(reference, x, refs, outputs=True)
    fold_of = np.arange(len(x)) % max(min(folds, len(x)), 1)
    rows = []
    for op, ref in zip(ops, refs, strict=True):
        X = patches(op, layer_inputs(graph, x, [op])[id(op)])
        Y = _targets(op, targets[id(ref)])
        W = _flat_weight(op)
        b = np.asarray(op.consts.get("bias", np.zeros(W.shape[0])), dtype=np.float64)
        before = _rel_err(X @ W.T + b, Y)
        row: dict[str, Any] = {"name": op.origin, "error_before": before, "error_after": before}
        row["ridge"] = None
        rows.append(row)
        if before <= 1e-12:
            continue
        Xa = np.hstack([X, np.ones((len(X), 1))])
        W0 = np.vstack([W.T, b[None, :]])  # [fan_in + 1, out]
        fold = np.repeat(fold_of, len(X) // len(x))  # rows are input-major
        parts = [(Xa[fold == k], Y[fold == k]) for k in range(int(fold_of.max()) + 1)]
        grams = [(xs.T @ xs, xs.T @ ys) for xs, ys in parts]
        G, R = sum(g for g, _ in grams), sum(r for _, r in grams)
        best = min(
            ridges,
            key=lambda lam: (
                sum(
                    float(np.sum((xs @ _ridge_solve(G - g, R - r, W0, lam) - ys) ** 2))
                    for (xs, ys), (g, r) in zip(parts, grams, strict=True)
                )
                if len(parts) > 1
                else lam
            ),
        )
        S = _ridge_solve(G, R, W0, best)
        after = _rel_err(Xa @ S, Y)
        if after < before:
            _set_flat_weight(op, S[:-1].T, S[-1])
            row.update(error_after=after, ridge=best)
    return rows


def _matching_layers(graph: Graph, reference: Graph) -> tuple[list[Op], list[Op]]:
    """The conv/matmul ops of ``graph`` and of ``reference`` made by the same ONNX node, with
    weights of the same shape, in ``graph``'s order (a node with several such ops is skipped)."""
    refs: dict[str, list[Op]] = {}
    for op in prunable_ops(reference):
        refs.setdefault(op.origin, []).append(op)
    mine: dict[str, list[Op]] = {}
    for op in prunable_ops(graph):
        mine.setdefault(op.origin, []).append(op)
    pairs = [
        (ops[0], refs[name][0])
        for name, ops in mine.items()
        if len(ops) == 1
        and len(refs.get(name, ())) == 1
        and ops[0].consts["weight"].shape == refs[name][0].consts["weight"].shape
    ]
    return [p for p, _ in pairs], [r for _, r in pairs]


def _ridge_solve(G: np.ndarray, R: np.ndarray, W0: np.ndarray, lam: float) -> np.ndarray:
    """``argmin_S ‖X S - Y‖² + λ' ‖S - W₀‖²`` from ``G = XᵀX``, ``R = XᵀY``, with ``λ'`` the
    ridge ``lam`` times the mean diagonal of ``G``."""
    scale = lam * max(float(np.trace(G)) / len(G), 1e-30)
    return np.linalg.solve(G + scale * np.eye(len(G)), R + scale * W0)
