"""Checks that the interpreter and OpenFHE can run hec, with messages that say what to do."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from hec.errors import EnvironmentProblem

REQUIRED_PYTHON = (3, 10)
SETUP_HINT = "run `make setup` (it builds .venv with python3.10) and use .venv/bin/hec"


def check_python() -> None:
    """Refuse any interpreter but CPython 3.10: OpenFHE's wheel has a 3.10 extension only."""
    if sys.version_info[:2] != REQUIRED_PYTHON:
        found = ".".join(map(str, sys.version_info[:3]))
        raise EnvironmentProblem(
            f"hec needs Python 3.10 (OpenFHE's PyPI wheel ships a CPython 3.10 extension only), "
            f"but this is Python {found} at {sys.executable}; {SETUP_HINT}"
        )


def check_openfhe_installed() -> None:
    """Cheap check at ``import hec``: the wheel is there (loading it waits for first use)."""
    if importlib.util.find_spec("openfhe") is None:
        raise EnvironmentProblem(
            f"OpenFHE is not installed in {sys.prefix}; install it with "
            f"`pip install openfhe==1.6.1.0.22.4`, or {SETUP_HINT}"
        )


def load_openfhe() -> ModuleType:
    """Import ``openfhe`` lazily (compiling and simulating never need it)."""
    try:
        import openfhe
    except ImportError as exc:  # missing wheel, missing libgomp, wrong ABI
        raise EnvironmentProblem(
            f"cannot import openfhe ({exc}); install it with "
            f"`pip install openfhe==1.6.1.0.22.4` in a Python 3.10 environment "
            f"(and `apt-get install libgomp1`), or {SETUP_HINT}"
        ) from None
    return openfhe
