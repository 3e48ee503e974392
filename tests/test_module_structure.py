"""hec's modules import each other without cycles, and none imports another's private names.

The import graph is read from the source with ``ast``, so it holds every import that can run,
also those inside functions (a lazy import that closes a cycle is still a cycle of design, it
only moves the failure from import time to call time). Its nodes are hec's modules, a package
being its ``__init__``; its edges are:

- ``import hec.a.b`` and ``from hec.a.b import name``: an edge to ``hec.a.b``;
- ``from hec.a import b`` where ``hec.a.b`` is a module: an edge to ``hec.a.b`` only;
- ``from hec.a import name`` where ``name`` is not a module (a re-export, or a name the package
  defines): an edge to the package ``hec.a``, whose ``__init__`` must have run to hold it.

Python runs a package's ``__init__`` before any of its submodules, but that implicit step is
not an edge: the package is in ``sys.modules`` (perhaps half-initialized) before the submodule
starts, so a submodule never re-enters it. Thus ``hec.passes.lower_to_slots``, which
``hec/passes/__init__.py`` imports, is in no cycle with ``hec.passes``. A cycle through an
``__init__`` is reported when the package imports, directly or not, a module that takes a name
from the package (``from hec.passes import X``): whether that works depends on which of the two
was imported first.

Imports under ``if TYPE_CHECKING:`` never run and are not edges; ``importlib`` calls are not
read. Private names (``from hec.a import _name``; dunders are fine, and so are modules such as
``hec._environment``, private to the package, not to a module) are checked everywhere,
``TYPE_CHECKING`` blocks included: a type is as private as a function.

To break a cycle, move what both sides need into a small module that both import (a type, a
registry, a constant), or pass it in as an argument; moving the import into a function does not
break it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

import hec

# Cycles that other pieces of work remove; the test fails when one is gone, so the list only
# shrinks: delete an entry in the commit that breaks its cycle.
KNOWN_CYCLES: list[set[str]] = []


@dataclass(frozen=True)
class Import:
    """One name or module that a hec module imports from another, and the line that does."""

    importer: str
    target: str  # the module imported from (a package: its __init__)
    name: str  # the name imported (the module's own name for a plain or submodule import)
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.importer}:{self.line}: {self.text}"


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package at ``root`` by dotted name (a package by its ``__init__``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_statements(
    node: ast.AST, type_only: bool = False
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import under ``node``, and whether it is under ``if TYPE_CHECKING:``."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, type_only
    elif isinstance(node, ast.If) and is_type_checking(node.test):
        for child in node.body:
            yield from import_statements(child, True)
        for child in node.orelse:
            yield from import_statements(child, type_only)
    else:
        for child in ast.iter_child_nodes(node):
            yield from import_statements(child, type_only)


def from_module(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module of a ``from`` import (a relative one resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    parts = parts[: len(parts) - node.level + is_package]
    return ".".join([*parts, *([node.module] if node.module else [])])


def read_imports(root: Path) -> tuple[list[Import], list[Import]]:
    """The package's internal imports: those that run (the graph's edges), and all imports of
    names from another module (``TYPE_CHECKING`` ones included)."""
    modules = module_names(root)
    runs, names = [], []
    for module, path in modules.items():
        source = path.read_text()
        lines = source.splitlines()
        for node, type_only in import_statements(ast.parse(source, str(path))):
            text = lines[node.lineno - 1].strip()
            found = []
            if isinstance(node, ast.Import):
                found = [Import(module, a.name, a.name, node.lineno, text) for a in node.names]
            else:
                base = from_module(module, node, path.name == "__init__.py")
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    target, name = (sub, sub) if sub in modules else (base, a.name)
                    found.append(Import(module, target, name, node.lineno, text))
            found = [i for i in found if i.target in modules]
            runs += [] if type_only else found
            names += [i for i in found if i.name != i.target]
    return runs, names


def cycles(edges: list[Import]) -> list[set[str]]:
    """The strongly connected components of more than one module."""
    graph = nx.DiGraph((e.importer, e.target) for e in edges if e.importer != e.target)
    return [set(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(names: list[Import]) -> list[Import]:
    return [i for i in names if is_private(i.name) and i.target != i.importer]


def describe(cycle: set[str], edges: list[Import]) -> str:
    """The cycle's modules, then each import line between two of them."""
    inside = dict.fromkeys(str(e) for e in edges if e.importer in cycle and e.target in cycle)
    return " <-> ".join(sorted(cycle)) + "".join(f"\n    {line}" for line in inside)


def test_no_import_cycles():
    edges, _ = read_imports(Path(hec.__file__).parent)
    found = cycles(edges)
    new = [c for c in found if c not in KNOWN_CYCLES]
    gone = [c for c in KNOWN_CYCLES if c not in found]
    assert not new and not gone, "\n".join(
        [f"import cycle: {describe(c, edges)}" for c in new]
        + [f"no longer a cycle, remove it from KNOWN_CYCLES: {sorted(c)}" for c in gone]
    )


def test_no_private_names_across_modules():
    _, names = read_imports(Path(hec.__file__).parent)
    found = private_imports(names)
    assert not found, "\n".join(
        f"private name {i.name} of {i.target} imported at {i}" for i in found
    )


def test_reader_on_a_small_package(tmp_path: Path):
    """The rules of the module docstring on a package written for the purpose."""
    files = {
        "__init__.py": "",
        "pkg/__init__.py": "from pkgroot.pkg.a import A\n",
        # a submodule (edge to b), a TYPE_CHECKING import (none), a private name in a function
        "pkg/a.py": (
            "from typing import TYPE_CHECKING\n"
            "from pkgroot.pkg import b\n"
            "if TYPE_CHECKING:\n"
            "    from pkgroot.pkg.c import C\n"
            "class A:\n"
            "    def f(self):\n"
            "        from pkgroot.pkg.b import _hidden, __version__\n"
        ),
        # a name the package re-exports: edge to the package, which imports a, which imports b
        "b.py": "",
        "pkg/b.py": "from pkgroot.pkg import A\n_hidden = __version__ = 1\n",
        # imports a submodule the package imports too: no edge to the package, no cycle
        "pkg/c.py": "import pkgroot.pkg.a\nfrom .a import A as C\nfrom .. import b\n",
    }
    root = tmp_path / "pkgroot"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    edges, names = read_imports(root)
    pairs = {(e.importer, e.target) for e in edges}
    assert ("pkgroot.pkg.a", "pkgroot.pkg.b") in pairs
    assert ("pkgroot.pkg.a", "pkgroot.pkg.c") not in pairs
    assert ("pkgroot.pkg.c", "pkgroot.pkg.a") in pairs and ("pkgroot.pkg.c", "pkgroot.b") in pairs
    assert ("pkgroot.pkg.c", "pkgroot.pkg") not in pairs
    assert cycles(edges) == [{"pkgroot.pkg", "pkgroot.pkg.a", "pkgroot.pkg.b"}]
    assert [(i.importer, i.target, i.name) for i in private_imports(names)] == [
        ("pkgroot.pkg.a", "pkgroot.pkg.b", "_hidden")
    ]
    assert "pkgroot.pkg.b:1: from pkgroot.pkg import A" in describe(cycles(edges)[0], edges)
