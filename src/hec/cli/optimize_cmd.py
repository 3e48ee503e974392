"""``hec optimize MODEL.onnx --calib DATA.npz -o MODEL.he.onnx``: the HE-friendly conversion."""

from __future__ import annotations

from pathlib import Path

import click

from hec.cli.conversion import (
    conversion_options,
    print_conversion,
    print_pruning,
    prune_options,
    prune_settings,
    readout_option,
)

__all__ = ["optimize_cmd"]


@click.command("optimize")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_path",
    required=True,
    type=click.Path(path_type=Path),
    help="HE-friendly ONNX model to write (its report goes next to it).",
)
@conversion_options
@click.option(
    "--eval",
    "eval_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Labelled .npz (x, y) to measure accuracy on (default: the calibration "
    "data, when it has labels).",
)
@click.option(
    "--fine-tune",
    "epochs",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Then train weights and polynomial coefficients for this many epochs "
    "(needs hec[train], i.e. PyTorch).",
)
@click.option(
    "--train",
    "train_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Labelled .npz (x, y) to fine-tune on (default: the calibration data).",
)
@click.option(
    "--lr",
    type=click.FloatRange(0, min_open=True),
    default=1e-3,
    show_default=True,
    help="Fine-tuning learning rate (Adam), at the start: it decays to 0 along a cosine.",
)
@click.option(
    "--range-penalty",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Fine-tuning: add this times how far the polynomials' inputs leave their "
    "intervals (mean squared) to the loss. Keeps a deep network's fine-tuning from "
    "diverging (ResNet-20 at degree 2: 10).",
)
@prune_options
@click.option(
    "--packing",
    type=click.Choice(["slots", "batch"]),
    default="slots",
    show_default=True,
    help="The packing --prune shapes its blocks for (and counts savings in).",
)
@readout_option
def optimize_cmd(
    model: Path,
    out_path: Path,
    calib: Path | None,
    degree: int | None,
    error_budget: float | None,
    max_accuracy_loss: float | None,
    margin: float,
    norm_tolerance: float,
    eval_path: Path | None,
    epochs: int,
    train_path: Path | None,
    lr: float,
    range_penalty: float,
    prune: float | None,
    rotation_budget: int | None,
    prune_per_layer: bool,
    prune_score: str,
    recover: bool,
    packing: str,
    readout: str,
) -> None:
    """Replace non-polynomial activations of MODEL by calibrated polynomials (ONNX to ONNX).

    ReLU, LeakyReLU, PReLU, Clip (ReLU6), Max/Min, GELU, SiLU, Sigmoid, Tanh, Softplus, ELU,
    SELU, HardSigmoid, HardSwish, Mish and Abs become Chebyshev polynomials fitted where
    calibration data puts their inputs; MaxPool becomes AveragePool; normalization layers get
    calibrated statistics. A final Softmax/Sigmoid/ArgMax stays as it is (the client runs it).
    The output is an ordinary ONNX model that onnxruntime runs and `hec compile` compiles.
    With --prune or --rotation-budget it is then pruned in blocks that remove HE operations
    under --packing (with --fine-tune: fine-tuned after pruning, the pruning masks fixed).
    """
    from hec.calibrate import load_dataset
    from hec.errors import InputError
    from hec.optimize import optimize
    from hec.options import CompileOptions
    from hec.passes.choose_degrees import degree_summary
    from hec.progress import stderr_progress

    if calib is None:
        raise InputError(
            "hec optimize needs --calib DATA.npz (array x of typical inputs, optionally labels y)"
        )
    x, y = load_dataset(calib)
    evaluation = load_dataset(eval_path, what="evaluation data") if eval_path else None
    train = load_dataset(train_path, what="training data") if train_path else None
    if epochs:
        from hec.train import require_torch

        require_torch()  # say so before calibrating, not after
    options = CompileOptions(
        degree=degree,
        error_budget=error_budget,
        max_accuracy_loss=max_accuracy_loss,
        margin=margin,
        readout=readout,
        norm_tolerance=norm_tolerance,
    )
    settings = prune_settings(
        prune, rotation_budget, prune_per_layer, prune_score, recover, packing, epochs, lr
    )
    report = optimize(
        model,
        out_path,
        x,
        y,
        options,
        evaluation,
        stderr_progress(),
        0 if settings else epochs,
        train,
        lr,
        settings,
        range_penalty=range_penalty,
    )
    click.echo(f"wrote {out_path} and {out_path.with_suffix('.report.json')}")
    if "accuracy_before_fine_tune" in report:
        before = report["accuracy_before_fine_tune"]
        click.echo(f"before fine-tuning: converted {100 * before['converted']:.2f}%")
    print_conversion(report["layers"], report.get("accuracy"))
    chosen = degree_summary(report["layers"])  # degrees from --max-accuracy-loss
    if chosen:
        click.echo(chosen)
    click.echo(f"levels spent on activations: {report['depth_of_activations']}")
    if "pruning" in report:
        print_pruning(report["pruning"])
    if "plan" in report:  # what `hec compile` will replay
        plan = report["plan"]
        click.echo(
            f"plan recorded in the model: {plan['packing']} packing, input layout "
            f"{plan['input_layout']}, output layouts {plan['output_layouts']}, readout "
            f"{plan['readout']} (hec compile replays it; --no-plan searches again)"
        )
