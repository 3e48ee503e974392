"""Concrete ML (TFHE, Zama) compiling a bundled model: quantized integers, table lookups.

    .venv-peers/bin/python benchmarks/peers/concrete_adapter.py \
        --model-dir examples/cryptonets_digits --images 3 --json out.json

Concrete ML's documented path for a trained network: post-training quantization of the same
``model.onnx`` hec compiles (``compile_onnx_model``, which is ``compile_torch_model`` after the
torch export; the model is converted to opset 14, the version it requires), calibrated on the
model's ``calib.npz``, then compiled by Concrete to TFHE. Linear layers become integer dot
products on LWE ciphertexts; every non-linear op (x², ReLU, SiLU, max pooling, and the
re-quantization between layers) becomes a programmable bootstrap (a table lookup), so Concrete
runs the original activations, not polynomial approximations, at ``n_bits`` precision.

Security: Concrete's default, 128 bits, with its default error probability per bootstrap. It
runs ``--images`` images through the real FHE circuit (``fhe="execute"``) and the quantized
model in the clear (``fhe="disable"``) on the whole test split for accuracy.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CannotExpress, load_model, load_split, peak_rss_mb, run  # noqa: E402

N_BITS = int(os.environ.get("HEC_PEERS_CONCRETE_BITS", "6"))  # weights and activations
# Accumulators rounded to this many bits before each table lookup, as Concrete ML recommends for
# CNNs (0: exact 14-bit lookups, many times slower); the accuracy below is measured with it.
ROUNDING_BITS = int(os.environ.get("HEC_PEERS_CONCRETE_ROUNDING", "6"))


def main(args) -> dict:
    import onnx
    import torch
    from concrete.ml import __version__ as cml_version
    from concrete.ml.torch.compile import compile_onnx_model

    torch.set_num_threads(args.threads)
    model = onnx.version_converter.convert_version(load_model(args.model_dir), 14)
    calib = np.load(args.model_dir / "calib.npz")["x"]
    x, y = load_split(args.model_dir)
    n = min(args.images, len(x))
    row: dict = {
        "tool": f"Concrete ML {cml_version}",
        "approach": f"post-training quantization, {N_BITS}-bit, TFHE table lookups",
        "n_bits": N_BITS,
        "security": "128-bit (Concrete's default)",
        "threads": args.threads,
    }
    kw = {}
    if ROUNDING_BITS:
        kw["rounding_threshold_bits"] = {"n_bits": ROUNDING_BITS, "method": "approximate"}
        row["approach"] += f", accumulators rounded to {ROUNDING_BITS} bits"
    t = time.perf_counter()
    try:
        module = compile_onnx_model(model, calib, n_bits=N_BITS, **kw)
    except (ValueError, AssertionError, RuntimeError) as e:
        raise CannotExpress(f"compile_onnx_model: {str(e).splitlines()[0][:200]}") from e
    row["compile_s"] = time.perf_counter() - t
    circuit = module.fhe_circuit
    row["max_bit_width"] = int(circuit.graph.maximum_integer_bit_width())
    row["pbs"] = int(circuit.programmable_bootstrap_count)
    lookups = f"{ROUNDING_BITS}-bit rounded" if ROUNDING_BITS else f"{row['max_bit_width']}-bit"
    row["params"] = f"TFHE, {N_BITS}-bit PTQ, {row['pbs']} PBS ({lookups})"
    row["key_switches"] = int(circuit.statistics.get("key_switch_count", 0))
    row["compile_peak_rss_mb"] = peak_rss_mb()

    # Concrete's simulation: quantized, rounded, in the clear (the FHE circuit's results)
    quantized = module.forward(x, fhe="simulate")
    row["acc_he_friendly"] = float((quantized.argmax(1) == y).mean())
    t = time.perf_counter()
    circuit.keygen(force=True)
    row["keygen_s"] = time.perf_counter() - t
    row["eval_key_mb"] = len(circuit.keys.evaluation.serialize()) / 1e6
    stages = np.zeros(3)
    correct, max_err = 0, 0.0
    cpu = time.process_time()  # all the process's threads
    for i in range(n):
        t = time.perf_counter()
        enc = circuit.encrypt(module.quantize_input(x[i : i + 1]))
        stages[0] += time.perf_counter() - t
        t = time.perf_counter()
        res = circuit.run(enc)
        stages[1] += time.perf_counter() - t
        t = time.perf_counter()
        out = module.dequantize_output(circuit.decrypt(res))
        stages[2] += time.perf_counter() - t
        correct += int(out.argmax() == y[i])
        max_err = max(max_err, float(np.abs(out[0] - quantized[i]).max()))
    row["n_encrypted"] = n
    if n == 0:  # compiled, simulated and keys made; no image through the circuit
        row["status"] = "ok: FHE not run (--concrete-images 0)"
        return row
    row["cpu_over_wall"] = (time.process_time() - cpu) / stages.sum()
    row["encrypt_ms"], row["evaluate_s"], row["decrypt_ms"] = stages / n * [1e3, 1, 1e3]
    row["acc_encrypted"] = correct / n
    row["max_abs_err_vs_simulated"] = max_err  # bootstrap errors and approximate rounding
    return row


if __name__ == "__main__":
    sys.exit(run(main, __doc__.splitlines()[0]))
