"""Run a slot program on numpy vectors: the encrypted program's semantics without encryption.

Values are ``[B, slots]`` arrays, one row per sample. ``rescale`` and ``level_reduce`` only
change HE bookkeeping, so they are identities here; everything else is exact arithmetic, which
makes the simulator the oracle that catches compiler bugs free of CKKS noise.

Rows may also be wider than the program's slots: ``[C, blocks·slots]`` holds ``blocks`` samples
per row side by side, as a sample-block ciphertext does; constants are then tiled and rotations
wrap around the whole row, exactly as OpenFHE does with a full batch (``simulate_blocks``).
"""

from __future__ import annotations

import numpy as np

from hec.ir import CipherType, Graph, Op
from hec.ir.types import layout_of, type_as
from hec.runtime.plain_eval import COMMON_SEMANTICS, evaluate_plain

__all__ = ["SEMANTICS", "simulate_slots", "simulate_blocks", "check_block_local", "rotate"]


def rotate(v: np.ndarray, k: int) -> np.ndarray:
    """``rot(v, k)[i] = v[(i + k) mod slots]`` along the last axis."""
    return np.roll(v, -k, axis=-1)


def _tiled(c: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Constant ``c`` repeated to ``x``'s width (the runtime tiles plaintexts the same way)."""
    reps = x.shape[-1] // c.shape[-1]
    return c if reps == 1 else np.tile(c, reps)


def _matvec(op: Op, x: np.ndarray) -> np.ndarray:
    y = np.zeros_like(x)
    for k, d in zip(op.attrs["offsets"], op.consts["diags"], strict=True):
        y += _tiled(d, x) * rotate(x, k)
    half = op.attrs.get("period")
    if half:  # a periodic output: the second half repeats the first
        y[..., half:] = y[..., :half]
    return y + _tiled(op.consts["bias"], x)


SEMANTICS = {
    **COMMON_SEMANTICS,
    "rotate": lambda op, x: rotate(x, op.attrs["k"]),
    "rotate_sum": lambda op, *xs: sum(
        rotate(x, k) for x, k in zip(xs, op.attrs["ks"], strict=True)
    ),
    "mul_plain": lambda op, x: x * _tiled(op.consts["p"], x),
    "add_plain": lambda op, x: x + _tiled(op.consts["p"], x),
    "matvec": _matvec,
}


def simulate_slots(graph: Graph, *inputs: np.ndarray) -> list[np.ndarray]:
    """Run a slot graph on packed inputs ``[B, slots]``; returns packed outputs."""
    return evaluate_plain(graph, SEMANTICS, [np.asarray(x, dtype=np.float64) for x in inputs])


def simulate_blocks(graph: Graph, x: np.ndarray, blocks: int) -> np.ndarray:
    """Run ``graph`` on packed samples ``[n, slots]`` ``blocks`` to a row, as sample-block
    ciphertexts hold them; returns the packed outputs ``[n, slots]``."""
    x = np.asarray(x, dtype=np.float64)
    n, slots = x.shape
    rows = -(-n // blocks)
    wide = np.zeros((rows * blocks, slots))
    wide[:n] = x
    out = simulate_slots(graph, wide.reshape(rows, blocks * slots))[0]
    return out.reshape(rows * blocks, slots)[:n]


def check_block_local(graph: Graph, blocks: int, seed: int = 0) -> None:
    """Check that ``blocks`` samples side by side compute what each computes alone.

    The construction guarantees it (exact shifts, see ``schedule-rotations``); this guards the
    guarantee the runtime relies on, on random inputs in the input layout.

    Raises:
        RuntimeError: some block read another block's data: a compiler bug.
    """
    layout = layout_of(graph.inputs[0].type)
    rng = np.random.default_rng(seed)
    x = layout.pack(rng.uniform(-1, 1, size=(blocks, *layout.shape)))
    alone = simulate_slots(graph, x)[0]
    together = simulate_blocks(graph, x, blocks)
    out = type_as(graph.outputs[0].type, CipherType).layout
    read = out.slot_of_element() if out is not None else slice(None)
    if not np.allclose(together[:, read], alone[:, read], rtol=1e-9, atol=0, equal_nan=True):
        raise RuntimeError("sample blocks: a block reads its neighbour's slots (compiler bug)")
