"""Plain-text tables for the CLI (reads report.json structures, recounts nothing)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import click
import numpy as np

if TYPE_CHECKING:
    from hec.backend_openfhe.report_schema import Choice, ProgramReport

__all__ = ["print_summary", "print_table", "format_row", "parse_size"]

_LAYER_COLUMNS = [
    ("rotations", "rot"),
    ("hoisted_rotations", "hoisted"),
    ("plaintext_multiplies", "pt-mul"),
    ("ciphertext_multiplies", "ct-mul"),
    ("rescales", "rescale"),
    ("rotation_keys", "keys"),
]


def print_table(header: list[str], rows: list[list[Any]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for i, row in enumerate([header, *rows]):
        cells = [
            str(x).ljust(w) if j == 0 else str(x).rjust(w)
            for j, (x, w) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


def format_row(values: np.ndarray, precision: int = 4) -> str:
    return np.array2string(
        np.asarray(values).reshape(-1), precision=precision, suppress_small=True, max_line_width=200
    )


_BATCH_COLUMNS = [
    ("ciphertexts", "cts"),
    ("scalar_multiplies", "sc-mul"),
    ("additions", "add"),
    ("ciphertext_multiplies", "ct-mul"),
    ("relinearizations", "relin"),
    ("rescales", "rescale"),
    ("polynomials", "poly"),
]


def parse_size(text: str) -> int:
    """``"8GB"``, ``"512MB"``, ``"1.5G"`` or a number of bytes → bytes."""
    from hec.errors import InputError

    units = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in units else ""
    try:
        return int(float(t[: len(t) - len(unit)]) * units[unit])
    except ValueError:
        raise InputError(f"{text!r} is not a size (examples: 8GB, 512MB)") from None


def print_summary(report: ProgramReport) -> None:
    """The compile summary: one row per layer, totals, CKKS parameters."""
    batch = report.packing == "batch"
    columns = _BATCH_COLUMNS if batch else _LAYER_COLUMNS
    header = ["layer", "kind", "levels", *(short for _, short in columns)]
    rows = []
    for layer in report.layers:
        name = layer.name if len(layer.name) <= 40 else layer.name[:37] + "..."
        rows.append(
            [
                name,
                layer.kind,
                f"{layer.level_in}->{layer.level_out}",
                *(getattr(layer, key) for key, _ in columns),
            ]
        )
    totals = report.totals
    rows.append(
        ["total", "", f"depth {totals.depth}", *(getattr(totals, key) for key, _ in columns)]
    )
    print_table(header, rows)
    ck = report.ckks
    if batch and report.memory is not None:
        mem = report.memory
        click.echo(
            f"CKKS: ring dimension {ck.ring_dim}, batch of {ck.slots} inputs (one per "
            f"slot), depth {ck.depth}, log2 Q = {ck.log_q_bits} bits, scale "
            f"2^{ck.scaling_bits}, {ck.security}; no rotation keys"
        )
        click.echo(
            f"memory: {mem.input_ciphertexts} input and {mem.output_ciphertexts} output "
            f"ciphertexts, {mem.ciphertexts_computed} computed, at most "
            f"{mem.max_live_ciphertexts} alive ({mem.schedule} order); predicted peak "
            f"{mem.program_bytes / 1e6:.0f} MB for ciphertexts and keys "
            f"(+ the process itself)"
        )
        return
    _print_input_layout(report.input_layout)
    if report.readout is not None and report.readout.kind == "copies":
        from hec.passes.expand_copies import copies_for

        copies = copies_for(math.prod(report.output_shape))
        click.echo(
            f"readout: copies ({copies} copies of the input, {ck.slots // copies} slots "
            "each; every output read in its own copy)"
        )
    n = ck.samples_per_ciphertext or 1
    blocks = f" x {n} samples per ciphertext" if n > 1 else ""
    click.echo(
        f"CKKS: ring dimension {ck.ring_dim}, {ck.slots} slots{blocks}, "
        f"depth {ck.depth}, "
        f"log2 Q = {ck.log_q_bits} bits, scale 2^{ck.scaling_bits}, "
        f"{ck.security}; {totals.rotation_keys} rotation keys"
        + (f" ({totals.rotation_key_bytes / 1e6:,.0f} MB)" if totals.rotation_keys else "")
    )
    if report.bootstraps:
        boots = report.bootstraps["each"]
        where = ", ".join(b["name"].removeprefix("bootstrap before ") for b in boots[:4])
        more = f" and {len(boots) - 4} more" if len(boots) > 4 else ""
        click.echo(
            f"bootstraps: {len(boots)} of {boots[0]['slots']} slots (before {where}{more}), "
            f"level {max(b['level_in'] for b in boots)} -> "
            f"{min(b['level_out'] for b in boots)}+; ~{report.bootstraps['keys_estimated']} "
            f"more rotation keys for them (~{report.bootstraps['key_bytes_estimated'] / 1e6:,.0f}"
            " MB, estimated)"
        )
        unknown = [b["name"] for b in boots if b.get("input_range") == "unknown"]
        if unknown:
            click.echo(
                f"warning: {len(unknown)} bootstrap(s) refresh values of unknown range "
                f"({unknown[0]}...); OpenFHE is accurate within ±8: compare with the simulator"
            )
        wide = [b for b in boots if max(map(abs, b.get("measured_range", [0.0]))) > 8.0]
        if wide:
            lo, hi = wide[0]["measured_range"]
            click.echo(
                f"warning: {len(wide)} bootstrap(s) refresh values the calibration data put "
                f"beyond ±8 ({wide[0]['name']}: [{lo:.3g}, {hi:.3g}]); OpenFHE is accurate "
                f"within ±8: fine-tune with --range-penalty, or compare with the simulator"
            )
    if report.memory_plan is not None:
        m = report.memory_plan
        before, after = m["estimated_bytes_before"] / 1e9, m["estimated_bytes"] / 1e9
        changes = []
        if m["rotation_keys"] != m["rotation_keys_before"]:
            changes.append(
                f"{m['rotation_keys']} rotation keys instead of {m['rotation_keys_before']}, "
                f"{m['rotations']} rotations instead of {m['rotations_before']} (the others "
                f"composed of them)"
            )
        if m.get("key_groups"):
            changes.append(
                f"keys loaded in {m['key_groups']} groups, "
                f"{m['key_load_bytes'] / 1e9:.1f} GB read per evaluation"
            )
        if "plaintext_cache_bytes" in m:
            changes.append(
                f"{m['plaintext_cache_bytes'] / 1e9:.1f} GB of encoded constants kept (the "
                f"others encoded at every evaluation)"
            )
        click.echo(
            f"memory: {'; '.join(changes)} to fit {m['limit_bytes'] / 1e9:.1f} GB (estimated "
            f"{before:.1f} -> {after:.1f} GB; --memory-limit)"
        )
    if report.precision is not None:
        p = report.precision
        click.echo(
            f"precision: scale 2^{p['scaling_bits']} and a {p['first_mod_bits']}-bit first "
            f"prime for outputs within {p['target']:g} (predicted error {p['predicted_error']:.2g}"
            f", values up to {p['max_value']:.3g} on {p['samples']} calibration inputs)"
        )


def _print_input_layout(choice: Choice | None) -> None:
    """One line: the input layout kept, and what the others would have cost."""
    if choice is None or choice.candidates is None:
        return
    others = []
    for kind, c in choice.candidates.items():
        if kind == choice.kind:
            continue
        if c["applies"]:
            others.append(f"{kind} {c['rotations']} rot / {c['estimated_seconds']:.2f} s")
        else:
            others.append(f"{kind} n/a")
    mine = choice.candidates[choice.kind]
    how = "chosen" if choice.choice == "auto" else "given"
    click.echo(
        f"input layout: {choice.kind} ({how}; {mine['rotations']} rotations, "
        f"~{mine['estimated_seconds']:.2f} s estimated"
        + (f"; {', '.join(others)}" if others else "")
        + ")"
    )
