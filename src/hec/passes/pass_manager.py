"""Run passes in order, verifying between them and dumping the IR when asked.

The contract of a pass (after xDSL and onnx-ir): a frozen dataclass whose fields are its options,
a kebab-case ``name``, the ``dialect`` it works on, and ``run(graph) -> bool`` saying whether it
changed anything. The manager checks the dialect before, verifies after, and on failure raises
``PassError`` naming the pass and those before it, with the IR from before the pass attached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from hec.errors import HecError, PassError
from hec.ir import Graph, VerifyError

__all__ = ["Pass", "PassManager"]


class Pass(Protocol):
    name: ClassVar[str]
    dialect: ClassVar[str]

    def run(self, graph: Graph) -> bool: ...


@dataclass
class PassManager:
    """Runs ``passes`` on a graph in place.

    Args:
        passes: the pipeline, in order.
        dump_dir: if set, ``00-input.txt`` and ``NN-<pass>.txt`` after each pass that changed
            the IR are written there.
        progress: called with a short message before each pass.
    """

    passes: Sequence[Pass]
    dump_dir: Path | None = None
    progress: Callable[[str], None] | None = None
    first_index: int = 1  # dump numbering continues across pipelines run one after the other

    def run(self, graph: Graph) -> Graph:
        graph.verify()
        if self.first_index == 1:
            self._dump(graph, "00-input")
        done: list[str] = []
        for i, p in enumerate(self.passes, start=self.first_index):
            if self.progress:
                self.progress(p.name)
            if graph.dialect != p.dialect:
                raise PassError(
                    f"pass '{p.name}' works on {p.dialect} graphs, got a "
                    f"{graph.dialect} graph after {_history(done)}"
                )
            before = graph.clone()
            try:
                changed = p.run(graph)
                graph.verify()
            except HecError:
                raise
            except (VerifyError, Exception) as exc:
                err = PassError(
                    f"pass '{p.name}' failed after {_history(done)}: {type(exc).__name__}: {exc}"
                )
                err.graph = before
                raise err from exc
            done.append(p.name)
            if changed:
                self._dump(graph, f"{i:02d}-{p.name}")
        return graph

    def _dump(self, graph: Graph, stem: str) -> None:
        if self.dump_dir is not None:
            self.dump_dir.mkdir(parents=True, exist_ok=True)
            (self.dump_dir / f"{stem}.txt").write_text(str(graph))


def _history(done: list[str]) -> str:
    return ("passes " + ", ".join(done)) if done else "no earlier pass"
