"""No module of daemon/, parsers/ or models/ is in an import cycle (issue 12), read from the source with `ast`.

Every import counts: at module level, inside a function (a deferred import hides a cycle, it
does not break it) and under `if TYPE_CHECKING:` (a module that needs another's types depends
on it). `from package import module` is an edge to that module, as Python imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "parsers", "models")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported(tree: ast.Module, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of `known` that module `name` imports."""
    here = name if is_package else name.rpartition(".")[0]
    wanted: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            wanted += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = ".".join(part for part in (base if node.level else "", node.module or "") if part)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                wanted.append(submodule if submodule in known else source)
    edges = set()
    for target in wanted:
        while target and target not in known:
            target = target.rpartition(".")[0]    # `import a.b.c` of a module a.b.c.d does not know
        if target and target != name:
            edges.add(target)
    return edges


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", set(known))
            for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 40 and graph["daemon.app"], "the graph was not read"
    assert cycles(graph) == []


def test_the_check_sees_deferred_and_type_only_imports() -> None:
    graph = {
        "a": {"b"},
        "b": {"c"},
        "c": {"a"},
        "d": {"a"},
    }
    assert cycles(graph) == [["a", "b", "c"]]
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from daemon.app import App\n"
              "def f():\n    from daemon.engine import ingest\n    import daemon.mail.imap.cursor\n")
    known = {"daemon.app", "daemon.engine", "daemon.engine.ingest", "daemon.mail.imap", "daemon.mail.imap.cursor"}
    assert imported(ast.parse(source), "daemon.x", False, known) == {
        "daemon.app", "daemon.engine.ingest", "daemon.mail.imap.cursor"}
