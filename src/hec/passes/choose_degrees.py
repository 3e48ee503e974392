"""choose-degrees: each activation's polynomial degree picked from an accuracy budget.

The degree that meets a fit-error budget (``replace-activations`` alone) is a poor proxy for what
the network loses: a ReLU's kink keeps a Chebyshev fit's error high until degree 27 and more, yet
the network's predictions barely move at much lower degrees, or only one layer needs more. This
pass measures instead. With the calibration inputs (and labels, when given), it converts the
tensor graph with candidate degrees (``replace-activations`` and the other conversions, on a
copy), evaluates the copy in plaintext (``hec.ir.interpret``) and keeps the cheapest assignment
it finds whose accuracy loss against the original model is at most ``max_loss`` points:

- accuracy: top-1 against the labels, or, without labels, the share of inputs whose prediction
  agrees with the original's (the loss is then ``100 - agreement``);
- candidates per activation: the depth-efficient degrees (``polyfit.depth_efficient_degrees``:
  2, 5, 13, 27 for 1, 3, 4, 5 levels);
- cost of an assignment: the program depth the polynomials add along the graph's longest path
  first (depth decides the ring and the cost of every op), then the ciphertext products;
- search (greedy): every activation at degree 2; while the loss exceeds the budget, try each
  activation at its next degree and keep the cheapest raise that reaches the budget or, if none
  does, the one that buys the most accuracy per added level (ties: the larger drop of the
  logits' relative error, then fewer products); once within budget, lower again any
  activation whose lowering stays within it, cheapest result first. If no assignment meets the
  budget, the most accurate one evaluated is kept (``budget_met`` false).
- with ``refit`` (the default pipeline's, for the accuracy budget): each candidate is judged
  with the linear layers refitted after it (``refit-layers``, ``hec.recover.refit_to_reference``),
  and honestly: the inputs are split in two, the layers refitted on one half predict the
  other, so no input is predicted by layers fitted on it (the refit would otherwise recover
  nearly all of the calibration accuracy at any degree, and that says nothing of new inputs).

The decision is recorded on the IR: each activation op gets ``degree`` (which
``replace-activations`` then fits) and the ``CHOICE_ATTRS`` (candidates, the network's accuracy
at every degree tried for it, the budget), which ``replace-activations`` copies to the poly op
and ``hec.optimize.conversion_layers`` reports. With ``max_loss=None`` (the default of
``hec compile``) the budget is ``DEFAULT_ACCURACY_LOSS`` for a ReLU model calibrated on at
least ``MIN_LABELLED_INPUTS`` labelled inputs; otherwise the pass does nothing and the
fit-error rule decides. See docs/polynomials.md.

Preserves: the graph, with attributes added to activation ops. Requires: tensor graph,
calibration statistics for every activation's input, the calibration inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from hec.ir import Graph, interpret
from hec.metrics import as_classes, graph_ends_with_sigmoid, predictions
from hec.passes.elementwise import Region, find_regions
from hec.passes.pass_manager import Pass
from hec.passes.polyfit import depth_efficient_degrees, significant_coeffs
from hec.passes.replace_activations import ReplaceActivations
from hec.progress import ProgressFn, no_progress

__all__ = [
    "ChooseDegrees",
    "DEFAULT_ACCURACY_LOSS",
    "MIN_LABELLED_INPUTS",
    "default_budget_applies",
    "series_products",
    "degree_summary",
    "fit_error_hint",
]


# The default budget (no --max-accuracy-loss, --degree or --error-budget): 1 point, for ReLU
# classifiers calibrated on at least MIN_LABELLED_INPUTS labelled inputs. On fewer, the accuracy
# measured is too coarse a yardstick (one input is half a point at 200) and the budget met on
# them was missed on held-out data (the MaxPool LeNet-5 of tests/fixtures/real, 200 images:
# 93.8% against 96.0%); the MNIST LeNet-5 calibrated on its 3,800 training images keeps 97.7%
# of onnxruntime's 98.1% on the test split at degree 2 (docs/polynomials.md).
DEFAULT_ACCURACY_LOSS = 1.0
MIN_LABELLED_INPUTS = 1000


def default_budget_applies(graph: Graph, labels: np.ndarray | None, inputs: int) -> bool:
    """Whether the default accuracy budget chooses the degrees of ``graph``'s activations:
    labels are given for at least ``MIN_LABELLED_INPUTS`` inputs and every activation is a
    ReLU (other functions keep the fit-error rule)."""
    fns = {op.attrs.get("fn") for op in graph.ops if op.kind == "activation"}
    return labels is not None and _budget_model(fns) and inputs >= MIN_LABELLED_INPUTS


def _budget_model(functions: set) -> bool:
    """A model the default budget is for: its activations (by function) are all ReLUs."""
    return functions == {"relu"}


def series_products(degree: int) -> int:
    """Ciphertext products of a Chebyshev series of ``degree``: one square for degree 2 (the
    lowering's), else OpenFHE's Paterson–Stockmeyer evaluation, about ``2·sqrt(d) + log2(d)``
    (an estimate: it only orders assignments of equal depth)."""
    if degree <= 1:
        return 0
    if degree == 2:
        return 1
    return 2 * math.ceil(math.sqrt(degree)) + math.ceil(math.log2(degree))


@dataclass(frozen=True)
class _Evaluation:
    """One assignment converted and run on the calibration inputs."""

    levels: tuple[int, ...]  # index into the candidates, per activation
    accuracy: float  # converted model: vs labels, or agreement with the original
    error: float  # relative RMS difference of the outputs from the original's
    depth: int  # levels the polynomials add along the longest path
    products: int  # ciphertext products of all polynomials (estimate)

    @property
    def cost(self) -> tuple[int, int]:
        return self.depth, self.products


@dataclass
class ChooseDegrees:
    """Record on each activation op the degree an accuracy budget picks (see the module).

    Args:
        replace: the ``replace-activations`` pass that will convert the graph (its settings
            and statistics convert every candidate; its fits are kept for it).
        x: calibration inputs ``[N, ...]``.
        labels: their labels, or ``None``: agreement with the original model is measured.
        max_loss: largest accuracy loss accepted, in percentage points; ``None``: the default
            budget, where ``default_budget_applies`` (labelled ReLU classifiers calibrated on
            enough inputs); elsewhere the pass leaves the degrees to the fit-error rule.
        then: the other conversions the program gets after ``replace`` (normalization
            constants), applied to every candidate before it is evaluated.
        candidates: degrees to choose from, increasing; default the depth-efficient degrees up
            to ``replace.max_depth`` levels.
        progress: ``progress(stage, done, total)``, once per search step.
        batch: inputs interpreted at once.
        refit: judge each candidate with its linear layers refitted (cross-fitted on two halves
            of the inputs, see the module); ``original`` then keeps the unconverted graph for
            ``refit-layers``.
    """

    replace: ReplaceActivations
    x: np.ndarray
    labels: np.ndarray | None = None
    max_loss: float | None = None
    then: Sequence[Pass] = ()
    candidates: tuple[int, ...] = ()
    progress: ProgressFn = no_progress
    batch: int = 256
    refit: bool = False
    # the graph before conversion, kept when the pass chose the degrees (refit-layers' reference)
    original: Graph | None = field(default=None, repr=False, compare=False)
    # every evaluation, in order: step, activation raised or lowered, degrees, accuracy, depth
    trace: list[dict[str, Any]] = field(default_factory=list, repr=False, compare=False)
    name: ClassVar[str] = "choose-degrees"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        regions = find_regions(graph, lambda r: "activation" in r.kinds)
        if not regions or self.replace.degree is not None:
            return False
        budget = self.max_loss
        if budget is None:  # the default: where the calibration data can judge it
            if not default_budget_applies(graph, self.labels, len(self.x)):
                return False
            budget = DEFAULT_ACCURACY_LOSS
        budget = float(budget)
        cands = self.candidates or tuple(depth_efficient_degrees(self.replace.max_depth))
        probability = graph_ends_with_sigmoid(graph)
        reference = self._outputs(graph)
        self.original = graph.clone()
        original_pred = predictions(reference, probability)
        if self.labels is not None:
            truth = as_classes(self.labels)
            original = float(np.mean(original_pred == truth))
        else:
            truth, original = original_pred, 1.0
        seen: dict[tuple[int, ...], _Evaluation] = {}

        def evaluate(levels: tuple[int, ...], step: int, which: int | None) -> _Evaluation:
            if levels not in seen:
                copy = graph.clone()
                for region, level in zip(find_regions(copy, _has_activation), levels, strict=True):
                    _set_degree(region, cands[level])
                for p in (self.replace, *self.then):
                    p.run(copy)
                out = self._refitted_outputs(copy) if self.refit else self._outputs(copy)
                acc = float(np.mean(predictions(out, probability) == truth))
                seen[levels] = _Evaluation(
                    levels, acc, _relative_error(out, reference), *_program_cost(copy)
                )
            found = seen[levels]
            self.trace.append(
                {
                    "step": step,
                    "activation": which,
                    "degrees": [cands[i] for i in levels],
                    "accuracy": found.accuracy,
                    "depth": found.depth,
                }
            )
            return found

        def loss(e: _Evaluation) -> float:
            return 100.0 * (original - e.accuracy)

        n, top = len(regions), len(cands) - 1
        max_steps = n * top
        kept: list[tuple[int, int]] = []  # (step, activation) whose trial was kept
        step = 0
        current = evaluate((0,) * n, step, None)
        self.progress("choose degrees", 0, max_steps)
        while loss(current) > budget + 1e-9:  # raise the activation buying the most per level
            step += 1
            trials = []
            for i in range(n):
                if current.levels[i] < top:
                    levels = _bump(current.levels, i, +1)
                    trials.append((i, evaluate(levels, step, i)))
            if not trials:
                break
            enough = [(i, e) for i, e in trials if loss(e) <= budget + 1e-9]
            if enough:  # a raise reaches the budget: the cheapest that does
                i, current = min(enough, key=lambda t: (t[1].cost, -t[1].accuracy, t[0]))
            else:
                i, current = max(trials, key=lambda t: _merit(current, t[1], t[0]))
            kept.append((step, i))
            self.progress("choose degrees", min(step, max_steps), max_steps)
        met = loss(current) <= budget + 1e-9
        while met:  # lower what the budget allows, the largest saving first
            step += 1
            trials = [
                (i, evaluate(_bump(current.levels, i, -1), step, i))
                for i in range(n)
                if current.levels[i] > 0
            ]
            within = [(i, e) for i, e in trials if loss(e) <= budget + 1e-9]
            if not within:
                break
            i, current = min(within, key=lambda t: (t[1].cost, -t[1].accuracy, t[0]))
            kept.append((step, i))
        if not met:  # nothing met it: the most accurate assignment seen, the cheapest of those
            current = min(seen.values(), key=lambda e: (-e.accuracy, e.cost, e.levels))
        self.progress("choose degrees", max_steps, max_steps)
        self._record(regions, cands, current, original, budget, met, kept)
        return True

    def _outputs(self, graph: Graph, x: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(self.x if x is None else x, dtype=np.float64)
        parts = [interpret(graph, x[i : i + self.batch])[0] for i in range(0, len(x), self.batch)]
        return np.concatenate(parts)

    def _refitted_outputs(self, converted: Graph) -> np.ndarray:
        """The outputs of ``converted`` with its linear layers refitted, cross-fitted: input
        ``i`` is predicted by the layers refitted on the inputs of the other parity."""
        from hec.recover import refit_to_reference

        assert self.original is not None
        x = np.asarray(self.x, dtype=np.float64)
        half = np.arange(len(x)) % 2 == 0
        if half.all() or not half.any():
            return self._outputs(converted)
        parts = {}
        for fit_on in (half, ~half):
            copy = converted.clone()
            refit_to_reference(copy, self.original, x[fit_on])
            parts[bool(fit_on[0])] = self._outputs(copy, x[~fit_on])
        out = np.empty((len(x), *parts[True].shape[1:]))
        out[~half], out[half] = parts[True], parts[False]
        return out

    def _record(
        self,
        regions: list[Region],
        cands: tuple[int, ...],
        chosen: _Evaluation,
        original: float,
        budget: float,
        met: bool,
        kept: list[tuple[int, int]],
    ) -> None:
        metric = "labels" if self.labels is not None else "agreement"
        for k, region in enumerate(regions):
            tried = [t for t in self.trace if t["activation"] == k or t["activation"] is None]
            attrs = {
                "degree": cands[chosen.levels[k]],
                "degree_by": "accuracy",
                "degree_candidates": tuple(cands),
                "accuracy_metric": metric,
                "accuracy_budget": budget,
                "accuracy_original": round(original, 6),
                "accuracy_chosen": round(chosen.accuracy, 6),
                "accuracy_samples": len(self.x),
                "budget_met": met,
                "tried_steps": tuple(t["step"] for t in tried),
                "tried_degrees": tuple(t["degrees"][k] for t in tried),
                "tried_accuracy": tuple(round(t["accuracy"], 6) for t in tried),
                "tried_kept": tuple(
                    int(t["activation"] is None or (t["step"], k) in kept) for t in tried
                ),
            }
            if self.refit:  # judged with the linear layers refitted (cross-fitted)
                attrs["accuracy_refit"] = True
            for op in region.ops:
                if op.kind == "activation":
                    op.attrs.update(attrs)


def _has_activation(region: Region) -> bool:
    return "activation" in region.kinds


def _set_degree(region: Region, degree: int) -> None:
    for op in region.ops:
        if op.kind == "activation":
            op.attrs["degree"] = degree


def _bump(levels: tuple[int, ...], i: int, by: int) -> tuple[int, ...]:
    return levels[:i] + (levels[i] + by,) + levels[i + 1 :]


def _merit(base: _Evaluation, new: _Evaluation, i: int) -> tuple[float, float, int, int]:
    """How good a raise is (larger is better): accuracy gained per added level, then the drop
    of the outputs' error per added level, then fewer products, then the earlier activation.
    A raise that adds no level costs nothing in depth: any gain makes it the best."""
    added = new.depth - base.depth
    gain = new.accuracy - base.accuracy
    drop = min(base.error, 1e30) - min(new.error, 1e30)
    if added > 0:
        return gain / added, drop / added, -(new.products - base.products), -i
    return (math.inf if gain > 0 else gain), drop, -(new.products - base.products), -i


def _relative_error(out: np.ndarray, reference: np.ndarray) -> float:
    """RMS of ``out - reference`` over RMS of ``reference`` (inf when ``out`` is not finite)."""
    if not np.all(np.isfinite(out)):
        return math.inf
    scale = float(np.sqrt(np.mean(reference**2))) or 1.0
    return float(np.sqrt(np.mean((out - reference) ** 2))) / scale


def _program_cost(graph: Graph) -> tuple[int, int]:
    """Levels the polynomials add along the longest path of ``graph``, and their products."""
    depth_of: dict[int, int] = {}
    products = 0
    for op in graph.ops:
        level = max((depth_of.get(id(v), 0) for v in op.inputs), default=0)
        if op.kind == "poly":
            degree = len(significant_coeffs(op.attrs["coeffs"])) - 1
            level += _poly_levels(op.attrs["coeffs"])
            products += series_products(degree)
        for r in op.results:
            depth_of[id(r)] = level
    return max((depth_of.get(id(v), 0) for v in graph.outputs), default=0), products


def _poly_levels(coeffs: Sequence[float]) -> int:
    from hec.passes.polyfit import Fit

    return Fit(np.asarray(coeffs), (-1.0, 1.0), 0.0, 0.0, 0.0).depth


def degree_summary(rows: list[dict[str, Any]]) -> str | None:
    """One line on the degrees the accuracy budget chose (``None`` if it chose none), e.g.
    ``activations: degrees 2,2,5,2 chosen for accuracy 97.5% (original 98.0%, budget 1.0
    point)``."""
    chosen = [r for r in rows if isinstance(r.get("degree_choice"), dict)]
    if not chosen:
        return None
    c = chosen[0]["degree_choice"]
    what = "accuracy" if c["metric"] == "labels" else "agreement with the original"
    original = f"original {100 * c['original']:.1f}%, " if c["metric"] == "labels" else ""
    points = "point" if c["budget"] == 1 else "points"
    degrees = ",".join(str(r["degree"]) for r in chosen)
    line = (
        f"activations: degrees {degrees} chosen for {what} {100 * c['chosen']:.1f}% "
        f"on {c['samples']} calibration inputs ({original}budget {c['budget']:g} {points})"
    )
    if not c["met"]:
        line += "; no assignment met the budget: the most accurate one was kept"
    return line


def fit_error_hint(rows: list[dict[str, Any]], labelled: int) -> str | None:
    """Why a ReLU model calibrated with labels got the fit-error rule's degrees (too few
    labelled inputs for the default accuracy budget), and how to ask for the budget; ``None``
    where that is not the reason."""
    functions = {r.get("replaces") for r in rows} - {"maxpool"}  # max pooling is no activation
    if not _budget_model(functions) or labelled >= MIN_LABELLED_INPUTS:
        return None
    return (
        f"activations: degrees from the fit-error budget: the accuracy budget is the default "
        f"with labels for at least {MIN_LABELLED_INPUTS:,} calibration inputs ({labelled} "
        f"given); --max-accuracy-loss 1 asks for it on these"
    )
