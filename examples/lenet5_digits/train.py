"""Train a LeNet-5 (ReLU, average pooling) on scikit-learn digits upscaled to 28x28; export to ONNX.

Run from the repository root:

    .venv/bin/python examples/lenet5_digits/train.py

Writes, next to this file: model.onnx (TorchScript exporter, opset 13), model_dynamo.onnx
(dynamo exporter, opset 18), test.npz, calib.npz, train.npz, sample.npy and
activation_ranges.json (the value range of every ReLU's input on the calibration set, measured
with onnxruntime on both ONNX files and with torch hooks). Needs torch and onnxscript.

Upscaling: each 8x8 image (pixel / 16, in [0, 1]) is resized to 28x28 with
``torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)``
and clipped to [0, 1] (bilinear interpolation is a convex combination, so the clip only guards
rounding). See ``upscale`` below; the same function regenerates every image in the .npz files.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = Path(__file__).resolve().parent
# The exporters write IR 7 (TorchScript, opset 13) and IR 10 (dynamo, opset 18); onnxruntime 1.23
# reads up to IR 11. Keep what the exporter wrote, but cap it so a newer torch/onnx cannot write a
# file the pinned onnxruntime refuses.
MAX_IR_VERSION = 10
SEED = 0
# One intra-op thread: the result depends on the thread count (reductions split differently), so
# it is fixed; and for a network this small two threads are slower (measured 15x slower on a busy
# 2-core machine, where the threads wait on each other at every op).
THREADS = 1
SIZE = 28
EPOCHS = 30
BATCH = 32
LR = 2e-3
WEIGHT_DECAY = 1e-4
CLIP = 1.0
MAX_SHIFT = 1  # augmentation: random integer translation of up to +-1 pixel (zero fill)
N_CALIB = 512
ACT_DESC = "ReLU (the input of its ONNX Relu node)"
ACT_OP = "Relu"


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 inputs, ReLU activations and average pooling.

    Conv(1->6, 5x5, pad 2) -> ReLU -> AvgPool(2) -> Conv(6->16, 5x5) -> ReLU -> AvgPool(2)
    -> flatten (400) -> Linear(400, 120) -> ReLU -> Linear(120, 84) -> ReLU -> Linear(84, 10)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.act1 = nn.ReLU()
        self.pool1 = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.act2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(400, 120)
        self.act3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.act4 = nn.ReLU()
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.conv1(x)))  # [N,6,14,14]
        x = self.pool2(self.act2(self.conv2(x)))  # [N,16,5,5]
        x = torch.flatten(x, 1)
        x = self.act3(self.fc1(x))
        x = self.act4(self.fc2(x))
        return self.fc3(x)


# (module name, what feeds it) in graph order; the ONNX Relu nodes appear in the same order.
ACTIVATIONS = [
    ("act1", "conv1 output [N,6,28,28]"),
    ("act2", "conv2 output [N,16,10,10]"),
    ("act3", "fc1 output [N,120]"),
    ("act4", "fc2 output [N,84]"),
]


def upscale(x8: np.ndarray) -> np.ndarray:
    """[N,1,8,8] float32 in [0,1] -> [N,1,28,28] float32 in [0,1], bilinear, no corner align."""
    with torch.no_grad():
        x = F.interpolate(
            torch.from_numpy(x8), size=(SIZE, SIZE), mode="bilinear", align_corners=False
        )
    return np.clip(x.numpy(), 0.0, 1.0).astype(np.float32)


def load_data():
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N,1,8,8] in [0,1]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return upscale(x_tr), upscale(x_te), y_tr, y_te


def shift_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by a random (dy, dx) in [-MAX_SHIFT, MAX_SHIFT]^2, filling with 0."""
    n, p = x.shape[0], MAX_SHIFT
    d = torch.randint(-p, p + 1, (n, 2), generator=gen)
    padded = F.pad(x[:, 0], (p, p, p, p))  # [n, SIZE + 2p, SIZE + 2p]
    ar = torch.arange(SIZE)
    rows = ar[None, :] + p - d[:, 0:1]  # [n, SIZE]
    cols = ar[None, :] + p - d[:, 1:2]
    out = padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out[:, None]


def train(x_tr: np.ndarray, y_tr: np.ndarray) -> LeNet5:
    torch.manual_seed(SEED)
    model = LeNet5()
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), BATCH):
            idx = perm[i : i + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(shift_batch(xt[idx], gen)), yt[idx])
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite loss at epoch {epoch}")
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if epoch % 10 == 9 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1:3d}  train loss {total / len(xt):.4f}")
    model.eval()
    return model


def set_ir(path: Path) -> None:
    """Cap the IR version; shorten absolute paths in the dynamo exporter's per-node stack traces."""
    m = onnx.load(str(path))
    m.ir_version = min(m.ir_version, MAX_IR_VERSION)
    prefixes = {}  # the Python installation first: the venv may live inside the repo
    for site_dir in (Path(torch.__file__).resolve().parents[1], Path(os.__file__).resolve().parent):
        prefixes[str(site_dir) + os.sep] = "<python>/"
    prefixes[str(HERE.parents[1]) + os.sep] = ""
    for node in m.graph.node:
        for prop in node.metadata_props:
            for old, new in prefixes.items():
                prop.value = prop.value.replace(old, new)
    onnx.checker.check_model(m, full_check=True)
    onnx.save_model(m, str(path))


def export(model: nn.Module, sample: torch.Tensor) -> list[Path]:
    ts_path = HERE / "model.onnx"
    torch.onnx.export(
        model,
        (sample,),
        str(ts_path),
        dynamo=False,
        opset_version=13,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        training=torch.onnx.TrainingMode.EVAL,
    )
    set_ir(ts_path)
    paths = [ts_path]

    dyn_path = HERE / "model_dynamo.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    prog = torch.onnx.export(
        model,
        (sample.repeat(2, 1, 1, 1),),
        dynamo=True,
        opset_version=18,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        external_data=False,
        optimize=True,
        verify=False,
    )
    prog.save(str(dyn_path), external_data=False)
    set_ir(dyn_path)
    paths.append(dyn_path)
    return paths


def stats(v: np.ndarray) -> dict:
    v = v.astype(np.float64).ravel()
    return {
        "min": float(v.min()),
        "max": float(v.max()),
        "p1": float(np.percentile(v, 1)),
        "p99": float(np.percentile(v, 99)),
    }


def torch_activation_inputs(model: nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    seen: dict[str, np.ndarray] = {}
    hooks = []
    for name, _ in ACTIVATIONS:

        def hook(_mod, inp, _out, name=name):
            seen[name] = inp[0].detach().numpy().copy()

        hooks.append(getattr(model, name).register_forward_hook(hook))
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    return seen


def ort_activation_inputs(path: Path, x: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """Expose the input of every ACT_OP node as a graph output; run onnxruntime on x."""
    m = onnx.load(str(path))
    names = [n.input[0] for n in m.graph.node if n.op_type == ACT_OP]
    existing = {o.name for o in m.graph.output}
    for name in names:
        if name not in existing:
            m.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(names, {"input": x})
    return names, outs


def main() -> int:
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    x_tr, x_te, y_tr, y_te = load_data()
    model = train(x_tr, y_tr)

    with torch.no_grad():
        ref = model(torch.from_numpy(x_te)).numpy()
    n_ok = int((ref.argmax(1) == y_te).sum())
    print(f"torch test accuracy: {n_ok / len(y_te):.4f} ({n_ok}/{len(y_te)})")

    np.savez_compressed(HERE / "test.npz", x=x_te, y=y_te)
    np.save(HERE / "sample.npy", x_te[:1])
    # calibration: the first N_CALIB training images of the fixed split (a subset of train.npz)
    x_cal, y_cal = x_tr[:N_CALIB], y_tr[:N_CALIB]
    np.savez_compressed(HERE / "calib.npz", x=x_cal, y=y_cal)
    np.savez_compressed(HERE / "train.npz", x=x_tr, y=y_tr)
    for f in ("test.npz", "calib.npz", "train.npz", "sample.npy"):
        print(f"{f}: {(HERE / f).stat().st_size} B")

    sample = torch.from_numpy(x_te[:1])
    ok = True
    ranges: dict = {
        "description": f"input of each {ACT_DESC} on calib.npz ({N_CALIB} images); "
        "p1/p99 are per-tensor percentiles over all elements; test_min/test_max on test.npz",
        "activations": [],
    }
    t_cal = torch_activation_inputs(model, x_cal)
    t_te = torch_activation_inputs(model, x_te)
    for name, feeds in ACTIVATIONS:
        ranges["activations"].append(
            {
                "module": name,
                "feeds": feeds,
                **stats(t_cal[name]),
                "test_min": float(t_te[name].min()),
                "test_max": float(t_te[name].max()),
                "onnx_input": {},
            }
        )

    for path in export(model, sample):
        m = onnx.load(str(path))
        ops = sorted({n.op_type for n in m.graph.node})
        opset = {o.domain or "ai.onnx": o.version for o in m.opset_import}
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x_te})[0]
        one = sess.run(None, {"input": x_te[:1]})[0]
        err = float(np.abs(got - ref).max())
        rel = err / float(np.abs(ref).max())
        ort_acc = float((got.argmax(1) == y_te).mean())
        close = np.allclose(got, ref, rtol=1e-5, atol=1e-5) and np.allclose(
            one, ref[:1], rtol=1e-5, atol=1e-5
        )
        # activation inputs measured by onnxruntime must agree with the torch hooks
        names, acts = ort_activation_inputs(path, x_cal)
        if len(names) != len(ACTIVATIONS):
            print(f"{path.name}: {len(names)} {ACT_OP} nodes, expected {len(ACTIVATIONS)}")
            close = False
            names, acts = [], []
        for entry, tname, val in zip(ranges["activations"], names, acts, strict=False):
            entry["onnx_input"][path.name] = tname
            want = t_cal[entry["module"]]
            scale = float(np.abs(want).max())
            if val.shape != want.shape or not np.allclose(val, want, rtol=1e-5, atol=1e-5 * scale):
                print(f"{path.name}: {ACT_OP} input {tname} differs from torch {entry['module']}")
                close = False
        ok &= close
        print(
            f"{path.name}: ir {m.ir_version} opset {opset} ops {ops} "
            f"size {path.stat().st_size} B  max|ort-torch| {err:.2e} (rel {rel:.1e})  "
            f"ort accuracy {ort_acc:.4f}  {'OK' if close else 'MISMATCH'}"
        )

    for e in ranges["activations"]:
        print(
            f"{e['module']} ({e['feeds']}): calib min {e['min']:.4f} max {e['max']:.4f} "
            f"p1 {e['p1']:.4f} p99 {e['p99']:.4f}; test min {e['test_min']:.4f} "
            f"max {e['test_max']:.4f}; onnx {e['onnx_input']}"
        )
    ranges["torch_test_accuracy"] = n_ok / len(y_te)
    (HERE / "activation_ranges.json").write_text(json.dumps(ranges, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    sys.exit(main())
