"""TenSEAL (CKKS on Microsoft SEAL) running a bundled model with TenSEAL's documented approach.

    .venv-peers/bin/python benchmarks/peers/tenseal_adapter.py \
        --model-dir examples/cryptonets_digits --images 10 --json out.json

The approach is the one of TenSEAL's tutorial "Encrypted convolution on MNIST": the client pads
the image and encodes it with ``ts.im2col_encoding`` (one ciphertext whose slots hold the image's
windows, one window per output position); each output channel is ``conv2d_im2col(kernel)`` plus
its bias; ``CKKSVector.pack_vectors`` concatenates the channels in (C, H, W) order; the square is
``square_()``; dense layers are ``mm`` (vector-matrix product, one rotation per input element).
Linear layers between two nonlinear ones are composed exactly into the next dense layer's matrix
(average pooling and flatten become part of ``fc1``), so there is nothing TenSEAL-specific in
the weights: they are read from the same ``model.onnx`` that hec compiles.

Parameters follow the tutorial: ring N = 8192, coefficient moduli [31, 26 x 6, 31] = 218 bits,
scale 2^26 -- the largest modulus the HE standard allows at 128-bit security for N = 8192.
Models that need more levels, or ``--scale-bits 40`` (hec's precision), move to N = 16384
with 40-bit scales (at most 438 bits). One thread (``n_threads``), as hec's
``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CannotExpress, attributes, initializers, load_model, load_split, run  # noqa: E402

# (ring dimension, bits of the largest coefficient modulus at 128-bit security) -- HE standard
MAX_LOGQ_128 = {8192: 218, 16384: 438, 32768: 881}
NONPOLY = {"Relu", "Sigmoid", "Tanh", "MaxPool", "Gelu", "Softplus", "Elu", "Exp"}


@dataclass
class Conv:
    kernels: np.ndarray  # (C_out, k, k)
    bias: np.ndarray  # (C_out,)
    pad: int
    stride: int
    out_hw: tuple[int, int]


@dataclass
class Square:
    pass


@dataclass
class Dense:
    matrix: np.ndarray  # (out, in) acting on the encrypted vector as it is packed
    bias: np.ndarray


def plan(model) -> tuple[list, tuple[int, int, int]]:
    """The model as TenSEAL stages; raises ``CannotExpress`` naming every node it cannot run."""
    weights = initializers(model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    in_shape = tuple(d.dim_value for d in dims[1:])
    stages: list = []
    reasons: list[str] = []
    nonpoly: list[str] = []  # activations TenSEAL would need approximated (polyval)
    blocked = False  # a layer it cannot run: the shapes after it are unknown
    shape = in_shape  # logical (C, H, W) or (n,) of the value the next node reads
    pending: np.ndarray | None = None  # linear map not yet applied (logical <- packed)
    for node in model.graph.node:
        op, a = node.op_type, attributes(node)
        if blocked and op not in NONPOLY | {
            "MaxPool"
        }:  # past a layer it cannot run: only name the others
            continue
        if op == "Conv":
            w = weights[node.input[1]]
            if stages or pending is not None:
                reasons.append(
                    f"{node.name or op} ({w.shape[1]} input channels) convolves an encrypted "
                    "feature map: conv2d_im2col only applies to the client's im2col encoding of "
                    "one 2-D input image"
                )
                blocked = True
                continue
            if w.shape[1] != 1 or a.get("group", 1) != 1:
                reasons.append(
                    f"{node.name or op}: {w.shape[1]} input channels -- im2col_encoding packs "
                    "one 2-D image"
                )
                blocked = True
                continue
            pads, strides = a.get("pads", [0] * 4), a.get("strides", [1, 1])
            if len(set(pads)) != 1 or strides[0] != strides[1] or w.shape[2] != w.shape[3]:
                reasons.append(f"{node.name or op}: unequal pads, strides or kernel sides")
                blocked = True
                continue
            k, p, s = w.shape[2], pads[0], strides[0]
            oh, ow = ((shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1)
            bias = weights[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0])
            stages.append(Conv(w[:, 0], bias, p, s, (oh, ow)))
            shape = (w.shape[0], oh, ow)
        elif op == "Mul" and node.input[0] == node.input[1]:
            if pending is not None:  # a linear map right before a square: apply it first
                stages.append(Dense(pending, np.zeros(len(pending))))
                pending = None
            stages.append(Square())
        elif op == "MaxPool" and len(shape) == 3:  # not linear; its output shape is known
            nonpoly.append(op)
            k = a["kernel_shape"]
            shape = (shape[0], shape[1] // k[0], shape[2] // k[1])
        elif op == "AveragePool":
            k, s = a["kernel_shape"], a.get("strides", a["kernel_shape"])
            if any(a.get("pads", [0])) or k != s:
                reasons.append(f"{node.name or op}: padded or overlapping pooling")
                blocked = True
                continue
            c, h, w_ = shape
            pool = np.zeros((c * (h // k[0]) * (w_ // k[1]), c * h * w_))
            for ci in range(c):
                for i in range(h // k[0]):
                    for j in range(w_ // k[1]):
                        row = (ci * (h // k[0]) + i) * (w_ // k[1]) + j
                        for u in range(k[0]):
                            for v in range(k[1]):
                                col = (ci * h + i * k[0] + u) * w_ + j * k[1] + v
                                pool[row, col] = 1 / (k[0] * k[1])
            pending = pool if pending is None else pool @ pending
            shape = (c, h // k[0], w_ // k[1])
        elif op == "Flatten":
            shape = (int(np.prod(shape)),)
        elif op == "Gemm":
            w = weights[node.input[1]]
            if not a.get("transB", 0):
                w = w.T
            w = w * a.get("alpha", 1.0)
            bias = weights[node.input[2]] * a.get("beta", 1.0) if len(node.input) > 2 else 0
            stages.append(
                Dense(w if pending is None else w @ pending, np.broadcast_to(bias, (len(w),)))
            )
            pending = None
            shape = (len(w),)
        elif op in NONPOLY:
            nonpoly.append(op)
        elif op in ("Mul", "Add") and all(i not in weights for i in node.input):
            pass  # x * Sigmoid(x) and the like: the Sigmoid is named already
        else:
            reasons.append(f"{node.name or op}: {op} is not mapped to TenSEAL here")
            blocked = True
    if pending is not None:
        stages.append(Dense(pending, np.zeros(len(pending))))
    if not stages or not isinstance(stages[0], Conv | Dense):
        reasons.append("the first layer is neither a convolution nor a dense layer")
    if nonpoly:
        counts = ", ".join(f"{op} x{nonpoly.count(op)}" for op in dict.fromkeys(nonpoly))
        reasons.append(f"not polynomials ({counts}): TenSEAL has polyval only")
    if reasons:
        raise CannotExpress("; ".join(reasons))
    return stages, in_shape


def levels(stages: list) -> int:
    """Rescales the stages consume (measured): conv2d_im2col one, pack_vectors one more (it masks
    each channel before rotating it into place), square and mm one each."""
    return sum(2 if isinstance(s, Conv) else 1 for s in stages)


def parameters(n_levels: int, min_scale_bits: int = 26) -> tuple[int, list[int], int]:
    """Smallest ring, its coefficient moduli and scale bits at 128-bit security for ``n_levels``
    rescales with scales of at least ``min_scale_bits`` bits."""
    for ring, scale, edge in ((8192, 26, 31), (16384, 40, 60), (16384, 30, 40), (32768, 50, 60)):
        if scale < min_scale_bits:
            continue
        moduli = [edge] + [scale] * n_levels + [edge]
        if sum(moduli) <= MAX_LOGQ_128[ring]:
            return ring, moduli, scale
    raise CannotExpress(
        f"{n_levels} levels exceed N = 32768 at 128-bit security (no bootstrapping)"
    )


def plain_forward(stages: list, image: np.ndarray) -> np.ndarray:
    """The same stages on numpy (float64): what the ciphertexts should decrypt to."""
    v = image[0].astype(np.float64)
    for s in stages:
        if isinstance(s, Conv):
            p = np.pad(v, s.pad)
            k = s.kernels.shape[1]
            oh, ow = s.out_hw
            win = np.array(
                [
                    p[i * s.stride : i * s.stride + k, j * s.stride : j * s.stride + k].ravel()
                    for i in range(oh)
                    for j in range(ow)
                ]
            )
            v = (win @ s.kernels.reshape(len(s.kernels), -1).T).T + s.bias[:, None]
            v = v.ravel()
        elif isinstance(s, Square):
            v = v * v
        else:
            v = s.matrix @ v + s.bias
    return v


def encrypted_forward(ts, context, stages: list, image: np.ndarray):
    """(encrypt seconds, evaluate seconds, decrypt seconds, decrypted output)."""
    first = stages[0]
    t = time.perf_counter()
    if isinstance(first, Conv):
        padded = np.pad(image[0].astype(np.float64), first.pad)
        k = first.kernels.shape[1]
        enc, windows = ts.im2col_encoding(context, padded.tolist(), k, k, first.stride)
    else:
        enc = ts.ckks_vector(context, image.ravel().astype(np.float64).tolist())
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    for s in stages:
        if isinstance(s, Conv):
            channels = [
                enc.conv2d_im2col(kernel.tolist(), windows) + float(b)
                for kernel, b in zip(s.kernels, s.bias, strict=True)
            ]
            enc = ts.CKKSVector.pack_vectors(channels)
        elif isinstance(s, Square):
            enc.square_()
        else:
            enc = enc.mm(s.matrix.T.tolist()) + s.bias.tolist()
    t_eval = time.perf_counter() - t
    t = time.perf_counter()
    out = np.array(enc.decrypt())
    t_dec = time.perf_counter() - t
    return t_enc, t_eval, t_dec, out


def main(args) -> dict:
    import tenseal as ts

    stages, _ = plan(load_model(args.model_dir))
    ring, moduli, scale = parameters(levels(stages), args.scale_bits)
    x, y = load_split(args.model_dir)
    n = min(args.images, len(x))
    n_keys = 2 * int(np.log2(ring // 2))  # generate_galois_keys(): every +-2^i step
    row: dict = {
        "tool": f"TenSEAL {ts.__version__}" + (f", {scale}-bit" if scale != 26 else ""),
        "galois_keys": n_keys,
        "approach": "im2col conv + pack_vectors, square, mm (vector x plain matrix)",
        "ring_dim": ring,
        "coeff_mod_bits": moduli,
        "scale_bits": scale,
        "params": f"CKKS N={ring}, log Q {sum(moduli)}, scale 2^{scale}, {n_keys} Galois keys",
        "security": f"128-bit (HE standard: N={ring}, log Q={sum(moduli)} <= {MAX_LOGQ_128[ring]})",
        "threads": args.threads,
        "depth": levels(stages),
    }
    t = time.perf_counter()
    context = ts.context(
        ts.SCHEME_TYPE.CKKS, ring, coeff_mod_bit_sizes=moduli, n_threads=args.threads
    )
    context.global_scale = 2.0**scale
    context.generate_galois_keys()
    row["keygen_s"] = time.perf_counter() - t
    public = context.copy()
    public.make_context_public()  # what a server would hold: evaluation keys, no secret key
    row["eval_key_mb"] = len(public.serialize(save_galois_keys=True, save_relin_keys=True)) / 1e6
    stages_s = np.zeros(3)
    correct, max_err = 0, 0.0
    cpu = time.process_time()  # all the process's threads
    for i in range(n):
        *seconds, out = encrypted_forward(ts, context, stages, x[i])
        stages_s += seconds
        ref = plain_forward(stages, x[i])
        out = out[: len(ref)]
        max_err = max(max_err, float(np.abs(out - ref).max()))
        correct += int(out.argmax() == y[i])
    row["cpu_over_wall"] = (time.process_time() - cpu) / stages_s.sum()
    row["encrypt_ms"], row["evaluate_s"], row["decrypt_ms"] = stages_s / n * [1e3, 1, 1e3]
    row["acc_encrypted"] = correct / n
    row["n_encrypted"] = n
    row["max_abs_err_vs_plain"] = max_err
    plain = np.array([plain_forward(stages, xi) for xi in x])
    row["acc_plain"] = float((plain.argmax(1) == y).mean())
    row["acc_he_friendly"] = row["acc_plain"]  # the same model: nothing was approximated
    return row


def options(ap) -> None:
    ap.add_argument(
        "--scale-bits",
        type=int,
        default=26,
        help="smallest scale: 26 is TenSEAL's tutorial "
        "(N = 8192); 40 is hec's precision (N = 16384, moduli [60, 40 x 6, 60])",
    )


if __name__ == "__main__":
    sys.exit(run(main, __doc__.splitlines()[0], options))
