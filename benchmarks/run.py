"""Benchmark: compile and run the bundled models encrypted; print one table, write JSON.

    python benchmarks/run.py            # full: 10 images (latency), 1,024 images (batch)
    python benchmarks/run.py --quick    # 1 image (latency), 16 images (batch): what CI runs

Columns: compile, key generation, per-image encrypt/evaluate/decrypt, HE operation counts from
report.json, rotation keys and their serialized size, peak process memory, onnxruntime's
plaintext time per image, and accuracy (onnxruntime, simulator on the whole test split,
encrypted on the sample). A second table covers deployment: key and ciphertext file sizes,
the round trip of one request through ``hec serve`` (a separate process on localhost, timed
from this client), and throughput with sample blocks (one ciphertext full of images) next to
single-image latency. Each model also gets a throughput row in batch packing (one image per
slot, one ciphertext per tensor element, ``--batch-images`` images in one evaluation, run in a
fresh process so that its peak memory is its own, next to the prediction made before key
generation) beside its latency row. Figures are measured, never asserted: this is not a test.

A third table puts each model's latency row beside the tools users would pick instead, run on
the same ``model.onnx``, test images and one thread (``benchmarks/peers/``): TenSEAL (CKKS,
im2col convolution and vector-matrix products) and Concrete ML (quantized, TFHE), each in its
own process with its own interpreter (``make bench-peers`` makes ``.venv-peers``), with ratios
hec/peer. A peer that is not installed or cannot express a model says so in its row. For a model
a peer cannot run on this machine (``peers.PLANS``: Orion on ResNet-20), a fourth table gives
the plan it would follow instead: its bootstrap count and the memory it would need.

    make bench-peers                                 # every model, latency rows and peers
    python benchmarks/run.py --model cryptonets --packing slots --no-deploy   # the comparison

Full runs write ``benchmarks/results.json`` (or ``--json``) and a PNG plot beside it when
matplotlib is installed (the ``bench`` extra; ``plot_results.py`` redraws it from the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import peers  # noqa: E402  (benchmarks/peers/: TenSEAL and Concrete ML adapters)
import plot_results  # noqa: E402

import hec  # noqa: E402
from hec.frontend.reference import onnxruntime_outputs  # noqa: E402
from hec.metrics import (  # noqa: E402
    accuracy,
    artifact_output_is_probability,
    ends_with_sigmoid,
    predictions,
)
from hec.optimize import optimize  # noqa: E402
from hec.prune import PruneOptions  # noqa: E402
from hec.runtime import Client, Server, keys  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


class Bench(NamedTuple):
    """A benchmark model: its example folder, the polynomial degree replacing non-polynomial
    activations (``None``: it has none), and the fraction of its weights pruned in blocks
    shaped by each row's packing (``hec compile --prune``; ``None``: unpruned), or a rotation
    budget (slot packing only); with ``fine_tune`` epochs, pruned and fine-tuned by ``hec
    optimize`` first, then compiled; ``readout``: how slot packing computes the output layer
    (``CompileOptions.readout``; a rotation budget counts that program)."""

    folder: Path
    degree: int | None = None
    prune: float | None = None
    budget: int | None = None
    fine_tune: int = 0
    learning_rate: float = 1e-3
    readout: str = "matrix"
    precision: float | None = None  # --precision: scale and first prime from the error target
    # calibrated as `hec compile model.onnx --calib FILE` with every option at its default
    # (FILE's labels included: the accuracy budget, precision 0.01); None: the fields above
    default_calib: str | None = None
    # a deep network: its committed HE-friendly model (`hec optimize --fine-tune` output, made by
    # the example's train.py) compiled as `hec compile HE_MODEL --calib calib.npz --memory-limit
    # L`, at most `max_images` encrypted; latency only (no batch or deployment rows)
    he_model: str | None = None
    memory_limit: str | None = None
    max_images: int | None = None

    @property
    def pruned(self) -> bool:
        return self.prune is not None or self.budget is not None

    @property
    def latency_only(self) -> bool:
        return self.he_model is not None

    def calibration(self) -> np.ndarray | None:
        if self.default_calib is not None:
            return np.load(self.folder / self.default_calib)["x"]
        needed = self.degree is not None or self.pruned or self.precision is not None
        return np.load(self.folder / "calib.npz")["x"] if needed else None

    def prune_options(self, packing: str) -> PruneOptions | None:
        return None if self.prune is None else PruneOptions(sparsity=self.prune, packing=packing)

    def tuned_model(self, packing: str, work: Path) -> Path:
        """The model pruned for ``packing`` and fine-tuned with the masks fixed (``hec
        optimize --prune S | --rotation-budget N --fine-tune E``): HE-friendly, compiled as is."""
        out = work / f"{self.folder.name}-{packing}-tuned.onnx"
        train = np.load(self.folder / "train.npz")
        test = np.load(self.folder / "test.npz")
        optimize(
            self.folder / "model.onnx",
            out,
            self.calibration(),
            options=hec.CompileOptions(degree=self.degree, readout=self.readout),
            evaluation=(test["x"], test["y"]),
            train=(train["x"], train["y"]),
            prune=PruneOptions(
                sparsity=self.prune or 0.0,
                packing=packing,
                rotation_budget=self.budget,
                fine_tune_epochs=self.fine_tune,
                learning_rate=self.learning_rate,
            ),
        )
        return out


# Pruned variants compare with their unpruned model only (no peer or deployment rows).
MODELS = {
    "cryptonets-digits": Bench(EXAMPLES / "cryptonets_digits"),
    "cryptonets-digits-pruned50": Bench(EXAMPLES / "cryptonets_digits", prune=0.5),
    "lenet5-digits (ReLU, deg 2)": Bench(EXAMPLES / "lenet5_digits", 2),
    "lenet5-digits-pruned90 (deg 2)": Bench(EXAMPLES / "lenet5_digits", 2, prune=0.9),
    # 80%: where batch (filter) pruning keeps the degree-2 model's accuracy
    "lenet5-digits-pruned80 (deg 2)": Bench(EXAMPLES / "lenet5_digits", 2, prune=0.8),
    # slots only: at most 40 rotations, fine-tuned with the masks fixed (needs hec[train])
    "lenet5-digits-budget40 (deg 2)": Bench(EXAMPLES / "lenet5_digits", 2, budget=40, fine_tune=15),
    # at most 20 rotations: fc1 and fc2 at one input a neuron (anchored); longer fine-tuning
    "lenet5-digits-budget20 (deg 2)": Bench(
        EXAMPLES / "lenet5_digits", 2, budget=20, fine_tune=60, learning_rate=3e-3
    ),
    # at most 15 rotations, the output layer on one copy of the input per class
    "lenet5-digits-budget15-copies (deg 2)": Bench(
        EXAMPLES / "lenet5_digits",
        2,
        budget=15,
        fine_tune=60,
        learning_rate=3e-3,
        readout="copies",
    ),
    # 90% of the weights and fine-tuned with the masks fixed (needs hec[train])
    "lenet5-digits-pruned90-tuned (deg 2)": Bench(
        EXAMPLES / "lenet5_digits", 2, prune=0.9, fine_tune=15
    ),
    "cnn-silu-maxpool (deg 2)": Bench(EXAMPLES / "cnn_silu_digits", 2),
    # Orion's own LeNet-5 (square activations, batch norm) on real MNIST: the Orion peer's model
    # Orion's own network; --precision 0.01: logits within 1e-2 (Orion's are within ~4e-3)
    "orion-lenet5-mnist": Bench(EXAMPLES / "orion_lenet5_mnist", precision=0.01),
    # the classic ReLU LeNet-5 on real MNIST as a user compiles it: `hec compile --calib
    # train.npz` (3,800 labelled training images), no other option
    "lenet5-mnist (ReLU, defaults)": Bench(EXAMPLES / "lenet5_mnist", default_calib="train.npz"),
    # ResNet-20 (CIFAR shape) on MNIST: degree-2 ReLUs fine-tuned with the range penalty,
    # 6 bootstraps, keys loaded in groups within the 16 GB; one image (about 12 minutes)
    "resnet20-mnist": Bench(
        EXAMPLES / "resnet20_mnist", he_model="model.he.onnx", memory_limit="16GB", max_images=1
    ),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_model(name: str, bench: Bench, n_encrypted: int, work: Path) -> dict:
    folder, degree = bench.folder, bench.degree
    model = peers.ensure_model(folder)
    data = np.load(folder / "test.npz")
    x, y = data["x"], data["y"]
    # OpenFHE's OpenMP threads (set before openfhe is imported: OMP_NUM_THREADS=2 python ...)
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    row: dict = {"model": name, "packing": "slots", "images_per_eval": 1, "threads": threads}

    t = time.perf_counter()
    if bench.fine_tune:  # pruned, fine-tuned and HE-friendly: compiled as it is
        options = hec.CompileOptions(readout=bench.readout)
        art = hec.compile(bench.tuned_model("slots", work), work / name.split()[0], options)
    elif bench.he_model is not None:  # HE-friendly already: the calibration data bound ranges
        # `hec compile` in its own process, as a user runs it: its memory (13.7 GB for
        # ResNet-20's dense diagonals) is not this process's, which then evaluates
        out = work / name.split()[0]
        command = [str(Path(sys.executable).with_name("hec")), "compile"]
        command += [str(folder / bench.he_model), "-o", str(out)]
        command += ["--calib", str(folder / "calib.npz")]
        command += ["--memory-limit", bench.memory_limit] if bench.memory_limit else []
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        art = hec.load_artifact(out)  # constants read lazily
    elif bench.default_calib is not None:  # `hec compile --calib FILE`, defaults otherwise
        calib = np.load(folder / bench.default_calib)
        art = hec.compile(model, work / name.split()[0], calibration=calib["x"], labels=calib["y"])
    else:
        art = hec.compile(
            model,
            work / name.split()[0],
            hec.CompileOptions(degree=degree, precision=bench.precision),
            calibration=bench.calibration(),
            prune=bench.prune_options("slots"),
        )
    row["compile_s"] = time.perf_counter() - t
    totals = art.report.totals
    row.update(
        {
            k: getattr(totals, k)
            for k in (
                "rotations",
                "hoisted_rotations",
                "plaintext_multiplies",
                "ciphertext_multiplies",
                "rescales",
                "rotation_keys",
                "depth",
            )
        }
    )
    row["bootstraps"] = len((art.report.bootstraps or {}).get("each", []))
    row["ring_dim"] = art.params.ring_dim
    row["scale_bits"] = art.params.scaling_bits
    row["log_q_bits"] = art.params.log_q_bits
    row["security"] = art.params.security

    t = time.perf_counter()
    ref = onnxruntime_outputs(model, x)
    row["onnxruntime_ms_per_image"] = (time.perf_counter() - t) / len(x) * 1e3
    row["acc_onnxruntime"] = accuracy(ref, y, ends_with_sigmoid(model))
    probability = artifact_output_is_probability(art, model)  # one output: its threshold
    if bench.max_images is not None:
        n_encrypted = min(n_encrypted, bench.max_images)
    simulated = None
    if bench.he_model is None:
        simulated = np.concatenate([hec.simulate(art, x[i : i + 60]) for i in range(0, len(x), 60)])
        row["acc_simulated"] = accuracy(simulated, y, probability)  # = HE-friendly model's
    else:  # the simulator takes ~0.7 s an image here: the HE-friendly ONNX in onnxruntime,
        # checked against the simulator on the encrypted images (after the evaluation)
        he_friendly = onnxruntime_outputs(folder / bench.he_model, x)
        row["acc_simulated"] = accuracy(he_friendly, y, probability)

    t = time.perf_counter()
    client = Client(art)
    row["keygen_s"] = time.perf_counter() - t
    sizes = client.export_public(work / f"{name}-keys")
    public = (keys.CONTEXT_FILE, keys.PUBLIC_KEY_FILE)  # evaluation keys: the other files
    row["eval_key_mb"] = sum(v for k, v in sizes.items() if k not in public) / 1e6
    t = time.perf_counter()
    server = Server(art, client.context, key_files=client.key_files)
    server.prepare()  # plaintexts encoded once, before requests (as a peer's compile does)
    row["server_setup_s"] = time.perf_counter() - t
    stages = {"encrypt": 0.0, "evaluate": 0.0, "decrypt": 0.0}
    decrypted = []
    cpu = time.process_time()  # over wall time: the share of a core a loaded machine gave us
    for i in range(n_encrypted):
        t = time.perf_counter()
        ct = client.encrypt(x[i])
        stages["encrypt"] += time.perf_counter() - t
        t = time.perf_counter()
        out = server.evaluate(ct)
        stages["evaluate"] += time.perf_counter() - t
        t = time.perf_counter()
        decrypted.append(client.decrypt(out).values)
        stages["decrypt"] += time.perf_counter() - t
    row["cpu_over_wall"] = (time.process_time() - cpu) / sum(stages.values())
    row["peak_rss_mb"] = peak_rss_mb()  # the evaluation's (with the client's key generation)
    del server, client
    if simulated is None:  # once the keys are freed
        simulated = hec.simulate(art, x[:n_encrypted])
        row["he_friendly_vs_simulator"] = float(
            np.abs(he_friendly[:n_encrypted].reshape(simulated.shape) - simulated).max()
        )
    dec_all = np.stack(decrypted)
    correct = int((predictions(dec_all, probability) == y[:n_encrypted]).sum())
    max_err = float(np.abs(dec_all - simulated[:n_encrypted]).max())
    if bench.he_model is not None:  # its own weights (fine-tuned): the reference is that ONNX
        ref = he_friendly
    max_err_ort = float(np.abs(dec_all - ref[:n_encrypted].reshape(n_encrypted, -1)).max())
    row["encrypt_ms"] = stages["encrypt"] / n_encrypted * 1e3
    row["evaluate_s"] = stages["evaluate"] / n_encrypted
    row["decrypt_ms"] = stages["decrypt"] / n_encrypted * 1e3
    row["ms_per_image"] = row["evaluate_s"] * 1e3
    row["acc_encrypted"] = correct / n_encrypted
    row["n_encrypted"] = n_encrypted
    row["max_abs_err_vs_simulator"] = max_err
    if art.report.memory_plan:  # what the compile estimated for the evaluating process
        row["predicted_peak_mb"] = art.report.memory_plan["estimated_bytes"] / 1e6
    # against onnxruntime on the model compiled (the original, or the committed HE-friendly one)
    row["max_logit_error"] = max_err_ort
    return row


def bench_deployment(
    row: dict, folder: Path, degree: int | None, requests: int, work: Path
) -> None:
    """Key and ciphertext sizes, round trips through ``hec serve``, sample-block throughput."""
    from hec.runtime.remote import remote_eval

    x = np.load(folder / "test.npz")["x"]
    calibration = np.load(folder / "calib.npz")["x"] if degree is not None else None
    art = hec.load_artifact(work / row["model"].split()[0])
    keydir = work / f"{art.path.name}-deploy-keys"
    sizes = Client(art).save_keys(keydir)
    row["public_key_mb"] = sizes["public/public_key.bin"] / 1e6
    row["secret_key_mb"] = sizes["secret/secret_key.bin"] / 1e6
    row["context_kb"] = sizes["public/context.bin"] / 1e3
    client = Client.from_keys(art, keydir, secret=True)
    data = client.encrypt_to_bytes(x[0])
    row["ct_in_mb"] = len(data) / 1e6
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hec",
            "serve",
            str(art.path),
            "--eval-keys",
            str(keydir / "public"),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        t = time.perf_counter()
        url = re.search(r"(http://\S+)", server.stdout.readline()).group(1)
        row["server_start_s"] = time.perf_counter() - t  # keys loaded from files
        trips = []
        for _ in range(requests):
            t = time.perf_counter()
            result = remote_eval(url, data, art.content_hash, client.key_id)
            trips.append(time.perf_counter() - t)
        assert client.decrypt_bytes(result).values.shape[0] == 1
        row["ct_out_mb"] = len(result) / 1e6
        # The first request also encodes the program's plaintexts in the worker (cached after).
        row["round_trip_first_s"] = trips[0]
        row["round_trip_s"] = float(np.mean(trips[1:] or trips))
        row["round_trips"] = requests
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)

    blocked = hec.compile(
        folder / "model.onnx",
        work / f"{art.path.name}-blocks",
        hec.CompileOptions(degree=degree, sample_blocks=True),
        calibration=calibration,
    )
    blocks = blocked.params.blocks
    batch = np.resize(x, (blocks, *x.shape[1:]))
    client = Client(blocked)
    server_in_process = Server(blocked, client.context)
    t = time.perf_counter()
    ct = client.encrypt_batch(batch)
    encrypt = time.perf_counter() - t
    # Twice: the first evaluation also encodes the plaintexts (cached for later ones), and
    # throughput is about the ciphertexts after it.
    t = time.perf_counter()
    server_in_process.evaluate(ct)
    row["batch_first_eval_s"] = time.perf_counter() - t
    t = time.perf_counter()
    out = server_in_process.evaluate(ct)
    evaluate = time.perf_counter() - t
    values = client.decrypt(out, blocks).values
    reference = hec.simulate(blocked, batch)
    row["samples_per_ct"] = blocks
    row["batch_eval_s"] = evaluate
    row["batch_rotation_keys"] = blocked.report.totals.rotation_keys
    row["batch_images_per_s"] = blocks / (encrypt + evaluate)
    row["single_images_per_s"] = 1 / (row["encrypt_ms"] / 1e3 + row["evaluate_s"])
    row["batch_max_abs_err_vs_simulator"] = float(np.abs(values - reference).max())


def images(folder: Path, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``n`` images: the test split first, then training images (``train.npz``, or for the
    8x8 model the rest of scikit-learn's digits). Returns ``(x, y, number of test images)``."""
    test = np.load(folder / "test.npz")
    x, y = test["x"], test["y"]
    if n > len(x):
        if (folder / "train.npz").is_file():
            extra = np.load(folder / "train.npz")
            ex, ey = extra["x"], extra["y"]
        else:
            from sklearn.datasets import load_digits

            digits = load_digits()
            ex = (digits.images / 16.0).astype(np.float32)[:, None]
            ey = digits.target
            seen = {row.tobytes() for row in x.reshape(len(x), -1)}
            keep = [i for i, row in enumerate(ex.reshape(len(ex), -1)) if row.tobytes() not in seen]
            ex, ey = ex[keep], ey[keep]
        x, y = np.concatenate([x, ex])[:n], np.concatenate([y, ey])[:n]
    return x[:n], y[:n], min(n, len(test["y"]))


def bench_batch(name: str, n: int, threads: int, work: Path) -> dict:
    """One batch-packed run in a fresh process, so that its peak memory is its own."""
    out = work / f"{name}-batch.json"
    cmd = [
        sys.executable,
        __file__,
        "--batch-worker",
        name,
        "--batch-images",
        str(n),
        "--threads",
        str(threads),
        "--json",
        str(out),
        "--work",
        str(work),
    ]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"batch run of {name} failed:\n{proc.stdout}")
    return json.loads(out.read_text())


def batch_worker(name: str, n: int, threads: int, work: Path) -> dict:
    bench = MODELS[name]
    folder = bench.folder
    model = folder / "model.onnx"
    x, y, n_test = images(folder, n)
    row: dict = {"model": name, "packing": "batch", "images_per_eval": n}
    t = time.perf_counter()
    if bench.fine_tune:  # pruned, fine-tuned and HE-friendly: compiled as it is
        options = hec.CompileOptions(packing="batch", batch_size=n)
        art = hec.compile(
            bench.tuned_model("batch", work), work / f"{name.split()[0]}-batch", options
        )
    else:
        options = hec.CompileOptions(packing="batch", batch_size=n, degree=bench.degree)
        art = hec.compile(
            model,
            work / f"{name.split()[0]}-batch",
            options,
            calibration=bench.calibration(),
            prune=bench.prune_options("batch"),
        )
    row["compile_s"] = time.perf_counter() - t
    totals = art.report.totals
    row.update(
        {
            k: getattr(totals, k)
            for k in (
                "rotations",
                "hoisted_rotations",
                "plaintext_multiplies",
                "scalar_multiplies",
                "additions",
                "ciphertext_multiplies",
                "rescales",
                "rotation_keys",
                "depth",
                "ciphertexts",
            )
        }
    )
    row["bootstraps"] = len((art.report.bootstraps or {}).get("each", []))
    row["ring_dim"] = art.params.ring_dim
    row["slots"] = art.params.slots
    t = time.perf_counter()
    ref = onnxruntime_outputs(model, x)
    row["onnxruntime_ms_per_image"] = (time.perf_counter() - t) / len(x) * 1e3
    sim = hec.simulate(art, x)
    from hec.progress import stderr_progress

    result = hec.run(art, x, progress=stderr_progress(), threads=threads)
    st = result.stats
    row["keygen_s"] = st["total_seconds"]["keygen"]
    row["encrypt_ms"] = st["total_seconds"]["encrypt"] * 1e3
    row["evaluate_s"] = st["total_seconds"]["evaluate"]
    row["decrypt_ms"] = st["total_seconds"]["decrypt"] * 1e3
    row["ms_per_image"] = st["amortized_ms_per_image"]
    row["eval_key_mb"] = art.report.memory.key_bytes / 1e6
    row["peak_rss_mb"] = st["measured_peak_bytes"] / 1e6
    row["predicted_peak_mb"] = st["predicted_peak_bytes"] / 1e6
    row["max_live_ciphertexts"] = st["max_live_ciphertexts"]
    row["threads"] = threads
    row["argmax_equals_simulator"] = int((result.predictions == predictions(sim)).sum())
    row["max_abs_err_vs_simulator"] = float(np.abs(result.logits - sim).max())
    row["max_abs_err_vs_onnxruntime"] = float(np.abs(result.logits - ref).max())
    row["n_encrypted"] = len(x)
    row["n_test"] = n_test
    row["acc_onnxruntime"] = accuracy(ref[:n_test], y[:n_test], ends_with_sigmoid(model))
    probability = artifact_output_is_probability(art, model)  # one output: its threshold
    row["acc_simulated"] = accuracy(sim[:n_test], y[:n_test], probability)
    row["acc_encrypted"] = accuracy(result.logits[:n_test], y[:n_test], probability)
    return row


COLUMNS = [  # (key, header, format); "-" where a packing has no such figure
    ("model", "model", "{}"),
    ("packing", "packing", "{}"),
    ("images_per_eval", "img/eval", "{}"),
    ("compile_s", "compile s", "{:.2f}"),
    ("keygen_s", "keygen s", "{:.2f}"),
    ("encrypt_ms", "enc ms", "{:.1f}"),
    ("evaluate_s", "eval s", "{:.2f}"),
    ("ms_per_image", "ms/img", "{:.1f}"),
    ("decrypt_ms", "dec ms", "{:.1f}"),
    ("onnxruntime_ms_per_image", "ort ms", "{:.3f}"),
    ("rotations", "rot", "{}"),
    ("hoisted_rotations", "hoisted", "{}"),
    ("plaintext_multiplies", "pt-mul", "{}"),
    ("scalar_multiplies", "sc-mul", "{}"),
    ("ciphertext_multiplies", "ct-mul", "{}"),
    ("rotation_keys", "keys", "{}"),
    ("eval_key_mb", "key MB", "{:.0f}"),
    ("ciphertexts", "cts", "{}"),
    ("depth", "depth", "{}"),
    ("ring_dim", "ring", "{}"),
    ("peak_rss_mb", "peak MB", "{:.0f}"),
    ("predicted_peak_mb", "pred MB", "{:.0f}"),
    ("acc_onnxruntime", "acc ort", "{:.3f}"),
    ("acc_simulated", "acc HE-fr", "{:.3f}"),
    ("acc_encrypted", "acc enc", "{:.3f}"),
]


DEPLOY_COLUMNS = [  # (key, header, format)
    ("model", "model", "{}"),
    ("public_key_mb", "pk MB", "{:.1f}"),
    ("eval_key_mb", "eval keys MB", "{:.0f}"),
    ("secret_key_mb", "sk MB", "{:.1f}"),
    ("ct_in_mb", "ct in MB", "{:.2f}"),
    ("ct_out_mb", "ct out MB", "{:.2f}"),
    ("server_start_s", "server start s", "{:.1f}"),
    ("evaluate_s", "eval s", "{:.2f}"),
    ("round_trip_first_s", "1st trip s", "{:.2f}"),
    ("round_trip_s", "round trip s", "{:.2f}"),
    ("samples_per_ct", "samples/ct", "{}"),
    ("batch_eval_s", "batch eval s", "{:.2f}"),
    ("single_images_per_s", "img/s single", "{:.2f}"),
    ("batch_images_per_s", "img/s batch", "{:.2f}"),
]


DEEP_COLUMNS = [  # (key, header, format): the rows of programs that bootstrap
    ("model", "model", "{}"),
    ("ring_dim", "ring", "{}"),
    ("depth", "depth", "{}"),
    ("bootstraps", "bootstraps", "{}"),
    ("compile_s", "compile s", "{:.0f}"),
    ("keygen_s", "keygen s", "{:.0f}"),
    ("evaluate_s", "eval s", "{:.0f}"),
    ("threads", "threads", "{}"),
    ("rotation_keys", "rotation keys", "{}"),
    ("eval_key_mb", "eval key MB", "{:.0f}"),
    ("peak_rss_mb", "peak MB", "{:.0f}"),
    ("predicted_peak_mb", "limit-fitted MB", "{:.0f}"),
    ("max_abs_err_vs_simulator", "err vs sim", "{:.1e}"),
    ("max_logit_error", "err vs ort", "{:.1e}"),
    ("acc_onnxruntime", "acc original", "{:.3f}"),
    ("acc_simulated", "acc HE-friendly", "{:.3f}"),
    ("acc_encrypted", "acc enc", "{:.3f}"),
    ("n_encrypted", "n enc", "{}"),
]


PEER_COLUMNS = [  # (key, header, format): hec and the peers, same model, images and threads
    ("model", "model", "{}"),
    ("tool", "tool", "{}"),
    ("params", "parameters", "{}"),
    ("keygen_s", "keygen s", "{:.2f}"),
    ("encrypt_ms", "enc ms", "{:.1f}"),
    ("evaluate_s", "eval s", "{:.2f}"),
    ("decrypt_ms", "dec ms", "{:.1f}"),
    ("cpu_over_wall", "cpu/wall", "{:.2f}"),
    ("threads", "threads", "{}"),
    ("rotation_keys", "keys", "{}"),
    ("eval_key_mb", "key MB", "{:.0f}"),
    ("peak_rss_mb", "peak MB", "{:.0f}"),
    ("max_logit_error", "logit err", "{:.1e}"),
    ("acc_plain", "acc plain", "{:.3f}"),
    ("acc_he_friendly", "acc HE-fr", "{:.3f}"),
    ("acc_encrypted", "acc enc", "{:.3f}"),
    ("n_encrypted", "n enc", "{}"),
    ("hec_over_peer_latency", "hec/peer lat", "{:.3g}"),
    ("hec_over_peer_memory", "hec/peer mem", "{:.3g}"),
    ("hec_over_peer_accuracy", "hec/peer acc", "{:.3f}"),
    ("status", "status", "{}"),
]


PLAN_COLUMNS = [  # (key, header, format): a peer's plan for a model it cannot run here
    ("model", "model", "{}"),
    ("tool", "tool", "{}"),
    ("params", "parameters", "{}"),
    ("l_eff", "levels", "{}"),
    ("input_level", "input level", "{}"),
    ("bootstraps", "bootstraps", "{}"),
    ("bootstrappers", "bootstrapper slots", "{}"),
    ("diagonals", "diagonals", "{}"),
    ("plaintext_gib", "plaintexts GiB", "{:.1f}"),
    ("python_diagonals_gib", "Python diagonals GiB", "{:.1f}"),
    ("pack_first_gib", "first packing GiB", "{:.1f}"),
    ("pack_block_gib", "largest packing GiB", "{:.1f}"),
    ("pack_block_layer", "at layer", "{}"),
    ("peak_rss_mb", "plan peak MB", "{:.0f}"),
    ("full_compile", "full compile", "{}"),
    ("status", "status", "{}"),
]


def hec_peer_row(row: dict) -> dict:
    """hec's latency row in the peers table's terms."""
    return {
        **row,
        "tool": f"hec {hec.__version__}",
        "params": f"CKKS N={row['ring_dim']}, log Q {row['log_q_bits']}, scale 2^"
        f"{row['scale_bits']}, {row['rotation_keys']} rotation keys",
        "acc_plain": row["acc_onnxruntime"],
        "acc_he_friendly": row["acc_simulated"],
        "status": "ok",
    }


def bench_peers(
    row: dict, folder: Path, names: list[str], images: dict[str, int], timeout: float, work: Path
) -> list[dict]:
    """Each peer on the model of hec's latency row ``row``, with hec/peer ratios."""
    out = [hec_peer_row(row)]
    for peer in names:
        print(f"  {peer} on {row['model']} ...", file=sys.stderr, flush=True)
        result = peers.run_peer(peer, row["model"], folder, images[peer], work, timeout)
        peers.compare(row, result)
        if result.get("status", "").startswith("ok"):
            result.setdefault("acc_plain", row["acc_onnxruntime"])  # the same ONNX model
        out.append(result)
    return out


def print_table(rows: list[dict], columns: list[tuple[str, str, str]] = COLUMNS) -> None:
    cells = [[h for _, h, _ in columns]] + [
        [f.format(r[k]) if k in r else "-" for k, _, f in columns] for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for j, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 latency image, 16 batch images")
    ap.add_argument("--images", type=int, default=10, help="encrypted images per model (latency)")
    ap.add_argument("--batch-images", type=int, default=1024, help="images in the batch run")
    ap.add_argument("--threads", type=int, default=1, help="batch packing: worker processes")
    ap.add_argument("--packing", choices=["slots", "batch", "both"], default="both")
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        help="results file (default: benchmarks/results.json, "
        "written by full runs only); a PNG plot goes beside it when matplotlib is installed",
    )
    ap.add_argument(
        "--peers",
        default=None,
        help="comma-separated peers to compare with, 'none' or 'all' "
        f"({', '.join(peers.PEERS)}; default all, --quick: TenSEAL)",
    )
    ap.add_argument(
        "--peer-images",
        type=int,
        default=None,
        help="TenSEAL and Orion images (default --images)",
    )
    ap.add_argument("--concrete-images", type=int, default=3, help="Concrete ML FHE images")
    ap.add_argument("--peer-timeout", type=float, default=3600, help="seconds per peer and model")
    ap.add_argument("--model", default="", help="only models whose name contains this")
    ap.add_argument("--requests", type=int, default=3, help="round trips through hec serve")
    ap.add_argument("--no-deploy", action="store_true", help="skip the deployment table")
    ap.add_argument("--batch-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.batch_worker:  # internal: one batch-packed run in this fresh process
        row = batch_worker(args.batch_worker, args.batch_images, args.threads, args.work)
        args.json.write_text(json.dumps(row) + "\n")
        return 0
    n = 1 if args.quick else args.images
    n_batch = 16 if args.quick else args.batch_images
    selected = [name for name in MODELS if args.model in name]
    if args.quick and not args.model:  # seconds, for CI; the others need minutes and GBs of keys
        selected = ["cryptonets-digits"]
    if args.peers is None:  # Concrete ML compiles for minutes: not in the quick mode CI runs
        args.peers = "TenSEAL" if args.quick else "all"
    names = {"all": list(peers.PEERS), "none": []}.get(args.peers, args.peers.split(","))
    unknown = [p for p in names if p not in peers.PEERS]
    if unknown:
        ap.error(f"unknown peer {unknown[0]!r}: choose from {', '.join(peers.PEERS)}")
    peer_images = {
        "TenSEAL": args.peer_images or n,
        "TenSEAL-40": args.peer_images or n,
        "Concrete ML": 1 if args.quick else args.concrete_images,
        "Orion": args.peer_images or n,
    }
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows, peer_rows, plan_rows = [], [], []
        for name in selected:
            bench = MODELS[name]
            folder, degree = bench.folder, bench.degree
            print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            plan = name in peers.PLANS and peers.PLANS[name][0] in names
            if plan and bench.latency_only:  # first: the evaluation's keys stay in OpenFHE's
                # process-wide maps (21 GB for ResNet-20), with no room left for the plan
                print(f"  {peers.PLANS[name][0]}'s plan ...", file=sys.stderr, flush=True)
                plan_rows.append(peers.run_plan(name, folder, Path(tmp), args.peer_timeout))
            if args.packing in ("slots", "both"):
                rows.append(bench_model(name, bench, n, Path(tmp)))
            # a pruned variant is compared with its unpruned model, not with peers
            if args.packing in ("slots", "both") and not bench.pruned:
                if names:
                    print(f"peers on {name} ...", file=sys.stderr, flush=True)
                    timeout = min(args.peer_timeout, 600) if args.quick else args.peer_timeout
                    peer_rows += bench_peers(
                        rows[-1], folder, names, peer_images, timeout, Path(tmp)
                    )
                    if plan and not bench.latency_only:
                        print(f"  {peers.PLANS[name][0]}'s plan ...", file=sys.stderr, flush=True)
                        plan_rows.append(peers.run_plan(name, folder, Path(tmp), timeout))
                if not args.no_deploy and not bench.latency_only:
                    print(f"deployment of {name} ...", file=sys.stderr, flush=True)
                    requests = 1 if args.quick else args.requests
                    bench_deployment(rows[-1], folder, degree, requests, Path(tmp))
            if (
                args.packing in ("batch", "both")
                and bench.budget is None
                and not bench.latency_only
            ):
                print(f"batch packing of {name} ...", file=sys.stderr, flush=True)
                rows.append(bench_batch(name, n_batch, args.threads, Path(tmp)))
    meta = {
        "date": date.today().isoformat(),
        "time_utc": datetime.now(timezone.utc).strftime("%H:%M"),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "latency_images": n,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "hec": hec.__version__,
        "batch_threads": args.threads,
    }
    print(
        f"hec benchmark {meta['date']}, {meta['cpus']} CPUs, OMP_NUM_THREADS="
        f"{meta['omp_threads']}, {n} latency image(s)"
        + (f", {n_batch} batch image(s)" if args.packing != "slots" else "")
        + " per model, "
        f"load average {load_before[0]:.1f} before / {meta['load_average_after'][0]:.1f} after"
    )
    print_table(rows)
    deep = [r for r in rows if r.get("bootstraps")]
    if deep:
        print()
        print_table(deep, DEEP_COLUMNS)
    deployed = [r for r in rows if "round_trip_s" in r]
    if deployed:
        print()
        print_table(deployed, DEPLOY_COLUMNS)
    if peer_rows:
        print()
        print_table(peer_rows, PEER_COLUMNS)
    if plan_rows:
        print()
        print_table(plan_rows, PLAN_COLUMNS)
    if args.json is None and not args.quick:
        args.json = REPO / "benchmarks" / "results.json"
    if args.json is not None:
        results = {"meta": meta, "rows": rows, "peers": peer_rows, "plans": plan_rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"written {args.json}")
        print(plot_results.plot(results, args.json.with_suffix(".png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
