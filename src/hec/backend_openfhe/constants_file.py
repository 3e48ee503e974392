"""How ``constants.npz`` stores a program's constants, read by the artifact (``VectorStore``:
rows made dense when read) and by generated programs (which copy ``unpack_vectors``)."""

from __future__ import annotations

import numpy as np

__all__ = ["VectorStore", "pack_vectors", "stored_rows", "unpack_vectors"]


def pack_vectors(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Store the 1-D constants of each length as the rows of one sparse matrix.

    A scheduled program has one plaintext vector per multiply (thousands), mostly zeros: one
    CSR matrix per vector length is small and quick to write, where thousands of separate npz
    members are not. Other constants are stored as they are.
    """
    groups: dict[int, list[str]] = {}
    out: dict[str, np.ndarray] = {}
    for key, a in arrays.items():
        if a.ndim == 1 and a.dtype.kind == "f":
            groups.setdefault(a.size, []).append(key)
        else:
            out[key] = a
    for length, keys in groups.items():
        nonzero = [np.flatnonzero(arrays[k]) for k in keys]
        out[f"rows{length}.keys"] = np.array(keys)
        out[f"rows{length}.indptr"] = np.concatenate([[0], np.cumsum([n.size for n in nonzero])])
        out[f"rows{length}.indices"] = np.concatenate(nonzero).astype(np.int32)
        out[f"rows{length}.data"] = np.concatenate(
            [arrays[k][n] for k, n in zip(keys, nonzero, strict=True)]
        )
    return out


def stored_rows(stored):
    """``(key, length, indices, values)`` of each vector ``pack_vectors`` stored as a row.

    Generated programs hold a copy of this function (they import nothing of hec): it may use
    only ``np``.
    """
    for name in stored.files:
        if not (name.startswith("rows") and name.endswith(".keys")):
            continue
        group = name[: -len(".keys")]
        length = int(group[len("rows") :])
        indptr, indices = stored[f"{group}.indptr"], stored[f"{group}.indices"]
        data = stored[f"{group}.data"]
        for r, key in enumerate(stored[name]):
            a, b = indptr[r], indptr[r + 1]
            yield str(key), length, indices[a:b], data[a:b]


def unpack_vectors(stored) -> dict[str, np.ndarray]:
    """The constants as ``pack_vectors`` was given them, from the opened ``constants.npz``.

    Generated programs hold a copy of this function (they import nothing of hec): it may use
    only ``np`` and ``stored_rows``.
    """
    arrays = {k: stored[k] for k in stored.files if not k.startswith("rows")}
    for key, length, indices, values in stored_rows(stored):
        row = np.zeros(length)
        row[indices] = values
        arrays[key] = row
    return arrays


class VectorStore:
    """The constants of an opened ``constants.npz``, its vectors kept as their sparse rows:
    ``store[key]`` makes a row dense each time it is read and keeps nothing. ResNet-20's
    29,494 plaintext vectors are 3.9 GB dense and 0.45 GB as rows; a server reads each when
    it encodes it."""

    def __init__(self, stored) -> None:
        self._arrays = {k: stored[k] for k in stored.files if not k.startswith("rows")}
        self._rows = {key: row for key, *row in stored_rows(stored)}

    def __getitem__(self, key: str) -> np.ndarray:
        if key in self._arrays:
            return self._arrays[key]
        length, indices, data = self._rows[key]
        row = np.zeros(length)
        row[indices] = data
        return row
