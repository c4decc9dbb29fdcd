"""The shape of the package, as docs/architecture.md draws it: no import cycles, counting
every import (at module level, inside functions, under ``TYPE_CHECKING``), and no turn
step that writes the kernel's state."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"core": "dlg", "plugins": "dlg.plugins"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The dlg modules ``name`` imports, wherever in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_counting_every_import():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_no_turn_step_writes_the_kernels_state():
    """Only the kernel writes whether a dialogue stopped or failed: a step answers with an
    outcome (dlg.running.outcomes)."""
    writes = []
    for path in (ROOT / "core" / "running").rglob("*.py"):
        if path.name == "kernel.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Attribute) and target.attr in (
                            "stopped", "failed", "stopped_at") and not (
                            isinstance(target.value, ast.Name) and target.value.id == "self"):
                        writes.append(f"{path.name}:{node.lineno}")
    assert writes == []


def test_built_in_plugins_import_only_the_published_namespace():
    """The built-ins are written like third-party plugins: of dlg they import only
    ``dlg.plugin`` (and each other), wherever the import is."""
    modules = _modules()
    reaching = {}
    for name, path in modules.items():
        if name.startswith("dlg.plugins"):
            outside = sorted(m for m in _imports(name, path, modules)
                             if m != "dlg.plugin" and not m.startswith("dlg.plugins"))
            if outside:
                reaching[name] = outside
    assert reaching == {}


def test_the_published_namespace_has_what_it_lists():
    import dlg.plugin

    assert sorted(dlg.plugin.__all__) == sorted(dlg.plugin._WHERE)
    for name in dlg.plugin.__all__:
        assert getattr(dlg.plugin, name) is not None, name
