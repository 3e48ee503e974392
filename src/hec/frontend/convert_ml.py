"""Converters of scikit-learn's ``ai.onnx.ml`` ops (as skl2onnx writes them)."""

from __future__ import annotations

__all__: list[str] = []
