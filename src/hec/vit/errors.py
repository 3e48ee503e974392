"""Errors a user of the ViT image-encryption feature can cause (all ``hec.errors.HecError``)."""

from __future__ import annotations

from hec.errors import HecError, InputError, ModelError

__all__ = [
    "KeyFileError",
    "ImageShapeError",
    "NotAPatchEmbeddingError",
    "PatchSizeError",
    "AdaptationCheckError",
]


class KeyFileError(HecError):
    """A key file is missing, not JSON, or holds settings that are inconsistent."""


class ImageShapeError(InputError):
    """Images whose shape, layout or value type does not fit the key."""


class NotAPatchEmbeddingError(ModelError):
    """The model's first layer is not a ViT patch embedding the adaptation pass can rewrite."""


class PatchSizeError(ModelError):
    """The model's patch size (or image size, channels) differs from the key's block settings."""


class AdaptationCheckError(ModelError):
    """The adapted model did not reproduce the original logits (the model mixes tokens by order)."""
