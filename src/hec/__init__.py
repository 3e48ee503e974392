"""hec: compile trained ONNX networks into CKKS programs that run on OpenFHE.

The top-level API is small::

    import hec
    artifact = hec.compile("model.onnx", "out/")   # artifact directory with report.json
    result = hec.run(artifact, x)                  # encrypted inference, in-process
    logits = hec.simulate(artifact, x)             # the same program on numpy slot vectors

Importing ``hec`` checks the interpreter and that OpenFHE is installed, and nothing more: the
compiler is imported on first use, so ``hec --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

from hec._environment import check_openfhe_installed, check_python

check_python()
check_openfhe_installed()

__version__ = "0.1.0"
__all__ = ["compile", "load_artifact", "run", "simulate", "CompileOptions", "__version__"]

_LAZY = {
    "compile": "hec.api",
    "run": "hec.api",
    "simulate": "hec.api",
    "load_artifact": "hec.api",
    "CompileOptions": "hec.options",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hec' has no attribute {name!r}")
