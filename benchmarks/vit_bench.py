"""ViT block-wise encryption benchmark: encryption throughput and the attack-recovery table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vit_bench.py [--quick] [--json out.json]

Throughput is images per second of ``hec.vit.transforms`` on one core: one shared key (encrypt,
decrypt), one key per image derived from a seed (``BlockKey.spawn``: decryptable by whoever keeps
the seed; includes expanding every key), and disposable keys drawn vectorised and forgotten
(``encrypt_disposable``). The attack table runs the jigsaw solver and the
per-block statistics attack of ``hec.vit.attacks`` on textured 32x32 patches of scikit-learn's
sample photos (patch 4, 64 blocks), one fresh key per image, and reports how much they recover
(1.0 = everything, ~0 = nothing). Needs Pillow to decode the photos.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date

import numpy as np

from hec.vit.attacks import score_attacks
from hec.vit.data import digits, photo_patches
from hec.vit.keys import BlockKey
from hec.vit.transforms import decrypt, encrypt, encrypt_disposable

ATTACK_SETTINGS = [
    ("block scrambling only", dict(pixel_shuffle=False, negpos="none", channel_shuffle=False)),
    (
        "+ negative-positive (per position)",
        dict(pixel_shuffle=False, negpos="pixel", channel_shuffle=False),
    ),
    (
        "+ negative-positive (per block)",
        dict(pixel_shuffle=False, negpos="block", channel_shuffle=False),
    ),
    ("+ pixel shuffling G=3", dict(restrict=3, negpos="none", channel_shuffle=False)),
    ("+ pixel shuffling G=48 (full)", dict(negpos="none", channel_shuffle=False)),
    ("+ pixel shuffling + negative-positive + colour", dict()),
    ("same, per-block keys", dict(shared=False, negpos="block")),
    ("pixel shuffling + negative-positive + colour, no scrambling", dict(block_scramble=False)),
]


def _rate(fn, n: int, repeat: int = 3) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def throughput(quick: bool) -> list[dict]:
    rows = []
    x_digits = digits()[0]
    cases = [("digits 1x8x8, patch 2", x_digits, 2)]
    if not quick:
        cases.append(("photo 3x32x32, patch 4", photo_patches(2000, 32, seed=1), 4))
        cases.append(("photo 3x224x224, patch 16", photo_patches(64, 224, seed=2), 16))
    for name, x, p in cases:
        c, h, w = x.shape[1:]
        key = BlockKey(seed=1, image_size=(h, w), channels=c, patch=p, restrict=None)
        key.gather()  # expand once, as a client holding a key would
        n = len(x)
        rng = np.random.default_rng(0)
        enc = encrypt(x, key)
        rows.append(
            {
                "images": name,
                "shared key": _rate(lambda x=x, key=key: encrypt(x, key), n),
                "shared key, decrypt": _rate(lambda e=enc, k=key: decrypt(e, k), n),
                "per-image keys (derived)": _rate(
                    lambda x=x, k=key: encrypt(x, k.spawn(len(x))), n, 1
                ),
                "per-image keys (disposable)": _rate(
                    lambda x=x, k=key, r=rng: encrypt_disposable(x, k, r), n
                ),
            }
        )
    return rows


def attack_table(images: int) -> list[dict]:
    x = photo_patches(images, 32, seed=7, min_std=20.0) / np.float32(255)
    rows = []
    for name, setting in ATTACK_SETTINGS:
        keys = BlockKey(seed=11, image_size=(32, 32), channels=3, patch=4, **setting).spawn(len(x))
        enc = encrypt(x, keys)
        t = time.perf_counter()
        s = score_attacks(x, keys, enc)
        rows.append(
            {
                "encryption": name,
                "jigsaw: blocks in place": s.jigsaw_direct,
                "jigsaw: neighbours": s.jigsaw_neighbours,
                "jigsaw: image corr.": s.jigsaw_pixels,
                "statistics: thumbnail corr.": s.thumbnail,
                "seconds": time.perf_counter() - t,
            }
        )
        print(f"  {name}: done in {rows[-1]['seconds']:.0f}s", flush=True)
    return rows


def leakage_table() -> list[dict]:
    """How recognisable digits stay under the per-image keys used for collaborative training:
    correlation of ciphertext and plain image, accuracy of a classifier trained on *plain* digits
    when it reads the ciphertexts, and the statistics attack's thumbnail."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from hec.vit.attacks import thumbnail_attack

    x, y = digits()
    xf = x / np.float32(16)
    xtr, xte, ytr, yte = train_test_split(xf, y, test_size=0.3, stratify=y, random_state=0)
    clf = LogisticRegression(max_iter=2000).fit(xtr.reshape(len(xtr), -1), ytr)
    rows = []
    for patch, g, extra in [
        (2, 1, {}),
        (2, 2, {}),
        (2, 4, {}),
        (4, 2, {}),
        (4, 4, {}),
        (4, 8, {}),
        (4, 16, {}),
        (2, 2, {"block_scramble": True}),
        (2, 4, {"block_scramble": True, "negpos": "pixel"}),
    ]:
        key = BlockKey(
            seed=5,
            image_size=(8, 8),
            channels=1,
            patch=patch,
            restrict=g,
            negpos=extra.get("negpos", "none"),
            channel_shuffle=False,
            block_scramble=extra.get("block_scramble", False),
        )
        keys = key.spawn(len(xte))
        enc = encrypt(xte, keys)
        corr = np.mean(
            [
                np.corrcoef(a.ravel(), b.ravel())[0, 1]
                for a, b in zip(enc, xte, strict=True)
                if a.std() > 0
            ]
        )
        thumbs = []
        for a, b in zip(enc, xte, strict=True):
            t = thumbnail_attack(a, patch, unflip=key.negpos == "pixel")
            truth = b.reshape(8 // patch, patch, 8 // patch, patch).mean(axis=(1, 3))
            thumbs.append(abs(np.corrcoef(t.ravel(), truth.ravel())[0, 1]))
        name = f"patch {patch}, G={g}" + "".join(f", {k}" for k in extra)
        rows.append(
            {
                "per-image keys": name,
                "ciphertext-plain corr.": float(corr),
                "plain-trained classifier on ciphertexts": float(
                    (clf.predict(enc.reshape(len(enc), -1)) == yte).mean()
                ),
                "statistics: thumbnail corr.": float(np.nanmean(thumbs)),
            }
        )
    rows.insert(
        0,
        {
            "per-image keys": "(plain test images)",
            "ciphertext-plain corr.": 1.0,
            "plain-trained classifier on ciphertexts": float(
                (clf.predict(xte.reshape(len(xte), -1)) == yte).mean()
            ),
            "statistics: thumbnail corr.": 1.0,
        },
    )
    return rows


def _markdown(rows: list[dict], fmt: str) -> str:
    cols = [k for k in rows[0] if k != "seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(v if isinstance(v, str) else format(v, fmt) for v in (r[c] for c in cols))
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="digits throughput, 4 attack images")
    ap.add_argument("--images", type=int, default=16, help="images per attack setting")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    print(
        f"# hec vit benchmark, {date.today()}, {platform.platform()}, "
        f"{platform.processor() or platform.machine()}, 1 thread"
    )
    thr = throughput(args.quick)
    print("\nEncryption throughput (images/s, best of 3):\n")
    print(_markdown(thr, ",.0f"))
    print("\nAttack recovery (mean over images; 1.0 = fully recovered):\n", flush=True)
    att = attack_table(4 if args.quick else args.images)
    print(_markdown(att, ".2f"))
    print("\nWhat the server sees of digits under the training-time keys (no key used):\n")
    leak = leakage_table()
    print(_markdown(leak, ".2f"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "date": str(date.today()),
                    "machine": platform.platform(),
                    "throughput": thr,
                    "attacks": att,
                    "leakage": leak,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
