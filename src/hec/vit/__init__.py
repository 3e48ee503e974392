"""ViT block-wise image encryption with disposable keys (``hec vit``; see docs/vit.md).

Modules: ``keys`` (``BlockKey``: seed + block settings), ``transforms`` (exact, vectorised
encrypt/decrypt), ``adapt`` (the ``vit-adapt-key`` ONNX pass), ``attacks`` (jigsaw and
block-statistics attacks), ``train`` and ``models`` (collaborative training; torch, ``hec[train]``),
``onnx_vit`` (a ViT built with ``onnx.helper`` for tests), ``data`` (scikit-learn images).
Importing this package needs numpy only.
"""

from hec.vit.keys import BlockKey, load_key, save_key
from hec.vit.transforms import decrypt, encrypt, encrypt_disposable

__all__ = ["BlockKey", "load_key", "save_key", "encrypt", "decrypt", "encrypt_disposable"]
