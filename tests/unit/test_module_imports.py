"""Imports between the library's modules point one way (docs: DESIGN.md, "no import cycles").

Read from the source with ast, so an import hidden inside a function counts as much as one at
the top of a module: the writer side (``indexing``) builds on ``lexical`` and ``vectorstore``,
and the reader side (``retrieval``) may use ``indexing``, never the other way round.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "include" / "ragops"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each ragops module and the ragops modules it imports anywhere in its source."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for a in node.names:  # `from ragops import state` imports the module ragops.state
                    deps.add(f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base)
        graph[name] = {d for d in deps if d in paths and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_indexing_never_imports_retrieval() -> None:
    graph = import_graph()
    assert "ragops.retrieval" not in graph["ragops.indexing"]
    assert "ragops.indexing" in graph["ragops.retrieval"]  # the allowed direction (the self-check)


def test_the_bm25_module_is_below_both_sides() -> None:
    graph = import_graph()
    assert not graph["ragops.lexical"] & {"ragops.indexing", "ragops.retrieval", "ragops.lifecycle",
                                          "ragops.vectorstore"}
    assert "ragops.lexical" in graph["ragops.indexing"] and "ragops.lexical" in graph["ragops.retrieval"]


def test_no_import_cycle_runs_through_the_index_modules() -> None:
    mine = {"ragops.indexing", "ragops.retrieval", "ragops.lexical", "ragops.vectorstore", "ragops.gates",
            "ragops.drift.checks", "ragops.drift.stats"}
    bad = [sorted(c) for c in cycles(import_graph()) if c & mine]
    assert bad == [], f"import cycles: {bad}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []
