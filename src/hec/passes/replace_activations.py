"""replace-activations: non-polynomial activations become calibrated polynomials.

Each element-wise region holding a non-polynomial activation (ReLU, GELU as exported, SiLU as
``x·sigmoid(x)``, Tanh, ...) is a scalar function ``f`` of its root. Its root's values on the
calibration data (recorded beforehand with onnxruntime, see ``hec.calibrate``) give the interval
— observed range widened on each side by ``margin`` of its width or ``spread`` standard
deviations, whichever is more — and the weights of a least-squares Chebyshev fit
(``polyfit.py``), kept bounded ``tail`` of the half-width beyond the interval. The degree is
given (``degree``), or the one ``choose-degrees`` recorded on the region's activation op (its
``degree`` attribute, picked from an accuracy budget; the other ``CHOICE_ATTRS`` it recorded are
copied to the poly op for the report), or the lowest depth-efficient degree whose relative RMS
error meets ``error_budget``. MaxPool becomes AveragePool with the same window. The poly op
records ``source``, ``interval`` and the fit errors for the report; ``outside_fractions``
measures how often the converted graph leaves the intervals (the reports' ``inputs_outside``).

Preserves: approximately. Within the interval the error is the fit's (reported); a little
beyond it the polynomial stays near the function; farther out it diverges (docs/polynomials.md).
Accuracy is measured on labelled data by the caller. Requires: tensor graph and statistics for
every region root. Golden: ``tests/passes/golden/replace_activations.txt``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hec.errors import HecError
from hec.ir import Graph, Op, interpret
from hec.passes.elementwise import Region, find_regions, region_function, replace_region
from hec.passes.polyfit import Fit, depth_efficient_degrees, fit_chebyshev

if TYPE_CHECKING:  # calibrate_norms imports this module
    from hec.passes.calibrate_norms import CalibrationStats

__all__ = [
    "ReplaceActivations",
    "CHOICE_ATTRS",
    "ValueStats",
    "CalibrationMissing",
    "calibrated_interval",
    "outside_fractions",
]


# What ``choose-degrees`` records on an activation op besides ``degree``; copied to its poly op.
CHOICE_ATTRS = (
    "degree_by",
    "accuracy_refit",
    "degree_candidates",
    "accuracy_metric",
    "accuracy_budget",
    "accuracy_original",
    "accuracy_chosen",
    "accuracy_samples",
    "budget_met",
    "tried_steps",
    "tried_degrees",
    "tried_accuracy",
    "tried_kept",
)


class CalibrationMissing(HecError):
    """Non-polynomial ops and no calibration data (or none for one of them)."""


@dataclass(frozen=True, eq=False)
class ValueStats:
    """What calibration saw of one tensor: its range and a sample of its values."""

    name: str
    low: float
    high: float
    samples: np.ndarray
    count: int
    # for a max-pool input: per-channel (scale, shift) with max ≈ scale · average + shift
    max_from_average: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class ReplaceActivations:
    """Replace non-polynomial activations and max pooling.

    Args:
        stats: calibration statistics; the activations' entries are keyed by tensor (value) name.
        degree: polynomial degree for every activation; ``None`` picks per activation.
        error_budget: largest relative RMS error accepted when picking the degree.
        margin: fraction of the observed range added on each side of the interval.
        max_depth: the deepest series considered when picking the degree.
        spread: standard deviations of the observed values added on each side of the
            interval when that is more than ``margin`` gives (a narrow range seen on a few
            calibration inputs says little about the next input).
        tail: the fit also keeps the polynomial close to the function for inputs up to this
            fraction of the interval's half-width beyond either end (bounded, not exploding).
        tail_tolerance: how far from the function (a fraction of its range on the interval,
            beyond the fit's error inside) the polynomial may be on those tails.
        fits: fits already made, by (root, output, degree): ``choose-degrees`` converts the graph
            many times over with the same statistics and settings.
    """

    stats: CalibrationStats = field(default_factory=dict, hash=False, compare=False)
    degree: int | None = None
    error_budget: float = 0.05
    margin: float = 0.05
    max_depth: int = 5
    spread: float = 0.25
    tail: float = 0.25
    tail_tolerance: float = 1.0
    fits: dict[tuple[str, str, int], Fit] = field(
        default_factory=dict, hash=False, compare=False, repr=False
    )
    name: ClassVar[str] = "replace-activations"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        changed = False
        for op in [op for op in graph.ops if op.kind == "maxpool"]:
            self._replace_maxpool(graph, op)
            changed = True
        for region in find_regions(graph, lambda r: "activation" in r.kinds):
            fit = self.fit(region)
            sources = "+".join(
                dict.fromkeys(op.attrs["fn"] for op in region.ops if op.kind == "activation")
            )
            attrs = {
                "source": sources,
                "interval": tuple(round(v, 6) for v in fit.interval),
                "fit_rms": round(fit.rms_error, 8),
                "fit_max": round(fit.max_error, 8),
                "outside_err": round(_outside_error(fit, region_function(region)), 6),
            }
            for op in region.ops:  # the degree choice recorded by choose-degrees, if it ran
                if op.kind == "activation":
                    attrs.update({k: op.attrs[k] for k in CHOICE_ATTRS if k in op.attrs})
            replace_region(graph, region, fit.interval, fit.coeffs, attrs)
            changed = True
        return changed

    def _replace_maxpool(self, graph: Graph, op: Op) -> None:
        """Average pooling with the same window, times a calibrated per-channel affine map."""
        op.kind = "avgpool"
        op.attrs["replaces"] = "maxpool"
        st = self.stats.get(op.inputs[0].name)
        if not isinstance(st, ValueStats) or st.max_from_average is None:
            return
        scale, shift = st.max_from_average
        bcast = (-1,) + (1,) * (len(op.result.shape) - 1)
        users = list(op.result.uses)
        fix = Op(
            "scale_shift",
            [op.result],
            [op.result.type],
            {"replaces": "maxpool"},
            {"scale": scale.reshape(bcast), "shift": shift.reshape(bcast)},
            op.origin,
            [f"{op.result.name}/max"],
        )
        graph.ops.insert(graph.ops.index(op) + 1, fix)
        for user in users:
            user.inputs = [fix.result if v is op.result else v for v in user.inputs]
            fix.result.uses.append(user)
        op.result.uses = [fix]
        graph.outputs = [fix.result if v is op.result else v for v in graph.outputs]

    def fit(self, region: Region) -> Fit:
        st = self.stats.get(region.root.name)
        if not isinstance(st, ValueStats):
            raise CalibrationMissing(
                f"node '{region.origin}': {_describe(region)} needs a polynomial replacement "
                f"fitted on calibration data; pass --calib DATA.npz (array x of inputs)"
            )
        interval = calibrated_interval(st, self.margin, self.spread)
        f = region_function(region)
        chosen = [
            op.attrs["degree"]
            for op in region.ops
            if op.kind == "activation" and "degree" in op.attrs
        ]
        degree = chosen[0] if chosen and self.degree is None else self.degree
        if degree is None:  # the degree the interval needs (tails do not cost depth)
            degrees = depth_efficient_degrees(self.max_depth)
            degree = next(
                (
                    d
                    for d in degrees
                    if fit_chebyshev(f, st.samples, interval, d).relative_error <= self.error_budget
                ),
                degrees[-1],  # none is within budget: the deepest
            )
        key = (region.root.name, region.output.name, degree)
        if key not in self.fits:
            self.fits[key] = fit_chebyshev(
                f, st.samples, interval, degree, tail=self.tail, tail_tolerance=self.tail_tolerance
            )
        return self.fits[key]


def calibrated_interval(st: ValueStats, margin: float, spread: float) -> tuple[float, float]:
    """The observed range widened on each side by ``margin`` of its width or ``spread``
    standard deviations of the values, whichever is more."""
    width = max(st.high - st.low, 1e-6)
    sigma = float(np.std(st.samples)) if np.size(st.samples) else 0.0
    m = max(margin * width, spread * sigma)
    return st.low - m, st.high + m


def outside_fractions(graph: Graph, x: np.ndarray, batch: int = 256) -> dict[str, Any]:
    """How often ``x`` drives a fitted polynomial outside its interval, in the converted graph.

    The intervals come from the original model's values; the converted graph feeds each
    polynomial the previous polynomials' approximations, which can land outside. Counted per
    input as well as per value: one value outside is enough for the polynomial to go wrong on
    that input (and far outside, for CKKS to overflow). Returns ``{"samples": n,
    "per_activation": {origin: {"outside": inputs with a value outside, "values": fraction of
    its input values outside}}, "inputs": fraction of the inputs with any value outside any
    interval, "values": fraction of all values}``.
    """
    polys = [op for op in graph.ops if op.kind == "poly" and "source" in op.attrs]
    n = len(x)
    if not polys or not n:
        return {"samples": n, "per_activation": {}, "inputs": 0.0, "values": 0.0}
    names = {op.inputs[0].name: op.origin for op in polys}
    probe = graph.clone()
    probe.outputs = [v for v in probe.values() if v.name in names]
    values = {v.name: 0 for v in probe.outputs}
    hits = {v.name: np.zeros(n, dtype=bool) for v in probe.outputs}
    sizes = {v.name: math.prod(v.shape) for v in probe.outputs}
    for start in range(0, n, batch):
        part = interpret(probe, np.asarray(x[start : start + batch], dtype=np.float64))
        for v, t in zip(probe.outputs, part, strict=True):
            out = np.abs(t.reshape(len(t), -1)) > 1.0 + 1e-9  # t in [-1, 1] is the interval
            values[v.name] += int(out.sum())
            hits[v.name][start : start + len(t)] = out.any(axis=1)
    per = {
        names[k]: {"outside": int(hits[k].sum()), "values": values[k] / (n * sizes[k])}
        for k in values
    }
    any_input = np.logical_or.reduce(list(hits.values()))
    total = sum(values.values()) / (n * sum(sizes.values()))
    return {"samples": n, "per_activation": per, "inputs": float(any_input.mean()), "values": total}


def _outside_error(fit: Fit, f) -> float:
    """Largest |p - f| within 10% of the interval's width beyond either edge."""
    a, b = fit.interval
    w = 0.1 * (b - a)
    x = np.concatenate([np.linspace(a - w, a, 64), np.linspace(b, b + w, 64)])
    return float(np.abs(fit(x) - f(x)).max())


def _describe(region: Region) -> str:
    fns = [op.attrs["fn"] for op in region.ops if op.kind == "activation"]
    return "activation " + "+".join(dict.fromkeys(fns))
