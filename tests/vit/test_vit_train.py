"""Collaborative training with disposable keys (needs torch: ``-m train``)."""

from __future__ import annotations

import numpy as np
import pytest

from hec.vit.transforms import encrypt

pytestmark = pytest.mark.train
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    from hec.vit.data import digits

    x, y = digits()
    return tuple(train_test_split(x, y, test_size=0.3, stratify=y, random_state=0))


def test_clients_encrypt_with_their_own_keys(split: tuple[np.ndarray, ...]) -> None:
    from hec.vit.train import Encryption, encrypt_for_clients, split_clients

    xtr = split[0]
    shares = split_clients(len(xtr), 4, seed=0)
    assert sorted(np.concatenate(shares)) == list(range(len(xtr)))
    enc = Encryption(restrict=2, block_scramble=True)
    per_client = encrypt_for_clients(xtr, shares, enc, 2, "per-client", seed=0, max_value=16)
    per_image = encrypt_for_clients(xtr, shares, enc, 2, "per-image", seed=0, max_value=16)
    for out in (per_client, per_image):
        assert (out != xtr).reshape(len(xtr), -1).any(axis=1).mean() > 0.95
    # Two images of one client: same key per client, different keys per image.
    a, b = shares[0][:2]
    same = np.stack([xtr[a], xtr[a]])
    k = enc.key(0, xtr.shape[1:], 2)
    assert np.array_equal(encrypt(same, k, max_value=16)[0], encrypt(same, k, max_value=16)[1])
    assert not np.array_equal(per_image[a], encrypt(xtr[a], k, max_value=16))
    del b


def test_collaborative_training_learns_from_encrypted_images(
    split: tuple[np.ndarray, ...],
) -> None:
    from hec.vit.train import Encryption, TrainConfig, collaborative_run, plain_run

    xtr, xte, ytr, yte = split
    config = TrainConfig(dim=16, depth=1, heads=2, epochs=10, lr=5e-3, batch_size=32, threads=1)
    plain, _ = plain_run(xtr, ytr, xte, yte, config)
    enc = collaborative_run(
        xtr, ytr, xte, yte, Encryption(restrict=2), config, clients=4, keys="per-image"
    )
    assert plain > 0.7 and enc.accuracy > 0.7  # ten classes: chance is 0.1
    assert enc.distinct_keys == len(xtr)
    assert enc.bytes_sent == xtr.size + len(xtr)  # one byte per pixel and per label


def test_fedavg_and_communication_table(split: tuple[np.ndarray, ...]) -> None:
    from hec.vit.train import TrainConfig, communication_table, fedavg_run

    xtr, xte, ytr, yte = split
    config = TrainConfig(dim=16, depth=1, heads=2, threads=1)
    fed = fedavg_run(xtr[:400], ytr[:400], xte, yte, config, clients=4, rounds=2, local_epochs=1)
    assert len(fed["history"]) == 2
    assert fed["upload_bytes"] == 4 * 2 * fed["parameters"] * 4
    rows = communication_table(len(xtr), 64, fed["parameters"], 4, [10])
    assert rows[0][1] == len(xtr) * 65
    assert rows[1][1] == 4 * 10 * fed["parameters"] * 4
