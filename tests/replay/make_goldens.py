"""Write (or check) the replay tier's goldens: ``python tests/replay/make_goldens.py``.

``--full`` also runs the ``hec optimize`` steps (minutes each) and writes their outputs to
``tests/replay/models/``; ``--check`` compares with the committed goldens instead of writing and
exits non-zero on a difference. An intended change updates the goldens in the commit that makes
it, with the reason.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import CASES, GOLDENS, MODELS, run_case  # noqa: E402


def differences(want, got, where: str = "") -> list[str]:
    """Where two fingerprints differ, as ``files/program.txt``-style paths."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for key in sorted(set(want) | set(got)):
            if key not in got or key not in want:
                out.append(f"{where}{key}: only in {'goldens' if key in want else 'this run'}")
            else:
                out += differences(want[key], got[key], f"{where}{key}/")
        return out
    return [] if want == got else [f"{where.rstrip('/')}: {str(want)[:60]} -> {str(got)[:60]}"]


def _take(old: dict, new: dict, paths: list[str]) -> dict:
    """``old`` with the values at ``paths`` (``a/b``) taken from ``new`` (removed if absent)."""
    out = json.loads(json.dumps(old))
    for path in paths:
        *parents, last = path.split("/")
        src, dst = new, out
        for key in parents:
            src, dst = src.get(key, {}), dst.setdefault(key, {})
        if last in src:
            dst[last] = src[last]
        else:
            dst.pop(last, None)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="run the hec optimize steps too")
    ap.add_argument("--check", action="store_true", help="compare, do not write")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated paths (e.g. files/program.txt,report/search) to take from this "
        "run; the rest of each golden is kept (an intended change that others' work in "
        "progress must not ride along with)",
    )
    ap.add_argument("cases", nargs="*", help="case names (default: all)")
    args = ap.parse_args()
    chosen = [c for c in CASES if not args.cases or c.name in args.cases]
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in chosen:
            print(f"{case.name} ...", flush=True)
            got = run_case(case, Path(tmp), full=args.full)
            path = GOLDENS / f"{case.name}.json"
            if args.check:
                want = json.loads(path.read_text())
                if "optimized" not in got:  # the optimization ran only with --full
                    want.pop("optimized", None)
                failed += [f"{case.name}: {d}" for d in differences(want, got)]
                continue
            if args.full and case.optimize_args is not None:
                MODELS.mkdir(exist_ok=True)
                shutil.copy(Path(tmp) / f"{case.name}.onnx", case.optimized)
            old = json.loads(path.read_text()) if path.exists() else {}
            if "optimized" not in got and "optimized" in old:
                got = {"optimized": old["optimized"], **got}
            if args.only:
                got = _take(old, got, args.only.split(","))
            GOLDENS.mkdir(exist_ok=True)
            path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    print("\n".join(failed) or "replay: identical" if args.check else "goldens written")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
