"""``hec compile MODEL.onnx -o OUT/``: compile and print what the program costs."""

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
from hec.cli.format import print_summary

__all__ = ["compile_cmd"]


@click.command("compile")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Artifact directory to write (created if needed).",
)
@click.option(
    "--slots",
    type=int,
    default=None,
    help="Slots per ciphertext (default: smallest power of two holding every tensor).",
)
@click.option(
    "--baby-step",
    type=int,
    default=None,
    help="Force the baby-step size of every linear map (default: searched per map).",
)
@click.option(
    "--precision",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Largest output (logit) error to aim for: with --calib, the CKKS scale and first "
    "prime become the smallest that meet it on the calibration data (report.json: precision). "
    "Default 0.01 with --calib in slot packing (argmax and logits kept within 1e-2), unless "
    "--scaling-bits or --first-mod-bits is given or the program bootstraps; otherwise the "
    "scale is 2^40 and the first prime 60 bits.",
)
@click.option(
    "--scaling-bits",
    type=click.IntRange(20, 59),
    default=None,
    help="Bits of the CKKS scale (default: 40; overrides --precision).",
)
@click.option(
    "--first-mod-bits",
    type=click.IntRange(21, 60),
    default=None,
    help="Bits of the first prime, headroom for large values (default: 60; overrides --precision).",
)
@click.option(
    "--packing",
    type=click.Choice(["slots", "batch", "auto"]),
    default="slots",
    show_default=True,
    help="slots: one input per ciphertext (latency); batch: one input per slot, one "
    "ciphertext per tensor element, no rotations (throughput); auto: batch when "
    "--batch-size inputs evaluate faster that way.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=None,
    help="Inputs per evaluation in batch packing (up to half the ring dimension; default: "
    "fill the smallest ring the depth allows).",
)
@click.option(
    "--memory-limit",
    type=str,
    default=None,
    metavar="SIZE",
    help="Memory the evaluating process may need at its peak, e.g. 16GB (default: this "
    "machine's memory). Slot packing: past it, fewer rotation keys (the other rotations "
    "composed of them); batch packing: fewer ciphertexts at once. Compilation refuses a "
    "program predicted to need more even so.",
)
@click.option(
    "--input-layout",
    type=click.Choice(["auto", "direct", "replicated", "multiplexed", "im2col"]),
    default="auto",
    show_default=True,
    help="How the client packs the input (slot packing): direct (contiguous), replicated "
    "(a copy per output channel of the first convolution), multiplexed (a copy per block of "
    "the first convolution's multiplexed output), im2col (a slot per term of the first "
    "layer); auto compiles each that applies and keeps the fastest estimate.",
)
@readout_option
@click.option(
    "--rotation-keys",
    type=click.Choice(["all", "pow2"]),
    default="all",
    show_default=True,
    help="all: one rotation key per amount the program uses; pow2: keys for powers of two "
    "only, other rotations composed of them (fewer keys and key memory, more rotations).",
)
@click.option(
    "--max-rotation-keys",
    type=click.IntRange(1),
    default=None,
    help="At most this many rotation keys: the amounts saving the most rotations keep their "
    "own key, the others are composed of powers of two.",
)
@click.option(
    "--bootstrap",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Slot packing: auto bootstraps a program too deep for ring 2^16 (bootstraps placed "
    "where values would run out of levels); on uses the bootstrapping chain for any program; "
    "off never bootstraps.",
)
@click.option(
    "--dump-ir-after",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the IR after every pass that changes it into this directory.",
)
@click.option(
    "--sample-blocks",
    is_flag=True,
    help="Throughput mode: as many samples per ciphertext as the ring has room for "
    "(N/(2*slots)), one per block of slots.",
)
@click.option(
    "--no-plan",
    is_flag=True,
    help="Ignore the plan `hec optimize` recorded in MODEL (layouts, readout, the slots it "
    "pruned for) and search again. Without it, options left at their defaults take the plan's "
    "decisions.",
)
@conversion_options
@prune_options
def compile_cmd(
    model: Path,
    out_dir: Path,
    slots: int | None,
    baby_step: int | None,
    precision: float | None,
    scaling_bits: int | None,
    first_mod_bits: int | None,
    packing: str,
    batch_size: int | None,
    memory_limit: str | None,
    input_layout: str,
    readout: str,
    rotation_keys: str,
    max_rotation_keys: int | None,
    bootstrap: str,
    dump_ir_after: Path | None,
    sample_blocks: bool,
    no_plan: bool,
    calib: Path | None,
    degree: int | None,
    error_budget: float | None,
    max_accuracy_loss: float | None,
    margin: float,
    norm_tolerance: float,
    prune: float | None,
    rotation_budget: int | None,
    prune_per_layer: bool,
    prune_score: str,
    recover: bool,
) -> None:
    """Compile an ONNX MODEL into a CKKS program (artifact directory OUT, with report.json).

    Models with non-polynomial activations need --calib: they are made HE-friendly first
    (what `hec optimize` does), then compiled.
    """
    from hec.api import compile
    from hec.calibrate import load_dataset
    from hec.cli.format import parse_size
    from hec.options import CompileOptions
    from hec.passes.choose_degrees import degree_summary, fit_error_hint
    from hec.progress import stderr_progress

    fixed = scaling_bits is not None or first_mod_bits is not None
    default = CompileOptions()
    options = CompileOptions(
        slots=slots,
        baby_step=baby_step,
        # fixed bits where given (the other at its default), else bits chosen for a precision
        scaling_bits=default.scaling_bits if scaling_bits is None else scaling_bits,
        first_mod_bits=default.first_mod_bits if first_mod_bits is None else first_mod_bits,
        precision=None if fixed else ("auto" if precision is None else precision),
        dump_ir_after=dump_ir_after,
        sample_blocks=sample_blocks,
        degree=degree,
        error_budget=error_budget,
        max_accuracy_loss=max_accuracy_loss,
        margin=margin,
        norm_tolerance=norm_tolerance,
        packing=packing,
        batch_size=batch_size,
        memory_limit=parse_size(memory_limit) if memory_limit else None,
        input_layout=input_layout,
        readout=readout,
        rotation_keys=rotation_keys,
        max_rotation_keys=max_rotation_keys,
        bootstrap=bootstrap,
    )
    x, y = load_dataset(calib) if calib is not None else (None, None)
    settings = prune_settings(
        prune, rotation_budget, prune_per_layer, prune_score, recover, packing
    )
    artifact = compile(
        model,
        out_dir,
        options,
        progress=stderr_progress(),
        calibration=x,
        labels=y,
        prune=settings,
        use_plan=not no_plan,
    )
    report = artifact.report
    click.echo(f"compiled {model} -> {out_dir} in {report.compile_seconds:.2f} s")
    print_conversion(report.activations, report.accuracy)
    chosen = degree_summary(report.activations)  # degrees from the accuracy budget
    if chosen:
        click.echo(chosen)
    elif y is not None and (degree, error_budget, max_accuracy_loss) == (None, None, None):
        hint = fit_error_hint(report.activations, len(y))
        if hint:
            click.echo(hint)
    if report.pruning is not None:
        print_pruning(report.pruning)
    print_summary(report)
    if report.search is not None:
        how = (
            "the plan hec optimize recorded in the model (--no-plan searches again)"
            if report.search["plan"] == "recorded"
            else "searched"
        )
        click.echo(f"program: {how}; {report.search['lowerings']} lowering(s) ran")
