"""The conformance results as JSON (``docs/conformance.json``) and as a Markdown table
(``docs/conformance.md``), the table rendered from the JSON alone so a test can check the
committed one was generated, not typed."""

from __future__ import annotations

import re
from collections import Counter

from conformance.cases import LARGE
from conformance.harness import APPROX_BOUND, EXACT_ATOL, EXACT_RTOL, STATUSES, Result

__all__ = ["results_json", "render_markdown", "REGENERATE"]

REGENERATE = "OMP_NUM_THREADS=1 .venv/bin/python scripts/conformance_table.py"


def results_json(results: list[Result], onnx_version: str, op_types: dict) -> dict:
    """Everything the table is made of: per case op type, status, adaptations, message."""
    rows = []
    for r in results:
        row = r.to_json()
        del row["seconds"]  # varies from run to run; the script prints it
        row["error"] = None if r.error is None else float(f"{r.error:.4g}")
        rows.append(row)
    return {
        "generated_by": "scripts/conformance_table.py (do not edit by hand)",
        "onnx_version": onnx_version,
        "op_types": op_types,
        "tolerances": {
            "exact_rtol": EXACT_RTOL,
            "exact_atol": EXACT_ATOL,
            "approximated_relative_rms": APPROX_BOUND,
        },
        "cases": rows,
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _refusal_gist(message: str) -> str:
    """A refusal without the node's name, so the same reason counts once per op type."""
    return re.sub(r"^node '[^']*':\s*", "", message)[:90]


def render_markdown(data: dict) -> str:
    """``docs/conformance.md`` from ``results_json``'s output (and nothing else)."""
    cases = data["cases"]
    tol = data["tolerances"]
    totals = Counter(c["status"] for c in cases)
    lines = [
        "# ONNX conformance",
        "",
        "<!-- generated from docs/conformance.json by scripts/conformance_table.py: "
        "do not edit by hand -->",
        "",
        f"Regenerate (runs the tier, then writes this page and `docs/conformance.json`): "
        f"`{REGENERATE}`; `--from-json` re-renders this page from the JSON alone.",
        "",
        f"ONNX {data['onnx_version']} ships one node test case per op behaviour (a model, its "
        f"inputs and the expected outputs). The tier (`tests/conformance/`) runs every case "
        f"whose op type hec has a converter for or a CNN/MLP user meets, adapted as a user "
        f"would (see `tests/conformance/adapt.py`; each case's adaptations are in the JSON): the "
        f"first floating-point input is encrypted and the other inputs become constants; a "
        f"batch axis is added, or a leading batch of several samples split into samples "
        f"(samples with NaN or infinity left out); only the first output is kept, optional node "
        f"outputs nothing reads left out; an opset outside 13..21 moves to the nearest bound. "
        f"Every adapted model must still reproduce ONNX's expected output in ONNX's reference "
        f"evaluator, else the case is *not adapted*. hec compiles it (slot packing, calibrated "
        f"on the case's own input where it asks for calibration data) and its simulator runs "
        f"it; the artifact's client tail (e.g. a final Sigmoid) runs on the simulated logits. "
        f"`pytest tests/conformance -m 'not slow'` runs the simulated tier (one test per case: "
        f"it fails on a wrong output or a crash); the slow tier adds the few cases with tensors "
        f"over {LARGE} elements and one encrypted run per op family (within 1e-2 of the "
        f"simulator).",
        "",
        f"- **pass**: every element within {tol['exact_atol']:g} + "
        f"{tol['exact_rtol']:g}·|expected| (the relative part widened to the type's "
        f"resolution where ONNX's output is float16 or bfloat16: hec computes on reals).",
        f"- **approximated**: hec replaced a non-polynomial op by a calibrated polynomial and the "
        f"output is within {tol['approximated_relative_rms']:g} relative RMS error "
        f"(‖out − expected‖ / ‖expected‖) of the expected output; max pooling (average pooling "
        f"times a per-channel affine map fitted on the calibration data) is checked to the exact "
        f"tolerance against that substitute, computed independently.",
        "- **refused**: hec raised one of its errors (one line naming the node).",
        "- **wrong**: an output of the wrong shape, or outside the tolerance or bound.",
        "- **crash**: any other exception, or a hec error raised from one (a pass's internal "
        "failure wrapped in a PassError): a bug in hec.",
        "- **not adapted**: no adaptation reproduces ONNX's output (no floating-point input, "
        "an axis that merges the batch, a type the opsets hec reads lack, ...).",
        "",
        "## Totals",
        "",
        "| " + " | ".join(STATUSES) + " | cases |",
        "|" + "---:|" * (len(STATUSES) + 1),
        "| " + " | ".join(str(totals[s]) for s in STATUSES) + f" | {len(cases)} |",
        "",
        "## By op type",
        "",
        "| op type | family | " + " | ".join(STATUSES) + " | most common refusal |",
        "|---|---|" + "---:|" * len(STATUSES) + "---|",
    ]
    by_op: dict[str, list[dict]] = {}
    for c in cases:
        by_op.setdefault(c["op_type"], []).append(c)
    for op in sorted(by_op):
        rows = by_op[op]
        count = Counter(c["status"] for c in rows)
        refusals = Counter(_refusal_gist(c["message"]) for c in rows if c["status"] == "refused")
        gist = refusals.most_common(1)[0][0] if refusals else ""
        lines.append(
            f"| {op} | {rows[0]['family']} | "
            + " | ".join(str(count[s]) if count[s] else "" for s in STATUSES)
            + f" | {_cell(gist)} |"
        )
    bad = [c for c in cases if c["status"] in ("wrong", "crash")]
    lines += ["", "## Wrong outputs and crashes", ""]
    lines += [
        f"- `{c['name']}` ({c['op_type']}, {c['status']}): {_cell(c['message'])}" for c in bad
    ]
    if not bad:
        lines.append("None.")
    ops = data["op_types"]
    lines += [
        "",
        "## Op types run",
        "",
        f"CNN/MLP op types (`tests/conformance/cases.py`): {', '.join(ops['cnn_mlp'])}.",
        "",
        f"Op types hec had a converter for at this run: {', '.join(ops['accepted'])}.",
        "",
    ]
    return "\n".join(lines)
