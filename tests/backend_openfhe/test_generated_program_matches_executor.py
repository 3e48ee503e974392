"""The generated ``openfhe_program.py`` computes exactly what the executor computes: its
``evaluate`` and the runtime's executor, on the same keys and the same input ciphertexts, give
the same output ciphertexts, byte for byte (both call the dialect's kernels, and OpenFHE's
evaluation is deterministic; its decryption is not, so serialized ciphertexts are compared).
Slot and batch packing; the decrypted result agrees with the simulator."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import hec
from hec.backend_openfhe import load_artifact
from hec.backend_openfhe.batch_memory import plan_memory
from hec.backend_openfhe.execute import OpenFHEExecutor
from hec.backend_openfhe.execute_batch import BatchExecutor

from op_cases import CASES

pytestmark = pytest.mark.slow


def generated_module(path):
    """``openfhe_program.py`` of the artifact at ``path``, imported (its ``main`` not run)."""
    spec = importlib.util.spec_from_file_location("openfhe_program", path / "openfhe_program.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serialized(program, cts: list) -> list[bytes]:
    return [program.fhe.Serialize(ct, program.fhe.BINARY) for ct in cts]


def decrypt(cc, keys, ct) -> np.ndarray:
    pt = cc.Decrypt(keys.secretKey, ct)
    pt.SetLength(cc.GetEncodingParams().GetBatchSize())
    return np.array(pt.GetRealPackedValue())


def test_slot_program_and_executor_agree_bit_for_bit(tmp_path) -> None:
    model, x = CASES["cryptonets_like"]()
    hec.compile(model, tmp_path / "out")
    art = load_artifact(tmp_path / "out")
    program = generated_module(art.path)
    cc = program.make_context()
    keys = program.keygen(cc)
    slots = art.input_layout.pack(x[:1])[0]
    ct = cc.Encrypt(keys.publicKey, cc.MakeCKKSPackedPlaintext(slots.tolist()))
    generated = program.evaluate(cc, ct)
    executed = OpenFHEExecutor(cc, art.program, art.params.depth).run([ct])
    assert serialized(program, executed) == serialized(program, [generated])
    logits = art.output_layout.unpack(decrypt(cc, keys, generated)[None, :])
    np.testing.assert_allclose(logits, hec.simulate(art, x[:1]), atol=1e-2)


def test_batch_program_and_executor_agree_bit_for_bit(tmp_path) -> None:
    model, x = CASES["cryptonets_like"]()
    hec.compile(model, tmp_path / "out", hec.CompileOptions(packing="batch"))
    art = load_artifact(tmp_path / "out")
    program = generated_module(art.path)
    cc = program.make_context()
    keys = cc.KeyGen()
    cc.EvalMultKeyGen(keys.secretKey)
    columns = x.reshape(len(x), -1).astype(np.float64)
    cts = [cc.Encrypt(keys.publicKey, cc.MakeCKKSPackedPlaintext(c.tolist())) for c in columns.T]
    generated = program.evaluate(cc, list(cts))
    planned = plan_memory(art.program, art.params)
    (executed,) = BatchExecutor(cc, planned.eg, planned.schedule).run([list(cts)])
    assert serialized(program, executed) == serialized(program, generated)
    logits = np.stack([decrypt(cc, keys, ct)[: len(x)] for ct in generated], 1)
    np.testing.assert_allclose(logits, hec.simulate(art, x), atol=1e-2)
