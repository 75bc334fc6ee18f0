"""Imports inside ``agents/`` point one way: cli -> analysis -> experiment -> algorithms; inside
``rims/`` they form no cycle and the mechanisms never import the fast paths.

The algorithms (``agents/*.py``: ppo, a2c, policies, buffers, cores, extractors, fast_slow) import
no run machinery; ``agents/experiment/`` (a training run) imports the algorithms only;
``agents/analysis/`` (compare, modularity, visualize, reproduce) imports experiment and the
algorithms; ``agents/cli/`` may import anything. Every module is parsed, not imported, and every
import statement counts (function-level and ``TYPE_CHECKING`` ones too). ``envs/`` imports no
``agents`` module at all (docs/design.md: dependencies point one way). ``rims/`` (``rims.jax``
included) has no import cycle, not even through a type-only import; ``rims/mechanisms/`` (what a
step computes) imports nothing of ``rims/fast_paths/`` (how the plain RIM computes it quickly); the
options contract ``rims/options.py`` imports no other ``rims`` module but its checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.import_graph import ROOT, cycles, graph, imports, module_name

LAYERS = ("algorithms", "experiment", "analysis", "cli")  # a layer imports itself and those before it


def layer(module: str) -> int:
    """Index in :data:`LAYERS` of an ``agents`` module: its subpackage, or ``algorithms`` for the top level."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else 0


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


WINGS = ("rims.mechanisms", "rims.fast_paths")  # (what a step computes, how it is computed quickly)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def crossing_the_wings(edges: dict[str, set[str]]) -> list[str]:
    """The imports of a mechanism module (``rims.mechanisms.*``) from the fast paths (``rims.fast_paths.*``)."""
    mechanisms, fast = WINGS
    return [
        f"{source} imports {target} (a mechanism must not depend on the fast paths)"
        for source, targets in sorted(edges.items())
        if _within(source, mechanisms)
        for target in sorted(targets)
        if _within(target, fast)
    ]


def test_rims_has_both_wings_and_the_top_level_layer() -> None:
    names = set(graph("rims"))
    assert {"rims.cell", "rims.rnn", "rims.options", "rims.jax.core", *WINGS} <= names
    assert {"rims.mechanisms.stepwise", "rims.mechanisms.dynamics", "rims.fast_paths.dispatch"} <= names


def test_rims_has_no_import_cycle() -> None:
    """Type-only and function-level imports count: a cycle through them is still a cycle."""
    assert cycles(graph("rims")) == []


def test_rims_mechanisms_never_import_the_fast_paths() -> None:
    assert crossing_the_wings(graph("rims")) == []


def test_the_options_contract_imports_only_its_checks() -> None:
    assert graph("rims")["rims.options"] <= {"rims._checks"}


def test_the_rims_checks_catch_a_cycle_and_a_crossing() -> None:
    typed_only = {
        "rims.cell": {"rims.mechanisms.stepwise"},
        "rims.mechanisms.stepwise": {"rims.cell"},  # e.g. under TYPE_CHECKING
        "rims.options": set(),
    }
    assert cycles(typed_only) == [
        "2 modules ['rims.cell', 'rims.mechanisms.stepwise'], e.g. rims.cell -> rims.mechanisms.stepwise -> rims.cell"
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        "3 modules ['a', 'b', 'c'], e.g. a -> b -> c -> a"
    ]
    crossing = {"rims.mechanisms.weights": {"rims.fast_paths.scratch", "rims.options"}}
    assert crossing_the_wings(crossing) == [
        "rims.mechanisms.weights imports rims.fast_paths.scratch (a mechanism must not depend on the fast paths)"
    ]
    edges = graph("rims")
    assert "rims.mechanisms.layer" in edges["rims.mechanisms.stepwise"]  # real edges are read
    typed = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rims.cell import RIMCell\n"
    assert imports(typed, "rims.mechanisms.weights", package="rims") == [(3, "rims.cell")]
    assert imports("from . import scratch", "rims.fast_paths", is_package=True, package="rims") == [
        (1, "rims.fast_paths.scratch")
    ]
