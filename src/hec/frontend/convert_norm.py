"""Converters of the normalization layers (LayerNormalization, InstanceNormalization,
GroupNormalization)."""

from __future__ import annotations

__all__: list[str] = []
