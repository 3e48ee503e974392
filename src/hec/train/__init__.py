"""Training-side features (optional extra ``hec[train]``: PyTorch). The compiler never needs it."""

from __future__ import annotations

from types import ModuleType

from hec.errors import EnvironmentProblem

__all__ = ["require_torch"]


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
