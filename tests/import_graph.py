"""The import graph of a package, read from its source (parsed, never imported).

Every import statement counts: module-level, function-level and ``TYPE_CHECKING`` ones. Used by
``tests/test_layering.py``; ``python -m tests.import_graph rims`` prints a package's module and
edge counts (with and without a subpackage, ``--without rims.jax``) and any cycle.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    """``agents/experiment/run.py`` -> ``agents.experiment.run``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(source: str, module: str, is_package: bool = False, package: str = "agents") -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import of a ``package`` module by ``source``, relative
    ones resolved.

    ``from P import name`` counts as ``P.name`` where that is a module (``from agents.experiment
    import checkpoint``), else as ``P``.
    """
    parent = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parent.split(".")[: len(parent.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.append((node.lineno, child if _is_module(child) else target))
    return [(line, name) for line, name in found if name == package or name.startswith(package + ".")]


def graph(package: str, without: str | None = None) -> dict[str, set[str]]:
    """Every module of ``package`` (a folder under the repository root) -> the package modules it
    imports (itself excluded); ``without``: leave out that subpackage and its edges."""
    paths = sorted((ROOT / package.replace(".", "/")).rglob("*.py"))
    edges: dict[str, set[str]] = {}
    for path in paths:
        name = module_name(path)
        found = imports(path.read_text(), name, path.name == "__init__.py", package)
        edges[name] = {target for _, target in found if target != name}
    if without is not None:
        dropped = {n for n in edges if n == without or n.startswith(without + ".")}
        edges = {n: targets - dropped for n, targets in edges.items() if n not in dropped}
    return edges


def tangles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself),
    each sorted: the sets of modules that import each other round a cycle; empty when none."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(components)


def cycles(edges: dict[str, set[str]]) -> list[str]:
    """Each tangle (:func:`tangles`) in words: its modules and one closed path through them."""
    return [f"{len(c)} modules {c}, e.g. {' -> '.join(_closed_path(c, edges))}" for c in tangles(edges)]


def _closed_path(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A cycle through the component's first module, found by breadth-first search inside it."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        step = []
        for node in frontier:
            for target in sorted(edges[node] & members):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if target not in previous:
                    previous[target] = node
                    step.append(target)
        frontier = step
    return component  # unreachable for a strongly connected component


def describe(package: str, without: str | None = None) -> str:
    """One line: modules, import edges and cycles of ``package`` (``without`` a subpackage)."""
    edges = graph(package, without)
    found = cycles(edges)
    label = package if without is None else f"{package} without {without}"
    loops = "; ".join(found) or "none"
    return f"{label}: {len(edges)} modules, {sum(map(len, edges.values()))} import edges, cycles: {loops}"


def main() -> None:
    """Print :func:`describe` for a package, with and without a subpackage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("--without", default=None, help="a subpackage to leave out as well, e.g. rims.jax")
    args = parser.parse_args()
    print(describe(args.package))
    if args.without:
        print(describe(args.package, args.without))


if __name__ == "__main__":
    main()
