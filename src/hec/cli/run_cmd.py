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
    """An ``.npy`` array, or the inputs ``x`` of an ``.npz`` dataset (as the examples ship)."""
    if path.suffix == ".npz":
        from hec.calibrate import load_dataset

        return load_dataset(path, what="--input")[0]
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
    help=".npy with one sample or a batch [B, ...] (or an .npz dataset with an array x).",
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
    "--compare-simulator",
    is_flag=True,
    help="Also run the same program on the simulator (numpy, no encryption) and show how "
    "far the encrypted logits are from it: the check of the encryption itself, whatever "
    "the polynomial approximations changed.",
)
@click.option(
    "--ignore-resource-check",
    is_flag=True,
    help="Run even if the estimated memory exceeds this machine.",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Batch packing: worker processes evaluating independent ciphertexts.",
)
@click.option(
    "--memory-limit",
    type=str,
    default=None,
    metavar="SIZE",
    help="Batch packing: memory the run may use at its peak, e.g. 8GB (default: what is "
    "free); checked before key generation.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the run's timings (and, in batch packing, totals, amortized ms/image, "
    "ciphertexts, predicted and measured peak memory) to this JSON file.",
)
def run_cmd(
    artifact: Path,
    input_path: Path,
    simulate: bool,
    output_path: Path | None,
    compare_onnx: Path | None,
    compare_simulator: bool,
    ignore_resource_check: bool,
    threads: int,
    memory_limit: str | None,
    report_path: Path | None,
) -> None:
    """Run compiled program ARTIFACT on the inputs in --input; print logits and argmax."""
    import time

    import hec
    from hec.progress import stderr_progress

    art = hec.load_artifact(artifact)
    x = _load_npy(input_path)
    references: dict[str, np.ndarray] = {}  # before the run: their memory is then baseline
    if compare_onnx is not None:
        from hec.frontend.reference import onnxruntime_outputs
        from hec.runtime.inputs import as_batch

        references["onnxruntime"] = onnxruntime_outputs(compare_onnx, as_batch(x, art.input_shape))
    if compare_simulator:
        references["simulator"] = hec.simulate(art, x)
    result = None
    if simulate:
        start = time.perf_counter()
        logits = hec.simulate(art, x)
        timings = {"simulate": time.perf_counter() - start}
        precision = None
    else:
        from hec.cli.format import parse_size
        from hec.runtime.resources import check_in_process

        if art.program.dialect != "batch":  # batch packing predicts its own, before keygen
            check_in_process(art, ignore=ignore_resource_check)
        limit = parse_size(memory_limit) if memory_limit else None
        result = hec.run(art, x, progress=stderr_progress(), threads=threads, memory_limit=limit)
        logits, timings, precision = result.logits, result.timings, result.precision_bits
    _print_results(logits, references, precision)
    mode = "simulated" if simulate else "encrypted"
    stages = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in timings.items())
    per = "" if simulate else " (keygen once; other stages per sample)"
    if result is not None and result.stats.get("packing") == "batch":
        _print_batch_stats(result.stats)
    else:
        click.echo(f"{mode} run of {len(logits)} sample(s): {stages}{per}")
    if output_path is not None:
        np.save(output_path, logits)
        click.echo(f"logits written to {output_path}")
    if report_path is not None:
        import json

        stats = {} if result is None else result.stats
        report_path.write_text(json.dumps({"timings": timings, **stats}, indent=2) + "\n")
        click.echo(f"run report written to {report_path}")


def _print_results(
    logits: np.ndarray, references: dict[str, np.ndarray], precision: np.ndarray | None
) -> None:
    flat = logits.reshape(len(logits), -1)
    refs = {name: ref.reshape(len(ref), -1) for name, ref in references.items()}
    header = ["#", "argmax"]
    for name in refs:
        header += [name, "max |diff|"]
    if precision is not None:
        header.append("precision bits")
    header.append("logits")
    rows = []
    for i in range(min(len(flat), _SHOWN)):
        row: list = [i, int(flat[i].argmax())]
        for ref in refs.values():
            row += [int(ref[i].argmax()), f"{np.abs(flat[i] - ref[i]).max():.2e}"]
        if precision is not None:
            row.append(f"{precision[i]:.1f}")
        row.append(format_row(flat[i]))
        rows.append(row)
    print_table(header, rows)
    if len(flat) > _SHOWN:
        click.echo(f"... {len(flat) - _SHOWN} more rows (use --output to save all)")
    for name, ref in refs.items():
        agree = int((flat.argmax(1) == ref.argmax(1)).sum())
        click.echo(
            f"argmax agrees with {name} on {agree}/{len(flat)}; max |diff| "
            f"{np.abs(flat - ref).max():.2e}"
        )


def _print_batch_stats(stats: dict) -> None:
    """Batch packing: totals, amortized time per image, memory predicted and measured."""
    t = stats["total_seconds"]
    click.echo(
        f"encrypted batch run of {stats['samples']} sample(s) in {stats['evaluations']} "
        f"evaluation(s) of up to {stats['slots']} (ring {stats['ring_dim']}, "
        f"{stats['threads']} thread(s)): keygen {t['keygen']:.1f} s, encrypt {t['encrypt']:.1f} s, "
        f"evaluate {t['evaluate']:.1f} s, decrypt {t['decrypt']:.1f} s"
    )
    click.echo(
        f"amortized {stats['amortized_ms_per_image']:.2f} ms/image (evaluation); "
        f"{stats['ciphertexts_computed']} ciphertexts computed, at most "
        f"{stats['max_live_ciphertexts']} alive; peak memory "
        f"{stats['measured_peak_bytes'] / 1e6:.0f} MB measured, "
        f"{stats['predicted_peak_bytes'] / 1e6:.0f} MB predicted"
    )
