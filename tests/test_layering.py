"""Imports inside ``agents/`` point one way: cli -> analysis -> experiment -> algorithms.

The algorithms (``agents/*.py``: ppo, a2c, policies, buffers, cores, extractors, fast_slow) import
no run machinery; ``agents/experiment/`` (a training run) imports the algorithms only;
``agents/analysis/`` (compare, modularity, visualize, reproduce) imports experiment and the
algorithms; ``agents/cli/`` may import anything. Every module is parsed, not imported, and every
import statement counts (function-level and ``TYPE_CHECKING`` ones too). ``envs/`` imports no
``agents`` module at all (docs/design.md: dependencies point one way).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("algorithms", "experiment", "analysis", "cli")  # a layer imports itself and those before it


def module_name(path: Path) -> str:
    """``agents/experiment/run.py`` -> ``agents.experiment.run``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """Index in :data:`LAYERS` of an ``agents`` module: its subpackage, or ``algorithms`` for the top level."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else 0


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every ``agents`` import of ``source``, relative ones resolved.

    ``from P import name`` counts as ``P.name`` where that is a module (``from agents.experiment
    import checkpoint``), else as ``P``.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.append((node.lineno, child if _is_module(child) else target))
    return [(line, name) for line, name in found if name == "agents" or name.startswith("agents.")]


def wrong_way(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of ``source`` (the text of ``module``) that point up the layers."""
    own = layer(module)
    return [
        f"{module}:{line} imports {name} ({LAYERS[layer(name)]} above {LAYERS[own]})"
        for line, name in imports(source, module, is_package)
        if layer(name) > own
    ]


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_every_layer_is_there() -> None:
    names = [module_name(p) for p in _modules("agents")]
    assert {LAYERS[layer(n)] for n in names} == set(LAYERS)
    assert {"agents.ppo", "agents.a2c", "agents.experiment.run", "agents.analysis.compare"} <= set(names)


@pytest.mark.parametrize("path", _modules("agents"), ids=lambda p: module_name(p))
def test_agents_imports_point_down_the_layers(path: Path) -> None:
    assert wrong_way(path.read_text(), module_name(path), path.name == "__init__.py") == []


def test_the_check_catches_a_wrong_way_import() -> None:
    assert wrong_way("from agents.experiment.atomic import atomic_path", "agents.policies") != []
    assert wrong_way("def f():\n    import agents.analysis.compare\n", "agents.experiment.run") != []
    assert wrong_way("from agents import experiment", "agents.ppo") != []
    assert wrong_way("from ..analysis import modularity", "agents.experiment.run") != []
    assert wrong_way("from . import compare", "agents.analysis", is_package=True) == []
    assert wrong_way("from agents.experiment import checkpoint", "agents.analysis.modularity") == []
    assert wrong_way("from agents.ppo import RecurrentPPO", "agents.experiment.run") == []


@pytest.mark.parametrize("path", _modules("envs"), ids=lambda p: module_name(p))
def test_envs_imports_no_agents_module(path: Path) -> None:
    assert imports(path.read_text(), module_name(path), path.name == "__init__.py") == []
