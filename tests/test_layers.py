"""The import graph of src/rabench: no cycle, and each package imports only the layers below it.

Why: a cycle kept open by a function-local import works until someone moves that import, and an
arrow up (training importing the report, say) ties the layers together for good. The graph is
read from the source (ast), function-local and TYPE_CHECKING imports included, so a late import
cannot hide an edge.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import rabench

PACKAGE_ROOT = Path(rabench.__file__).resolve().parent


@dataclass(frozen=True)
class Edge:
    """One import statement: `source` imports `target` (both module names) at `where`."""

    source: str
    target: str
    where: str  # path:line, for the assertion messages
    implied: bool = False  # not written: importing `target`'s submodule first runs `target`'s __init__

    def __str__(self) -> str:
        how = ", runs its package __init__" if self.implied else ""
        return f"{self.source} -> {self.target} ({self.where}{how})"


def module_files() -> dict[str, Path]:
    """Module name -> file, a package by its __init__.py."""
    out = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def owning_module(name: str, modules: dict[str, Path]) -> str:
    """The module a dotted name lives in (`rabench.flops.floor_ratio` -> `rabench.flops`)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def imported_names(node: ast.Import | ast.ImportFrom, package: str, modules: dict[str, Path]) -> list[str]:
    """The modules an import statement names; `from pkg import sub` names the submodule."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def ancestors(module: str) -> list[str]:
    """`rabench.attention.registry` -> [`rabench.attention`, `rabench`]."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@cache
def import_edges() -> tuple[Edge, ...]:
    """Every import of a rabench module by another, at any depth of the file, plus the package
    __init__ each one runs when it enters a package from outside it."""
    modules = module_files()
    edges: set[Edge] = set()
    for source, path in modules.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            where = f"{path.relative_to(PACKAGE_ROOT.parent)}:{node.lineno}"
            for name in imported_names(node, package, modules):
                target = owning_module(name, modules) if name.startswith("rabench") else ""
                if not target or target == source:
                    continue
                edges.add(Edge(source, target, where))
                edges.update(Edge(source, p, where, implied=True) for p in ancestors(target) if not inside(source, p))
    return tuple(sorted(edges, key=str))


def direct_edges() -> list[Edge]:
    return [e for e in import_edges() if not e.implied]


def reachable(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def cycles(edges: list[Edge] | tuple[Edge, ...]) -> list[list[Edge]]:
    """One shortest cycle (its edges, in order) per group of modules that import each other."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
    reach = {m: reachable(m, graph) for m in graph}
    groups = {frozenset(n for n in reach[m] if m in reach.get(n, ())) for m in graph if m in reach[m]}
    return [shortest_cycle(sorted(g), edges) for g in sorted(groups, key=sorted)]


def shortest_cycle(group: list[str], edges: list[Edge] | tuple[Edge, ...]) -> list[Edge]:
    """The fewest edges that lead from a module of `group` back to it (breadth-first from each)."""
    out: list[Edge] = []
    for start in group:
        came_by: dict[str, Edge] = {}
        frontier = [start]
        while frontier and start not in came_by:
            step = []
            for m in frontier:
                for e in edges:
                    if e.source == m and e.target in group and e.target not in came_by:
                        came_by[e.target] = e
                        step.append(e.target)
            frontier = step
        path, m = [], start
        while True:
            path.append(came_by[m])
            m = came_by[m].source
            if m == start:
                break
        if not out or len(path) < len(out):
            out = path[::-1]
    return out


def arrows(from_package: str, to_packages: tuple[str, ...]) -> list[Edge]:
    """Written imports from inside `from_package` into any of `to_packages`."""
    return [e for e in direct_edges()
            if inside(e.source, from_package) and any(inside(e.target, p) for p in to_packages)]


def listed(edges: list[Edge]) -> str:
    return "\n".join(map(str, edges))


# ---------------------------------------------------------------- the scanner itself


def test_the_graph_counts_function_local_and_relative_imports() -> None:
    targets = {(e.source, e.target) for e in direct_edges()}
    assert ("rabench.cli", "rabench.commands") in targets  # imported inside cli's functions only
    assert ("rabench.__main__", "rabench.cli") in targets
    modules = {"rabench.a": Path("a.py"), "rabench.a.b": Path("b.py")}
    relative = ast.parse("from . import b\nfrom .b import x").body
    assert imported_names(relative[0], "rabench.a", modules) == ["rabench.a.b"]
    assert imported_names(relative[1], "rabench.a", modules) == ["rabench.a.b"]


def test_cycles_finds_a_cycle_through_a_package_init() -> None:
    edges = [Edge("x", "y.m", "x.py:1"), Edge("x", "y", "x.py:1", implied=True), Edge("y", "y.n", "y.py:1"),
             Edge("y.n", "x", "n.py:1"), Edge("y.m", "z", "m.py:1")]
    assert cycles(edges) == [[edges[1], edges[2], edges[3]]]
    assert cycles(edges[:3] + edges[4:]) == []


# ---------------------------------------------------------------- the rules


def test_no_module_imports_itself_through_others() -> None:
    found = cycles(import_edges())
    assert not found, "import cycles (one per group):\n" + "\n".join("  " + "; ".join(map(str, c)) for c in found)


def test_training_imports_no_layer_above_it() -> None:
    bad = arrows("rabench.training", ("rabench.suite", "rabench.analysis", "rabench.commands", "rabench.bench",
                                      "rabench.cli"))
    assert not bad, listed(bad)


def test_suite_imports_no_layer_above_it() -> None:
    bad = arrows("rabench.suite", ("rabench.analysis", "rabench.commands", "rabench.bench", "rabench.cli"))
    assert not bad, listed(bad)


def test_analysis_reads_only_the_suite_folder_layout() -> None:
    bad = [e for e in arrows("rabench.analysis", ("rabench.suite",)) if e.target != "rabench.suite.folder"]
    assert not bad, listed(bad)


def test_attention_imports_no_layer_above_it() -> None:
    """The model builds attention cores, so attention never imports the model (the conformance
    checks, which train a tiny model, sit above both)."""
    bad = arrows("rabench.attention", ("rabench.model", "rabench.training", "rabench.suite", "rabench.analysis",
                                       "rabench.commands", "rabench.bench", "rabench.cli"))
    assert not bad, listed(bad)


def test_kernels_import_only_the_errors() -> None:
    bad = [e for e in direct_edges() if inside(e.source, "rabench.kernels")
           and not inside(e.target, "rabench.kernels") and e.target != "rabench.errors"]
    assert not bad, listed(bad)


def test_only_the_cli_imports_the_commands() -> None:
    bad = [e for e in direct_edges() if inside(e.target, "rabench.commands")
           and not inside(e.source, "rabench.commands") and e.source != "rabench.cli"]
    assert not bad, listed(bad)


def test_moved_names_stay_where_plug_ins_import_them() -> None:
    """AttentionSpec and the pair formula got modules of their own; the documented paths still work."""
    from rabench.attention import AttentionSpec
    from rabench.attention.pair_flops import causal_pair_flops
    from rabench.attention.spec import AttentionSpec as OwnedSpec
    from rabench.flops import causal_pair_flops as documented

    assert AttentionSpec is OwnedSpec and documented is causal_pair_flops
