"""The modularity tables (issue 26 item 5): remedy presets, the choice rules, the bar and the protocol's contrasts.

Fast: no training. The smoke path (``scripts/reproduce.py modularity_tune --smoke``, then ``modularity`` and
``modularity_multiroom``) is what ``tests/test_reproduce.py`` checks for the doorkey table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from agents.analysis.compare import Run, compare_runs
from agents.analysis.compare.seed_tests import holm
from agents.analysis.reproduce.modularity_tables import load_remedy_choice, modularity_extra, modularity_models
from agents.analysis.reproduce.modularity_tune import load_coefficient_choice
from agents.analysis.reproduce.protocol import load_protocol
from agents.analysis.reproduce.remedy_rules import bar_counts, choose_coefficients, choose_remedy, seed_bars, used
from agents.analysis.reproduce.seed_store import SeedStore
from agents.analysis.reproduce.summary import PRIMARY, improvement_rows
from agents.analysis.reproduce.tables import (
    MODULARITY,
    MODULARITY_MULTIROOM,
    MODULARITY_TUNE,
    REMEDY_FAMILIES,
    REMEDY_KEYS,
    REMEDY_MODELS,
    SHARED_SWEEPS,
    Plan,
    ReproduceError,
    family_of,
    learning_rates_for,
    load_preset,
    sweep_overrides,
    table_models,
)
from agents.cli.reproduce import _parser
from agents.experiment.config import typed_config

REPO = Path(__file__).resolve().parent.parent

# ---- the presets


@pytest.mark.parametrize("model", REMEDY_MODELS)
def test_each_remedy_preset_differs_from_rim_in_its_remedy_only_and_validates(model: str) -> None:
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        rim = OmegaConf.to_container(compose(config_name="train", overrides=["model=rim"]).model)
        composed = compose(config_name="train", overrides=[f"model={model}"])
    variant = OmegaConf.to_container(composed.model)
    changed = {k: v for k, v in variant.items() if rim[k] != v and k != "name"}
    family = family_of(model)
    assert variant["name"] == model and REMEDY_KEYS[family] in changed
    assert set(changed) <= {"selection_noise", "balance_rate", "balance_loss", "initial_state", "initial_state_std"}
    typed = typed_config(OmegaConf.to_container(composed, resolve=True))  # the typed schema checks every key
    assert typed.model.name == model


def test_the_families_grids_run_from_the_smaller_coefficient_and_take_rims_rate() -> None:
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        for family, candidates in REMEDY_FAMILIES.items():
            values = [compose(config_name="train", overrides=[f"model={m}"]).model[REMEDY_KEYS[family]]
                      for m in candidates]  # fmt: skip
            assert values == sorted(values), family
    assert learning_rates_for(REMEDY_MODELS, {"rim": 1e-3}, Path("tune.json")) == dict.fromkeys(REMEDY_MODELS, 1e-3)
    args = _parser().parse_args(["modularity", "--models", *REMEDY_MODELS])  # --models accepts every candidate
    assert tuple(args.models) == REMEDY_MODELS
    with pytest.raises(ReproduceError, match="no remedy candidate"):
        family_of("rim_k2")


def test_the_modularity_tables_share_the_doorkey_and_multiroom_settings_exactly() -> None:
    for table, source, seeds in ((MODULARITY, "doorkey", range(5)), (MODULARITY_MULTIROOM, "multiroom", range(10))):
        preset, other = load_preset(table), load_preset(source)
        assert (preset.env, preset.settings, preset.groups) == (other.env, other.settings, other.groups)
        assert preset.param("seed") == list(seeds) and SHARED_SWEEPS[table] == {"lstm": source, "rim": source}
    tune = load_preset(MODULARITY_TUNE)
    assert tune.param("seed") == [1000, 1001] and tune.setting("eval.conditions") == ["validation"]
    assert tune.setting("total_frames") == load_preset("doorkey").setting("total_frames")
    assert table_models(MODULARITY_TUNE) == REMEDY_MODELS
    plan = Plan(tune, REMEDY_MODELS, [1000, 1001], 300000, dict.fromkeys(REMEDY_MODELS, 1e-3))
    by_hand = " ".join(sweep_overrides(plan, "rim_bias_r1e3"))
    assert by_hand.startswith("env=doorkey model=rim_bias_r1e3 agent.learning_rate=0.001 seed=1000,1001")
    assert by_hand.endswith("hydra.sweep.dir=multirun/reproduce/modularity_tune/rim_bias_r1e3")


def test_a_call_that_runs_some_models_still_reports_the_whole_table() -> None:
    plan = Plan(load_preset(MODULARITY), ("rim_noise_s1",), [5, 6], 300000, None, compared=("lstm", "rim"))
    assert plan.reported == ("lstm", "rim", "rim_noise_s1")
    assert plan.sweep_dir("rim") == Path("multirun/reproduce/doorkey/rim")


# ---- stage 1: the coefficient of each family


def _tune_row(model: str, seed: int, ret: float, learns: bool = True, used: bool = True) -> dict[str, Any]:
    return {"model": model, "seed": seed, "validation_return": ret, "learns": learns, "used": used}


def test_the_coefficient_with_more_seeds_that_learn_and_are_used_wins() -> None:
    families = {"noise": ["rim_noise_s1", "rim_noise_s3"]}
    rows = [_tune_row("rim_noise_s1", 1000, 0.96), _tune_row("rim_noise_s1", 1001, 0.96, used=False),
            _tune_row("rim_noise_s3", 1000, 0.90), _tune_row("rim_noise_s3", 1001, 0.91)]  # fmt: skip
    scores, choice = choose_coefficients(rows, families, [1000, 1001])
    assert choice == {"noise": "rim_noise_s3"}  # 2 seeds used and learning against 1, whatever the returns
    assert scores["rim_noise_s1"] == {"score": 1, "worst_return": 0.96, "mean_return": 0.96, "seeds": [1000, 1001]}


def test_coefficient_ties_go_to_the_better_worst_seed_then_to_the_smaller_coefficient() -> None:
    families = {"bias": ["rim_bias_r1e3", "rim_bias_r1e2"]}
    rows = [_tune_row("rim_bias_r1e3", 1000, 0.95, used=False), _tune_row("rim_bias_r1e3", 1001, 0.50),
            _tune_row("rim_bias_r1e2", 1000, 0.90), _tune_row("rim_bias_r1e2", 1001, 0.60, learns=False)]  # fmt: skip
    assert choose_coefficients(rows, families, [1000, 1001])[1] == {"bias": "rim_bias_r1e2"}  # 1 vs 1: 0.60 > 0.50
    equal = [_tune_row(m, s, 0.7, used=False) for m in families["bias"] for s in (1000, 1001)]
    assert choose_coefficients(equal, families, [1000, 1001])[1] == {"bias": "rim_bias_r1e3"}  # grid order


def test_a_family_of_one_candidate_takes_it_and_a_family_short_of_seeds_is_not_chosen() -> None:
    families = {"init_learned": ["rim_init_learned"], "loss": ["rim_loss_a001", "rim_loss_a01"]}
    rows = [_tune_row("rim_init_learned", s, 0.0, learns=False, used=False) for s in (1000, 1001)]
    rows += [_tune_row("rim_loss_a001", s, 0.9) for s in (1000, 1001)] + [_tune_row("rim_loss_a01", 1000, 0.9)]
    assert choose_coefficients(rows, families, [1000, 1001])[1] == {"init_learned": "rim_init_learned"}


def test_used_means_every_unit_in_five_to_ninety_five_percent_and_switching() -> None:
    assert used([0.05, 0.95, 0.5, 0.5], 0.05)
    assert not used([0.04, 0.96, 0.5, 0.5], 0.2) and not used([0.5] * 4, 0.049)
    with pytest.raises(ValueError, match="unit frequencies"):
        used([], 0.1)


# ---- stage 2: the bar, and stage 3: the remedy carried on

CONDITIONS = ["iid", "doorkey_6x6"]
USED, FROZEN = "0.7 0.7 0.8 0.8", "1 1 1 0"


def _selection(model: str, seed: int, condition: str, freqs: str, switch: float, **cells: Any) -> dict[str, Any]:
    return {"model": model, "seed": seed, "condition": condition, "unit_frequency": freqs, "switch_rate": switch,
            "selection_case": "switching" if switch else "fixed", "collapse_reasons": "", **cells}  # fmt: skip


def _seed(
    model: str, seed: int, iid_success: float, tests: str, val: str | None, val_success: float, val_return: float
):
    """``seeds.csv`` and ``selection.csv`` rows of one seed."""
    scores = [{"model": model, "seed": seed, "condition": c, "return": 0.9, "success": iid_success, "core": "rim"}
              for c in CONDITIONS]  # fmt: skip
    selection = [_selection(model, seed, c, tests, 0.1 if tests == USED else 0.0) for c in CONDITIONS]
    if val is not None:
        selection.append(_selection(model, seed, "validation", val, 0.1 if val == USED else 0.0,
                                    mean_success=val_success, mean_return=val_return))  # fmt: skip
    return scores, selection


def _store(*seeds: tuple) -> SeedStore:
    store = SeedStore("doorkey")
    for scores, selection in seeds:
        store.scores += scores
        store.selection += selection
    return store


def test_the_bar_needs_learning_and_use_on_every_condition_and_says_when_unrecorded() -> None:
    store = _store(
        _seed("rim_noise_s3", 0, 0.95, USED, USED, 0.92, 0.9),  # meets both bars
        _seed("rim_noise_s3", 1, 0.85, USED, USED, 0.85, 0.8),  # used but did not learn
        _seed("rim", 0, 1.0, FROZEN, None, 0.0, 0.0),  # learned, frozen, no validation statistics
    )
    store.selection = [r for r in store.selection if (r["model"], r["condition"]) != ("rim_noise_s3", "doorkey_6x6")
                       or r["seed"] == 0]  # fmt: skip
    bars = seed_bars(store.scores, store.selection, ["rim", "rim_noise_s3"], CONDITIONS)
    assert [(r["model"], r["seed"], r["bar"], r["validation_bar"]) for r in bars] == [
        ("rim", 0, False, None), ("rim_noise_s3", 0, True, True), ("rim_noise_s3", 1, None, False)]  # fmt: skip
    assert bars[1]["conditions"]["iid"] == {"min_frequency": 0.7, "max_frequency": 0.8, "switch_rate": 0.1,
                                            "case": "switching", "used": True}  # fmt: skip
    assert bar_counts(bars)["rim_noise_s3"] == {"seeds": 2, "bar": 1, "bar_recorded": 1, "validation_bar": 1,
                                                 "validation_recorded": 2}  # fmt: skip
    older = {**_selection("rim", 1, "iid", "", 0.0), "collapse_reasons": "always active: u0"}  # before frequencies
    [row] = seed_bars([], [older], ["rim"], ["iid"])
    assert row["conditions"]["iid"]["used"] is False and row["conditions"]["iid"]["min_frequency"] is None


def _bars(per_family: dict[str, list[tuple[bool, float]]]) -> list[dict[str, Any]]:
    return [{"model": model, "seed": seed, "validation_bar": bar, "validation_return": ret}
            for model, seeds in per_family.items() for seed, (bar, ret) in enumerate(seeds)]  # fmt: skip


def test_the_remedy_carried_on_has_the_most_validation_bars_then_the_best_validation_return() -> None:
    candidates = {"noise": "rim_noise_s3", "bias": "rim_bias_r1e2", "loss": "rim_loss_a001"}
    bars = _bars({"rim_noise_s3": [(True, 0.9), (False, 0.9)], "rim_bias_r1e2": [(True, 0.5), (True, 0.5)],
                  "rim_loss_a001": [(True, 0.95), (True, 0.95)]})  # fmt: skip
    choice = choose_remedy(bars, candidates, [0, 1])
    assert (choice["family"], choice["model"]) == ("loss", "rim_loss_a001")  # 2 bars each; 0.95 > 0.5
    assert choice["candidates"]["noise"] == {"model": "rim_noise_s3", "validation_bar": 1,
                                             "mean_validation_return": 0.9}  # fmt: skip
    tied = _bars({"rim_noise_s3": [(False, 0.5)], "rim_bias_r1e2": [(False, 0.5)], "rim_loss_a001": [(False, 0.5)]})
    assert choose_remedy(tied, candidates, [0])["family"] == "noise"  # the first family in order
    short = choose_remedy(bars[:-1], candidates, [0, 1])  # rim_loss_a001 lacks seed 1's validation statistics
    assert short["model"] is None and short["missing"] == {"rim_loss_a001": [1]}


def test_the_screen_records_its_bar_and_choice_and_refuses_two_candidates_of_a_family() -> None:
    store = _store(
        _seed("rim_noise_s3", 0, 0.95, USED, USED, 0.92, 0.9),
        _seed("rim_bias_r1e2", 0, 0.95, FROZEN, FROZEN, 0.95, 0.95),
        _seed("rim", 0, 1.0, FROZEN, None, 0, 0),
    )
    models = ["lstm", "rim", "rim_noise_s3", "rim_bias_r1e2"]  # fmt: skip
    extra = modularity_extra(MODULARITY, store, models, CONDITIONS, [0])
    assert extra.summary["choice"] == {"family": "noise", "model": "rim_noise_s3"}
    assert extra.summary["selection_bar"]["counts"]["rim"]["bar"] == 0
    titles = [title for title, _ in extra.sections]
    assert titles == ["Does the selection meet the bar?", "Every seed's selection", "The selection during training",
                      "The remedy carried on (stage 3)"]  # fmt: skip
    assert "**chosen**" in extra.sections[-1][1] and "`rim_noise_s3`" in extra.sections[-1][1]
    multiroom = modularity_extra(MODULARITY_MULTIROOM, store, models, CONDITIONS, [0])
    assert "choice" not in multiroom.summary and len(multiroom.sections) == 3
    with pytest.raises(ReproduceError, match="two candidates of family 'noise'"):
        modularity_extra(MODULARITY, store, ["rim_noise_s1", "rim_noise_s3"], CONDITIONS, [0])


def test_the_selection_during_training_says_when_each_seed_froze_and_learned() -> None:
    store = _store(_seed("rim_noise_s3", 0, 0.95, USED, USED, 0.92, 0.9), _seed("rim", 0, 1.0, FROZEN, None, 0, 0),
                   _seed("rim", 1, 0.0, FROZEN, None, 0, 0))  # fmt: skip
    switch = {("rim_noise_s3", 0): [0.1, 0.2, 0.15, 0.3, 0.004], ("rim", 0): [0.1, 0.02, 0.005, 0.0, 0.001]}
    for (model, seed), rates in switch.items():
        store.training += [{"model": model, "seed": seed, "statistic": "switch_rate", "frames": 1000 * (i + 1),
                            "value": v} for i, v in enumerate(rates)]  # fmt: skip
    store.curves += [{"model": "rim", "seed": 0, "condition": "iid", "frames": f, "mean_return": v}
                     for f, v in ((2000, 0.5), (3000, 0.85), (4000, 0.9))]  # fmt: skip
    # rim_noise_s3's one still update at the end is a dip, not a freeze (FREEZE_MIN_UPDATES)
    extra = modularity_extra(MODULARITY_MULTIROOM, store, ["lstm", "rim", "rim_noise_s3"], CONDITIONS, [0])
    rows = {(r["model"], r["seed"]): r for r in extra.summary["training_selection"]}
    assert set(rows) == set(switch)  # seed 1 of rim has no training record
    assert rows[("rim", 0)]["frozen_from"] == 3000 and rows[("rim", 0)]["learned_at"] == 3000
    assert rows[("rim_noise_s3", 0)]["frozen_from"] is None and rows[("rim_noise_s3", 0)]["learned_at"] is None
    assert rows[("rim", 0)]["switch_first"] == 0.1 and rows[("rim", 0)]["switch_last"] == 0.001
    text = dict(extra.sections)["The selection during training"]
    assert "`rim`: rollout selection froze in 1/1 seeds (from 3,000 frames)" in text and "`lstm`" not in text


# ---- the tables read the earlier tables' choices


def _write_choice(folder: Path, choice: dict[str, str]) -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"choice": choice}))


def test_the_screen_reads_the_tunes_choice_and_refuses_without_one(tmp_path: Path) -> None:
    with pytest.raises(ReproduceError, match=r"no remedy choice: .*missing\. Run `python scripts/reproduce.py "
                                             r"modularity_tune` first"):  # fmt: skip
        modularity_models(MODULARITY, tmp_path)
    _write_choice(tmp_path / MODULARITY_TUNE, {"noise": "rim_noise_s3", "init_random": "rim_init_random_s01"})
    with pytest.raises(ReproduceError, match=r"no candidate for the families \['bias', 'loss', 'init_learned'\]"):
        modularity_models(MODULARITY, tmp_path)
    assert modularity_models(MODULARITY, tmp_path, smoke=True) == ("lstm", "rim", "rim_init_random_s01")
    full = {family: candidates[-1] for family, candidates in REMEDY_FAMILIES.items()}
    (tmp_path / MODULARITY_TUNE / "summary.json").write_text(json.dumps({"choice": full}))
    assert modularity_models(MODULARITY, tmp_path) == ("lstm", "rim", *full.values())
    assert load_coefficient_choice(tmp_path / MODULARITY_TUNE / "summary.json") == full


def test_the_multiroom_table_reads_the_screens_choice_and_refuses_before_it(tmp_path: Path) -> None:
    with pytest.raises(ReproduceError, match="no remedy chosen for stage 3"):
        modularity_models(MODULARITY_MULTIROOM, tmp_path)
    _write_choice(tmp_path / MODULARITY, {})  # the screen ran, but a candidate missed validation statistics
    with pytest.raises(ReproduceError, match="holds no remedy chosen for stage 3 yet"):
        modularity_models(MODULARITY_MULTIROOM, tmp_path)
    (tmp_path / MODULARITY / "summary.json").write_text(json.dumps({"choice": {"family": "x", "model": "rim_k2"}}))
    with pytest.raises(ReproduceError, match="no remedy candidate"):
        load_remedy_choice(tmp_path / MODULARITY / "summary.json")
    (tmp_path / MODULARITY / "summary.json").write_text(json.dumps({"choice": {"model": "rim_bias_r1e3"}}))
    assert modularity_models(MODULARITY_MULTIROOM, tmp_path) == ("lstm", "rim", "rim_bias_r1e3")


# ---- the protocol's second comparison


def _protocol(tmp_path: Path, **primary: Any) -> Path:
    folder = tmp_path / MODULARITY
    folder.mkdir(exist_ok=True)
    data = {"metric": "return", "baseline": "lstm", "pooled": ["doorkey_6x6", "doorkey_8x8"], **primary}
    (folder / "protocol.yaml").write_text(yaml.safe_dump({"primary": data, "alpha": 0.05}))
    return tmp_path


def test_the_committed_modularity_protocols_compare_with_lstm_and_rim() -> None:
    for table, split in ((MODULARITY, "doorkey"), (MODULARITY_MULTIROOM, "multiroom")):
        protocol = load_protocol(table, split)
        assert protocol.baselines == ("lstm", "rim") and protocol.metric == "return"
        assert protocol.pooled == load_protocol(split, split).pooled


@pytest.mark.parametrize(
    ("primary", "message"),
    [({"contrasts": ["rmi"]}, r"must name model presets .* got \['rmi'\]"),
     ({"baseline": "lsmt"}, r"got \['lsmt'\]"),
     ({"contrasts": ["lstm"]}, "must be distinct models"),
     ({"contrasts": "rim"}, "primary.contrasts must be a list of model names")],
)  # fmt: skip
def test_a_bad_baseline_or_contrast_is_refused_naming_it(tmp_path: Path, primary: dict, message: str) -> None:
    with pytest.raises(ReproduceError, match=message):
        load_protocol(MODULARITY, "doorkey", _protocol(tmp_path, **primary))


def _run(core: str, seed: int, returns: list[float], name: str) -> Run:
    conditions = ["iid", "doorkey_6x6", "doorkey_8x8"]
    scores = {c: {"return": r, "success": float(r > 0)} for c, r in zip(conditions, returns, strict=True)}
    config = {"seed": seed, "model": {"core": core, "name": name}, "env": {"name": "doorkey"}}
    return Run(Path(f"runs/{name}/{seed}"), config, scores, {})


def test_every_remedy_is_compared_with_lstm_and_rim_with_holm_across_the_primary_comparisons(tmp_path: Path) -> None:
    models = {
        "lstm": [_run("lstm", s, [0.9, 0.1 * s, 0.0], "lstm") for s in range(4)],
        "rim": [_run("rim", s, [0.9, 0.1 * s + 0.05, 0.0], "rim") for s in range(4)],
        "rim_noise_s3": [_run("rim", s, [0.9, 0.5 + 0.1 * s, 0.1], "rim_noise_s3") for s in range(4)],
    }
    protocol = load_protocol(MODULARITY, "doorkey", _protocol(tmp_path, contrasts=["rim"]))
    comparison = compare_runs(models, reps=20, pooled=protocol.pooled, baselines=protocol.baselines)
    rows = improvement_rows(comparison, {}, protocol)
    pairs = {(r["model"], r["baseline"]) for r in rows}
    assert pairs == {("rim", "lstm"), ("rim_noise_s3", "lstm"), ("rim_noise_s3", "rim")}
    primary = [r for r in rows if r["endpoint"] == PRIMARY]
    assert len(primary) == 3 and [r["p_holm"] for r in primary] == holm([r["p_value"] for r in primary])
    plain = compare_runs(models, reps=20, pooled=protocol.pooled)  # the default: the LSTM is the only baseline
    assert {e.baseline for e in plain.improvements} == {"lstm"}
