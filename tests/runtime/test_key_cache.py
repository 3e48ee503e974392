"""OpenFHE keeps evaluation keys in process-wide maps: hec.run frees them once no hec object
needs them, so repeated runs do not grow the process; a live Client keeps its keys.

Run in a fresh interpreter: other tests' clients would otherwise hold keys in this process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import openfhe
    import hec
    from hec.runtime import Client, Server
    sys.path.insert(0, "tests")
    from onnx_builders import ModelBuilder

    def mult_keys():
        return len(openfhe.CryptoContext.GetAllEvalMultKeys())

    b = ModelBuilder((4,), seed=3)
    h = b.node("Gemm", ["input", b.weight(4, 4)])
    art = hec.compile(b.build(b.node("Gemm", [b.node("Mul", [h, h]), b.weight(4, 2)])), sys.argv[1])
    x = np.random.default_rng(0).normal(size=(2, 4))
    for _ in range(3):
        hec.run(art, x)
        assert mult_keys() == 0, mult_keys()  # nothing of the run is left
    client = Client(art)  # a live client keeps its keys through a run
    hec.run(art, x)
    assert mult_keys() >= 1
    out = Server(art, client.context).evaluate(client.encrypt(x[0]))
    got = client.decrypt(out, 1).values
    assert np.abs(got - hec.simulate(art, x[:1])).max() < 1e-3
    print("ok")
    """
)


def test_run_frees_its_keys_and_spares_a_live_client(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "art")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
