"""Options and output shared by ``hec compile --calib`` and ``hec optimize``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hec.cli.format import print_table

__all__ = [
    "conversion_options",
    "print_conversion",
    "prune_options",
    "prune_settings",
    "print_pruning",
]


def conversion_options(fn: Callable) -> Callable:
    """``--calib``, ``--degree``, ``--error-budget``, ``--max-accuracy-loss``, ``--margin``,
    ``--norm-tolerance``."""
    for option in reversed(
        [
            click.option(
                "--calib",
                type=click.Path(path_type=Path),
                default=None,
                help="Calibration .npz (array x, optional labels y); needed when the "
                "model has a non-polynomial activation (ReLU, GELU, Clip, ...), MaxPool or a "
                "normalization layer (Layer/Instance/GroupNormalization).",
            ),
            click.option(
                "--degree",
                type=click.IntRange(2, 119),
                default=None,
                help="Polynomial degree for every activation (default: chosen per activation "
                "by --max-accuracy-loss or --error-budget).",
            ),
            click.option(
                "--error-budget",
                type=click.FloatRange(0, min_open=True),
                default=None,
                help="Give each activation the lowest depth-efficient degree whose polynomial's "
                "relative RMS error is at most this (default 0.05 unless --max-accuracy-loss is "
                "given).",
            ),
            click.option(
                "--max-accuracy-loss",
                type=click.FloatRange(0),
                default=None,
                metavar="POINTS",
                help="Choose each activation's degree for the cheapest program whose top-1 "
                "accuracy on the --calib data (its labels y, else agreement with the original "
                "model) is at most POINTS percentage points below the original's, the "
                "following layers refitted by least squares. Default: 1 point for a ReLU "
                "model whose --calib data has labels for at least 1,000 inputs (on fewer, a "
                "budget met on them can be missed on new data); otherwise the fit-error "
                "budget. --degree or --error-budget override it.",
            ),
            click.option(
                "--margin",
                type=click.FloatRange(0),
                default=0.05,
                show_default=True,
                help="Widen each observed activation range by this fraction per side.",
            ),
            click.option(
                "--norm-tolerance",
                type=click.FloatRange(0, min_open=True),
                default=0.1,
                show_default=True,
                help="Largest relative RMS error of a normalization layer (Layer/Instance/"
                "GroupNormalization) with calibrated constants for its statistics.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def print_conversion(layers: list[dict[str, Any]], accuracy: dict[str, Any] | None) -> None:
    """The per-activation table and the accuracy line."""
    if not layers:
        return
    rows = []
    for r in layers:
        if r["replaces"] == "maxpool":
            rows.append([r["name"][:40], "maxpool", "avgpool (approximation)", "", "0", "", "", ""])
            continue
        if "relative_error" in r:  # a normalization layer with calibrated constants
            by, err = "constants (calibrated)", f"{r['relative_error']:.2e}"
            rows.append([r["name"][:40], r["replaces"], by, "", "0", err, "", ""])
            continue
        a, b = r["interval"]
        outside = r.get("inputs_outside", {})  # inputs with a value outside the interval
        rows.append(
            [
                r["name"][:40],
                r["replaces"],
                f"[{a:.3g}, {b:.3g}]",
                r["degree"],
                r["depth"],
                f"{r['fit_rms']:.2e}",
                f"{r['fit_max']:.2e}",
                " / ".join(f"{100 * outside[k]['fraction']:.1f}%" for k in outside),
            ]
        )
    print_table(
        [
            "layer",
            "replaces",
            "interval",
            "degree",
            "levels",
            "rms err",
            "max err",
            "inputs outside",
        ],
        rows,
    )
    shares = next((r["inputs_outside"] for r in layers if r.get("inputs_outside")), None)
    if shares:
        click.echo(
            "inputs outside: share of the "
            + " / ".join(f"{v['inputs']} {k}" for k, v in shares.items())
            + " inputs with a value outside the interval"
        )
    if accuracy:
        click.echo(
            f"accuracy on {accuracy['samples']} labelled inputs: original "
            f"{100 * accuracy['original']:.2f}%, converted "
            f"{100 * accuracy['converted']:.2f}% (same prediction on "
            f"{100 * accuracy['agreement']:.1f}%)"
        )


readout_option = click.option(
    "--readout",
    type=click.Choice(["matrix", "copies", "auto"]),
    default="matrix",
    show_default=True,
    help="How the output layer is computed (slot packing): matrix (a linear map like the "
    "others); copies (the client packs one copy of the input per output and each copy "
    "computes one output: about log2(features) rotations however dense the layer; needs a "
    "model small enough for the copies, e.g. after pruning); auto: the faster estimate. "
    "A --rotation-budget counts the program this readout makes.",
)


def prune_options(fn: Callable) -> Callable:
    """``--prune``, ``--rotation-budget``, ``--prune-per-layer``, ``--prune-score``,
    ``--recover/--no-recover``."""
    for option in reversed(
        [
            click.option(
                "--prune",
                "prune",
                type=click.FloatRange(0, 1, max_open=True),
                default=None,
                help="Prune this fraction of the conv/matmul weights in blocks shaped by "
                "the packing (diagonals for slots, filters for batch); needs --calib.",
            ),
            click.option(
                "--rotation-budget",
                type=click.IntRange(0),
                default=None,
                help="Slot packing: prune diagonals until the program needs at most this "
                "many rotations (with --prune S: and at least S of the weights).",
            ),
            click.option(
                "--prune-per-layer",
                is_flag=True,
                help="Reach the --prune sparsity in every layer, not over all weights.",
            ),
            click.option(
                "--prune-score",
                type=click.Choice(["calibrated", "magnitude"]),
                default="calibrated",
                show_default=True,
                help="Rank blocks by their output error on the calibration data, or by "
                "weight magnitude.",
            ),
            click.option(
                "--recover/--no-recover",
                default=True,
                show_default=True,
                help="Refit the surviving weights by least squares on the calibration "
                "data after pruning.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def prune_settings(
    prune: float | None,
    rotation_budget: int | None,
    per_layer: bool,
    score: str,
    recover: bool,
    packing: str,
    epochs: int = 0,
    lr: float = 1e-3,
):
    """The ``PruneOptions`` the flags ask for, or ``None`` (no pruning)."""
    if prune is None and rotation_budget is None:
        return None
    from hec.prune import PruneOptions

    return PruneOptions(
        prune if prune is not None else 0.0,
        "batch" if packing == "batch" else "slots",
        rotation_budget,
        per_layer,
        recover,
        epochs,
        lr,
        score,
    )


def print_pruning(report: dict[str, Any]) -> None:
    """Per layer: blocks kept, weights pruned and the compiled counts before -> after."""
    batch = report["packing"] == "batch"
    keys = (
        (("scalar_multiplies", "sc-mul"), ("ciphertexts", "cts"))
        if batch
        else (
            ("plaintext_multiplies", "pt-mul"),
            ("rotations", "rot"),
            ("plaintext_bytes", "pt MB"),
        )
    )
    rows = []
    for r in report["layers"]:
        row = [
            r["name"][:28],
            f"{r['blocks_kept']}/{r['blocks']} {r['block']}s",
            f"{100 * r['weights_pruned'] / r['weights']:.1f}%",
            f"{r['reconstruction_error']['pruned']:.3f}->"
            f"{r['reconstruction_error']['recovered']:.3f}",
        ]
        for key, _ in keys:
            if "before" in r:
                a, b = r["before"][key], r["after"][key]
                if key == "plaintext_bytes":
                    a, b = f"{a / 1e6:.0f}", f"{b / 1e6:.0f}"
                row.append(f"{a}->{b}")
        rows.append(row)
    heads = ["layer", "blocks kept", "pruned", "rel. error"]
    if report["layers"] and "before" in report["layers"][0]:
        heads += [h for _, h in keys]
    print_table(heads, rows)
    click.echo(
        f"pruned {100 * report['sparsity']:.1f}% of {report['weights']} weights "
        f"({report['packing']} blocks)"
    )
    if "rotation_budget_from_sparsity" in report:
        d = report["rotation_budget_from_sparsity"]
        click.echo(
            f"rotation budget from --prune {d['sparsity']:g}: {d['rotation_budget']} of the "
            f"unpruned program's {d['unpruned_rotations']} rotations (sqrt(1 - S) of them)"
        )
    if "structures" in report:
        st = report["structures"]
        loss = st["calibration_loss"]
        click.echo(
            "structure kept: "
            + (
                "hidden dense layers at one input a neuron"
                + (
                    f", convolutions at {st['channels']} channels, one input channel each"
                    if "channels" in st
                    else ""
                )
                if st["kept"] == "one_input_neurons"
                else "as pruned"
            )
            + f" (calibration loss {loss['one_input_neurons']} one input a neuron, "
            f"{loss['as_is']} as pruned)"
        )
    if "totals" in report:
        b, a = report["totals"]["before"], report["totals"]["after"]
        what = (
            ["he_operations", "max_live_ciphertexts", "peak_bytes"]
            if batch
            else ["rotations", "plaintext_multiplies", "rotation_keys"]
        )
        click.echo(
            "compiled: "
            + ", ".join(
                f"{k.replace('_', ' ')} {_figure(k, b[k])} -> {_figure(k, a[k])} "
                f"({_fewer(b[k], a[k])}{_times(b[k], a[k]) if k == 'peak_bytes' else ''})"
                for k in what
            )
            + f"; estimated {b['estimated_seconds']} s -> {a['estimated_seconds']} s"
        )
    if "accuracy" in report:
        acc = report["accuracy"]
        # with fine-tuning, what the refit alone left as well
        refit = report.get("accuracy_before_fine_tune")
        after = f"after the refit {100 * refit:.2f}%, fine-tuned" if refit is not None else "after"
        click.echo(
            f"accuracy on {acc['samples']} labelled inputs: before pruning "
            f"{100 * acc['before']:.2f}%, {after} {100 * acc['after']:.2f}%"
        )


def _fewer(before: float, after: float) -> str:
    return f"{100 * (1 - after / before):.1f}% fewer" if before else "-"


def _times(before: float, after: float) -> str:
    return f", {before / after:.1f}x lower" if after else ""


def _figure(key: str, value: float) -> str:
    return f"{value / 1e9:.2f} GB" if key == "peak_bytes" else f"{value:,}"
