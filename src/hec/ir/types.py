"""Value types of both IRs: plaintext tensors and CKKS ciphertexts with their slot layout.

Types are frozen and hashable; HE state (level, scale degree) lives in the type, not in a side
table, so a pass that changes it must produce a new type and the verifier can check it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["TensorType", "Layout", "CipherType", "BatchCipherType", "Type"]


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
    """

    shape: tuple[int, ...]
    slots: int
    kind: str = "contiguous"

    def __post_init__(self) -> None:
        if self.kind != "contiguous":
            raise ValueError(f"unknown layout kind {self.kind!r}")
        if self.size > self.slots:
            raise ValueError(f"{self.size} elements do not fit in {self.slots} slots")

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def slot_of_element(self) -> np.ndarray:
        """``slot_of_element()[e]`` is the slot holding flat element ``e``."""
        return np.arange(self.size)

    def pack(self, x: np.ndarray) -> np.ndarray:
        """Tensors ``[B, *shape]`` to slot vectors ``[B, slots]`` (unused slots zero)."""
        flat = np.asarray(x, dtype=np.float64).reshape(x.shape[0], self.size)
        vec = np.zeros((flat.shape[0], self.slots))
        vec[:, self.slot_of_element()] = flat
        return vec

    def unpack(self, vec: np.ndarray) -> np.ndarray:
        """Slot vectors ``[B, slots]`` back to tensors ``[B, *shape]``."""
        return np.asarray(vec)[:, self.slot_of_element()].reshape(-1, *self.shape)

    def __str__(self) -> str:
        return f"{self.kind}<{'x'.join(map(str, self.shape))}>"


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
