"""``hec inspect OUT/ [--run RUN.json] [--html FILE]``: where a program's time and memory go.

One row per report layer: diagonals, rotations (hoisted), plaintext and ciphertext multiplies,
levels, the predicted time (``cost_model``: calibrated costs when ``hec calibrate-costs`` has
measured this ring and depth), the memory of the rotation keys the layer uses and of its encoded
plaintexts, and the measured time when a run report (``hec run OUT --report RUN.json``) is
given. Everything is read from ``report.json``; nothing is recounted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from hec.backend_openfhe.params import CKKSParams
    from hec.backend_openfhe.report_schema import ProgramReport

__all__ = ["inspect_cmd", "layer_rows"]

# (key, header, format): the columns of the table, the HTML report and the rows' dicts
COLUMNS = [
    ("name", "layer", "{}"),
    ("kind", "kind", "{}"),
    ("levels", "levels", "{}"),
    ("diagonals", "diag", "{}"),
    ("rotations", "rot", "{}"),
    ("hoisted_rotations", "hoisted", "{}"),
    ("plaintext_multiplies", "pt-mul", "{}"),
    ("ciphertext_multiplies", "ct-mul", "{}"),
    ("predicted_ms", "pred ms", "{:.1f}"),
    ("measured_ms", "meas ms", "{:.1f}"),
    ("key_mb", "key MB", "{:.0f}"),
    ("plaintext_mb", "pt MB", "{:.1f}"),
]


def layer_rows(
    report: ProgramReport, params: CKKSParams, run: dict | None = None
) -> list[dict[str, Any]]:
    """The table's rows (the last one is the total) from a report and the artifact's params."""
    from hec.backend_openfhe.cost_model import layer_seconds, op_costs, uncached_plaintexts
    from hec.backend_openfhe.params import key_switch_key_bytes

    ck = report.ckks
    costs, _ = op_costs(ck)
    key = key_switch_key_bytes(params) if report.packing != "batch" else 0
    measured = (run or {}).get("layer_ms")
    if measured is not None and len(measured) != len(report.layers):
        raise click.UsageError("the run report is of another program (its layers differ)")
    encodes = uncached_plaintexts(report)
    rows = []
    for i, layer in enumerate(report.layers):
        primes = ck.depth + 1 - layer.level_in
        plaintexts = layer.plaintext_multiplies + layer.plaintext_additions
        row = {
            **{k: getattr(layer, k) for k, _, _ in COLUMNS if getattr(layer, k, None) is not None},
            "levels": f"{layer.level_in}->{layer.level_out}",
            "predicted_ms": layer_seconds(layer, ck, costs, encodes[i]) * 1e3,
            "key_mb": layer.rotation_keys * key / 1e6,
            "plaintext_mb": plaintexts * ck.ring_dim * primes * 8 / 1e6,
        }
        if measured is not None:
            row["measured_ms"] = measured[i]
        rows.append(row)
    totals = report.totals
    total = {
        "name": "total",
        "kind": "",
        "levels": f"depth {totals.depth}",
        **{k: getattr(totals, k) for k, _, _ in COLUMNS[3:8]},
        "predicted_ms": sum(r["predicted_ms"] for r in rows),
        "key_mb": totals.rotation_key_bytes / 1e6,  # keys shared by layers once
        "plaintext_mb": sum(r["plaintext_mb"] for r in rows),
    }
    if measured is not None:
        total["measured_ms"] = sum(measured)
    return [*rows, total]


@click.command("inspect")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--run",
    "run_path",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Run report from `hec run OUT --report RUN.json`: adds measured times.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a self-contained HTML report with plots (SVG) here.",
)
def inspect_cmd(artifact: Path, run_path: Path | None, html_path: Path | None) -> None:
    """Per-layer costs of the compiled program in ARTIFACT: time and memory, where they go."""
    from hec.backend_openfhe import load_artifact
    from hec.backend_openfhe.cost_model import op_costs
    from hec.cli.format import print_table

    art = load_artifact(artifact)
    run = json.loads(run_path.read_text()) if run_path is not None else None
    rows = layer_rows(art.report, art.params, run)
    columns = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    print_table(
        [h for _, h, _ in columns],
        [[f.format(r[k]) if k in r else "-" for k, _, f in columns] for r in rows],
    )
    _, basis = op_costs(art.report.ckks)
    click.echo(f"predicted from {basis}")
    if run and "precision_bits" in run:
        click.echo(f"measured precision: {run['precision_bits']:.1f} bits (OpenFHE's estimate)")
    if art.report.input_layout is not None:
        click.echo(f"input layout: {art.report.input_layout.kind}")
    if html_path is not None:
        from hec.cli.html_report import write_html

        write_html(html_path, art, rows, columns, basis)
        click.echo(f"HTML report written to {html_path}")
