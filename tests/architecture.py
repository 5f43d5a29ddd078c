"""The package's rooms and the imports between them, read from the source (AST: every import statement, at module
level or inside a function, and `__import__`/`importlib.import_module` of a literal name; not the imports under
`if TYPE_CHECKING:`, which only annotations see).

Rooms, lowest first; a room may import only the rooms listed for it (and itself):

    base        conformance, conformance.errors, conformance.metrics, conformance.precisions, conformance.subjects
                (the registry module)
    store       base
    capture     store, base
    compare     store, base
    report      compare, store, base
    ports       compare, store, base
    cli         every generic room (conformance.cli.*, conformance.pytest_plugin, conformance.project)
    kit         capture, compare, store, base (conformance.subjects.torch_model: what any torch model's subject is
                built from, a user's own included; it knows no model)
    subject     every room but cli (conformance.subjects.<name>.*; never another subject's package)

So no generic room imports a subject package: they reach subjects only through the registry, which loads them
by name (a built-in table and entry points), never by an import statement.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "store": {"base"},
    "capture": {"store", "base"},
    "compare": {"store", "base"},
    "report": {"compare", "store", "base"},
    "ports": {"compare", "store", "base"},
    "cli": {"report", "ports", "compare", "capture", "store", "base"},
    "kit": {"compare", "capture", "store", "base"},
    "subject": {"kit", "report", "ports", "compare", "capture", "store", "base"},
}
BASE = {"conformance", "conformance.errors", "conformance.metrics", "conformance.precisions", "conformance.subjects"}
CLI = {"conformance.cli", "conformance.pytest_plugin", "conformance.project"}
KIT = {"conformance.subjects.torch_model"}
# modules that load others by a computed name: the registry (subjects by name) and capture's lazy attributes
DYNAMIC_LOADERS = {"conformance.subjects", "conformance.capture"}


def room(module: str) -> str:
    if module in BASE:
        return "base"
    if module in KIT:
        return "kit"
    parts = module.split(".")
    if module in CLI or ".".join(parts[:2]) in CLI:
        return "cli"
    if parts[1] == "subjects":
        return "subject"
    return parts[1]


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (the deepest module of the package that the statement names)
    line: int
    local: bool  # inside a function


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """{module name: (file, is a package)} of the `conformance` package under `root`."""
    found = {}
    for path in sorted((root / "conformance").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, package)
    return found


def _resolve(name: str, known: dict[str, tuple[Path, bool]]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(root: Path) -> list[Import]:
    """Every import of a `conformance` module by a `conformance` module."""
    known = modules(root)
    out = []
    for module, (path, package) in known.items():
        tree = ast.parse(path.read_text(), str(path))
        local: set[int] = set()
        typing_only: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                local.update(id(inner) for inner in ast.walk(node) if inner is not node)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                typing_only.update(id(inner) for statement in node.body for inner in ast.walk(statement))
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if package else module.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                names = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in known else prefix
                         for alias in node.names]  # fmt: skip
            elif isinstance(node, ast.Call) and _dynamic_import(node):
                argument = node.args[0] if node.args else None
                if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                    names = [argument.value]
                elif module not in DYNAMIC_LOADERS:
                    names = ["<computed>"]
            for name in names:
                if name == "<computed>":
                    out.append(Import(module, name, node.lineno, id(node) in local))
                    continue
                target = _resolve(name, known) if name.startswith("conformance") else None
                if target is not None and target != module:
                    out.append(Import(module, target, node.lineno, id(node) in local))
    return out


def _dynamic_import(node: ast.Call) -> bool:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id == "__import__"
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def violations(root: Path) -> list[str]:
    """Imports from a room to one it may not import (a lower room importing a higher one, a generic room
    importing a subject, a subject importing another subject's package or the CLI), and computed imports."""
    out = []
    for found in imports(root):
        where = f"{found.source} line {found.line}{' (inside a function)' if found.local else ''}"
        if found.target == "<computed>":
            out.append(f"{where}: imports a module by a computed name (the import graph cannot see it)")
            continue
        source, target = room(found.source), room(found.target)
        if source == target == "subject":
            if found.source.split(".")[2] != found.target.split(".")[2]:
                out.append(f"{where}: the subject package imports another subject's ({found.target})")
            continue
        if source != target and target not in ALLOWED[source]:
            out.append(f"{where}: {source} imports {target} ({found.target})")
    return out


def room_cycles(root: Path) -> list[list[str]]:
    """Cycles in the graph of rooms (an edge for every import between two rooms), each as its rooms in order."""
    graph: dict[str, set[str]] = defaultdict(set)
    for found in imports(root):
        if found.target == "<computed>":
            continue
        source, target = room(found.source), room(found.target)
        if source != target:
            graph[source].add(target)
    cycles: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                cycles.append([*path, start])
            elif nxt not in path and nxt > start:
                walk(start, nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return cycles


def module_cycles(root: Path) -> list[list[str]]:
    """Strongly connected sets of modules (imports anywhere, function-local ones included) that span rooms."""
    graph: dict[str, set[str]] = defaultdict(set)
    for found in imports(root):
        if found.target != "<computed>":
            graph[found.source].add(found.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                strong(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            components.append(sorted(component))

    for node in list(graph):
        if node not in index:
            strong(node)
    return [c for c in components if len(c) > 1 and len({room(m) for m in c}) > 1]
