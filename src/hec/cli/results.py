"""What the commands that end with results print: outputs, predictions, agreement, accuracy.

``hec run``, ``hec decrypt`` and ``hec query`` share these, so a one-output model is read the same
way (a threshold, ``hec.metrics``) and failed inputs are shown the same way everywhere.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from hec.cli.format import format_row, print_table
from hec.errors import InputError

__all__ = ["load_inputs", "Predictor", "print_results", "print_accuracy", "print_decrypted"]

_SHOWN = 10  # rows of logits printed before summarizing


def load_inputs(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An ``.npy`` array, or the inputs ``x`` and labels ``y`` (if any) of an ``.npz`` dataset
    (as the examples ship)."""
    if path.suffix == ".npz":
        from hec.calibrate import load_dataset

        return load_dataset(path, what="--input")
    if not path.is_file():
        raise InputError(f"{path}: no such file; give an .npy array of inputs")
    try:
        return np.load(path, allow_pickle=False), None
    except Exception as exc:
        raise InputError(f"{path}: not a readable .npy array ({type(exc).__name__})") from None


class Predictor:
    """Outputs → classes, the one way (``hec.metrics.predictions``), with this run's settings."""

    def __init__(self, probability: bool, threshold: float | None) -> None:
        self.probability, self.threshold = probability, threshold

    def __call__(self, outputs: np.ndarray) -> np.ndarray:
        from hec.metrics import predictions

        return predictions(outputs, self.probability, self.threshold)


def print_accuracy(
    logits: np.ndarray,
    references: dict[str, np.ndarray],
    labels: np.ndarray,
    predict: dict[str, Predictor],
    failed: dict[int, str],
    mode: str,
) -> None:
    """Accuracy on the labelled inputs (of this run, and of each reference on the same
    inputs); failed inputs are left out, and the line says how many."""
    from hec.metrics import as_classes

    if len(labels) != len(logits):
        click.echo(f"({len(labels)} labels for {len(logits)} inputs: no accuracy)")
        return
    keep = np.array([i not in failed for i in range(len(logits))])
    truth = as_classes(labels)[keep]
    if not keep.any():
        return
    parts = [f"{mode} {100 * np.mean(predict['program'](logits[keep]) == truth):.2f}%"]
    for name, ref in references.items():
        parts.append(f"{name} {100 * np.mean(predict[name](ref[keep]) == truth):.2f}%")
    left = f" ({len(failed)} failed, left out)" if failed else ""
    click.echo(f"accuracy on {int(keep.sum())} labelled inputs{left}: " + ", ".join(parts))


def print_results(
    logits: np.ndarray,
    references: dict[str, np.ndarray],
    precision: np.ndarray | None,
    predict: dict[str, Predictor],
    failed: dict[int, str],
) -> None:
    flat = logits.reshape(len(logits), -1)
    refs = {name: ref.reshape(len(ref), -1) for name, ref in references.items()}
    word = "argmax" if flat.shape[1] > 1 else "class"  # one output: a threshold, see metrics
    header = ["#", word]
    for name in refs:
        header += [name, "max |diff|"]
    if precision is not None:
        header.append("precision bits")
    header.append("logits")
    rows = []
    ours = predict["program"](flat)
    theirs = {name: predict[name](ref) for name, ref in refs.items()}
    for i in range(min(len(flat), _SHOWN)):
        bad = i in failed
        row: list = [i, "failed" if bad else int(ours[i])]
        for name, ref in refs.items():
            row += [int(theirs[name][i]), "" if bad else f"{np.abs(flat[i] - ref[i]).max():.2e}"]
        if precision is not None:
            row.append("" if bad else f"{precision[i]:.1f}")
        row.append("(lost: precision/overflow)" if bad else format_row(flat[i]))
        rows.append(row)
    print_table(header, rows)
    if len(flat) > _SHOWN:
        click.echo(f"... {len(flat) - _SHOWN} more rows (use --output to save all)")
    keep = np.array([i not in failed for i in range(len(flat))])
    for name, ref in refs.items():
        agree = int((ours[keep] == theirs[name][keep]).sum())
        diff = np.abs(flat[keep] - ref[keep]).max() if keep.any() else float("nan")
        click.echo(f"{word} agrees with {name} on {agree}/{int(keep.sum())}; max |diff| {diff:.2e}")


def print_decrypted(art, dec) -> None:
    """A decrypted result (``Client.decrypt*``): its logits and predictions, then the model's
    own outputs when a client tail ran (Softmax, labels, ...)."""
    from hec.cli.tail_output import print_model_outputs
    from hec.metrics import artifact_output_is_probability

    predict = {"program": Predictor(artifact_output_is_probability(art), None)}
    print_results(dec.values, {}, np.full(len(dec.values), dec.precision_bits), predict, {})
    print_model_outputs(art, dec.outputs)
