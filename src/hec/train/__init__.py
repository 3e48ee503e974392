"""Training-side features (optional extra ``hec[train]``: PyTorch). The compiler never needs it."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from hec.errors import EnvironmentProblem

__all__ = ["require_labels", "require_torch"]


def require_torch() -> ModuleType:
    """Import torch or say how to get it."""
    try:
        import torch
    except ImportError:
        raise EnvironmentProblem(
            "this needs PyTorch, which hec keeps optional: pip install 'hec[train]' "
            "(about 2 minutes and 5 GB), then run the command again"
        ) from None
    return torch


def require_labels(labels: Any) -> Any:
    """``labels``, or a one-line error saying where fine-tuning gets them (said before any work,
    not after minutes of pruning)."""
    if labels is None:
        from hec.passes.replace_activations import CalibrationMissing

        raise CalibrationMissing(
            "fine-tuning needs labels: give --train DATA.npz with x "
            "and y, or labels y in the calibration data"
        )
    return labels
