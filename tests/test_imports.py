"""Every module of ``hec`` imports on its own, first (no import cycle hidden by the order in
which other modules happen to be imported)."""

import pkgutil
import subprocess
import sys

import hec

_SCRIPT = r"""
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for mod in [m for m in sys.modules if m == "hec" or m.startswith("hec.")]:
        del sys.modules[mod]
    try:
        importlib.import_module(name)
    except ImportError as e:
        if "torch" not in str(e) and "hec[train]" not in str(e):
            failed.append(f"{name}: {e}")
print("\n".join(failed))
"""


def test_every_module_imports_first():
    names = [
        m.name
        for m in pkgutil.walk_packages(hec.__path__, "hec.")
        if not m.name.endswith("__main__")  # runs the CLI
    ]
    assert "hec.recover" in names and "hec.passes.prune_filters" in names
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, *names], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", out.stdout
