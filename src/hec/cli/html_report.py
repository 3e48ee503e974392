"""The HTML report of ``hec inspect --html``: one self-contained file, plots drawn as inline SVG
(no plotting library: horizontal bars are a few rectangles)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

__all__ = ["write_html", "bar_chart"]

_COLORS = ("#3b6ea8", "#e07b39", "#5a9e4b")
_STYLE = """body{font-family:sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.total{font-weight:bold}
svg text{font-size:12px;font-family:sans-serif}"""


def bar_chart(title: str, labels: list[str], series: dict[str, list[float]], unit: str) -> str:
    """Grouped horizontal bars, one group per label, one bar per series (an SVG element)."""
    width, label_w, bar_h, gap = 760, 260, 12, 8
    top = 40
    n = len(series)
    group_h = n * bar_h + gap
    height = top + len(labels) * group_h + 20
    peak = max((v for vals in series.values() for v in vals), default=0.0) or 1.0
    scale = (width - label_w - 90) / peak
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="0" y="16" style="font-size:14px;font-weight:bold">{escape(title)}</text>',
    ]
    for s, name in enumerate(series):
        x = label_w + s * 150
        parts.append(f'<rect x="{x}" y="24" width="10" height="10" fill="{_COLORS[s % 3]}"/>')
        parts.append(f'<text x="{x + 14}" y="33">{escape(name)}</text>')
    for i, label in enumerate(labels):
        y = top + i * group_h
        short = label if len(label) <= 38 else label[:35] + "..."
        parts.append(f'<text x="0" y="{y + n * bar_h / 2 + 4}">{escape(short)}</text>')
        for s, vals in enumerate(series.values()):
            v = vals[i]
            w = max(v * scale, 0.5 if v > 0 else 0)
            by = y + s * bar_h
            parts.append(
                f'<rect x="{label_w}" y="{by}" width="{w:.1f}" height="{bar_h - 2}" '
                f'fill="{_COLORS[s % 3]}"><title>{escape(label)}: {v:.3g} {unit}</title></rect>'
            )
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{by + bar_h - 3}">{v:.3g}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def write_html(
    path: Path, art, rows: list[dict[str, Any]], columns: list[tuple], basis: str
) -> None:
    """Write the report: parameters, the per-layer table, time and memory plots."""
    layers, total = rows[:-1], rows[-1]
    labels = [f"{i}: {r['name']}" for i, r in enumerate(layers)]
    time_series = {"predicted ms": [r["predicted_ms"] for r in layers]}
    if "measured_ms" in total:
        time_series["measured ms"] = [r["measured_ms"] for r in layers]
    memory = {
        "rotation keys MB": [r["key_mb"] for r in layers],
        "plaintexts MB": [r["plaintext_mb"] for r in layers],
    }
    head = "".join(f"<th>{escape(h)}</th>" for _, h, _ in columns)
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="{"" if k in ("name", "kind") else "n"}">'
            f"{escape(f.format(r[k])) if k in r else '-'}</td>"
            for k, _, f in columns
        )
        body.append(f'<tr class="{"total" if r is total else ""}">{cells}</tr>')
    ck = art.report.ckks
    layout = art.report.input_layout
    choice = layout.kind if layout is not None else "contiguous"
    summary = (
        f"ring dimension {ck.ring_dim}, {ck.slots} slots, depth {ck.depth}, "
        f"scale 2^{ck.scaling_bits}, {ck.security}; input layout {choice}; "
        f"{art.report.totals.rotation_keys} rotation keys "
        f"({total['key_mb']:.0f} MB); predicted from {basis}"
    )
    html = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hec inspect: {escape(str(art.path))}</title>
<style>{_STYLE}</style></head><body>
<h1>{escape(art.report.model)}</h1>
<p>{escape(summary)}</p>
<table><tr>{head}</tr>
{chr(10).join(body)}
</table>
<h2>Where the time goes</h2>
{bar_chart("time per layer (one evaluation)", labels, time_series, "ms")}
<h2>Where the memory goes</h2>
{bar_chart("memory per layer (keys shared by layers count in each)", labels, memory, "MB")}
</body></html>
"""
    path.write_text(html)
