"""Golden files: compare text with a stored file; ``HEC_UPDATE_GOLDENS=1`` rewrites them.

An intended change to a dump updates its golden in the same commit, saying why.
"""

from __future__ import annotations

import os
from pathlib import Path


def check_golden(text: str, path: Path) -> None:
    if os.environ.get("HEC_UPDATE_GOLDENS") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if os.environ.get("HEC_UPDATE_GOLDENS") != "1":
            raise AssertionError(f"golden {path} did not exist; written, review and commit it")
        return
    expected = path.read_text()
    assert text == expected, f"dump differs from {path} (HEC_UPDATE_GOLDENS=1 to accept)"
