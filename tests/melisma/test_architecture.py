"""The engine's shape, checked: imports flow one way (no cycles, no private names across modules)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "firmware" / "melisma"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[tuple[str, str]]]:
    """Module -> {(imported module, imported name)}, local (in-function) imports included."""
    found: dict[str, set[tuple[str, str]]] = {m: set() for m in mods}
    for m, f in mods.items():
        package = m if f.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    if f"{target}.{alias.name}" in mods:
                        found[m].add((f"{target}.{alias.name}", ""))
                    elif target in mods:
                        found[m].add((target, alias.name))
            elif isinstance(node, ast.Import):
                found[m].update((a.name, "") for a in node.names if a.name in mods)
    return found


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return cycles


def test_the_package_import_graph_has_no_cycle():
    mods = _modules()
    edges = {m: {t for t, _ in targets if t != m and mods[t].name != "__init__.py"}
             for m, targets in _imports(mods).items()}
    assert _cycles(edges) == []


def test_no_module_imports_another_modules_private_names():
    offenders = sorted(f"{m} imports {t}.{name}" for m, targets in _imports(_modules()).items()
                       for t, name in targets if name.startswith("_") and not name.startswith("__"))
    assert offenders == []


def test_a_cycle_is_found_when_there_is_one():
    # the checker itself: a two-module loop and a three-module loop are both reported
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
