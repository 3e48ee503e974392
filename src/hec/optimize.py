"""HE-friendly conversion: calibrate, replace activations, measure what it cost in accuracy.

``hec compile --calib`` runs it implicitly; ``hec optimize`` runs it as an ONNX-to-ONNX step.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import onnx

from hec.calibrate import calibrate, check_samples
from hec.frontend.reference import onnxruntime_outputs
from hec.ir import NON_POLYNOMIAL_KINDS, Graph, interpret
from hec.options import CompileOptions
from hec.passes import PassManager, ValueStats, he_friendly_pipeline
from hec.passes.calibrate_norms import CalibrationStats, NormStats
from hec.passes.replace_activations import CalibrationMissing
from hec.progress import ProgressFn, no_progress
from hec.train import require_labels

__all__ = [
    "calibrated_stats",
    "make_he_friendly",
    "conversion_layers",
    "accuracy",
    "inputs_outside",
]


def calibrated_stats(
    model: str | os.PathLike | onnx.ModelProto,
    graph: Graph,
    calibration: np.ndarray | None,
    progress: ProgressFn = no_progress,
) -> dict[str, ValueStats | NormStats]:
    """The calibration statistics ``he_friendly_pipeline`` needs to replace ``graph``'s
    non-polynomial ops (``{}`` when it has none); refuses a graph that has some without
    calibration data."""
    pending = [op for op in graph.ops if op.kind in NON_POLYNOMIAL_KINDS]
    if not pending:
        return {}
    if calibration is None:
        op = pending[0]
        what = op.attrs.get("fn", op.attrs.get("source", op.kind))
        raise CalibrationMissing(
            f"node '{op.origin}': {what} is not a polynomial; give calibration data with "
            f"--calib DATA.npz (array x of typical inputs, optionally labels y) so hec can "
            f"replace it ({len(pending)} such op(s) in the model)"
        )
    check_samples(calibration, graph, "calibration data (--calib)")
    return calibrate(model, graph, calibration, progress=progress)


def make_he_friendly(
    model: str | os.PathLike | onnx.ModelProto,
    graph: Graph,
    options: CompileOptions,
    calibration: np.ndarray | None,
    progress: ProgressFn = no_progress,
) -> dict[str, ValueStats | NormStats]:
    """Rewrite ``graph`` in place so CKKS can evaluate it; returns the calibration statistics."""
    stats = calibrated_stats(model, graph, calibration, progress)
    passes = he_friendly_pipeline(options, stats or None, calibration, progress=progress)
    PassManager(passes, options.dump_ir_after).run(graph)
    return stats


def conversion_layers(graph: Graph, stats: CalibrationStats) -> list[dict[str, Any]]:
    """One row per replaced op: what it was, interval, degree, depth, fit errors, and how the
    degree was chosen when the accuracy budget chose it (``degree_choice``)."""
    from hec.passes.polyfit import Fit

    rows = []
    for op in graph.ops:
        if op.kind == "poly" and "source" in op.attrs:
            root = (
                op.inputs[0].producer.inputs[0]
                if op.inputs[0].producer is not None and op.inputs[0].producer.kind == "scale_shift"
                else op.inputs[0]
            )
            st = stats.get(root.name)
            fit = Fit(
                np.asarray(op.attrs["coeffs"]),
                tuple(op.attrs["interval"]),
                op.attrs["fit_rms"],
                op.attrs["fit_max"],
                0.0,
            )
            rows.append(
                {
                    "name": op.origin,
                    "replaces": op.attrs["source"],
                    "root": root.name,
                    "observed": [st.low, st.high] if isinstance(st, ValueStats) else None,
                    "interval": list(op.attrs["interval"]),
                    "degree": fit.degree,
                    "depth": fit.depth,
                    "fit_rms": op.attrs["fit_rms"],
                    "fit_max": op.attrs["fit_max"],
                    "outside_err": op.attrs["outside_err"],
                    **_degree_choice(op.attrs),
                }
            )
        elif op.kind == "avgpool" and op.attrs.get("replaces") == "maxpool":
            rows.append(
                {
                    "name": op.origin,
                    "replaces": "maxpool",
                    "by": "avgpool",
                    "kernel": list(op.attrs["kernel"]),
                    "depth": 0,
                }
            )
    from hec.passes.calibrate_norms import normalization_rows

    return rows + normalization_rows(graph)  # normalization layers: calibrated constants


def _degree_choice(attrs: dict[str, Any]) -> dict[str, Any]:
    """``{"degree_choice": ...}`` when ``choose-degrees`` picked the poly op's degree: the
    budget, the accuracy of the original and of the chosen conversion on the calibration
    inputs, the candidate degrees, and every trial of this activation's degree (search step,
    degree, the network's accuracy, whether the step kept it); else ``{}``."""
    if attrs.get("degree_by") != "accuracy":
        return {}
    tried = zip(
        attrs["tried_steps"],
        attrs["tried_degrees"],
        attrs["tried_accuracy"],
        attrs["tried_kept"],
        strict=True,
    )
    return {
        "degree_choice": {
            "by": "accuracy",
            "metric": attrs["accuracy_metric"],
            "budget": attrs["accuracy_budget"],
            "samples": attrs["accuracy_samples"],
            "original": attrs["accuracy_original"],
            "chosen": attrs["accuracy_chosen"],
            "met": bool(attrs["budget_met"]),
            "candidates": list(attrs["degree_candidates"]),
            "tried": [
                {"step": s, "degree": d, "accuracy": a, "kept": bool(k)} for s, d, a, k in tried
            ],
        }
    }


def inputs_outside(
    graph: Graph, rows: list[dict[str, Any]], x: np.ndarray, what: str
) -> dict[str, float]:
    """Add to each polynomial row, under ``inputs_outside[what]``, how many inputs of ``x`` put
    at least one value outside the polynomial's interval in the converted ``graph`` (and the
    fraction of its values outside); return the shares over all polynomials (``inputs``,
    ``values``). Measured by ``outside_fractions``, where the encrypted program evaluates each
    polynomial: after the previous polynomials' approximations (and any fine-tuning or pruning).
    """
    from hec.passes.replace_activations import outside_fractions

    found = outside_fractions(graph, x)
    n = found["samples"]
    for row in rows:
        hit = found["per_activation"].get(row.get("name"))
        if hit is not None and "interval" in row:
            row.setdefault("inputs_outside", {})[what] = {
                "inputs": n,
                "outside": hit["outside"],
                "fraction": hit["outside"] / n,
                "values": hit["values"],
            }
    return {"inputs": found["inputs"], "values": found["values"]}


def accuracy(
    model: str | os.PathLike | onnx.ModelProto,
    graph: Graph,
    x: np.ndarray,
    y: np.ndarray,
    probability: bool | None = None,
) -> dict[str, float]:
    """Top-1 accuracy of the original model (onnxruntime) and of the converted graph.

    Predictions as ``hec.metrics.predictions``; ``probability`` (one output per input: is it
    a probability?) defaults to whether the ONNX model ends with a Sigmoid.
    """
    from hec.metrics import as_classes, ends_with_sigmoid, predictions

    if probability is None:
        probability = ends_with_sigmoid(model)
    original = predictions(onnxruntime_outputs(model, x), probability)
    converted = predictions(interpret(graph, x)[0], probability)
    labels = as_classes(y)
    return {
        "original": float(np.mean(original == labels)),
        "converted": float(np.mean(converted == labels)),
        "agreement": float(np.mean(original == converted)),
        "samples": int(len(x)),
    }


@dataclass
class FineTune:
    """fine-tune: train an HE-friendly graph's weights and polynomial coefficients on labelled
    data (``hec.train.fine_tune``, needs ``hec[train]``), run by the pass manager like any pass.
    ``report``: epochs, samples and the loss of each epoch."""

    epochs: int
    learning_rate: float
    train: tuple[np.ndarray, np.ndarray]
    progress: ProgressFn = no_progress
    range_penalty: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)
    name: ClassVar[str] = "fine-tune"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        from hec.train.fine_tune import fine_tune

        x, y = self.train
        losses = fine_tune(
            graph,
            x,
            y,
            self.epochs,
            self.learning_rate,
            progress=self.progress,
            range_penalty=self.range_penalty,
        )
        self.report = {
            "epochs": self.epochs,
            "samples": int(len(x)),
            "losses": [round(v, 5) for v in losses],
            **({"range_penalty": self.range_penalty} if self.range_penalty else {}),
        }
        return True


@dataclass
class MeasureAccuracy:
    """measure-accuracy: an analysis (changes nothing): ``accuracy`` of the ONNX ``model`` and
    of the graph as it is at this point of the pipeline, on labelled ``data``."""

    model: str | os.PathLike | onnx.ModelProto
    data: tuple[np.ndarray, np.ndarray]
    result: dict[str, float] = field(default_factory=dict)
    name: ClassVar[str] = "measure-accuracy"
    dialect: ClassVar[str] = "tensor"

    def run(self, graph: Graph) -> bool:
        self.result = accuracy(self.model, graph, *self.data)
        return False


def optimize(
    model: str | os.PathLike | onnx.ModelProto,
    out_path: str | os.PathLike,
    calibration: np.ndarray,
    labels: np.ndarray | None = None,
    options: CompileOptions | None = None,
    evaluation: tuple[np.ndarray, np.ndarray | None] | None = None,
    progress: ProgressFn = no_progress,
    fine_tune_epochs: int = 0,
    train: tuple[np.ndarray, np.ndarray | None] | None = None,
    learning_rate: float = 1e-3,
    prune: Any = None,
    range_penalty: float = 0.0,
) -> dict[str, Any]:
    """ONNX → HE-friendly ONNX. Returns the report (also written next to ``out_path``).

    Accuracy is measured on ``evaluation`` (inputs, labels) when given, else on the
    calibration data; the inputs that put a polynomial's input outside its interval in the
    final converted graph are counted on both (``inputs_outside`` in each polynomial row). With
    ``fine_tune_epochs``, the converted network (weights and polynomial coefficients) is then
    trained on ``train`` (default: the labelled calibration data); needs ``hec[train]``;
    ``range_penalty`` (``fine_tune``'s) keeps the polynomials' inputs in their intervals.
    With ``prune`` (``hec.prune.PruneOptions``), the converted graph is then pruned in blocks
    shaped by the packing and recovered (``hec.prune``); the report gets a ``pruning`` part.
    """
    import json
    from pathlib import Path

    from hec.frontend import build_graph, load_model
    from hec.frontend.client_tail import append_tail, head_reference, split_tail
    from hec.frontend.export import export_onnx

    options = options or CompileOptions()
    split = split_tail(load_model(model))  # Softmax, labels, ...: the client's, kept as they are
    graph = build_graph(split.head)
    source, model = model, head_reference(split, model)  # compared with the converted graph
    check_samples(calibration, graph, "calibration data (--calib)")
    if evaluation is not None:
        check_samples(evaluation[0], graph, "evaluation data (--eval)")
    if train is not None:
        check_samples(train[0], graph, "training data (--train)")
    x_train, y_train = train if train is not None else (calibration, labels)
    if fine_tune_epochs or (prune is not None and prune.fine_tune_epochs):
        y_train = require_labels(y_train)
    stats = calibrated_stats(model, graph, calibration, progress)
    x_eval, y_eval = evaluation if evaluation is not None else (calibration, labels)
    measured = (
        [MeasureAccuracy(model, (x_eval, y_eval)) for _ in range(2)] if y_eval is not None else []
    )
    tuning = pruning = None
    if fine_tune_epochs:
        assert y_train is not None  # required above
        tuning = FineTune(
            fine_tune_epochs, learning_rate, (x_train, y_train), progress, range_penalty
        )
    if prune is not None:
        from hec.prune import Prune
        from hec.search import Search

        pruning = Prune(
            prune, calibration, Search(options), (x_eval, y_eval), (x_train, y_train), progress
        )
    PassManager(
        [
            # degrees from the accuracy budget, polynomials, norm constants
            *he_friendly_pipeline(options, stats or None, calibration, labels, progress),
            *measured[:1],  # the converted model's accuracy (with labels)
            *([tuning] if tuning else []),  # weights and coefficients trained (hec[train])
            *(measured[1:] if tuning else []),  # the accuracy after training
            *([pruning] if pruning else []),  # packing-aware block pruning, then recovery
        ],
        dump_dir=options.dump_ir_after,
    ).run(graph)
    rows = conversion_layers(graph, stats)
    report: dict[str, Any] = {
        "model": str(source) if not isinstance(source, onnx.ModelProto) else "<in-memory model>",
        "output": str(out_path),
        "layers": rows,
        "depth_of_activations": sum(r["depth"] for r in rows),
    }
    if measured:
        report["accuracy"] = measured[0].result
    if tuning is not None:
        report["fine_tune"] = tuning.report
        if measured:
            report["accuracy_before_fine_tune"] = measured[0].result
            report["accuracy"] = measured[1].result
    plan = None
    if pruning is not None:
        report["pruning"], plan = pruning.report, pruning.plan
        report["search"] = {"lowerings": pruning.search.lowerings}  # counting the programs
    inputs_outside(graph, rows, calibration, "calibration")  # the final graph's
    if evaluation is not None:
        inputs_outside(graph, rows, x_eval, "evaluation")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    exported = append_tail(export_onnx(graph), split)
    if plan is not None:  # what the pruning counted: `hec compile` lowers exactly this
        from hec.plan import write_plan

        write_plan(exported, plan)
        report["plan"] = dataclasses.asdict(plan)
    onnx.save(exported, str(out))
    out.with_suffix(".report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
