"""hec: compile trained ONNX networks into CKKS programs that run on OpenFHE.

The top-level API is small::

    import hec
    artifact = hec.compile("model.onnx", "out/")
    result = hec.run(artifact, x)            # encrypted inference, in-process
    logits = hec.simulate(artifact, x)       # the same program on numpy slot vectors
"""

from __future__ import annotations

from hec._environment import check_python

check_python()

from hec.api import compile, load_artifact, run, simulate  # noqa: E402

__version__ = "0.1.0"
__all__ = ["compile", "load_artifact", "run", "simulate", "__version__"]
