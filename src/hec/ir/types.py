"""Value types of both IRs: plaintext tensors and CKKS ciphertexts with their slot layout.

Types are frozen and hashable; HE state (level, scale degree) lives in the type, not in a side
table, so a pass that changes it must produce a new type and the verifier can check it.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

__all__ = [
    "TensorType",
    "Layout",
    "LAYOUT_KINDS",
    "CipherType",
    "BatchCipherType",
    "Type",
    "type_as",
    "encrypted_type",
    "layout_of",
]

# contiguous: element e in slot e; the others are gathered (``source`` map): input layouts the
# client encodes, and strided outputs of linear maps (``output_layouts``)
LAYOUT_KINDS = ("contiguous", "replicated", "im2col", "strided")


@dataclass(frozen=True)
class TensorType:
    """A per-sample tensor: the batch axis of the ONNX model is not part of the shape."""

    shape: tuple[int, ...]
    dtype: str = "f64"

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __str__(self) -> str:
        return f"tensor<{'x'.join(map(str, self.shape)) or 'scalar'}x{self.dtype}>"


@dataclass(frozen=True)
class Layout:
    """Which tensor element sits in which slot of a ciphertext with ``slots`` slots.

    ``contiguous``: element ``e`` of the row-major flattened tensor sits in slot ``e``; the slots
    past ``size`` hold nothing the program reads (they may hold garbage after a polynomial).

    ``replicated`` / ``im2col`` (input layouts the client encodes, see ``input_layouts``): slot
    ``s`` holds element ``source[s]`` (``-1``: nothing), so an element may sit in several
    slots; ``slot_of_element`` gives its first copy.

    ``strided`` (a linear map's output kept on its input's grid, see ``output_layouts``): slot
    ``s`` holds element ``source[s]`` once, or once in each half (a periodic output,
    ``output_layouts.make_periodic``); the other slots hold nothing the program reads.
    """

    shape: tuple[int, ...]
    slots: int
    kind: str = "contiguous"
    source: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in LAYOUT_KINDS:
            raise ValueError(f"unknown layout kind {self.kind!r}")
        if self.size > self.slots:
            raise ValueError(f"{self.size} elements do not fit in {self.slots} slots")
        if (self.source is None) != (self.kind == "contiguous"):
            raise ValueError(f"a {self.kind} layout needs a source map exactly when gathered")
        if self.source is not None:
            src = np.asarray(self.source)
            if src.shape != (self.slots,) or src.min() < -1 or src.max() >= self.size:
                raise ValueError("a layout's source map needs one element index (or -1) a slot")

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def slot_of_element(self) -> np.ndarray:
        """``slot_of_element()[e]`` is the (first) slot holding flat element ``e``; -1: none."""
        if self.source is None:
            return np.arange(self.size)
        src = np.asarray(self.source)
        slots = np.flatnonzero(src >= 0)
        first = np.full(self.size, -1, dtype=np.int64)
        first[src[slots[::-1]]] = slots[::-1]  # the last write wins: the lowest slot
        return first

    def pack(self, x: np.ndarray) -> np.ndarray:
        """Tensors ``[B, *shape]`` to slot vectors ``[B, slots]`` (unused slots zero)."""
        flat = np.asarray(x, dtype=np.float64).reshape(x.shape[0], self.size)
        vec = np.zeros((flat.shape[0], self.slots))
        if self.source is None:
            vec[:, : self.size] = flat
        else:
            src = np.asarray(self.source)
            used = np.flatnonzero(src >= 0)
            vec[:, used] = flat[:, src[used]]
        return vec

    def unpack(self, vec: np.ndarray) -> np.ndarray:
        """Slot vectors ``[B, slots]`` back to tensors ``[B, *shape]``."""
        return np.asarray(vec)[:, self.slot_of_element()].reshape(-1, *self.shape)

    def __str__(self) -> str:
        dims = "x".join(map(str, self.shape))
        if self.source is None:
            return f"{self.kind}<{dims}>"
        src = np.asarray(self.source, dtype=np.int64)
        crc = zlib.crc32(src.tobytes())
        return f"{self.kind}<{dims}, {np.count_nonzero(src >= 0)} slots used>#{crc:08x}"


@dataclass(frozen=True)
class CipherType:
    """A CKKS ciphertext of ``slots`` slots after ``level`` rescales, at scale Δ^scale_deg.

    ``layout`` says which tensor it holds; intermediate ciphertexts of a linear map (rotated
    copies, partial sums) hold no tensor and have ``layout=None``.
    """

    slots: int
    level: int = 0
    scale_deg: int = 1
    layout: Layout | None = None

    def with_state(self, level: int, scale_deg: int) -> CipherType:
        return CipherType(self.slots, level, scale_deg, self.layout)

    def __str__(self) -> str:
        held = f", {self.layout}" if self.layout is not None else ""
        return f"cipher<{self.slots}{held}, level={self.level}, scale=Δ^{self.scale_deg}>"


@dataclass(frozen=True)
class BatchCipherType:
    """A tensor of ciphertexts (batch packing): one ciphertext per element of ``shape``.

    Slot ``i`` of every ciphertext belongs to input ``i`` of the batch, so the ciphertext of
    element ``e`` carries that element for up to ``batch`` inputs; all share one HE state:
    level, scale degree and number of polynomial parts (2, or 3 after a product whose
    relinearization is deferred).
    """

    shape: tuple[int, ...]
    batch: int
    level: int = 0
    scale_deg: int = 1
    parts: int = 2  # 3 after a product not yet relinearized

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def with_state(self, level: int, scale_deg: int, parts: int | None = None) -> BatchCipherType:
        parts = self.parts if parts is None else parts
        return BatchCipherType(self.shape, self.batch, level, scale_deg, parts)

    def __str__(self) -> str:
        dims = "x".join(map(str, self.shape)) or "scalar"
        extra = f", parts={self.parts}" if self.parts != 2 else ""
        return (
            f"ctensor<{dims}, batch={self.batch}, level={self.level}, "
            f"scale=Δ^{self.scale_deg}{extra}>"
        )


Type = TensorType | CipherType | BatchCipherType

_T = TypeVar("_T", TensorType, CipherType, BatchCipherType)


def type_as(t: Type, kind: type[_T]) -> _T:
    """``t`` as a ``kind``, where the dialect fixes it and the type checker cannot see it.

    Every value of a tensor graph holds a ``TensorType``, of a slot graph a ``CipherType``, of
    a batch graph a ``BatchCipherType``; a value of another kind there is a compiler bug.
    """
    if not isinstance(t, kind):
        raise TypeError(f"expected a {kind.__name__}, got {t}")
    return t


def encrypted_type(t: Type) -> CipherType | BatchCipherType:
    """``t``, the type of a value of a lowered (slot or batch) graph: a ciphertext or a tensor
    of ciphertexts; TypeError for a plaintext tensor (a compiler bug)."""
    if isinstance(t, TensorType):
        raise TypeError(f"expected a ciphertext type, got {t}")
    return t


def layout_of(t: Type) -> Layout:
    """The layout of ``t``, a ciphertext holding a tensor (a slot graph's input, output or
    materialized value); TypeError otherwise (a compiler bug)."""
    if not isinstance(t, CipherType) or t.layout is None:
        raise TypeError(f"expected a ciphertext holding a tensor, got {t}")
    return t.layout
