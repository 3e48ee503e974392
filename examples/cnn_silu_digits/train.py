"""Train a small CNN (BatchNorm, SiLU, max pooling) on scikit-learn 8x8 digits; export to ONNX.

Run from the repository root:

    .venv/bin/python examples/cnn_silu_digits/train.py

Writes, next to this file: model.onnx (TorchScript exporter, opset 13), model_dynamo.onnx
(dynamo exporter, opset 18), test.npz, calib.npz, train.npz, sample.npy and
activation_ranges.json (the value range of every SiLU's input on the calibration set, measured
with onnxruntime on both ONNX files and with torch hooks). Needs torch and onnxscript.

Inputs are the 8x8 images with pixels divided by 16 (in [0, 1]), as in examples/cryptonets_digits.
Both exports are taken in eval mode (BatchNorm uses its running statistics).
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
EPOCHS = 40
BATCH = 32
LR = 2e-3
WEIGHT_DECAY = 1e-4
CLIP = 1.0
N_CALIB = 512
# SiLU(x) = x * Sigmoid(x): both exporters write Sigmoid + Mul; the SiLU input is the Sigmoid input.
ACT_OP = "Sigmoid"
ACT_DESC = "SiLU (the input of its ONNX Sigmoid node; the Mul reads it too)"


class CnnSilu(nn.Module):
    """CNN for 1x8x8 inputs with BatchNorm, SiLU and max pooling.

    Conv(1->8, 3x3, pad 1) -> BN(8) -> SiLU -> MaxPool(2) -> Conv(8->16, 3x3, pad 1) -> BN(16)
    -> SiLU -> MaxPool(2) -> flatten (64) -> Linear(64, 32) -> SiLU -> Linear(32, 10)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.SiLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.act2 = nn.SiLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64, 32)
        self.act3 = nn.SiLU()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.bn1(self.conv1(x))))  # [N,8,4,4]
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))  # [N,16,2,2]
        x = torch.flatten(x, 1)
        x = self.act3(self.fc1(x))
        return self.fc2(x)


# (module name, what feeds it) in graph order; the ONNX Sigmoid nodes appear in the same order.
ACTIVATIONS = [
    ("act1", "bn1(conv1) output [N,8,8,8]"),
    ("act2", "bn2(conv2) output [N,16,4,4]"),
    ("act3", "fc1 output [N,32]"),
]


def load_data():
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N,1,8,8] in [0,1]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return x_tr, x_te, y_tr, y_te


def train(x_tr: np.ndarray, y_tr: np.ndarray) -> CnnSilu:
    torch.manual_seed(SEED)
    model = CnnSilu()
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
            loss = loss_fn(model(xt[idx]), yt[idx])
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


def silu_pattern_ok(m: onnx.ModelProto) -> bool:
    """Every Sigmoid(x) feeds one node only, a Mul whose other input is x (x * sigmoid(x))."""
    for sig in (n for n in m.graph.node if n.op_type == ACT_OP):
        users = [n for n in m.graph.node if sig.output[0] in n.input]
        if len(users) != 1 or users[0].op_type != "Mul":
            return False
        if sorted(users[0].input) != sorted([sig.input[0], sig.output[0]]):
            return False
    return True


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
        if not silu_pattern_ok(m):
            print(f"{path.name}: a Sigmoid is not the x * Sigmoid(x) half of a SiLU")
            close = False
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
