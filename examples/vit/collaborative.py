"""Collaborative training with disposable keys on scikit-learn digits: accuracy against the
restriction G, and bytes sent by the clients against federated averaging.

    OMP_NUM_THREADS=1 .venv/bin/python examples/vit/collaborative.py --out runs/vit_collab.json

Protocol (see ``hec.vit.train``): the 1,797 digits are split 70/30 (stratified, seed 0); the
training part is divided among ``--clients`` clients; each encrypts its share with its own keys
(one per client, or one per image), the server trains one TinyViT on the union (with key
augmentation: it re-encrypts batches under random keys of the same family, which needs no key),
and the test split is encrypted with fresh per-image keys that training never saw. Plain training
uses the same model, optimiser and epochs on plain images. Every cell is the mean over
``--seeds`` seeds (model initialisation, client split, keys).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from hec.vit.data import digits
from hec.vit.train import (
    Encryption,
    TrainConfig,
    collaborative_run,
    communication_table,
    fedavg_run,
    plain_run,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patches", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--fedavg-rounds", type=int, default=20)
    ap.add_argument(
        "--extra",
        action="store_true",
        help="also per-image keys with negative-positive / block scrambling",
    )
    ap.add_argument(
        "--per-block",
        action="store_true",
        help="draw the pixel shuffle per block (BlockKey shared=False) instead of once per "
        "key; runs per-image keys with augmentation only",
    )
    ap.add_argument(
        "--fedavg-only",
        action="store_true",
        help="skip the accuracy runs; add FedAvg and the communication table to --out",
    )
    ap.add_argument("--out", type=Path, default=Path("runs/vit_collab.json"))
    args = ap.parse_args()

    x, y = digits()
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    results: dict = {
        "date": date.today().isoformat(),
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "train": len(xtr),
        "test": len(xte),
        "clients": args.clients,
        "seeds": args.seeds,
        "rows": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=1))

    if args.fedavg_only:
        results = json.loads(args.out.read_text())
    for patch in [] if args.fedavg_only else args.patches:
        length = patch * patch
        groups = [g for g in range(1, length + 1) if length % g == 0]
        for seed in range(args.seeds):
            config = TrainConfig(
                patch=patch,
                dim=args.dim,
                depth=args.depth,
                heads=4,
                epochs=args.epochs,
                seed=seed,
                threads=1,
            )
            t = time.perf_counter()
            acc, model = plain_run(xtr, ytr, xte, yte, config)
            results["rows"].append(
                {
                    "patch": patch,
                    "seed": seed,
                    "scheme": "plain",
                    "accuracy": acc,
                    "seconds": time.perf_counter() - t,
                    "parameters": int(sum(p.numel() for p in model.parameters())),
                    "config": asdict(config),
                }
            )
            print(f"P={patch} seed={seed} plain {acc:.4f}", flush=True)
            if args.per_block:
                runs = [
                    (f"G={g} per-block", Encryption(restrict=g, shared=False), "per-image", True)
                    for g in groups[1:]
                ]
            else:
                runs = [
                    (f"G={g}", Encryption(restrict=g), keys, True)
                    for g in groups
                    for keys in ("per-client", "per-image")
                ]
                runs += [(f"G={g}", Encryption(restrict=g), "per-image", False) for g in groups[1:]]
            if args.extra:
                runs += [
                    (
                        "G=2 +negpos(pixel)",
                        Encryption(restrict=2, negpos="pixel"),
                        "per-image",
                        True,
                    ),
                    (
                        "G=2 +block scrambling",
                        Encryption(restrict=2, block_scramble=True),
                        "per-image",
                        True,
                    ),
                ]
            for name, enc, keys, augment in runs:
                r = collaborative_run(
                    xtr,
                    ytr,
                    xte,
                    yte,
                    enc,
                    config,
                    clients=args.clients,
                    keys=keys,
                    seed=seed,
                    augment=augment,
                )
                results["rows"].append(
                    {
                        "patch": patch,
                        "seed": seed,
                        "scheme": name,
                        "keys": keys,
                        "augment": augment,
                        "accuracy": r.accuracy,
                        "seconds": r.seconds,
                        "bytes_sent": r.bytes_sent,
                        "encryption": asdict(enc),
                    }
                )
                print(
                    f"P={patch} seed={seed} {name} {keys} aug={augment} {r.accuracy:.4f} "
                    f"({r.seconds:.0f}s)",
                    flush=True,
                )
                save()

    if args.fedavg_rounds <= 0:
        print(f"wrote {args.out}")
        return
    # Communication: the same model under FedAvg, one actual run for its accuracy.
    config = TrainConfig(
        patch=args.patches[0],
        dim=args.dim,
        depth=args.depth,
        heads=4,
        epochs=args.epochs,
        seed=0,
        threads=1,
    )
    fed = fedavg_run(
        xtr, ytr, xte, yte, config, clients=args.clients, rounds=args.fedavg_rounds, local_epochs=2
    )
    results["fedavg"] = {k: v for k, v in fed.items()}
    results["communication"] = communication_table(
        len(xtr),
        int(np.prod(xtr.shape[1:])),
        fed["parameters"],
        args.clients,
        [1, args.fedavg_rounds, 100],
    )
    print("FedAvg", fed["accuracy"], fed["history"][-5:])
    save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
