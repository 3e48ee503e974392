"""Plot a benchmark results file: per-image latency by stage, peak memory and accuracy, for hec
and the peers on each model.

    python benchmarks/plot_results.py benchmarks/results.json [out.png]

matplotlib is optional (``pip install 'hec[bench]'``, or the peers' ``.venv-peers`` has it):
without it ``plot`` says so and writes nothing. Reads only the JSON, so any interpreter with
matplotlib can draw a file another one measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def plot(results: dict, png: Path) -> str:
    """Write ``png`` from ``run.py``'s results; returns one line saying what happened."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install 'hec[bench]'): no PNG plot"
    rows = [r for r in results.get("peers", []) if r.get("status") == "ok"]
    if not rows:  # no peers: hec's latency rows alone
        rows = [
            {**r, "tool": "hec", "acc_he_friendly": r["acc_simulated"]}
            for r in results.get("rows", [])
            if r.get("packing") == "slots"
        ]
    if not rows:
        return "nothing to plot"
    models = {r["model"] for r in rows}
    labels = [  # the model only when several share the plot; a tool's variant on its own line
        (f"{r['model'].split()[0]}\n" if len(models) > 1 else "") + r["tool"].replace(", ", "\n")
        for r in rows
    ]
    xs = range(len(rows))
    fig, (ax_t, ax_m, ax_a) = plt.subplots(1, 3, figsize=(max(9, 2.2 * len(rows) * 1.5), 4.2))
    stages = (
        ("encrypt_ms", 1e-3, "encrypt"),
        ("evaluate_s", 1, "evaluate"),
        ("decrypt_ms", 1e-3, "decrypt"),
    )
    for j, (key, scale, name) in enumerate(stages):  # side by side: stages differ 1000-fold
        ax_t.bar([x + (j - 1) * 0.27 for x in xs], [r[key] * scale for r in rows], 0.27, label=name)
    for x, r in zip(xs, rows, strict=True):
        ax_t.annotate(
            f"{r['evaluate_s']:.3g} s", (x, r["evaluate_s"]), ha="center", va="bottom", fontsize=7
        )
    ax_t.set_ylabel("seconds per image and stage (1 thread)")
    ax_t.set_yscale("log")
    ax_t.legend(fontsize=7)
    ax_m.bar(xs, [r["peak_rss_mb"] for r in rows], color="tab:purple")
    ax_m.set_ylabel("peak process memory, MB")
    ax_a.bar(xs, [r["acc_he_friendly"] for r in rows], color="tab:green")
    ax_a.set_ylabel("accuracy of the model run encrypted\n(whole test split, in the clear)")
    ax_a.set_ylim(0, 1)
    for ax in (ax_t, ax_m, ax_a):
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=7)
    meta = results.get("meta", {})
    fig.suptitle(
        (f"{models.pop()}: " if len(models) == 1 else "")
        + f"hec benchmark {meta.get('date', '')}, {meta.get('cpus', '?')} CPUs, "
        f"OMP_NUM_THREADS={meta.get('omp_threads', '?')}, load average "
        f"{(meta.get('load_average_before') or ['?'])[0]}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return f"written {png}"


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print(__doc__.splitlines()[3].strip(), file=sys.stderr)
        return 2
    src = Path(argv[0])
    png = Path(argv[1]) if len(argv) > 1 else src.with_suffix(".png")
    print(plot(json.loads(src.read_text()), png))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
