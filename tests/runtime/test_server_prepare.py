"""Server.prepare encodes the plaintexts once, before requests; results do not change."""

from __future__ import annotations

import numpy as np
import pytest

import hec
from hec.runtime import Client, Server

from onnx_builders import ModelBuilder


@pytest.mark.slow
def test_prepare_encodes_every_constant_and_keeps_the_result(tmp_path) -> None:
    b = ModelBuilder((8,), seed=1)
    h = b.node("Gemm", ["input", b.weight(8, 6)])
    model = b.build(b.node("Gemm", [b.node("Mul", [h, h]), b.weight(6, 3)]))
    art = hec.compile(model, tmp_path / "a")
    client = Client(art)
    x = np.random.default_rng(0).uniform(-1, 1, size=8)
    cold = client.decrypt(Server(art, client.context).evaluate(client.encrypt(x))).values
    server = Server(art, client.context)
    constants = sum(op.kind in ("mul_plain", "add_plain") for op in art.program.ops)
    assert server.prepare() == constants
    assert server.prepare() == 0  # already encoded
    warm = client.decrypt(server.evaluate(client.encrypt(x))).values
    np.testing.assert_allclose(warm, cold, atol=1e-6)
