"""The committed conformance table is what the committed JSON says (generated, not typed)."""

from __future__ import annotations

import json

from conformance.harness import STATUSES
from conformance.table import render_markdown

from conftest import REPO

DOCS = REPO / "docs"


def test_committed_table_is_rendered_from_the_json() -> None:
    data = json.loads((DOCS / "conformance.json").read_text())
    assert (DOCS / "conformance.md").read_text() == render_markdown(data), (
        "docs/conformance.md differs from what docs/conformance.json renders to; regenerate "
        "with scripts/conformance_table.py (--from-json to re-render only)"
    )


def test_json_rows_are_complete() -> None:
    data = json.loads((DOCS / "conformance.json").read_text())
    assert data["cases"], "no cases recorded"
    for row in data["cases"]:
        assert row["status"] in STATUSES, row
        assert row["op_type"] and isinstance(row["adaptations"], list), row
        if row["status"] in ("refused", "wrong", "crash", "not adapted"):
            assert row["message"] and "\n" not in row["message"], row


def test_table_counts_add_up() -> None:
    data = json.loads((DOCS / "conformance.json").read_text())
    table = render_markdown(data)
    totals = next(
        line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()
    )
    cells = [int(c) for c in totals.strip("| ").split(" | ")]
    assert sum(cells[:-1]) == cells[-1] == len(data["cases"])
