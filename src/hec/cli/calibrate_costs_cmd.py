"""``hec calibrate-costs``: measure OpenFHE's per-operation costs here, for the cost model."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["calibrate_costs_cmd"]


@click.command("calibrate-costs")
@click.argument("artifact", required=False, type=click.Path(path_type=Path))
@click.option(
    "--depth",
    type=click.IntRange(1, 30),
    default=None,
    help="Depth to measure at (default: the artifact's, else 5).",
)
@click.option(
    "--ring-dim",
    type=int,
    default=None,
    help="Ring dimension (default: the artifact's, else the smallest 128-bit one).",
)
@click.option(
    "--repeats",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Runs per operation; the median is kept.",
)
def calibrate_costs_cmd(
    artifact: Path | None, depth: int | None, ring_dim: int | None, repeats: int
) -> None:
    """Measure per-operation costs (one thread unless OMP_NUM_THREADS says otherwise) at the
    ring and depth of ARTIFACT (or --depth/--ring-dim) and store them in the cost table that
    report.json predictions, hec inspect and the auto choices use."""
    from hec.backend_openfhe import load_artifact
    from hec.backend_openfhe.measure_costs import measure_op_costs, store_op_costs
    from hec.cli.format import print_table

    chain = None
    if artifact is not None:  # its ring, depth, scale, first prime and digits
        chain = load_artifact(artifact).params
        depth = depth or chain.depth
        ring_dim = ring_dim or chain.ring_dim
    entry = measure_op_costs(depth or 5, ring_dim, repeats, chain)
    path = store_op_costs(entry)
    print_table(["operation", "ms"], [[k, f"{v:.3f}"] for k, v in entry["ms"].items()])
    click.echo(
        f"ring {entry['ring_dim']}, depth {entry['depth']}, load {entry['load']}: stored in {path}"
    )
