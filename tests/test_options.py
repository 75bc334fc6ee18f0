"""The options contract (``rims/options.py``) is the one list of the RIM family's options.

Every other list of options is derived from it or checked here against it: the signatures of
``RIMLSTM``/``RIMGRU``, what ``RIMCell`` accepts, the JAX config and Flax modules, the agents'
typed model config and its key filter, the step path's selection rules and the fast paths'
declaration of what they implement. A new selection rule, added here in a test, runs on the step
path and is refused by name on the fast paths.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
import torch

from rims import RIMGRU, RIMLSTM, RIMCell, options
from rims.fast_paths import dispatch as fast_paths
from rims.fast_paths import native as rims_native
from rims.mechanisms import input_attention
from rims.options import DEFAULTS, OPTION_NAMES, STACK_OPTIONS, RIMOptions

NON_DEFAULT: dict[str, Any] = {
    "dynamics": "gru",
    "num_input_heads": 2,
    "input_key_size": 8,
    "input_value_size": 6,
    "num_comm_heads": 2,
    "comm_key_size": 4,
    "comm_value_size": 5,
    "attention_dropout": 0.2,
    "communication_update": "residual",
    "selection": "input_score",
    "communication": "workspace",
    "num_slots": 3,
    "slot_size": 7,
    "write_k": 1,
    "num_schemata": 2,
    "schema_key_size": 9,
    "selection_noise": 0.5,
    "selection_noise_learned": True,
    "selection_noise_anneal": 10,
    "balance_rate": 0.01,
    "balance_loss": 0.01,
    "initial_state": "learned",
    "initial_state_std": 0.5,
}  # a valid value other than the default for every option


def test_the_table_of_non_defaults_covers_the_contract() -> None:
    assert set(NON_DEFAULT) == set(OPTION_NAMES)
    assert all(getattr(DEFAULTS, name) != value for name, value in NON_DEFAULT.items())
    RIMOptions(**NON_DEFAULT).check_sizes(12, 4, 2)


@pytest.mark.parametrize("cls", [RIMLSTM, RIMGRU])
def test_rnn_signature_is_the_contract(cls: type) -> None:
    params = inspect.signature(cls).parameters
    keyword_only = [name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    options = [name for name in OPTION_NAMES if name != "dynamics"]
    assert sorted(keyword_only) == sorted([*options, "top_down", "device", "dtype"])  # keyword-only: any order
    assert {name: params[name].default for name in options} == {name: getattr(DEFAULTS, name) for name in options}
    assert params["top_down"].default is STACK_OPTIONS["top_down"]
    assert params["num_layers"].default == STACK_OPTIONS["num_layers"]


@pytest.mark.parametrize("name", [n for n in OPTION_NAMES if n != "dynamics"])
def test_rnn_passes_every_option_to_its_layers(name: str) -> None:
    module = RIMLSTM(5, 12, 4, 2, num_layers=2, **{name: NON_DEFAULT[name]})
    assert getattr(module.options, name) == NON_DEFAULT[name]
    for layer in module.layers:
        assert layer.options is module.options and getattr(layer, name) == NON_DEFAULT[name]


def test_cell_takes_the_contract_and_options_by_name() -> None:
    given = RIMOptions(**NON_DEFAULT)
    cell = RIMCell(5, 12, 4, 2, options=given)
    assert cell.options == given and all(getattr(cell, n) == v for n, v in NON_DEFAULT.items())
    assert RIMCell(5, 12, 4, 2, options=given, num_slots=5).num_slots == 5
    assert RIMCell(5, 12, 4, 3).write_k == 1  # write_k=None: max(1, k // 2)
    with pytest.raises(TypeError, match=r"unknown RIM option\(s\) \['num_unit'\]"):
        RIMCell(5, 12, 4, 2, num_unit=3)
    with pytest.raises(ValueError, match=r"write_k must be in \[1, k\] = \[1, 2\].*got write_k=3"):
        RIMCell(5, 12, 4, 2, write_k=3)


def test_step_path_and_fast_paths_declare_every_rule() -> None:
    assert tuple(input_attention.RANKS) == options.SELECTION_RULES
    assert set(fast_paths.SUPPORTED) <= set(OPTION_NAMES)
    assert fast_paths.unsupported(DEFAULTS) is None
    for name, values in fast_paths.SUPPORTED.items():
        if values is not fast_paths.ANY and name not in fast_paths.STRUCTURE and options.option_kind(name) == "choice":
            assert set(values) == set(options.allowed_values(name)), name


def test_agents_model_config_is_derived_from_the_contract() -> None:
    from agents.cores import DEFAULT_HIDDEN_SIZE, RIM_DEFAULTS
    from agents.experiment.config import RIMModelConfig
    from agents.experiment.config import model as model_config

    fields = {f.name: f.default for f in dataclasses.fields(RIMModelConfig)}
    stack = list(STACK_OPTIONS)
    layer = [n for n in OPTION_NAMES if n != "dynamics"]
    cut = layer.index("selection") + 1
    assert list(fields) == ["core", "name", "hidden_size", "num_units", "k", *layer[:cut], *stack, *layer[cut:]]
    assert tuple(fields)[3:] == model_config.RIM_KEYS
    assert fields["hidden_size"] == DEFAULT_HIDDEN_SIZE
    for name in model_config.RIM_KEYS:
        if name in model_config._NULL_IS_LAYER_DEFAULT:
            assert fields[name] is None, name
        elif name in RIM_DEFAULTS:
            assert fields[name] == RIM_DEFAULTS[name], name
        else:
            assert fields[name] == getattr(DEFAULTS, name), name
    assert set(RIM_DEFAULTS) <= {"num_units", "k", *OPTION_NAMES}


def test_jax_config_and_modules_are_derived_from_the_contract() -> None:
    pytest.importorskip("flax")
    from rims.jax import modules
    from rims.jax.config import JAX_OPTIONS, RIMConfig

    assert set(JAX_OPTIONS) <= set(OPTION_NAMES)
    sizes = ["input_size", "hidden_size", "num_units", "k", "bias"]
    config = {f.name: f.default for f in dataclasses.fields(RIMConfig)}
    assert list(config) == [*sizes, *JAX_OPTIONS]
    assert all(config[n] == getattr(DEFAULTS, n) for n in JAX_OPTIONS)
    contract = {f.name: f.type for f in dataclasses.fields(RIMOptions)}
    layer_fields = ["num_layers", "bias", "batch_first", "dropout"]
    for cls, before, names in (
        (RIMConfig, sizes, JAX_OPTIONS),
        (modules.RIMCell, sizes, JAX_OPTIONS),
        (modules.RIMLSTM, [*sizes[:4], *layer_fields], JAX_OPTIONS[1:]),  # dynamics: fixed per class
        (modules.RIMGRU, [*sizes[:4], *layer_fields], JAX_OPTIONS[1:]),
    ):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert list(fields)[: len(before) + len(names)] == [*before, *names], cls
        assert all(fields[n].default == getattr(DEFAULTS, n) for n in names), cls
        assert all(fields[n].type == contract[n] for n in names), cls  # the contract's types
        assert not {n for n in OPTION_NAMES if n not in JAX_OPTIONS} & set(fields), cls


def _rank_least_input(
    score_in: torch.Tensor,
    score_top: torch.Tensor | None,
    probs: torch.Tensor,
    query: torch.Tensor,
    null_key: torch.Tensor | None,
) -> torch.Tensor:
    """A new rule for the test: the ``k`` units with the *most* attention on null are active."""
    return -score_in.mean(-1, keepdim=True)


def test_a_new_selection_rule_runs_step_by_step_and_the_fast_paths_refuse_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # the step path: the rule's name in the contract, its ranking beside the others (2 modules)
    monkeypatch.setattr(options, "SELECTION_RULES", (*options.SELECTION_RULES, "least_input"))
    monkeypatch.setitem(input_attention.RANKS, "least_input", _rank_least_input)
    torch.manual_seed(0)
    cell = RIMCell(5, 12, 4, 2, selection="least_input", attention_dropout=0.0)
    reference = RIMCell(5, 12, 4, 2, attention_dropout=0.0)
    reference.load_state_dict(cell.state_dict())
    x, state = torch.randn(3, 6, 5), (torch.zeros(6, 12), torch.zeros(6, 12))
    cell._fast_paths = reference._fast_paths = False
    _, _, info = cell.sequence(x, state, record=True)
    _, _, ref_info = reference.sequence(x, state, record=True)
    assert info is not None and ref_info is not None
    # first step (same state): with k = U/2 exactly the units that null_attention leaves out
    assert torch.equal(info.active[:, 0], ~ref_info.active[:, 0])

    # the fast paths do not implement it: refused by name, training and acting alike
    cell._fast_paths = True
    with pytest.raises(NotImplementedError, match=r"do not implement selection='least_input'"):
        cell.sequence(x, state)
    with torch.no_grad(), pytest.raises(NotImplementedError, match=r"selection='least_input'"):
        cell(x[0], state)
    with pytest.raises(
        ValueError, match=r"selection must be one of \['null_attention', 'input_score', 'least_input'\]"
    ):
        RIMCell(5, 12, 4, 2, selection="most_input")


def test_jax_refuses_a_rule_it_does_not_implement(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("flax")
    from rims.jax.config import RIMConfig

    monkeypatch.setattr(options, "SELECTION_RULES", (*options.SELECTION_RULES, "least_input"))
    with pytest.raises(NotImplementedError, match=r"rims.jax does not implement selection='least_input'"):
        RIMConfig(5, 12, 4, 2, selection="least_input")


def test_the_layer_says_which_path_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = RIMCell(5, 12, 4, 2, attention_dropout=0.0)
    x = torch.randn(3, 2, 5)
    native = fast_paths.FUSED_NATIVE if rims_native.loops_for(x) is not None else fast_paths.FUSED_PYTHON
    assert cell.path(x) == native
    assert cell.path(x, record=True) == fast_paths.STEPWISE
    with torch.no_grad():
        assert cell.path(x) == fast_paths.STEPWISE  # acting runs one step at a time in C++
        expected = fast_paths.NATIVE_STEP if native == fast_paths.FUSED_NATIVE else fast_paths.STEPWISE
        assert cell.path(x[:1]) == expected
    monkeypatch.setenv("RIMS_NATIVE", "0")
    assert cell.path(x) == fast_paths.FUSED_PYTHON
    assert RIMCell(5, 12, 4, 2, num_schemata=2).path(x) == fast_paths.STEPWISE


def test_a_layer_pickled_before_the_contract_loads_with_its_options() -> None:
    cell = RIMCell(5, 12, 4, 2, selection="input_score", attention_dropout=0.0)
    state = {k: v for k, v in cell.__dict__.items() if k not in ("options", "_unsupported", "communication", "spec")}
    old = RIMCell.__new__(RIMCell)
    old.__setstate__(state)  # as unpickling a layer saved by a version without these attributes
    # communication predates it: its default; write_k: the resolved value the layer stored
    assert old.options == cell.options.replace(write_k=cell.write_k) and old.write_k == cell.write_k
    x = torch.randn(2, 3, 5)
    assert torch.equal(old.sequence(x, (torch.zeros(3, 12),) * 2)[0], cell.sequence(x, (torch.zeros(3, 12),) * 2)[0])
