"""Rotation keys loaded a group at a time: what ``--memory-limit`` does when composing rotations
is not enough. The client writes one key file per group, the server loads each before the ops
that need it, and the outputs are those of the program with every key loaded at once."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import hec
from hec.cli.main import main
from hec.errors import KeysError, ParameterError
from hec.ir.slot_ops import key_groups, rotation_amounts
from hec.passes.group_keys import GroupKeys
from hec.runtime import Client, Server, resources

from conftest import EXAMPLE


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """CryptoNets under a limit five keys below its powers-of-two program."""
    root = tmp_path_factory.mktemp("groups")
    pow2 = hec.compile(
        EXAMPLE / "model.onnx", root / "pow2", hec.CompileOptions(rotation_keys="pow2")
    )
    est = resources.estimate(pow2)
    limit = est.server_memory - 5 * est.key_bytes
    art = hec.compile(EXAMPLE / "model.onnx", root / "art", hec.CompileOptions(memory_limit=limit))
    return art, limit


def test_a_limit_composing_cannot_meet_loads_keys_a_group_at_a_time(grouped) -> None:
    art, limit = grouped
    groups = art.params.key_groups
    assert len(groups) > 1
    assert set().union(*groups) == set(art.params.rotation_indices)
    est = resources.estimate(art)
    assert est.server_memory <= limit
    assert est.largest_group_bytes == max(len(g) for g in groups) * est.key_bytes
    plan = art.report.memory_plan
    assert plan["key_groups"] == len(groups) and plan["key_load_bytes"] > 0
    # every op that rotates says which group's keys it needs, and that group holds them
    for op in art.program.ops:
        amounts = rotation_amounts(op)
        if amounts:
            assert set(amounts) <= set(groups[op.attrs["key_group"]])


def test_the_cli_says_keys_load_in_groups(grouped, tmp_path, capsys) -> None:
    _, limit = grouped
    args = ["compile", str(EXAMPLE / "model.onnx"), "-o", str(tmp_path / "c")]
    main([*args, "--memory-limit", str(limit)])
    out = capsys.readouterr().out
    assert "keys loaded in " in out and " groups, " in out and "read per evaluation" in out


def test_keys_written_per_group_give_the_simulators_outputs(grouped, tmp_path) -> None:
    art, _ = grouped
    x = np.load(EXAMPLE / "test.npz")["x"][:1]
    client = Client(art)
    written = client.save_keys(tmp_path / "keys")
    assert "public/rotation_keys.bin" not in written
    for k in art.params.rotation_indices:  # one file per key, however many groups use it
        assert written[f"public/rotation_key.{k}.bin"] > 0
    assert len([n for n in written if "rotation_key." in n]) == len(art.params.rotation_indices)
    server = Server.from_eval_keys(art, tmp_path / "keys" / "public")
    out = server.evaluate(client.encrypt(x[0]))
    assert server.key_loader is not None and server.key_loader.loads >= len(art.params.key_groups)
    got = client.decrypt(out).values
    np.testing.assert_allclose(got, hec.simulate(art, x)[0], atol=1e-3)


def test_hec_keygen_lists_the_key_files_in_one_line(grouped, tmp_path, capsys) -> None:
    art, _ = grouped
    main(["keygen", str(art.path), "--keys", str(tmp_path / "keys")])
    out = capsys.readouterr().out
    n, groups = len(art.params.rotation_indices), len(art.params.key_groups)
    assert f"{n} rotation keys, one file each, loaded in {groups} groups" in out
    assert "rotation_key.*.bin" in out and "rotation_key.1.bin" not in out


def test_a_missing_group_file_is_named(grouped, tmp_path) -> None:
    art, _ = grouped
    Client(art).save_keys(tmp_path / "keys")
    amount = art.params.key_groups[1][0]
    (tmp_path / "keys" / "public" / f"rotation_key.{amount}.bin").unlink()
    with pytest.raises(KeysError, match=rf"rotation_key\.{amount}\.bin"):
        Server.from_eval_keys(art, tmp_path / "keys" / "public")


def test_group_keys_caps_each_group_and_refuses_an_op_over_the_cap(grouped) -> None:
    art, _ = grouped
    program = art.program.clone()
    GroupKeys(max_keys=3).run(program)
    groups = key_groups(program)
    assert all(len(g) <= 3 for g in groups) and len(groups) > len(art.params.key_groups)
    widest = max(len(set(rotation_amounts(op))) for op in program.ops)
    if widest > 1:
        with pytest.raises(ParameterError, match="keys a group may hold"):
            GroupKeys(max_keys=widest - 1).run(program.clone())


def test_a_smaller_plaintext_cache_is_the_last_resort(grouped, tmp_path, monkeypatch) -> None:
    """Below what the smallest key groups need, the server keeps fewer encoded constants
    (the others are encoded at every evaluation) and still computes the same outputs."""
    art, _ = grouped
    program = art.program.clone()
    widest = max(len(set(rotation_amounts(op))) for op in program.ops)
    GroupKeys(max_keys=widest).run(program)
    params = replace(art.params, key_groups=key_groups(program))
    smallest = resources.estimate_program(params, program, art.report.totals)
    limit = smallest.server_memory - smallest.plaintext_bytes // 2
    small = hec.compile(
        EXAMPLE / "model.onnx", tmp_path / "art", hec.CompileOptions(memory_limit=limit)
    )
    kept = small.report.memory_plan["plaintext_cache_bytes"]
    assert 0 < kept <= smallest.plaintext_bytes // 2
    assert small.program.attrs["plaintext_cache_bytes"] == kept
    assert resources.estimate(small).server_memory <= limit
    client = Client(small)
    server = Server(small, client.context, key_files=client.key_files)
    full = Server(art, client.context, key_files=client.key_files)
    from hec.backend_openfhe import execute

    encoded = []
    real = execute.encode
    monkeypatch.setattr(execute, "encode", lambda *a: encoded.append(1) or real(*a))
    kept_count = server.prepare()
    assert len(encoded) == kept_count  # only the constants kept are encoded at set-up ...
    monkeypatch.undo()
    assert 0 < kept_count < full.prepare()  # ... fewer than with the whole cache
    x = np.load(EXAMPLE / "test.npz")["x"][:1]
    got = client.decrypt(server.evaluate(client.encrypt(x[0]))).values
    np.testing.assert_allclose(got, hec.simulate(small, x)[0], atol=1e-3)


# A bootstrapped program's keys in groups, run encrypted: tests/passes/test_place_bootstraps.py
