"""Batch packing: scheduling and liveness, memory prediction and refusal, encrypted runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

import hec
from hec.backend_openfhe.batch_memory import ciphertext_bytes, machine_memory, relin_key_bytes
from hec.backend_openfhe.batch_schedule import (
    element_graph,
    late_inputs,
    liveness,
    program_order,
    schedule,
    wave_schedule,
    waves,
)
from hec.backend_openfhe.params import CKKSParams
from hec.errors import ResourceError
from hec.frontend import import_onnx
from hec.passes import LowerToBatch, PassManager

from conftest import EXAMPLE, assert_matches_reference
from onnx_builders import ModelBuilder, run_onnxruntime
from op_cases import CASES

BATCH = hec.CompileOptions(packing="batch", batch_size=8)


def _program(model: onnx.ModelProto | str):
    graph = import_onnx(model)
    PassManager([LowerToBatch(8)]).run(graph)
    return graph


@pytest.mark.parametrize(
    "name",
    [
        "cryptonets_like",
        "residual_across_levels",
        "pad_modes",
        "mul_two_encrypted",
        "reshape_flatten",
    ],
)
def test_schedules_read_only_computed_ciphertexts_and_free_them_after_last_use(name) -> None:
    eg = element_graph(_program(CASES[name]()[0]))
    demand = schedule(eg, lambda level, parts: 1)[0]
    w = waves(eg, demand, window=7)
    unit = lambda level, parts: 1  # noqa: E731
    others = [schedule(eg, unit, only=kind)[0] for kind in ("demand-local", "stream")]
    for s in (demand, liveness(eg, program_order(eg), "program"), wave_schedule(eg, w), *others):
        alive: set[int] = set()
        loaded = [ct for load in s.load_before for ct in load]
        assert len(loaded) == len(set(loaded))  # each input is brought in once
        late = late_inputs(eg, s)  # outputs that are inputs nothing reads
        assert set(loaded) | set(s.free_first) | set(late) == set(
            np.flatnonzero(eg.op_of < 0).tolist()
        )
        for k, ct in enumerate(s.order.tolist()):
            alive |= set(s.load_before[k])
            assert set(eg.deps[ct].tolist()) <= alive, f"{s.kind}: task {ct} reads a dead input"
            alive.add(ct)
            alive -= set(s.free_after[k])
        alive |= set(late)
        assert set(eg.outputs.tolist()) <= alive  # outputs are never freed
        assert len(alive) == len(set(eg.outputs.tolist()))  # everything else is


@pytest.mark.parametrize("name", ["cryptonets_like", "residual_across_levels", "pad_modes"])
def test_chains_of_a_wave_are_independent(name) -> None:
    eg = element_graph(_program(CASES[name]()[0]))
    w = waves(eg, schedule(eg, lambda level, parts: 1)[0], window=5)
    for wave in w:
        made = {int(ct) for chain in wave for ct in chain}
        for chain in wave:
            # a chain reads nothing another chain of its wave makes, and links one by one
            assert not set(eg.deps[int(chain[0])].tolist()) & made
            for prev, ct in zip(chain[:-1], chain[1:], strict=True):
                assert eg.deps[int(ct)].tolist() == [int(prev)]


def test_demand_order_keeps_fewer_ciphertexts_alive_on_cryptonets() -> None:
    """Pool windows and dense rows consume their inputs as soon as those exist."""
    eg = element_graph(_program(EXAMPLE / "model.onnx"))
    demand, peak = schedule(eg, lambda level, parts: 1, only="demand")
    _, program_peak = schedule(eg, lambda level, parts: 1, only="program")
    assert demand.kind == "demand" and peak < program_peak / 2
    # visiting inputs by the first program input they reach makes a convolution's channels at
    # one position together, so the input ciphertexts die sooner (CryptoNets: 160 vs 180)
    local, local_peak = schedule(eg, lambda level, parts: 1, only="demand-local")
    assert local_peak < peak


def test_inputs_are_brought_in_at_their_first_reader_not_all_at_the_start() -> None:
    """A 3x3 convolution over a 16x16 input reads it a few rows at a time: the input rows come
    in as the demand order reaches them and go after their last window."""
    b = ModelBuilder((1, 16, 16))
    h = b.node("Conv", ["input", b.weight(1, 1, 3, 3)])
    h = b.node("Flatten", [b.node("Mul", [h, h])])
    model = b.build(b.node("Gemm", [h, b.weight(14 * 14, 2)]))
    eg = element_graph(_program(model))
    s, _ = schedule(eg, lambda level, parts: 1, only="demand")
    inputs_alive, most = 0, 0
    for k in range(len(s.order)):
        inputs_alive += len(s.load_before[k])
        most = max(most, inputs_alive)
        inputs_alive -= sum(eg.op_of[ct] < 0 for ct in s.free_after[k])
    assert inputs_alive == 0 and most < eg.n_inputs / 4  # never all 256 alive at once


@pytest.mark.parametrize("depth", [2, 5])
def test_key_and_ciphertext_sizes_match_openfhe(depth: int, tmp_path) -> None:
    import openfhe

    from hec.backend_openfhe.params import make_context

    params = CKKSParams(16384, depth, 8, needs_relinearization=True)
    cc = make_context(params)
    keys = cc.KeyGen()
    cc.EvalMultKeyGen(keys.secretKey)
    ct = cc.Encrypt(keys.publicKey, cc.MakeCKKSPackedPlaintext([0.5] * 8))
    path = tmp_path / "mult.bin"
    assert cc.SerializeEvalMultKey(str(path), openfhe.BINARY, keys.secretKey.GetKeyTag())
    key_size = path.stat().st_size
    ct_size = len(openfhe.Serialize(ct, openfhe.BINARY))
    assert abs(relin_key_bytes(params) - key_size) < 0.02 * key_size
    assert abs(ciphertext_bytes(params, 0) - ct_size) < 0.02 * ct_size


def test_compile_refuses_a_model_larger_than_the_machine_with_the_figure(tmp_path) -> None:
    """The output ciphertexts alone exceed this machine's memory: refused before scheduling.

    (The inputs need not all fit: each is brought in just before its first reader.)"""
    total, _ = machine_memory()
    n = int(total / (2 * 16384 * 1 * 8)) + 1000  # outputs at level 1 of depth 1, ring 2^14
    b = ModelBuilder((n,))
    h = b.node("Mul", ["input", "input"])
    model = b.build(h)
    with pytest.raises(
        ResourceError, match=r"at least \d+\.\d GB .* more than the \d+\.\d GB this machine has"
    ):
        hec.compile(model, tmp_path / "out", hec.CompileOptions(packing="batch"))


def test_compile_refuses_beyond_the_memory_limit_with_the_predicted_figure(tmp_path) -> None:
    options = hec.CompileOptions(packing="batch", memory_limit=350_000_000)
    with pytest.raises(ResourceError, match=r"about 0\.[34] GB at its peak .* ring 2\^14"):
        hec.compile(EXAMPLE / "model.onnx", tmp_path / "out", options)


def test_run_refuses_before_key_generation(tmp_path, monkeypatch) -> None:
    model, x = CASES["cryptonets_like"]()
    art = hec.compile(model, tmp_path / "out", BATCH)

    def no_keygen(*args, **kwargs):
        raise AssertionError("key generation started")

    monkeypatch.setattr("hec.api.Client", no_keygen)
    with pytest.raises(ResourceError, match="predicted before key generation"):
        hec.run(art, x, memory_limit=50_000_000)


def test_batch_artifact_round_trips_and_reports_memory(tmp_path) -> None:
    model, x = CASES["cryptonets_like"]()
    art = hec.compile(model, tmp_path / "out", BATCH)
    loaded = hec.load_artifact(tmp_path / "out")
    assert loaded.program.dialect == "batch" and loaded.params.rotation_indices == ()
    mem = loaded.report.memory
    assert mem.input_ciphertexts == 64 and mem.output_ciphertexts == 4
    assert mem.program_bytes == mem.peak_ciphertext_bytes + mem.key_bytes
    assert loaded.report.totals.ciphertexts == mem.ciphertexts_computed
    np.testing.assert_array_equal(hec.simulate(loaded, x), hec.simulate(art, x))


def test_auto_packing_follows_the_batch_size(tmp_path) -> None:
    one = hec.compile(
        EXAMPLE / "model.onnx", tmp_path / "a", hec.CompileOptions(packing="auto", batch_size=1)
    )
    many = hec.compile(
        EXAMPLE / "model.onnx", tmp_path / "b", hec.CompileOptions(packing="auto", batch_size=4096)
    )
    assert one.report.packing == "slots" and many.report.packing == "batch"


def test_slot_and_batch_packings_agree_with_onnxruntime(tmp_path) -> None:
    data = np.load(EXAMPLE / "test.npz")
    x = data["x"][:64]
    ref = run_onnxruntime(onnx.load(EXAMPLE / "model.onnx"), x)
    slots = hec.compile(EXAMPLE / "model.onnx", tmp_path / "s")
    batch = hec.compile(EXAMPLE / "model.onnx", tmp_path / "b", BATCH)
    assert_matches_reference(hec.simulate(slots, x), ref)
    assert_matches_reference(hec.simulate(batch, x), ref)


# -- encrypted -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "cryptonets_like",
        "avgpool_pads",
        "residual_across_levels",
        "pow_cubic",
        "pad_modes",
        "mul_two_encrypted",
    ],
)
def test_encrypted_batch_run_matches_onnxruntime_and_the_simulator(name: str, tmp_path) -> None:
    model, x = CASES[name]()
    art = hec.compile(model, tmp_path / "out", BATCH)
    result = hec.run(art, x)
    np.testing.assert_allclose(result.logits, run_onnxruntime(model, x), atol=1e-2, rtol=0)
    np.testing.assert_allclose(result.logits, hec.simulate(art, x), atol=1e-2, rtol=0)
    assert result.stats["evaluations"] == 1 and (result.precision_bits > 10).all()


@pytest.mark.slow
def test_more_samples_than_slots_run_in_several_evaluations_and_threads_agree(tmp_path) -> None:
    model, _ = CASES["cryptonets_like"]()
    x = np.random.default_rng(3).uniform(-1, 1, size=(11, 1, 8, 8)).astype(np.float32)
    art = hec.compile(model, tmp_path / "out", hec.CompileOptions(packing="batch", batch_size=4))
    one = hec.run(art, x)
    two = hec.run(art, x, threads=2)
    assert one.stats["evaluations"] == 3 and two.stats["threads"] == 2
    np.testing.assert_allclose(one.logits, hec.simulate(art, x), atol=1e-2, rtol=0)
    np.testing.assert_allclose(two.logits, one.logits, atol=1e-2, rtol=0)


@pytest.mark.slow
def test_generated_batch_program_runs(tmp_path) -> None:
    model, x = CASES["cryptonets_like"]()
    art = hec.compile(model, tmp_path / "out", BATCH)
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "out" / "openfhe_program.py"), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    argmax = [int(line.split()[2]) for line in proc.stdout.splitlines()]
    assert argmax == hec.simulate(art, x).argmax(1).tolist()


@pytest.mark.slow
def test_threads_run_without_the_single_thread_environment(tmp_path) -> None:
    """``hec run --threads 2`` with OpenMP's default thread count: workers forked after key
    generation ran a team of threads used to hang in their first parallel region."""
    model, _ = CASES["cryptonets_like"]()
    onnx.save(model, tmp_path / "m.onnx")
    x = np.random.default_rng(4).uniform(-1, 1, size=(8, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    hec.compile(tmp_path / "m.onnx", tmp_path / "out", BATCH)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cli = [sys.executable, "-m", "hec.cli.main"]
    out, report = tmp_path / "y.npy", tmp_path / "run.json"
    args = ["run", str(tmp_path / "out"), "--input", str(tmp_path / "x.npy"), "--threads", "2"]
    args += ["--output", str(out), "--report", str(report)]
    proc = subprocess.run(cli + args, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    art = hec.load_artifact(tmp_path / "out")
    np.testing.assert_allclose(np.load(out), hec.simulate(art, x), atol=1e-2, rtol=0)
    stats = json.loads(report.read_text())
    assert stats["measured_peak_bytes"] > 0


def test_element_graph_is_verified_and_printed() -> None:
    """The batch element graph is an IR too: built verified, printed one line per op, and a
    task reading a ciphertext made after it is refused."""
    from hec.ir import VerifyError

    eg = element_graph(_program(EXAMPLE / "model.onnx"))
    text = str(eg)
    assert text.startswith(f"element graph: {len(eg.op_of)} ciphertexts, {eg.n_inputs} inputs")
    assert len(text.splitlines()) == len(eg.program.ops) + 3  # header, inputs, ops, outputs
    eg.deps[eg.n_inputs] = np.array([len(eg.op_of) - 1])  # the first task reads the last one
    with pytest.raises(VerifyError, match=f"ciphertext {eg.n_inputs} reads"):
        eg.verify()
