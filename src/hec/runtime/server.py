"""The model owner's side: evaluates ciphertexts with the evaluation keys only."""

from __future__ import annotations

from hec.backend_openfhe.artifact import Artifact
from hec.backend_openfhe.execute import OpenFHEExecutor, ProgressFn

__all__ = ["Server"]


class Server:
    """Evaluates an artifact's program. ``context`` holds evaluation keys, no secret key."""

    def __init__(self, artifact: Artifact, context) -> None:
        self.artifact = artifact
        self._executor = OpenFHEExecutor(context, artifact.program, artifact.params.depth)

    def evaluate(self, ct, progress: ProgressFn | None = None):
        return self._executor.run([ct], progress)[0]
