"""Throughput on a Ray cluster of 1 and 2 worker nodes, against this machine alone.

    python benchmarks/ray_throughput.py [--images 16] [--out benchmarks/ray_throughput.json]
    python benchmarks/ray_throughput.py --table benchmarks/ray_throughput.json   (docs/ray.md)

The CryptoNets digits example, compiled for slot packing and for batch packing (16 slots), runs
``--images`` test images with ``hec run`` (a fresh process each time, as a user runs it):

- ``local``: this process alone, one core (batch packing: also ``--threads 2``, forked workers,
  and ``--ray`` to a one-node Ray instance of this machine with 2 workers: the two ways to use
  two local cores, compared);
- ``ray``: a loopback cluster of 1 and of 2 nodes of one core each (``ray start``, as in the
  tests), one worker per node.

Throughput counts the evaluation loop only (encrypt + evaluate + decrypt, what ``hec run``
reports per sample), not key generation nor sending the keys, which happen once. Per-core
efficiency is the throughput over cores times the local one-core throughput. On this machine
all nodes share its cores, and the client (encryption, decryption, transfers) shares them too.

The object-store overhead per ciphertext is measured apart on the two-node cluster: serialize,
``ray.put``, fetch by a task on a node, return, ``ray.get``, deserialize and adopt (the zero
addition of ``parallel_batch.Zeros``), for a fresh ciphertext of the batch program.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
EXAMPLE = REPO / "examples" / "cryptonets_digits"
HEC = [sys.executable, "-m", "hec"]


def _hec(*args: str) -> None:
    proc = subprocess.run(
        [*HEC, *args], capture_output=True, text=True, cwd=REPO, env={**os.environ}
    )
    if proc.returncode != 0:
        raise SystemExit(f"hec {' '.join(args)} failed:\n{proc.stderr[-2000:]}")


def _run(art: Path, x: Path, tmp: Path, label: str, cores: int, *extra: str) -> dict:
    """``hec run`` once; the row of the results (images per second of the evaluation loop)."""
    report = tmp / f"{label}.json"
    start = time.perf_counter()
    _hec("run", str(art), "--input", str(x), "--report", str(report), *extra)
    wall = time.perf_counter() - start
    stats = json.loads(report.read_text())
    t = stats["timings"]
    per_image = t["encrypt"] + t["evaluate"] + t["decrypt"]
    row = {
        "case": label,
        "cores": cores,
        "images_per_s": 1.0 / per_image,
        "ms_per_image": 1e3 * per_image,
        "keygen_s": t["keygen"],
        "process_s": wall,
    }
    if "cluster" in stats:
        row["cluster"] = stats["cluster"]
    print(f"{label}: {row['images_per_s']:.2f} images/s", file=sys.stderr)
    return row


def _object_store_overhead(address: str, art: Path, repeats: int = 20) -> dict:
    """Per ciphertext of ``art``'s batch program: bytes and ms of each step of a round trip."""
    import numpy as np
    import ray

    import hec
    from hec._environment import load_openfhe
    from hec.backend_openfhe.parallel_batch import Zeros
    from hec.runtime import Client

    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    client = Client(hec.load_artifact(art))
    cc = client.context
    ct = client.element_encryptor(np.zeros((1, 64)))[0]
    zeros = Zeros(cc, cc.EvalSub(ct, ct))
    fhe = load_openfhe()

    @ray.remote(num_cpus=1)
    def bounce(data: bytes) -> bytes:  # on a node: the bytes arrive, and go back
        return bytes(data)

    ray.get(bounce.remote(b""))  # a worker up
    steps: dict[str, list[float]] = {k: [] for k in ("serialize", "put", "trip", "get", "adopt")}
    empty: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ray.get(bounce.remote(b""))
        empty.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        data = fhe.Serialize(ct, fhe.BINARY)
        t1 = time.perf_counter()
        ref = ray.put(data)
        t2 = time.perf_counter()
        back = ray.get(bounce.remote(ref))
        t3 = time.perf_counter()
        got = fhe.DeserializeCiphertextString(back, fhe.BINARY)
        zeros.fresh(got, (0, 1, 2))
        t4 = time.perf_counter()
        for k, v in zip(steps, (t1 - t0, t2 - t1, t3 - t2, 0.0, t4 - t3), strict=True):
            steps[k].append(v)
    ray.shutdown()
    ms = {k: 1e3 * float(np.median(v)) for k, v in steps.items() if k != "get"}
    ms["task_without_data"] = 1e3 * float(np.median(empty))
    ms["trip_less_task"] = ms["trip"] - ms["task_without_data"]
    ms["total"] = ms["serialize"] + ms["put"] + ms["trip_less_task"] + ms["adopt"]
    return {"bytes": len(data), "ms": ms}


def measure(images: int) -> dict:
    import numpy as np

    from loopback_cluster import LoopbackCluster

    load_before = os.getloadavg()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="hec-ray-bench-") as name:
        tmp = Path(name)
        x = tmp / "x.npy"
        np.save(x, np.load(EXAMPLE / "test.npz")["x"][:images])
        slots, batch = tmp / "slots", tmp / "batch"
        _hec("compile", str(EXAMPLE / "model.onnx"), "-o", str(slots))
        _hec(
            "compile", str(EXAMPLE / "model.onnx"), "-o", str(batch), "--packing", "batch",
            "--batch-size", str(images),
        )  # fmt: skip
        for packing, art in (("slots", slots), ("batch", batch)):
            rows.append(_run(art, x, tmp, f"{packing} local", 1) | {"packing": packing})
        rows.append(_run(batch, x, tmp, "batch local fork", 2, "--threads", "2"))
        with LoopbackCluster.started(nodes=1, cpus=2) as local:  # a Ray instance of this machine
            rows.append(_run(batch, x, tmp, "batch local ray", 2, "--ray", local.address))
        for nodes in (1, 2):
            with LoopbackCluster.started(nodes=nodes, cpus=1) as cluster:
                for packing, art in (("slots", slots), ("batch", batch)):
                    label = f"{packing} ray {nodes} node{'s' * (nodes > 1)}"
                    rows.append(_run(art, x, tmp, label, nodes, "--ray", cluster.address))
                if nodes == 2:
                    overhead = _object_store_overhead(cluster.address, batch)
    for r in rows:
        r.setdefault("packing", r["case"].split()[0])
        base = next(b for b in rows if b["case"] == f"{r['packing']} local")
        r["per_core_efficiency"] = r["images_per_s"] / (r["cores"] * base["images_per_s"])
    return {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "images": images,
            "model": "examples/cryptonets_digits (ring 2^14)",
            "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "rows": rows,
        "object_store_per_ciphertext": overhead,
    }


def markdown(results: dict, path: str) -> str:
    meta = results["meta"]
    lines = [
        f"<!-- generated by `python benchmarks/ray_throughput.py --table {path}`: measured "
        f"{meta['date']} UTC, {meta['images']} images, {meta['machine']}, load "
        f"{meta['load_average_before'][0]} before, {meta['load_average_after'][0]} after -->",
        "| case | cores | images/s | ms/image | per-core efficiency | sent once (keys, artifact) "
        "| ciphertexts sent |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        c = r.get("cluster", {})
        once = f"{c['bundle_bytes'] / 1e6:.1f} MB" if c else "-"
        sent = f"{c['sent_bytes'] / 1e6:.1f} MB" if c else "-"
        lines.append(
            f"| {r['case']} | {r['cores']} | {r['images_per_s']:.2f} | {r['ms_per_image']:.0f} "
            f"| {r['per_core_efficiency']:.2f} | {once} | {sent} |"
        )
    o = results["object_store_per_ciphertext"]
    ms = o["ms"]
    lines += [
        "",
        f"Object store, per ciphertext ({o['bytes'] / 1e6:.2f} MB, level 0): serialize "
        f"{ms['serialize']:.1f} ms, put {ms['put']:.1f} ms, to a node and back "
        f"{ms['trip_less_task']:.1f} ms (beyond a task's own {ms['task_without_data']:.1f} ms), "
        f"deserialize and adopt {ms['adopt']:.1f} ms: {ms['total']:.1f} ms in all.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "ray_throughput.json")
    parser.add_argument("--table", type=Path, default=None, help="print a results file's table")
    args = parser.parse_args()
    if args.table is not None:
        print(markdown(json.loads(args.table.read_text()), str(args.table)))
        return 0
    results = measure(args.images)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results, os.path.relpath(args.out, REPO)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
