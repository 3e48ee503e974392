"""place-bootstraps: a program deeper than one modulus chain gets the fewest bootstraps, every
value within the chain, the same outputs; a shallow program is unchanged.

The deep model is ``deep_square_mlp`` (Gemm · x² layers on the digits): 2 levels a layer, so 11
layers need 23 levels against the 21 a bootstrapping chain holds. The encrypted tier runs it
through OpenFHE's bootstrapping and compares with the simulator.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

import hec
from hec.backend_openfhe.params import bootstrap_chain
from hec.errors import ParameterError
from hec.ir import CipherType
from hec.options import CompileOptions
from hec.passes.place_bootstraps import PlaceBootstraps, bootstraps_of

from onnx_builders import deep_square_mlp, run_onnxruntime


def _digits(n: int = 8) -> np.ndarray:
    return (load_digits().data[:n] / 16.0).astype(np.float32)


def _fewest_bootstraps(needs: list[int], start: int, lands: int, last: int) -> int:
    """The least number of bootstraps that keeps a chain of ops (``needs[i]`` levels each,
    starting at level ``start``) within level ``last``: breadth-first over (op, level)."""
    frontier = {start: 0}
    for need in needs:
        nxt: dict[int, int] = {}
        for level, count in frontier.items():
            for lv, c in ((level, count), (lands, count + 1)):  # go on, or bootstrap first
                if lv + need <= last:
                    nxt[lv + need] = min(nxt.get(lv + need, c), c)
        frontier = nxt
    return min(frontier.values())


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    model = deep_square_mlp()
    art = hec.compile(
        model, tmp_path_factory.mktemp("deep") / "out", CompileOptions(bootstrap="on")
    )
    return model, art


def test_deep_program_stays_within_the_chain(deep) -> None:
    _, art = deep
    chain = bootstrap_chain(art.params.slots)
    boots = list(bootstraps_of(art.program))
    assert boots, "23 levels of work in a 21-level chain need a bootstrap"
    levels = [v.type.level for v in art.program.values() if isinstance(v.type, CipherType)]
    assert max(levels) <= chain.max_level
    assert art.params.bootstrap == chain.level_budget
    assert (art.params.ring_dim, art.params.depth) == (1 << 16, chain.depth)
    for op in boots:
        assert op.inputs[0].type.level <= op.attrs["from"] == chain.max_level
        assert op.result.type.level >= chain.lands
        assert "needs" in op.attrs["why"]


def test_bootstrap_count_is_the_fewest_for_the_chain(deep) -> None:
    model, art = deep
    chain = bootstrap_chain(art.params.slots)
    # the network is a chain of 11 (map, square) layers and a last map: 1 level each
    needs = [1] * 23
    fewest = _fewest_bootstraps(needs, 0, chain.lands, chain.max_level)
    assert len(list(bootstraps_of(art.program))) == fewest


def test_slack_starts_the_last_segment_as_deep_as_it_can(deep) -> None:
    """After the last bootstrap the work ends exactly at the chain's last usable level."""
    _, art = deep
    chain = bootstrap_chain(art.params.slots)
    out = art.program.outputs[0].type.level
    assert out == chain.max_level
    last = list(bootstraps_of(art.program))[-1]
    assert last.result.type.level > chain.lands  # the unneeded levels were dropped


def test_outputs_are_unchanged(deep) -> None:
    model, art = deep
    x = _digits()
    ref = run_onnxruntime(model, x)
    np.testing.assert_allclose(hec.simulate(art, x), ref, rtol=1e-5, atol=1e-5)


def test_report_lists_every_bootstrap(deep) -> None:
    _, art = deep
    report = json.loads((art.path / "report.json").read_text())
    rows = report["bootstraps"]["each"]
    assert report["bootstraps"]["keys_estimated"] >= 38  # measured at 64 slots
    assert len(rows) == len(list(bootstraps_of(art.program)))
    assert all(r["level_in"] <= r["level_out"] + 21 and r["why"] for r in rows)
    assert any(layer["kind"] == "bootstrap" for layer in report["layers"])
    assert report["estimates"]["evaluation_seconds"] >= 8.0 * len(rows)


def test_bootstrapping_uses_sparse_secret_encapsulation_and_old_files_mean_uniform(deep) -> None:
    """New bootstrapping programs name OpenFHE's encapsulated sparse secret in params.json and
    the report; a params.json written before the field existed means the uniform secret its
    keys were made with; leveled programs' files do not change."""
    from dataclasses import replace

    from hec.backend_openfhe.params import CKKSParams, bootstrap_key_count

    _, art = deep
    saved = json.loads((art.path / "params.json").read_text())
    assert saved["secret_dist"] == "SPARSE_ENCAPSULATED" == art.params.secret_dist
    assert art.report.bootstraps["secret_dist"] == "SPARSE_ENCAPSULATED"
    del saved["secret_dist"]
    old = CKKSParams.from_json(saved)
    assert old.secret_dist == "UNIFORM_TERNARY" and old.bootstrap == art.params.bootstrap
    assert bootstrap_key_count(old) == 46 and bootstrap_key_count(art.params) == 48  # measured
    leveled = replace(art.params, bootstrap=(), secret_dist="")
    assert "secret_dist" not in leveled.to_json()
    assert CKKSParams.from_json(leveled.to_json()) == leveled


def test_a_models_own_polynomials_report_their_measured_ranges(tmp_path, capsys) -> None:
    """The square MLP's ``z + z²`` are its own polynomials: compiled with calibration data,
    each bootstrap before one says the range its input took there, within what OpenFHE
    bootstraps well (the weights keep it within ±0.9, plus the margin)."""
    x = _digits(100)
    art = hec.compile(
        deep_square_mlp(), tmp_path / "out", CompileOptions(bootstrap="on"), calibration=x
    )
    rows = art.report.bootstraps["each"]
    assert rows and all("on the calibration data" in r["input_range"] for r in rows)
    import re

    ranges = re.findall(
        r"input_range=\[([-\d.e]+), ([-\d.e]+)\]", (art.path / "tensor_ir.txt").read_text()
    )
    assert len(ranges) == 11 and all(max(abs(float(v)) for v in r) < 1.0 for r in ranges)
    from hec.cli.format import print_summary

    print_summary(art.report)
    assert "beyond ±8" not in capsys.readouterr().out
    rows[0]["measured_range"] = [-9.5, 2.0]  # as a model whose values outgrow the bootstrap's
    print_summary(art.report)
    assert "warning: 1 bootstrap(s) refresh values the calibration data put beyond ±8" in (
        capsys.readouterr().out
    )


def test_generated_program_sets_up_bootstrapping(deep) -> None:
    _, art = deep
    source = (art.path / "openfhe_program.py").read_text()
    assert "EvalBootstrapSetup" in source and "EvalBootstrapKeyGen" in source
    assert "SetSecretKeyDist(fhe.SPARSE_ENCAPSULATED)" in source
    compile(source, "openfhe_program.py", "exec")


def test_shallow_programs_are_unchanged_by_auto(tmp_path) -> None:
    """``auto`` leaves a program that fits ring 2^16 as ``off`` does, byte for byte."""
    model = deep_square_mlp(layers=4)
    auto = hec.compile(model, tmp_path / "auto", CompileOptions())
    off = hec.compile(model, tmp_path / "off", CompileOptions(bootstrap="off"))
    assert not list(bootstraps_of(auto.program)) and not auto.params.bootstrap
    assert (tmp_path / "auto" / "params.json").read_bytes() == (
        tmp_path / "off" / "params.json"
    ).read_bytes()
    assert str(auto.program) == str(off.program)


def test_off_keeps_the_whole_depth(tmp_path) -> None:
    art = hec.compile(deep_square_mlp(), tmp_path / "off", CompileOptions(bootstrap="off"))
    assert not list(bootstraps_of(art.program))
    assert art.params.depth == 23 and art.params.ring_dim <= 1 << 16


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ParameterError, match="--bootstrap 'sometimes'"):
        PlaceBootstraps("sometimes").run(hec.ir.Graph(dialect="slot"))


@pytest.mark.slow
def test_bootstrapped_program_runs_encrypted_with_its_keys_loaded_in_groups(deep, tmp_path) -> None:
    """OpenFHE's bootstrapping at the levels the pass planned, under a memory limit that leaves
    room for the bootstrapping keys but not for them and the rotation keys together (one
    encrypted run covers both, CI's time): the bootstrap loads its own key file, the rotations
    theirs; the executor checks every op's level against OpenFHE's; the logits match the
    simulator within CKKS and bootstrapping noise (1.8e-4 per bootstrap measured) and the
    argmax agrees."""
    from dataclasses import replace

    from hec.runtime import resources

    model, full = deep
    est = resources.estimate(full)
    limit = est.server_memory - len(full.params.rotation_indices) * est.key_bytes
    options = replace(CompileOptions(bootstrap="on"), memory_limit=limit)
    art = hec.compile(model, tmp_path / "grouped", options)
    assert art.params.key_groups and art.params.bootstrap
    boots = list(bootstraps_of(art.program))
    assert boots and all(op.attrs["key_group"] == -1 for op in boots)
    x = _digits(1)
    result = hec.run(art, x)
    sim = hec.simulate(art, x)
    np.testing.assert_allclose(result.logits, sim, atol=1e-2)
    assert np.argmax(result.logits) == np.argmax(sim)


def _chain_graph(slots: int = 8):
    """input → (map, degree-5 polynomial) × 5 → map → map: 23 levels; the last map's input is
    another map's output, whose range the program does not know."""
    from hec.ir import Graph, Layout

    rng = np.random.default_rng(0)
    g = Graph(dialect="slot")
    t = CipherType(slots, 0, 1, Layout((slots,), slots))
    x = g.add_input("x", t)

    def matvec(v):
        level = v.type.level + 1
        consts = {"diags": rng.normal(0, 0.3, (2, slots)), "bias": np.zeros(slots)}
        return g.add("matvec", [v], t.with_state(level, 1), {"offsets": (0, 1)}, consts, "map")

    def poly(v):
        coeffs = {"coeffs": (0.1, 0.5, 0.2, 0.0, -0.1, 0.05)}
        return g.add("poly", [v], t.with_state(v.type.level + 3, 1), coeffs, origin="act")

    for _ in range(5):
        x = poly(matvec(x))
    g.outputs = [matvec(matvec(x))]
    g.verify()
    return g


def test_a_bootstrap_of_unknown_range_moves_to_an_activation_input() -> None:
    """The latest place (before the last map, on a map's output) is moved to the last
    activation's input, which still fits the chain: one bootstrap, of a value within [-1, 1]."""
    from hec.runtime.simulator import simulate_slots

    graph = _chain_graph()
    before = graph.clone()
    assert PlaceBootstraps("on").run(graph)
    graph.verify()
    boots = list(bootstraps_of(graph))
    assert len(boots) == 1
    assert [u.kind for u in boots[0].result.uses] == ["poly"]
    assert "moved here" in boots[0].attrs["why"]
    x = np.random.default_rng(1).uniform(-1, 1, (3, 8))
    np.testing.assert_array_equal(simulate_slots(graph, x)[0], simulate_slots(before, x)[0])


def test_bootstrapping_caps_activation_depth_at_what_fits_between_bootstraps() -> None:
    """A layer's map and its polynomial must fit the levels between two bootstraps placed at
    activation inputs, 5 for the widest vectors (9 for 64 slots): with --bootstrap on,
    automatic degrees stop at 4 levels (degree 13)."""
    from hec.passes.pipeline import he_friendly_pipeline
    from hec.passes.place_bootstraps import BOOTSTRAP_MAX_POLY_DEPTH
    from hec.passes.replace_activations import ReplaceActivations

    def depth(options: CompileOptions) -> int:
        (replace,) = [
            p for p in he_friendly_pipeline(options, {}) if isinstance(p, ReplaceActivations)
        ]
        return replace.max_depth

    assert depth(CompileOptions(bootstrap="on")) == BOOTSTRAP_MAX_POLY_DEPTH == 4
    assert depth(CompileOptions()) == CompileOptions().max_poly_depth == 5
    between = {s: bootstrap_chain(s).levels_between for s in (64, 256, 1024, 16384)}
    assert between == {64: 9, 256: 7, 1024: 7, 16384: 5}
    assert min(between.values()) == BOOTSTRAP_MAX_POLY_DEPTH + 1


def _wide_relu_mlp(layers: int):
    """A ReLU MLP on 2,048-slot vectors (5 levels between bootstraps) and its calibration data."""
    from onnx_builders import ModelBuilder

    rng = np.random.default_rng(3)
    b = ModelBuilder((2048,), seed=3)
    t, fan_in = "input", 2048
    for _ in range(layers):
        W = rng.normal(0, 1 / np.sqrt(fan_in), size=(16, fan_in)) * 1.5
        t = b.node("Relu", [b.node("Gemm", [t, b.const(W), b.const(np.zeros(16))], transB=1)])
        fan_in = 16
    model = b.build(b.node("Gemm", [t, b.weight(10, 16)], transB=1))
    return model, np.tile(load_digits().data[:200] / 16.0, 32).astype(np.float32)


def test_auto_chooses_degrees_again_to_fit_between_bootstraps(tmp_path) -> None:
    """A ReLU network on 2,048-slot vectors, too deep for ring 2^16 at the degrees a tight
    fit-error budget picks with polynomials of up to 7 levels allowed: bootstrapping is needed,
    a polynomial deeper than the 5 levels between two bootstraps of that width cannot be
    placed, and hec converts the model again within 4 levels (and says so): every bootstrap
    then refreshes an activation's input."""
    model, x = _wide_relu_mlp(9)
    said: list[str] = []
    art = hec.compile(
        model,
        tmp_path / "out",
        CompileOptions(error_budget=1e-3, max_poly_depth=7),
        progress=lambda stage, done, total: said.append(stage),
        calibration=x,
    )
    assert "bootstrapping: activations within 4 levels" in said
    assert list(bootstraps_of(art.program)) and art.params.bootstrap == (3, 3)
    assert max(a["depth"] for a in art.report.activations) == 4
    assert all(b["input_range"] != "unknown" for b in art.report.bootstraps["each"])


def test_a_polynomial_as_deep_as_the_window_gets_a_bootstrap_inside_its_layer(tmp_path) -> None:
    """A 5-level polynomial (degree 27) fits the 5 levels between two 2,048-slot bootstraps
    but not with the map before it: the degree is kept, and the program bootstraps inside the
    layers, values of unknown range that the report marks (the summary warns)."""
    model, x = _wide_relu_mlp(8)
    art = hec.compile(model, tmp_path / "out", CompileOptions(degree=27), calibration=x)
    assert {a["depth"] for a in art.report.activations} == {5}
    rows = art.report.bootstraps["each"]
    assert any(b["input_range"] == "unknown" for b in rows)
    assert any(b["input_range"] != "unknown" for b in rows)
