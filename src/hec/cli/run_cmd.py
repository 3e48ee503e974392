"""``hec run OUT/ --input X.npy``: encrypted (or simulated) inference on a batch."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from hec.cli.format import format_row, print_table
from hec.errors import InputError

__all__ = ["run_cmd"]

_SHOWN = 10  # rows of logits printed before summarizing


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: no such file; give an .npy array of inputs")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{path}: not a readable .npy array ({type(exc).__name__})") from None


@click.command("run")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(path_type=Path),
    help=".npy with one sample or a batch [B, ...].",
)
@click.option(
    "--simulate",
    is_flag=True,
    help="Run the program on numpy slot vectors instead of OpenFHE ciphertexts.",
)
@click.option(
    "--output",
    "output_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the logits [B, ...] to this .npy file.",
)
@click.option(
    "--compare-onnx",
    type=click.Path(path_type=Path),
    default=None,
    help="Also run this ONNX model in onnxruntime and show its prediction.",
)
@click.option(
    "--ignore-resource-check",
    is_flag=True,
    help="Run even if the estimated memory exceeds this machine.",
)
def run_cmd(
    artifact: Path,
    input_path: Path,
    simulate: bool,
    output_path: Path | None,
    compare_onnx: Path | None,
    ignore_resource_check: bool,
) -> None:
    """Run compiled program ARTIFACT on the inputs in --input; print logits and argmax."""
    import time

    import hec
    from hec.progress import stderr_progress

    art = hec.load_artifact(artifact)
    x = _load_npy(input_path)
    if simulate:
        start = time.perf_counter()
        logits = hec.simulate(art, x)
        timings = {"simulate": time.perf_counter() - start}
        precision = None
    else:
        from hec.runtime.resources import check_in_process

        check_in_process(art, ignore=ignore_resource_check)
        result = hec.run(art, x, progress=stderr_progress())
        logits, timings, precision = result.logits, result.timings, result.precision_bits
    reference = None
    if compare_onnx is not None:
        from hec.frontend.reference import onnxruntime_outputs
        from hec.runtime.inputs import as_batch

        reference = onnxruntime_outputs(compare_onnx, as_batch(x, art.input_shape))
    _print_results(logits, reference, precision)
    mode = "simulated" if simulate else "encrypted"
    stages = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in timings.items())
    per = "" if simulate else " (keygen once; other stages per sample)"
    click.echo(f"{mode} run of {len(logits)} sample(s): {stages}{per}")
    if output_path is not None:
        np.save(output_path, logits)
        click.echo(f"logits written to {output_path}")


def _print_results(
    logits: np.ndarray, reference: np.ndarray | None, precision: np.ndarray | None
) -> None:
    flat = logits.reshape(len(logits), -1)
    header = ["#", "argmax"]
    if reference is not None:
        ref = reference.reshape(len(reference), -1)
        header += ["onnxruntime", "max |diff|"]
    if precision is not None:
        header.append("precision bits")
    header.append("logits")
    rows = []
    for i in range(min(len(flat), _SHOWN)):
        row: list = [i, int(flat[i].argmax())]
        if reference is not None:
            row += [int(ref[i].argmax()), f"{np.abs(flat[i] - ref[i]).max():.2e}"]
        if precision is not None:
            row.append(f"{precision[i]:.1f}")
        row.append(format_row(flat[i]))
        rows.append(row)
    print_table(header, rows)
    if len(flat) > _SHOWN:
        click.echo(f"... {len(flat) - _SHOWN} more rows (use --output to save all)")
    if reference is not None:
        agree = int((flat.argmax(1) == ref.argmax(1)).sum())
        click.echo(
            f"argmax agrees with onnxruntime on {agree}/{len(flat)}; max |diff| "
            f"{np.abs(flat - ref).max():.2e}"
        )
