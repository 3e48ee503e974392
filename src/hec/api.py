"""The Python API: compile a model, run it encrypted, or simulate it."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import onnx

from hec.backend_openfhe import Artifact, load_artifact, write_artifact
from hec.backend_openfhe.batch_memory import check_fits, machine_memory, plan_memory
from hec.backend_openfhe.params import min_ring_dim
from hec.backend_openfhe.report_schema import ProgramReport
from hec.errors import PrecisionError
from hec.frontend import build_graph, load_model
from hec.frontend.client_tail import head_reference, split_tail
from hec.ir import Graph
from hec.optimize import accuracy, calibrated_stats, conversion_layers, inputs_outside
from hec.options import CompileOptions
from hec.passes import PassManager, he_friendly_pipeline
from hec.passes.lower_to_slots import check_fits_one_ciphertext
from hec.passes.place_bootstraps import TooDeepBetweenBootstraps
from hec.passes.replace_activations import CalibrationMissing
from hec.plan import read_plan, replay_plan
from hec.progress import ProgressFn, no_progress
from hec.prune import Prune, PruneOptions
from hec.runtime import Client, Server, simulate_slots
from hec.runtime.inputs import as_batch
from hec.runtime.key_cache import release_unused_keys
from hec.search import Lowered, Search, within_memory

__all__ = ["compile", "load_artifact", "run", "simulate", "RunResult"]


def compile(
    model: str | os.PathLike | onnx.ModelProto,
    out_dir: str | os.PathLike,
    options: CompileOptions | None = None,
    progress: ProgressFn = no_progress,
    calibration: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    prune: PruneOptions | None = None,
    use_plan: bool = True,
) -> Artifact:
    """Compile an ONNX model into an artifact directory and return the loaded artifact.

    Args:
        model: path of an ``.onnx`` file (external data next to it) or a ``ModelProto``.
        out_dir: the artifact directory to write.
        options: compiler options (defaults: slot packing, 128-bit security).
        progress: ``progress(stage, done, total)`` callback for long steps.
        calibration: typical inputs ``[N, ...]``; required when the model has non-polynomial
            activations or max pooling, which are then replaced (see ``hec optimize``).
        labels: labels of ``calibration``; when given, the report holds the accuracy of the
            original and of the converted model on them.
        prune: ``hec.prune.PruneOptions``: prune the HE-friendly graph first (needs
            ``calibration``); the report gets a ``pruning`` part.
        use_plan: replay the plan ``hec optimize`` recorded in the model (``hec.plan``):
            options left at their defaults take its decisions; ``False`` ignores it.
    """
    options = options or CompileOptions()
    asked = options.precision not in (None, "auto")
    if asked and (calibration is None or options.packing == "batch"):
        raise CalibrationMissing(
            "--precision chooses the CKKS scale from calibration data in slot packing: give "
            "--calib DATA.npz (and not --packing batch), or fix --scaling-bits instead"
        )
    if calibration is not None and options.input_range is None:  # for check-ranges
        low, high = float(np.min(calibration)), float(np.max(calibration))
        options = dataclasses.replace(options, input_range=(low, high))
    start = time.perf_counter()
    loaded = load_model(model)
    recorded = read_plan(loaded, str(model)) if use_plan else None
    plan = None
    if recorded is not None:  # what `hec optimize` decided: the same program
        options, plan = replay_plan(options, recorded)
    # the model's last steps after the logits (Softmax, labels, ...) run on the client
    split = split_tail(loaded)
    graph = build_graph(split.head)
    if options.packing == "slots":  # before calibration, which can take minutes
        check_fits_one_ciphertext(graph)
    reference = head_reference(split, model)
    original = graph.clone() if calibration is not None else None
    stats = calibrated_stats(reference, graph, calibration, progress)
    if prune is not None and calibration is None:
        raise CalibrationMissing("--prune needs calibration data: give --calib DATA.npz")
    converted = graph.clone()

    def convert_and_lower(options: CompileOptions) -> tuple[Graph, Search, Prune | None, Lowered]:
        graph = converted.clone()
        he_friendly = he_friendly_pipeline(options, stats or None, calibration, labels, progress)
        search = Search(
            options,
            plan,
            progress,
            len(he_friendly) + 1 + (prune is not None),
            samples=calibration,
        )
        pruning = None
        if prune is not None:
            assert calibration is not None  # checked above
            pruning = Prune(prune, calibration, search, (calibration, labels), progress=progress)
        PassManager(
            [
                *he_friendly,  # calibrated polynomials for activations, constants for norms
                *([pruning] if pruning is not None else []),  # packing-aware block pruning
            ],
            dump_dir=options.dump_ir_after,
        ).run(graph)
        tensor_ir = graph.clone()
        # the packing pipeline under the cheapest (or recorded) plan
        return tensor_ir, search, pruning, search.best(graph)

    try:
        tensor_ir, search, pruning, lowered = convert_and_lower(options)
    except TooDeepBetweenBootstraps as exc:
        # the program needs bootstrapping and an activation's polynomial does not fit between
        # two bootstraps: where hec chose the degrees, choose them again within what fits
        if options.degree is not None or not stats or exc.max_poly_depth >= options.max_poly_depth:
            raise
        options = dataclasses.replace(options, max_poly_depth=exc.max_poly_depth)
        progress(f"bootstrapping: activations within {exc.max_poly_depth} levels", 0, 1)
        tensor_ir, search, pruning, lowered = convert_and_lower(options)
    if lowered.plan.packing == "slots":  # keys, plaintexts and ciphertexts within the limit
        lowered = within_memory(lowered, options)
    program, params, figures = lowered.program, lowered.params, lowered.figures
    assert program is not None  # the search's choice always comes with its program
    name = str(model) if not isinstance(model, onnx.ModelProto) else "<in-memory model>"
    io = {
        "model": name,
        "input_name": tensor_ir.inputs[0].name,
        "input_shape": list(tensor_ir.inputs[0].shape),
        "output_shape": list(tensor_ir.outputs[0].shape),
        "packing": figures["packing"],
        "client_tail": split.ops,
        "outputs": split.outputs,
        "output_kind": split.outputs[0]["kind"],
    }
    report = {
        "model": name,
        "input_shape": io["input_shape"],
        "output_shape": io["output_shape"],
        **figures,
        "estimates": _estimates(figures),
        "activations": conversion_layers(tensor_ir, stats),
        "compile_seconds": round(time.perf_counter() - start, 3),
        "client_tail": split.ops,
    }
    if "bootstraps" in report:
        _measured_bootstrap_ranges(report["bootstraps"], tensor_ir)
    if calibration is not None and report["activations"]:  # per activation, and overall
        shares = inputs_outside(tensor_ir, report["activations"], calibration, "calibration")
        report["inputs_outside"] = {"calibration": shares}
    if labels is not None and calibration is not None and original is not None:
        report["accuracy"] = accuracy(reference, tensor_ir, calibration, labels)
    if pruning is not None:
        report["pruning"] = pruning.report
    # lowerings that ran (memoized candidates and the pruner's last count are not lowered again)
    report["search"] = {
        "lowerings": search.lowerings,
        "plan": "recorded" if plan is not None else "searched",
    }
    tail = None if split.tail is None else split.tail.SerializeToString()
    typed = ProgramReport.from_dict(report)
    return write_artifact(Path(out_dir), program, params, io, typed, tensor_ir, tail)


def _measured_bootstrap_ranges(bootstraps: dict, tensor_ir: Graph) -> None:
    """A bootstrap before a model's own polynomial refreshes a value of the range
    ``calibrate-polynomials`` measured, not of a fitted ``[-1, 1]``: say which."""
    ranges = {
        op.origin: op.attrs["input_range"]
        for op in tensor_ir.ops
        if op.kind == "poly" and "input_range" in op.attrs
    }
    for b in bootstraps["each"]:
        r = ranges.get(b.get("before", ""))
        if r is not None and b["input_range"] != "unknown":
            b["input_range"] = f"activation input, [{r[0]:.3g}, {r[1]:.3g}] on the calibration data"
            b["measured_range"] = [float(r[0]), float(r[1])]


def _estimates(figures: dict) -> dict:
    """Evaluation time from the counts (``cost_model``): per layer (``predicted_ms`` in each
    layer), per evaluation and per image."""
    from hec.backend_openfhe.cost_model import estimated_seconds, predict_layers

    basis = predict_layers(figures)
    seconds = estimated_seconds(figures)
    per_eval = figures["ckks"]["slots"] if figures["packing"] == "batch" else 1
    return {
        "evaluation_seconds": round(seconds, 3),
        "images_per_evaluation": per_eval,
        "ms_per_image": round(seconds / per_eval * 1e3, 3),
        "basis": basis,
    }


def simulate(artifact: Artifact | str | os.PathLike, x: np.ndarray) -> np.ndarray:
    """Run the compiled program on numpy slot vectors; returns logits ``[B, *output_shape]``."""
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    xb = as_batch(x, art.input_shape)
    if art.program.dialect == "batch":
        from hec.runtime.batch_simulator import simulate_batch

        return simulate_batch(art.program, xb)[0].reshape(len(xb), *art.output_shape)
    out = simulate_slots(art.program, art.input_layout.pack(xb))[0]
    return art.output_layout.unpack(out)


@dataclass
class RunResult:
    """Decrypted outputs of an encrypted run, with timings in seconds."""

    logits: np.ndarray
    precision_bits: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)  # batch packing: totals, memory, ciphertexts
    # input index -> why its result was lost (precision/overflow); its logits rows are NaN
    failed: dict[int, str] = field(default_factory=dict)
    # what the ONNX model returns, by name: the client tail (Softmax, labels...) on the logits
    outputs: dict = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        """Predicted classes (``hec.metrics.predictions``: one output is a logit here)."""
        from hec.metrics import predictions

        return predictions(self.logits)


def run(
    artifact: Artifact | str | os.PathLike,
    x: np.ndarray,
    progress: ProgressFn = no_progress,
    threads: int = 1,
    memory_limit: int | None = None,
    ray: str | None = None,
    workers: int | None = None,
) -> RunResult:
    """Encrypted inference: keys, encrypt, evaluate, decrypt each sample.

    ``timings`` holds the key generation time and the per-sample means of the other stages
    (in batch packing, the totals divided by the number of samples: the amortized cost). A
    sample-block artifact encrypts up to ``params.blocks`` samples per ciphertext.

    Args:
        artifact: the compiled program (or its directory).
        x: inputs ``[B, *input_shape]`` (or one sample).
        progress: progress callback.
        threads: batch packing: worker processes evaluating independent ciphertexts.
        memory_limit: batch packing: bytes the run may use at its peak (default: what this
            process holds plus the machine's available memory); checked before key generation.
        ray: evaluate on the Ray cluster at this address (``HOST:PORT`` of its head;
            ``hec.runtime.cluster``): slot packing spreads the ciphertexts over its
            workers, batch packing each wave's chains. Keys, encryption and decryption stay
            here; the workers get the evaluation keys only. Needs ``hec[ray]``.
        workers: with ``ray``: workers to start (default: one per core of the cluster).
    """
    art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
    xb = as_batch(x, art.input_shape)
    if art.program.dialect == "batch":
        return _with_outputs(
            art, _run_batch(art, xb, progress, threads, memory_limit, ray, workers)
        )
    if ray is not None:
        from hec.runtime.cluster import connect

        connect(ray)  # before key generation: an unreachable cluster fails fast
    t = time.perf_counter()
    client = Client(art, progress=lambda d, n: progress("keygen", d, n))
    timings = {"keygen": time.perf_counter() - t, "encrypt": 0.0, "evaluate": 0.0, "decrypt": 0.0}
    server = Server(art, client.context, key_files=client.key_files) if ray is None else None
    remote = None
    if ray is not None:
        from hec.runtime.cluster import RemoteSlots

        remote = RemoteSlots(art, client, xb, timings, ray, workers)
    logits = np.full((len(xb), *art.output_shape), np.nan)
    precision = np.full(len(xb), np.nan)
    per = art.params.blocks
    layer_totals: list[float] = []
    evaluations = 0

    def attempt(idx: list[int]) -> None:
        nonlocal layer_totals, evaluations
        if remote is not None:
            evaluations += 1
            progress(f"eval {evaluations}/{-(-len(xb) // per)}", 1, 1)
            dec = remote.evaluate(idx, _span(idx))
            logits[idx] = dec.values
            precision[idx] = dec.precision_bits
            return
        assert server is not None
        t = time.perf_counter()
        ct = client.encrypt_batch(xb[idx])
        timings["encrypt"] += time.perf_counter() - t
        t = time.perf_counter()
        evaluations += 1
        stage = f"eval {evaluations}/{-(-len(xb) // per)}"
        layers: list[float] = []
        out = server.evaluate(ct, partial(progress, stage), layers)
        timings["evaluate"] += time.perf_counter() - t
        if layer_totals:
            layers = [a + b for a, b in zip(layer_totals, layers, strict=True)]
        layer_totals = layers
        t = time.perf_counter()
        try:
            dec = client.decrypt(out, len(idx), f"output of input(s) {_span(idx)}")
        finally:
            timings["decrypt"] += time.perf_counter() - t
        logits[idx] = dec.values
        precision[idx] = dec.precision_bits

    failed: dict[int, str] = {}
    try:
        for start in range(0, len(xb), per):
            _evaluate_or_split(list(range(start, min(start + per, len(xb)))), attempt, failed)
    finally:
        if remote is not None:
            remote.close()
    for stage in ("encrypt", "evaluate", "decrypt"):
        timings[stage] /= len(xb)
    cluster = None if remote is None else remote.stats()
    # drop them (the closure holds them too): the keys OpenFHE keeps for them are then freed
    # if no other hec object needs them
    client = server = attempt = remote = None  # type: ignore[assignment]  # None only to let go
    release_unused_keys()
    _explain_failures(art, xb, failed)
    # per report layer, per evaluation (hec inspect --run shows them next to the predictions)
    stats = {
        "packing": "slots",
        "evaluations": evaluations,
        "layer_ms": [round(t / max(evaluations, 1) * 1e3, 3) for t in layer_totals],
        # OpenFHE's estimate, the worst sample decrypted
        "precision_bits": float(np.nanmin(precision)) if len(failed) < len(xb) else None,
        "failed_inputs": sorted(failed),
    }
    if cluster is not None:
        stats["cluster"] = cluster
    return _with_outputs(art, RunResult(logits, precision, timings, stats, failed))


def _with_outputs(art: Artifact, result: RunResult) -> RunResult:
    """``result`` with the model's outputs: the artifact's client tail on the decrypted logits
    (rows of failed inputs hold what the tail makes of NaN logits)."""
    from hec.runtime.tail import apply_tail

    result.outputs = apply_tail(art, result.logits)
    return result


def _span(idx: list[int]) -> str:
    return str(idx[0]) if len(idx) == 1 else f"{idx[0]}-{idx[-1]}"


def _evaluate_or_split(
    idx: list[int], attempt: Callable[[list[int]], None], failed: dict[int, str]
) -> None:
    """``attempt(idx)``; when its ciphertext overflows, the inputs it held again in halves,
    so that one diverging input loses only its own result (``failed[i]`` says why)."""
    try:
        attempt(idx)
    except PrecisionError as exc:
        if len(idx) == 1:
            failed[idx[0]] = str(exc)
            return
        half = len(idx) // 2
        _evaluate_or_split(idx[:half], attempt, failed)
        _evaluate_or_split(idx[half:], attempt, failed)


def _explain_failures(art: Artifact, xb: np.ndarray, failed: dict[int, str]) -> None:
    """Reword each failure for its input, with what the simulator (no encryption, no
    overflow) computes for it: how large the values CKKS could not hold are."""
    for i in sorted(failed):
        out = np.abs(simulate(art, xb[i : i + 1]))
        top = float(out.max()) if np.all(np.isfinite(out)) else float("inf")
        failed[i] = (
            f"input {i}: precision/overflow failure: its result exceeds what CKKS holds at "
            f"scale 2^{art.params.scaling_bits} (the simulator's outputs for it reach "
            f"{top:.3g}); likely cause: the input is outside the calibrated range, where an "
            f"activation's polynomial blows up"
        )


def _run_batch(
    art: Artifact,
    xb: np.ndarray,
    progress: ProgressFn,
    threads: int,
    memory_limit: int | None,
    ray: str | None = None,
    workers: int | None = None,
) -> RunResult:
    """Batch packing: up to ``slots`` samples per evaluation, one ciphertext per element."""
    from hec.runtime.batch_server import BatchServer

    if threads > 1:  # before key generation starts an OpenMP team the workers cannot fork
        from hec.backend_openfhe.parallel_batch import single_omp_thread

        single_omp_thread()
    params = art.params
    if ray is not None:  # waves for the cluster's workers (the prediction counts them as forks)
        from hec.runtime.cluster import connect

        cluster_cores = int(connect(ray).cluster_resources().get("CPU", 1))
        threads = 1 + (workers or max(1, cluster_cores))
    planned = plan_memory(art.program, params, threads)
    plan = planned.plan
    baseline = _resident_bytes()
    limit = memory_limit or baseline + machine_memory()[1]
    what = "allowed (memory limit)" if memory_limit else "this process holds plus what is free"
    min_ring = min_ring_dim(
        params.depth, params.scaling_bits, params.first_mod_bits, params.security
    )
    predicted = check_fits(plan, params, limit, baseline, "key generation", min_ring, what)
    t = time.perf_counter()
    client = Client(art, progress=lambda d, n: progress("keygen", d, n))
    totals = {"keygen": time.perf_counter() - t, "encrypt": 0.0, "evaluate": 0.0, "decrypt": 0.0}
    transport = None
    if ray is not None:
        from hec.runtime.cluster import RayPool, RayTransport, client_bundle

        pool = RayPool(ray, client_bundle(art, client), threads - 1)
        transport = RayTransport(pool, planned.eg)
    server = BatchServer(art, client.context, threads, planned, transport)
    logits = np.full((len(xb), *art.output_shape), np.nan)
    precision = np.full(len(xb), np.nan)
    groups = range(0, len(xb), params.slots)
    evaluations = 0

    def attempt(idx: list[int]) -> None:
        nonlocal evaluations
        # each input ciphertext is encrypted when the evaluation first reads it (and freed
        # after its last reader), so the inputs are never all alive at once
        source = client.element_encryptor(xb[idx])
        t = time.perf_counter()
        evaluations += 1
        stage = f"eval {evaluations}/{len(groups)}"
        out = server.evaluate(source, partial(progress, stage))
        totals["evaluate"] += time.perf_counter() - t - source.seconds
        totals["encrypt"] += source.seconds
        del source
        t = time.perf_counter()
        try:
            dec = client.decrypt_elements(out, len(idx))
        finally:
            del out
            totals["decrypt"] += time.perf_counter() - t
        logits[idx] = dec.values
        precision[idx] = dec.precision_bits

    failed: dict[int, str] = {}
    try:
        for start in groups:
            idx = list(range(start, min(start + params.slots, len(xb))))
            try:
                attempt(idx)
            except PrecisionError:
                # One slot past what CKKS holds spoils the whole ciphertext (the overflow wraps
                # coefficients, which decoding spreads over every slot): leave out the inputs
                # the simulator sees diverge, then split what still fails.
                suspects = _diverging(art, xb[idx])
                for j in suspects:
                    failed[idx[j]] = ""
                rest = [i for j, i in enumerate(idx) if j not in set(suspects)]
                if rest:
                    _evaluate_or_split(rest, attempt, failed)
    finally:
        if transport is not None:
            transport.close()
    worker_peak = server.worker_peak_bytes
    # drop them (the closure holds them too): the keys OpenFHE keeps for them are then freed
    # if no other hec object needs them
    client = server = attempt = None  # type: ignore[assignment]  # None only to let go
    release_unused_keys()
    _explain_failures(art, xb, failed)
    n = len(xb)
    timings = {"keygen": totals["keygen"]}
    timings.update({k: totals[k] / n for k in ("encrypt", "evaluate", "decrypt")})
    stats = {
        "packing": "batch",
        "samples": n,
        "slots": params.slots,
        "evaluations": evaluations,
        "threads": threads,
        "ring_dim": params.ring_dim,
        "ciphertexts_computed": plan.ciphertexts_computed * evaluations,
        "max_live_ciphertexts": plan.max_live_ciphertexts,
        "predicted_peak_bytes": predicted,
        # this process's peak plus the most its forked workers held at once beyond it
        "measured_peak_bytes": _peak_resident_bytes() + worker_peak,
        "total_seconds": totals,
        "amortized_ms_per_image": totals["evaluate"] / n * 1e3,
        "failed_inputs": sorted(failed),
    }
    if transport is not None:
        stats["cluster"] = transport.stats()
    return RunResult(logits, precision, timings, stats, failed)


def _diverging(art: Artifact, x: np.ndarray) -> list[int]:
    """Inputs whose simulated outputs are not finite or beyond what the last modulus holds
    at the program's scale (``2^(first_mod_bits - scaling_bits - 1)``)."""
    bound = 2.0 ** (art.params.first_mod_bits - art.params.scaling_bits - 1)
    out = np.abs(simulate(art, x)).reshape(len(x), -1)
    bad = ~np.all(np.isfinite(out), axis=1) | np.any(out > bound, axis=1)
    return [int(j) for j in np.flatnonzero(bad)]


def _peak_resident_bytes() -> int:
    """This process's peak resident memory: ``VmHWM`` of ``/proc/self/status`` on Linux.

    Not ``ru_maxrss``: Linux carries that across ``exec`` from the forking parent, so a fresh
    process started by a large one would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
