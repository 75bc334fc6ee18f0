"""A run's typed config: built once, passed down, written as config.yaml; ``objective``: the value a sweep optimises."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from agents.cli.train import objective_value
from agents.experiment import resume, run
from agents.experiment.config import ConfigError, TrainConfig, config_yaml, typed_config
from agents.experiment.config.run import objective_condition
from agents.experiment.config.schema import schema_node
from tests.test_sweeps import ROOT, SCRIPT
from tests.test_sweeps import TINY as SWEEP_TINY

TINY = [*(o for o in SWEEP_TINY if not o.startswith("eval.conditions=")), "logger=none"]  # every condition evaluated


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def test_a_run_builds_its_typed_config_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[Any] = []

    def counting(cfg: Any) -> TrainConfig:
        if not isinstance(cfg, TrainConfig):
            builds.append(cfg)
        return typed_config(cfg)

    for module in (run, resume):
        monkeypatch.setattr(module, "typed_config", counting)
    cfg = _compose([*TINY, "eval.conditions=[iid]", "model=lstm"])
    run.train(cfg, tmp_path / "run")
    assert len(builds) == 1  # train() types the composed config; validate, build_model, ... take it as it is
    builds.clear()
    typed = typed_config(cfg)
    run.train(typed, tmp_path / "again")  # an entry point (rims-train) passes the typed config: no second build
    assert builds == []
    # config.yaml is the composed config with every default filled in, as before the typed object was passed down
    written = (tmp_path / "run" / "config.yaml").read_text()
    assert written == config_yaml(typed)
    assert OmegaConf.load(tmp_path / "run" / "config.yaml").objective is None


@pytest.mark.parametrize("overrides", [[], ["model=rim_sw"], ["model=meta_rim"], ["agent=a2c_meta"], ["env=multiroom"],
                                       ["model=lstm", "logger=none", "eval.conditions=[iid]"]])  # fmt: skip
def test_config_yaml_is_what_the_merged_config_wrote(overrides: list[str]) -> None:
    """The typed object passed down writes the bytes the merged DictConfig wrote before it (run folders unchanged)."""
    cfg = _compose(overrides)
    plain = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    if plain["agent"].get("fast_slow", "???") == "???":
        plain["agent"]["fast_slow"] = None
    merged = OmegaConf.merge(schema_node(plain), plain)
    assert config_yaml(typed_config(cfg)) == OmegaConf.to_yaml(merged, resolve=True)


def test_objective_names_an_evaluated_condition() -> None:
    assert typed_config(_compose(TINY)).objective is None
    assert typed_config(_compose([*TINY, "objective=iid_background"])).objective == "iid_background"
    assert typed_config(_compose([*TINY, "eval.conditions=[validation]", "objective=validation"])).objective
    with pytest.raises(ConfigError) as error:  # validation is a condition of the split, but not evaluated
        typed_config(_compose([*TINY, "objective=validation"]))
    assert str(error.value) == (
        "objective must be null or a condition the run evaluates (the split's test conditions: ['iid', 'empty_6x6', "
        "'empty_8x8', 'empty_16x16', 'empty_random_6x6', 'iid_background', 'iid_distractors']), got 'validation'; "
        "add it to eval.conditions to evaluate it"
    )
    with pytest.raises(ConfigError, match=r"\(eval.conditions: \['validation'\]\), got 'iid'; add it to eval"):
        typed_config(_compose([*TINY, "eval.conditions=[validation]", "objective=iid"]))
    with pytest.raises(ConfigError, match=r"got 'test'$"):
        typed_config(_compose([*TINY, "objective=test"]))


def test_objective_value_defaults_to_iid_else_the_first_evaluated() -> None:
    metrics = {"iid": 0.5, "empty_16x16": 0.25}
    assert objective_value(metrics, typed_config(_compose(TINY))) == 0.5
    assert (
        objective_value({"validation": 0.75}, typed_config(_compose([*TINY, "eval.conditions=[validation]"]))) == 0.75
    )
    assert objective_value(metrics, typed_config(_compose([*TINY, "objective=empty_16x16"]))) == 0.25
    assert objective_condition(None, ["empty_16x16", "validation"]) == "empty_16x16"
    with pytest.raises(ValueError, match=r"evaluated conditions \['iid'\], got 'validation'"):
        objective_condition("validation", ["iid"])


@pytest.mark.parametrize(
    ("overrides", "condition"),
    [(["eval.conditions=[validation]"], "validation"), (["eval.conditions=[empty_16x16,validation]",
      "objective=validation"], "validation")],
)  # fmt: skip
def test_a_run_without_iid_exits_0(overrides: list[str], condition: str, tmp_path: Path) -> None:
    """Issue 27: a run that does not evaluate iid trained, wrote every file, then exited 1 (KeyError: 'iid')."""
    folder = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            *TINY,
            "model=lstm",
            *overrides,
            f"hydra.run.dir={folder}",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((folder / "metrics.json").read_text())
    typed = typed_config(OmegaConf.load(folder / "config.yaml"))
    assert objective_value(metrics, typed) == metrics[condition]


def test_an_objective_the_run_does_not_evaluate_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "eval.conditions=[validation]", "objective=iid",
         f"hydra.run.dir={tmp_path / 'bad'}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "invalid config: objective must be null or a condition the run evaluates" in result.stderr
    assert not (tmp_path / "bad").exists()


def test_learn_check_takes_its_hyperparameters_from_the_config_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/learn_check.py has no hyperparameters of its own: presets of configs/ plus each check's overrides."""
    spec = importlib.util.spec_from_file_location("learn_check", ROOT / "scripts" / "learn_check.py")
    learn_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "learn_check", learn_check)  # its dataclass looks its module up
    spec.loader.exec_module(learn_check)
    ppo = learn_check.check_config(learn_check.CHECKS["ppo-rim-residual"], seed=2)
    preset = typed_config(_compose(["agent=ppo", "model=rim", "seed=2", "logger=none"]))
    assert ppo.agent == dataclasses.replace(preset.agent, learning_rate=7e-4)  # the one override of PPO's checks
    assert ppo.model == dataclasses.replace(preset.model, communication_update="residual")
    a2c = learn_check.check_config(learn_check.CHECKS["a2c-lstm"], seed=0)
    plain = typed_config(_compose(["agent=a2c", "model=lstm"]))
    assert (a2c.agent, a2c.model) == (plain.agent, plain.model)
