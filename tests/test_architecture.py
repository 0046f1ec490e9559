"""The package's layers import only downward, and no modules import each other in a circle (docs/architecture.md).

Every module under ace_interp/ is read with `ast` (function-local imports included) and judged by its *unit*:
the folder or top-level module it belongs to (`ace_interp/editing/keys.py` -> "editing"). A new file in an
existing folder is therefore covered without touching this test; a new folder or top-level module must be
placed in `LAYERS` (the test fails until it is).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE = "ace_interp"
ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A unit may import its own modules, any unit of a lower tier, and another unit of its own tier
# (as long as no circle forms); never a unit of a higher tier.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("model",),
    ("data", "attribution"),
    ("editing", "ablation"),
    ("evaluation",),
    ("analysis", "plotting", "explorer"),
    ("demo",),
    ("cli",),
)
# Utilities any layer may import; they import nothing from the package.
LEAVES: tuple[str, ...] = ("provenance",)
# The package's face (`ace_interp/__init__.py`, the flat public API) stands above every layer: it may import
# anything, and nothing inside the package may import a name from it.
FACE = ""
# Folders next to the package that use it and must never be imported by it.
CONSUMERS: tuple[str, ...] = ("benchmarks", "experiments", "scripts", "tests", "notebooks")


def layer_order() -> str:
    """The order as docs/architecture.md states it."""
    return " → ".join(", ".join(tier) for tier in LAYERS)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_edges(root: Path, package: str = PACKAGE) -> list[tuple[str, str, int]]:
    """(importer, imported, line) for every import of anything inside or next to `package` (all `import` and
    `from … import` statements, at any depth of the module's syntax tree); `from pkg import sub` names the
    submodule `pkg.sub` when it is one, else `pkg`."""
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    edges = []
    for name, path in files.items():
        own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: climb from the importer's own package
                    base = own_package.split(".")[: len(own_package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names]
            else:
                continue
            ours = [t for t in dict.fromkeys(targets) if t.split(".")[0] in (package, *CONSUMERS) and t != name]
            edges += [(name, t, node.lineno) for t in ours]
    return edges


def unit_of(module: str, package: str = PACKAGE) -> str:
    """"ace_interp.editing.keys" -> "editing"; "ace_interp" -> FACE; outside the package: the top folder."""
    parts = module.split(".")
    if parts[0] != package:
        return parts[0]
    return parts[1] if len(parts) > 1 else FACE


def tier_of(unit: str) -> int | None:
    return next((i for i, tier in enumerate(LAYERS) if unit in tier), None)


def layer_violations(edges: Iterable[tuple[str, str, int]]) -> list[str]:
    """One line per import that breaks the layer rules."""
    problems = []
    for importer, imported, line in edges:
        a, b = unit_of(importer), unit_of(imported)
        where = f"{importer} (line {line}) imports {imported}"
        if a == b:
            continue
        if b in CONSUMERS:
            problems.append(f"{where}: the package never imports {b}/")
        elif b == FACE:
            problems.append(f"{where}: import from the submodule, not from the package's face")
        elif a == FACE or b in LEAVES:
            continue
        elif a in LEAVES:
            problems.append(f"{where}: {a} is a leaf utility and imports nothing from the package")
        elif tier_of(a) is None or tier_of(b) is None:
            unknown = a if tier_of(a) is None else b
            problems.append(f"{where}: '{unknown}' has no layer; place it in LAYERS (tests/test_architecture.py) "
                            "and docs/architecture.md")
        elif tier_of(b) > tier_of(a):
            problems.append(f"{where}: {a} (layer {tier_of(a)}) may not import the higher {b} (layer {tier_of(b)})")
    return problems


def circles(edges: Iterable[tuple[str, str, int]]) -> list[list[str]]:
    """Groups of two or more nodes that reach each other (Tarjan's strongly connected components)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b, _ in edges:
        graph[a].add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def unit_edges(edges: Iterable[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    return [(unit_of(a), unit_of(b), line) for a, b, line in edges if unit_of(a) != unit_of(b)]


# ----------------------------------------------------------------------------- the package


@pytest.fixture(scope="module")
def edges():
    found = import_edges(ROOT)
    assert len(found) > 100, "the import reader found too few imports to be reading the package"
    return found


def test_every_unit_of_the_package_has_a_layer():
    units = {p.name.removesuffix(".py") for p in (ROOT / PACKAGE).iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()}
    placed = {u for tier in LAYERS for u in tier} | set(LEAVES)
    assert units - placed == set(), "place these in LAYERS (tests/test_architecture.py) and docs/architecture.md"
    assert placed - units == set(), "LAYERS names units the package does not have"


def test_no_import_runs_up_a_layer(edges):
    problems = layer_violations(edges)
    assert not problems, "\n".join(problems)


def test_no_modules_import_each_other_in_a_circle(edges):
    assert circles(edges) == []
    assert circles(unit_edges(edges)) == []


def test_the_architecture_doc_states_this_order():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert layer_order() in doc, f"docs/architecture.md should state the layer order {layer_order()!r}"


# ----------------------------------------------------------------------------- the checker can fail


def test_the_checker_finds_upward_imports_circles_and_unplaced_units(tmp_path):
    pkg = tmp_path / PACKAGE
    for folder in ("model", "editing", "mystery"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from ace_interp.editing import edit\n")
    (pkg / "provenance.py").write_text("import json\n")
    (pkg / "model" / "state.py").write_text("def f():\n    from ace_interp.editing.keys import runner\n")
    (pkg / "editing" / "keys.py").write_text("from .solver import solve\nfrom ace_interp import provenance\n")
    (pkg / "editing" / "solver.py").write_text("from ace_interp.editing.keys import encode\n"
                                               "from ace_interp.model.state import ModelState\n")
    (pkg / "mystery" / "x.py").write_text("from ace_interp.model import state\nfrom benchmarks import common\n"
                                          "import ace_interp\n")
    found = import_edges(tmp_path)
    assert ("ace_interp.editing.keys", "ace_interp.provenance", 2) in found  # `from pkg import submodule`
    problems = "\n".join(layer_violations(found))
    assert "ace_interp.model.state (line 2) imports ace_interp.editing.keys: model (layer 0) may not import" in problems
    assert "ace_interp.mystery.x (line 3) imports ace_interp: import from the submodule" in problems
    assert "'mystery' has no layer" in problems
    assert "the package never imports benchmarks/" in problems
    assert "ace_interp.editing (line" not in problems  # the face may import anything
    assert "provenance" not in problems  # leaves are importable from anywhere
    assert circles(found) == [["ace_interp.editing.keys", "ace_interp.editing.solver", "ace_interp.model.state"]]
    assert circles(unit_edges(found)) == [["editing", "model"]]
