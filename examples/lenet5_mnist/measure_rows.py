"""What ``measure_degrees.py`` and ``measure_refit.py`` record of each compiled configuration:
one results row from its report and its simulated predictions, and the line they print."""

from __future__ import annotations

from typing import Any

import numpy as np


def config_row(
    art, fields: dict, seconds: float, pred: np.ndarray, test_y: np.ndarray, ort_pred: np.ndarray
) -> dict[str, Any]:
    """The row of one configuration: chosen degrees and levels, the CKKS program's size and
    estimated time, calibration accuracy, simulated test accuracy and agreement."""
    r = art.report
    row = {
        "options": fields,
        "degrees": [a["degree"] for a in r.activations],
        "activation_levels": [a["depth"] for a in r.activations],
        "depth": r.ckks.depth,
        "ring_dim": r.ckks.ring_dim,
        "rotations": r.totals.rotations,
        "rotation_keys": r.totals.rotation_keys,
        "estimated_ms_per_image": r.estimates.ms_per_image,
        "calibration_accuracy": r.accuracy,
        "simulated_test_accuracy": float(np.mean(pred == test_y)),
        "simulated_test_agreement_with_onnxruntime": float(np.mean(pred == ort_pred)),
        "compile_seconds": round(seconds, 1),
    }
    if "degree_choice" in r.activations[0]:
        row["degree_choice"] = [a["degree_choice"] for a in r.activations]
    return row


def print_row(name: str, row: dict[str, Any], ort_accuracy: float, tail: str = "") -> None:
    print(
        f"{name}: degrees {row['degrees']}, depth {row['depth']}, ring {row['ring_dim']}, "
        f"{row['rotations']} rotations, ~{row['estimated_ms_per_image'] / 1e3:.1f} s/image "
        f"estimated; test accuracy simulated {row['simulated_test_accuracy']:.3f} "
        f"(onnxruntime {ort_accuracy:.3f}){tail}",
        flush=True,
    )
