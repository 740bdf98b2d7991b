"""Measure the import graph of `portal` and `provisioning`: cycles, imports across the two
packages, imports inside functions, and imports of Django from `provisioning`.

Run from the repository root: `python scripts/import_graph.py` (add `--list` for every import
counted). It reads the source with `ast` and imports nothing, so it runs without Django set up.
Imports under `if TYPE_CHECKING:` are not counted as dependencies.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

PACKAGES = ("portal", "provisioning")
ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def resolve(target: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `target` names (a module, or a name inside one)."""
    while target:
        if target in known:
            return target
        target = target.rpartition(".")[0]
    return None


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(module: str, path: Path, known: dict[str, Path]):
    """(imported module or top-level name, inside a function?) for each import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, in_function
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                # One statement counts once per module it reaches.
                targets = {
                    full if resolve(full, known) == full else base
                    for full in (f"{base}.{alias.name}" for alias in child.names)
                }
                for target in sorted(targets):
                    yield target, in_function
            yield from visit(child, inner)

    yield from visit(tree, False)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other (size > 1)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []
    counter = [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups


def main(argv: list[str]) -> int:
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    counts: Counter[str] = Counter()
    listed = []
    for name, path in known.items():
        top = name.split(".")[0]
        for target, in_function in imports(name, path, known):
            target_top = target.split(".")[0]
            if top == "provisioning" and target_top == "django":
                counts["provisioning -> django"] += 1
                listed.append(f"{name} -> {target} (django)")
            resolved = resolve(target, known)
            if resolved is None or resolved == name:
                continue
            graph[name].add(resolved)
            if in_function:
                counts["imports inside functions (within the two packages)"] += 1
                listed.append(f"{name} -> {resolved} (inside a function)")
            if resolved.split(".")[0] != top:
                counts[f"{top} -> {resolved.split('.')[0]}"] += 1
                listed.append(f"{name} -> {resolved} (across)")
    cycles = strongly_connected(graph)
    print(f"modules: {len(known)}")
    print(f"import cycles: {len(cycles)} ({sum(map(len, cycles))} modules in them)")
    for group in cycles:
        packages = sorted({m.split(".")[0] for m in group})
        print(f"  cycle of {len(group)} across {', '.join(packages)}: {' '.join(group)}")
    for key in (
        "portal -> provisioning",
        "provisioning -> portal",
        "provisioning -> django",
        "imports inside functions (within the two packages)",
    ):
        print(f"{key}: {counts[key]}")
    if "--list" in argv:
        print("\n".join(sorted(listed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
