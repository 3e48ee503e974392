"""Collaborative training of one ViT on images that clients encrypted with disposable keys.

Simulation of the protocol (Kiya-lab style, "disposable-key-based image encryption"):

1. ``N`` clients each hold a share of the training images. Each client encrypts its share with its
   own keys — one key for all its images (``per-client``) or a fresh key per image (``per-image``)
   — sends the encrypted images and labels to the server **once**, and may throw the keys away.
2. The server trains one ViT on the union of encrypted images. It never sees a plain image and
   holds no key; since the keys differ, the model cannot be adapted to any one of them: it has to
   become robust to the whole family of keys, which is what the restricted shuffle (small ``G``)
   makes possible.
3. Test images are encrypted with fresh keys the training never saw.

Accuracy is compared with the same ViT trained on plain images, and the bytes the clients send are
compared with federated averaging (FedAvg) of the same model: every round, every client uploads
its full set of weights. Needs ``hec[train]`` (torch).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from hec.vit.keys import BlockKey
from hec.vit.models import import_torch, make_vit
from hec.vit.transforms import encrypt, encrypt_disposable

__all__ = [
    "TrainConfig",
    "Encryption",
    "CollabResult",
    "fit",
    "accuracy",
    "split_clients",
    "encrypt_for_clients",
    "collaborative_run",
    "plain_run",
    "parameter_count",
    "communication_table",
    "fedavg_run",
    "key_augmentation",
]


@dataclass(frozen=True)
class TrainConfig:
    """Model and optimiser settings (the same for plain and encrypted training)."""

    patch: int = 2
    dim: int = 48
    depth: int = 3
    heads: int = 4
    embed: str = "conv"
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    seed: int = 0
    threads: int = 2


@dataclass(frozen=True)
class Encryption:
    """Which transforms the clients' keys apply (see ``BlockKey``); ``restrict`` is ``G``."""

    restrict: int | None = None
    pixel_shuffle: bool = True
    block_scramble: bool = False
    negpos: str = "none"
    channel_shuffle: bool = False
    shared: bool = True

    def key(self, seed: int, image_shape: tuple[int, int, int], patch: int) -> BlockKey:
        c, h, w = image_shape
        return BlockKey(
            seed=seed,
            image_size=(h, w),
            channels=c,
            patch=patch,
            restrict=self.restrict,
            pixel_shuffle=self.pixel_shuffle,
            block_scramble=self.block_scramble,
            negpos=self.negpos,
            channel_shuffle=self.channel_shuffle,
            shared=self.shared,
        )


@dataclass(frozen=True)
class CollabResult:
    """What one collaborative run measured."""

    accuracy: float
    clients: int
    keys: str
    distinct_keys: int
    bytes_sent: int
    seconds: float
    extra: dict = field(default_factory=dict)


def _setup(config: TrainConfig) -> Any:
    torch = import_torch()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    return torch


def fit(
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    classes: int = 10,
    model: Any = None,
    epochs: int | None = None,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    lr: float | None = None,
) -> Any:
    """Train a ``TinyViT`` on float images ``x`` (NCHW, [0, 1]) and labels ``y``.

    Args:
        model: continue training this module instead of building a fresh one (FedAvg uses it).
        epochs: overrides ``config.epochs``.
        lr: a constant learning rate instead of ``config.lr`` on a one-cycle schedule (FedAvg's
            short local runs, whose schedule spans the rounds).
        augment: applied to each batch (numpy) before the step, e.g. re-encryption of encrypted
            images under random keys of their family (``key_augmentation``).
    """
    torch = _setup(config)
    if model is None:
        model = make_vit(
            x.shape[2:],
            x.shape[1],
            config.patch,
            dim=config.dim,
            depth=config.depth,
            heads=config.heads,
            classes=classes,
            embed=config.embed,
        )
    epochs = config.epochs if epochs is None else epochs
    opt = torch.optim.AdamW(
        model.parameters(), lr=config.lr if lr is None else lr, weight_decay=config.weight_decay
    )
    steps = epochs * int(np.ceil(len(x) / config.batch_size))
    sched = (
        torch.optim.lr_scheduler.OneCycleLR(
            opt, config.lr, total_steps=max(steps, 1), pct_start=0.1
        )
        if lr is None
        else None
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    x = np.ascontiguousarray(x, np.float32)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), config.batch_size):
            idx = order[i : i + config.batch_size]
            xb = xt[idx] if augment is None else torch.from_numpy(augment(x[idx.numpy()], rng))
            opt.zero_grad()
            loss_fn(model(xb), yt[idx]).backward()
            opt.step()
            if sched is not None:
                sched.step()
    model.eval()
    return model


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on float images ``x``."""
    torch = import_torch()
    with torch.no_grad():
        pred = model(torch.from_numpy(np.ascontiguousarray(x, np.float32))).argmax(1).numpy()
    return float((pred == y).mean())


def parameter_count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def split_clients(n: int, clients: int, seed: int = 0) -> list[np.ndarray]:
    """IID split of ``n`` sample indices into ``clients`` nearly equal shares."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(s) for s in np.array_split(order, clients)]


def _derive_seed(*words: int) -> int:
    state = np.random.SeedSequence(list(words)).generate_state(4, np.uint32)
    return int.from_bytes(state.tobytes(), "little")


def encrypt_for_clients(
    images: np.ndarray,
    shares: list[np.ndarray],
    enc: Encryption,
    patch: int,
    keys: str,
    seed: int,
    max_value: float,
) -> np.ndarray:
    """Encrypt each client's share with that client's own keys (``per-client`` or ``per-image``).

    Client ``c``'s key (or per-image key source) comes from seed ``(seed, c)``; a real client
    would use ``BlockKey.generate`` and could delete it after sending.
    """
    out = np.empty_like(images)
    for c, idx in enumerate(shares):
        client_key = enc.key(_derive_seed(seed, c), images.shape[1:], patch)
        k = client_key if keys == "per-client" else client_key.spawn(len(idx))
        out[idx] = encrypt(images[idx], k, max_value=max_value)
    return out


def collaborative_run(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    enc: Encryption,
    config: TrainConfig,
    *,
    clients: int = 4,
    keys: str = "per-image",
    max_value: float = 16,
    seed: int = 0,
    augment: bool = True,
) -> CollabResult:
    """Encrypt per client, train on the union, test on images under fresh keys.

    ``x_*`` are unsigned-integer images with values in ``[0, max_value]`` (what a client sends:
    one byte per value); the model reads them divided by ``max_value``. With ``augment`` the
    server re-encrypts every training batch under random keys of the same family
    (``key_augmentation``): it needs no key and sees nothing new, but the model meets far more
    keys than the clients used.
    """
    if keys not in ("per-client", "per-image"):
        raise ValueError(f"keys must be per-client or per-image, got {keys!r}")
    start = time.perf_counter()
    shares = split_clients(len(x_train), clients, seed)
    enc_train = encrypt_for_clients(x_train, shares, enc, config.patch, keys, seed, max_value)
    # Fresh keys for the test images: a client that took no part in training, one key per image.
    test_key = enc.key(_derive_seed(seed, 1_000_003), x_test.shape[1:], config.patch)
    enc_test = encrypt(x_test, test_key.spawn(len(x_test)), max_value=max_value)
    family = enc.key(0, x_train.shape[1:], config.patch)
    model = fit(
        enc_train / np.float32(max_value),
        y_train,
        config,
        augment=key_augmentation(family) if augment else None,
    )
    acc = accuracy(model, enc_test / np.float32(max_value), y_test)
    sent = int(enc_train.nbytes + len(y_train))  # images once, plus a one-byte label each
    distinct = clients if keys == "per-client" else len(x_train)
    return CollabResult(
        acc,
        clients,
        keys,
        distinct,
        sent,
        time.perf_counter() - start,
        {"parameters": parameter_count(model)},
    )


def key_augmentation(family: BlockKey) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """Batch augmentation: encrypt the (already encrypted, [0, 1]) images again under fresh random
    keys of ``family``'s settings. Permutations and flips of one family compose into another
    member, so the result is just another encryption of the plain image; no key is involved."""

    def augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return encrypt_disposable(batch, family, rng, max_value=1.0)

    return augment


def plain_run(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    config: TrainConfig,
    max_value: float = 16,
) -> tuple[float, Any]:
    """Accuracy of the same ViT trained and tested on plain images, and the model."""
    model = fit(x_train / np.float32(max_value), y_train, config)
    return accuracy(model, x_test / np.float32(max_value), y_test), model


def fedavg_run(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    config: TrainConfig,
    *,
    clients: int = 4,
    rounds: int = 20,
    local_epochs: int = 3,
    max_value: float = 16,
    seed: int = 0,
) -> dict:
    """Federated averaging of the same ViT on the clients' plain shares (for comparison).

    Every round each client downloads the global weights, trains ``local_epochs`` on its share
    and uploads its weights; the server averages them weighted by share size.
    """
    torch = _setup(config)
    shares = split_clients(len(x_train), clients, seed)
    xs = x_train / np.float32(max_value)
    global_model = make_vit(
        x_train.shape[2:],
        x_train.shape[1],
        config.patch,
        dim=config.dim,
        depth=config.depth,
        heads=config.heads,
        embed=config.embed,
    )
    weights = np.array([len(s) for s in shares], dtype=np.float64) / len(x_train)
    history = []
    for r in range(rounds):
        states = []
        for c, idx in enumerate(shares):
            local = make_vit(
                x_train.shape[2:],
                x_train.shape[1],
                config.patch,
                dim=config.dim,
                depth=config.depth,
                heads=config.heads,
                embed=config.embed,
            )
            local.load_state_dict(global_model.state_dict())
            # Local runs are short: a constant rate per round, on a cosine schedule over rounds.
            fit(
                xs[idx],
                y_train[idx],
                replace(config, seed=config.seed + 1000 * r + c),
                model=local,
                epochs=local_epochs,
                lr=config.lr * 0.5 * (1 + np.cos(np.pi * r / rounds)),
            )
            states.append(local.state_dict())
        avg = {k: sum(w * s[k] for w, s in zip(weights, states, strict=True)) for k in states[0]}
        global_model.load_state_dict(avg)
        global_model.eval()
        history.append(accuracy(global_model, x_test / np.float32(max_value), y_test))
    n_params = parameter_count(global_model)
    del torch
    return {
        "accuracy": history[-1],
        "history": history,
        "parameters": n_params,
        "upload_bytes": clients * rounds * n_params * 4,
        "download_bytes": clients * rounds * n_params * 4,
    }


def communication_table(
    n_images: int, image_bytes: int, n_params: int, clients: int, rounds: list[int]
) -> list[tuple[str, int, int]]:
    """Rows ``(scheme, bytes uploaded by all clients, bytes downloaded by all clients)``.

    Collaborative: every image once plus a one-byte label, nothing downloaded during training
    (the trained model can be sent back once: counted). FedAvg: each round every client downloads
    and uploads ``n_params`` float32 weights.
    """
    rows = [("encrypted images, sent once", n_images * (image_bytes + 1), clients * n_params * 4)]
    for r in rounds:
        each_way = clients * r * n_params * 4
        rows.append((f"FedAvg, {r} round{'s' if r != 1 else ''}", each_way, each_way))
    return rows
