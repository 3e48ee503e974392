"""Options and output shared by ``hec compile --calib`` and ``hec optimize``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hec.cli.format import print_table

__all__ = ["conversion_options", "print_conversion"]


def conversion_options(fn: Callable) -> Callable:
    """``--calib``, ``--degree``, ``--error-budget``, ``--margin``."""
    for option in reversed([
        click.option("--calib", type=click.Path(path_type=Path), default=None,
                     help="Calibration .npz (array x, optional labels y); needed when the "
                          "model has ReLU, GELU, SiLU, Sigmoid, Tanh, Softplus or MaxPool."),
        click.option("--degree", type=click.IntRange(2, 119), default=None,
                     help="Polynomial degree for every activation (default: the lowest "
                          "depth-efficient degree meeting --error-budget)."),
        click.option("--error-budget", type=click.FloatRange(0, min_open=True), default=0.05,
                     show_default=True,
                     help="Largest relative RMS error of an activation's polynomial."),
        click.option("--margin", type=click.FloatRange(0), default=0.05, show_default=True,
                     help="Widen each observed activation range by this fraction per side."),
    ]):
        fn = option(fn)
    return fn


def print_conversion(layers: list[dict[str, Any]], accuracy: dict[str, Any] | None) -> None:
    """The per-activation table and the accuracy line."""
    if not layers:
        return
    rows = []
    for r in layers:
        if r["replaces"] == "maxpool":
            rows.append([r["name"][:40], "maxpool", "avgpool (approximation)", "", "0", "", "",
                         ""])
            continue
        a, b = r["interval"]
        outside = r.get("outside_fraction")
        rows.append([r["name"][:40], r["replaces"], f"[{a:.3g}, {b:.3g}]", r["degree"],
                     r["depth"], f"{r['fit_rms']:.2e}", f"{r['fit_max']:.2e}",
                     "" if outside is None else f"{100 * outside:.2f}%"])
    print_table(["layer", "replaces", "interval", "degree", "levels", "rms err", "max err",
                 "outside"], rows)
    if accuracy:
        click.echo(f"accuracy on {accuracy['samples']} labelled inputs: original "
                   f"{100 * accuracy['original']:.2f}%, converted "
                   f"{100 * accuracy['converted']:.2f}% (same prediction on "
                   f"{100 * accuracy['agreement']:.1f}%)")
