"""``hec run OUT/ --input X.npy``: encrypted (or simulated) inference on a batch."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from hec.cli.results import Predictor, load_inputs, print_accuracy, print_results

__all__ = ["run_cmd"]


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
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="One-output models: predict class 1 when the program's output is above this "
    "(default: 0.5 when it is a probability, i.e. the model ends with a Sigmoid the "
    "program computes, else 0). --compare-onnx's output uses its own default.",
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="ADDRESS",
    help="Evaluate on the Ray cluster at ADDRESS (HOST:PORT of its head, from `ray start "
    "--head`). Keys, encryption and decryption stay here; the cluster's workers get the "
    "evaluation keys. Needs hec[ray].",
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
    threshold: float | None,
    ray_address: str | None,
) -> None:
    """Run compiled program ARTIFACT on the inputs in --input; print outputs and predictions.

    With labels (an .npz with y), also the accuracy. An input whose encrypted result overflows
    (typically: outside the calibrated range) loses only its own result: the others are
    printed and saved, the failed ones named, and the exit code is non-zero.
    """
    import time

    import hec
    from hec.metrics import artifact_output_is_probability
    from hec.progress import stderr_progress

    if ray_address is not None and not simulate:
        from hec.runtime.cluster import require_ray

        require_ray()  # before anything else: one line saying how to install it
    art = hec.load_artifact(artifact)
    x, labels = load_inputs(input_path)
    probability = artifact_output_is_probability(art, compare_onnx)
    references: dict[str, np.ndarray] = {}  # before the run: their memory is then baseline
    model_outputs = None  # a client tail: the ONNX model's own outputs, compared one by one
    if compare_onnx is not None and art.tail is not None:
        from hec.cli.tail_output import onnx_logits, onnx_model_outputs
        from hec.runtime.inputs import as_batch

        model_outputs = onnx_model_outputs(compare_onnx, as_batch(x, art.input_shape))
        references["onnxruntime"] = onnx_logits(compare_onnx, as_batch(x, art.input_shape))
    elif compare_onnx is not None:
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
        result = hec.run(
            art,
            x,
            progress=stderr_progress(),
            threads=threads,
            memory_limit=limit,
            ray=ray_address,
        )
        logits, timings, precision = result.logits, result.timings, result.precision_bits
    failed = {} if result is None else result.failed
    predict = {name: Predictor(probability, threshold) for name in ["program", *references]}
    if model_outputs is None and compare_onnx is not None:  # a probability after a Sigmoid
        from hec.metrics import ends_with_sigmoid

        predict["onnxruntime"] = Predictor(ends_with_sigmoid(compare_onnx), None)
    print_results(logits, references, precision, predict, failed)
    if art.tail is not None:
        from hec.cli.tail_output import print_model_outputs
        from hec.runtime.tail import apply_tail

        outputs = result.outputs if result is not None else apply_tail(art, logits)
        print_model_outputs(art, outputs, model_outputs)
    mode = "simulated" if simulate else "encrypted"
    if labels is not None:
        print_accuracy(logits, references, labels, predict, failed, mode)
    stages = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in timings.items())
    per = "" if simulate else " (keygen once; other stages per sample)"
    if result is not None and result.stats.get("packing") == "batch":
        _print_batch_stats(result.stats)
    else:
        click.echo(f"{mode} run of {len(logits)} sample(s): {stages}{per}")
    if result is not None and "cluster" in result.stats:
        c = result.stats["cluster"]
        click.echo(
            f"on the Ray cluster at {ray_address}: {c['workers']} worker(s); sent the "
            f"evaluation keys and artifact once ({c['bundle_bytes'] / 1e6:.1f} MB), "
            f"ciphertexts {c['sent_bytes'] / 1e6:.1f} MB"
        )
    if output_path is not None:
        np.save(output_path, logits)
        lost = f" (rows {_list(failed)} are NaN: failed)" if failed else ""
        click.echo(f"logits written to {output_path}{lost}")
    if report_path is not None:
        import json

        stats = {} if result is None else result.stats
        extra = {"failed": {str(i): why for i, why in failed.items()}} if failed else {}
        report_path.write_text(json.dumps({"timings": timings, **stats, **extra}, indent=2) + "\n")
        click.echo(f"run report written to {report_path}")
    if failed:
        from hec.errors import PrecisionError

        for why in failed.values():
            click.echo(why)
        raise PrecisionError(
            f"{len(failed)} of {len(logits)} input(s) failed (precision/overflow: "
            f"input(s) {_list(failed)}); the others' results are above"
        )


def _list(failed: dict[int, str]) -> str:
    shown = ", ".join(map(str, sorted(failed)[:20]))
    return shown + (f" and {len(failed) - 20} more" if len(failed) > 20 else "")


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
