"""The tools users would pick instead of hec, run on the same models, images and thread count.

Each peer is an adapter script in this folder, run as a subprocess with the peers' own Python
(``.venv-peers``, made by ``make bench-peers`` from ``requirements.txt``: TenSEAL and Concrete ML
pin numpy and torch versions that conflict with hec's); Orion's wheel is CPython 3.11 only, so it
has a venv of its own (``.venv-orion``, from ``requirements-orion.txt``). The adapter reads
``model.onnx`` and ``test.npz`` from the model's folder and writes one JSON row; nothing but files
passes between the two interpreters. A peer that is not installed, cannot express a model, fails
or times out still gets its row, with the reason in ``status``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV_PYTHON = REPO / ".venv-peers" / "bin" / "python"
NOT_INSTALLED = "not installed: make bench-peers"

# name -> (adapter script, module the interpreter must import, the adapter's own arguments)
PEERS = {
    "TenSEAL": ("tenseal_adapter.py", "tenseal", []),
    # the same at hec's precision: 40-bit scales need N = 16384
    "TenSEAL-40": ("tenseal_adapter.py", "tenseal", ["--scale-bits", "40"]),
    "Concrete ML": ("concrete_adapter.py", "concrete.ml", []),
    # its own LeNet-5 (examples/orion_lenet5_mnist); other models: "cannot express"
    "Orion": ("orion_adapter.py", "orion", []),
}

# Peers with an interpreter of their own: name -> (venv's python, variable naming another one).
# The others run with .venv-peers' (or $HEC_PEERS_PYTHON).
OWN_PYTHON = {
    "Orion": (REPO / ".venv-orion" / "bin" / "python", "HEC_ORION_PYTHON"),
}

# Models a peer cannot run here, whose plan it reports instead (bootstraps, memory it would need):
# model -> (peer, script, calibration images).
PLANS = {
    "resnet20-mnist": ("Orion", "orion_plan.py", 200),
}


def ensure_model(folder: Path) -> Path:
    """``folder/model.onnx``, trained first by ``folder/train.py`` (this interpreter, which
    needs the ``train`` extra) where the example does not ship it: Orion's LeNet-5 holds 6.7 MB
    of weights, more than the repository keeps; its training is seeded and deterministic."""
    model = folder / "model.onnx"
    if model.is_file():
        return model
    print(
        f"  {model} is not in the repository: training it ({folder / 'train.py'}) ...",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, str(folder / "train.py"), "--out", tmp],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        shutil.move(str(Path(tmp) / "model.onnx"), model)
    return model


def peer_python(
    module: str, venv_python: Path = VENV_PYTHON, variable: str = "HEC_PEERS_PYTHON"
) -> str | None:
    """An interpreter that imports ``module``: ``$variable``, else ``venv_python``, else this one
    (TenSEAL also installs beside hec's pins, so a plain environment may have it)."""
    candidates = [os.environ.get(variable), str(venv_python), sys.executable]
    for python in dict.fromkeys(c for c in candidates if c):
        if not Path(python).is_file():
            continue
        probe = subprocess.run(
            [python, "-c", f"import {module}"],
            capture_output=True,
            timeout=300,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        if probe.returncode == 0:
            return python
    return None


def run_peer(
    peer: str, model: str, folder: Path, images: int, work: Path, timeout: float, threads: int = 1
) -> dict:
    """One peer on one model, in its own process (its peak memory is its own); never raises."""
    script, module, extra = PEERS[peer]
    return run_script(peer, module, script, extra, model, folder, images, work, timeout, threads)


def run_plan(model: str, folder: Path, work: Path, timeout: float, threads: int = 1) -> dict:
    """The plan ``PLANS[model]``'s peer makes for a model it cannot run here; never raises."""
    peer, script, images = PLANS[model]
    module = PEERS[peer][1]
    return run_script(peer, module, script, [], model, folder, images, work, timeout, threads)


def run_script(
    peer: str,
    module: str,
    script: str,
    extra: list[str],
    model: str,
    folder: Path,
    images: int,
    work: Path,
    timeout: float,
    threads: int,
) -> dict:
    """``script`` (this folder) in ``peer``'s interpreter, which must import ``module``: its
    JSON row, or a row whose ``status`` says why there is none."""
    row: dict = {"model": model, "tool": peer}
    python = peer_python(module, *OWN_PYTHON.get(peer, (VENV_PYTHON, "HEC_PEERS_PYTHON")))
    if python is None:
        row["status"] = NOT_INSTALLED
        return row
    out = work / f"{Path(script).stem}-{peer.replace(' ', '-')}-{folder.name}.json"
    cmd = [
        python,
        str(HERE / script),
        "--model-dir",
        str(folder),
        "--images",
        str(images),
        "--json",
        str(out),
        "--threads",
        str(threads),
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        row["status"] = f"timed out after {timeout:.0f} s"
        return row
    if proc.returncode != 0 or not out.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        row["status"] = f"failed: {last[:200]}"
        return row
    row.update(json.loads(out.read_text()))
    row["tool"] = row.get("tool", peer) if row["status"].startswith("ok") else peer
    return row


def compare(hec_row: dict, peer_row: dict) -> None:
    """Ratios hec/peer (below 1: hec is faster, smaller) written into ``peer_row``."""
    if peer_row.get("status") != "ok":  # not run, or compiled without an encrypted image
        return

    def latency(r: dict) -> float:
        return r["encrypt_ms"] / 1e3 + r["evaluate_s"] + r["decrypt_ms"] / 1e3

    peer_row["hec_over_peer_evaluate"] = hec_row["evaluate_s"] / peer_row["evaluate_s"]
    peer_row["hec_over_peer_latency"] = latency(hec_row) / latency(peer_row)
    peer_row["hec_over_peer_memory"] = hec_row["peak_rss_mb"] / peer_row["peak_rss_mb"]
    peer_row["hec_over_peer_key_memory"] = hec_row["eval_key_mb"] / peer_row["eval_key_mb"]
    # Accuracy of the model each tool runs encrypted, on the whole test split.
    peer_row["hec_over_peer_accuracy"] = hec_row["acc_simulated"] / peer_row["acc_he_friendly"]
