"""refit-layers: the linear layers after low-degree activations refitted to the original's.

A degree-2 polynomial is a poor ReLU on its own (the MNIST LeNet-5 at degree 2 everywhere keeps
37% of its accuracy), but much of what it loses is linear in what the next layer sees: a
least-squares refit of each conv/matmul layer (weights and bias) so that, on the calibration
inputs, its output matches the *original* model's output of that layer (its pre-activation
values) from the inputs the *converted* model gives it, front to back, recovers most of it
(97% there). This is ``hec.recover.refit_to_reference``: the ridge pulls toward the trained
weights, its strength chosen per layer by held-out error, so that a dense layer with more
weights per neuron than calibration inputs does not fit their noise.

It runs after ``replace-activations`` (and the normalization constants) and only when
``choose-degrees`` picked the degrees with ``refit`` on (the accuracy budget, by default for ReLU
classifiers): that pass judged each candidate with the refit and keeps the unconverted graph,
the refit's reference. A degree fixed by the user (``--degree``) or picked by the fit-error
budget leaves the weights as trained. Records on each refitted op ``refit_error_before``,
``refit_error_after`` (relative error of its output on the calibration inputs) and
``refit_ridge``; ``rows`` keeps them for the report.

Preserves: the graph's structure and shapes; weights change. Requires: tensor graph, the same
conv/matmul layers as the original, the calibration inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from hec.ir import Graph
from hec.passes.choose_degrees import ChooseDegrees
from hec.recover import prunable_ops, refit_to_reference

__all__ = ["RefitLayers"]


@dataclass
class RefitLayers:
    """Refit the conv/matmul layers of the converted graph to the original's outputs.

    Args:
        choose: the ``choose-degrees`` pass that ran before; its ``original`` graph is the
            reference (``None`` when it did not choose the degrees: nothing is refitted).
        x: calibration inputs ``[N, ...]``.
    """

    choose: ChooseDegrees
    x: np.ndarray
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)
    name: ClassVar[str] = "refit-layers"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        original = self.choose.original
        if original is None or not self.choose.refit:
            return False
        self.rows = refit_to_reference(graph, original, self.x)
        by_name = {op.origin: op for op in prunable_ops(graph)}
        for row in self.rows:
            op = by_name[row["name"]]
            if row["ridge"] is not None:
                op.attrs["refit_error_before"] = round(row["error_before"], 6)
                op.attrs["refit_error_after"] = round(row["error_after"], 6)
                op.attrs["refit_ridge"] = row["ridge"]
        return any(row["ridge"] is not None for row in self.rows)
