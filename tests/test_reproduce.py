"""scripts/reproduce.py: the presets, the sweeps' command lines, the verdicts, and a smoke run end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from agents.analysis.compare import Run
from agents.analysis.reproduce import meta, tables
from agents.analysis.reproduce.readme import expected_readme, render_block, result_files, update_readme
from agents.analysis.reproduce.runner import run_learning_rates, sweep_lanes
from agents.analysis.reproduce.summary import BETTER, SAME, WORSE
from agents.analysis.reproduce.tables import (
    KNOB_MODELS,
    MODELS,
    TABLES,
    Plan,
    ReproduceError,
    check_sweep_dir,
    learning_rates_for,
    load_preset,
    sweep_overrides,
    table_models,
)
from agents.analysis.reproduce.tune import choose
from agents.cli import reproduce as cli

REPO = Path(__file__).resolve().parent.parent


def test_the_reproduction_finds_the_checkout() -> None:
    """Presets, results and the commit in each summary are read relative to the checkout."""
    assert meta.REPO == tables.REPO == REPO


def _tune_plan(root: Path | None = None) -> Plan:
    preset = load_preset("tune")
    plan = Plan(preset, MODELS, preset.param("seed"), preset.setting("total_frames"), None, jobs=1)
    return plan if root is None else Plan(**{**plan.__dict__, "sweep_root": root})


@pytest.mark.parametrize("model", ["lstm", "gru"])
def test_tune_sweep_is_the_by_hand_command_word_for_word(model: str) -> None:
    # The by-hand command of the preset's header; resume needs the same jobs. Tuning sees validation levels only.
    by_hand = (
        f"env=doorkey model={model} agent.learning_rate=0.0001,0.0003,0.001 seed=1000,1001,1002 total_frames=300000 "
        "eval.conditions=[validation] eval.gifs=false logger=none progress_bar=false resume=true hydra/launcher=joblib "
        f"hydra.launcher.n_jobs=1 hydra.sweep.dir=multirun/reproduce/tune/{model}"
    )
    assert " ".join(sweep_overrides(_tune_plan(), model)) == by_hand


def test_split_table_sweep_uses_the_tuned_rate_and_a_fixed_folder() -> None:
    preset = load_preset("doorkey")
    plan = Plan(preset, MODELS, list(range(5)), 300000, dict.fromkeys(MODELS, 0.001))
    args = sweep_overrides(plan, "rim_u6k4")
    assert args[:4] == ["env=doorkey", "model=rim_u6k4", "agent.learning_rate=0.001", "seed=0,1,2,3,4"]
    assert {"total_frames=300000", "eval.final_episodes=100", "eval.every_frames=50000", "eval.gifs=false"} <= set(args)
    assert {"logger=none", "resume=true", "hydra.launcher.n_jobs=2"} <= set(args)
    assert args[-1] == "hydra.sweep.dir=multirun/reproduce/doorkey/rim_u6k4"
    assert [job["seed"] for job in plan.jobs_of("rim")] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("table", [table for table in TABLES if table != "copying"])
def test_every_preset_is_a_runnable_sweep_preset(table: str) -> None:
    preset = load_preset(table)
    assert preset.setting("total_frames") > 0 and preset.param("seed")
    assert ("logger", "none") in preset.groups
    data = yaml.safe_load((REPO / "configs" / "sweep" / f"reproduce_{table}.yaml").read_text())
    assert data["hydra"]["sweep"]["dir"] == f"multirun/reproduce/{table}/${{hydra.runtime.choices.model}}"


def test_rim_u6k4_preset_differs_from_rim_only_in_units_k_and_width() -> None:
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        rim = OmegaConf.to_container(compose(config_name="train", overrides=["model=rim"]).model)
        u6k4 = OmegaConf.to_container(compose(config_name="train", overrides=["model=rim_u6k4"]).model)
    assert (u6k4["num_units"], u6k4["k"], u6k4["hidden_size"]) == (6, 4, 126)
    changed = {"num_units", "k", "hidden_size", "name"}  # name: the preset's, its label
    assert u6k4["name"] == "rim_u6k4"
    assert {k: v for k, v in u6k4.items() if k not in changed} == {k: v for k, v in rim.items() if k not in changed}


@pytest.mark.parametrize(
    ("knob", "changed"),
    [("rim_dropout", {"attention_dropout": 0.1}), ("rim_input_score", {"selection": "input_score"}),
     ("rim_k2", {"k": 2})],
)  # fmt: skip
def test_each_knob_preset_differs_from_rim_in_its_knob_only(knob: str, changed: dict) -> None:
    assert knob in KNOB_MODELS
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        rim = OmegaConf.to_container(compose(config_name="train", overrides=["model=rim"]).model)
        variant = OmegaConf.to_container(compose(config_name="train", overrides=[f"model={knob}"]).model)
    assert variant["name"] == knob  # the preset's name labels its runs
    assert {k: v for k, v in variant.items() if rim[k] != v and k != "name"} == changed


def test_knobs_table_shares_the_doorkey_tables_lstm_and_rim_runs() -> None:
    knobs, doorkey = load_preset("knobs"), load_preset("doorkey")
    # the shared runs are the same experiment: split, budget, evaluation and groups
    assert (knobs.env, knobs.settings, knobs.groups) == (doorkey.env, doorkey.settings, doorkey.groups)
    assert set(knobs.param("seed")) <= set(doorkey.param("seed"))
    models = table_models("knobs")
    assert models == ("lstm", "rim", "rim_u6k4", *KNOB_MODELS)
    assert table_models("knobs", smoke=True) == ("lstm", "rim_k2")
    assert table_models("doorkey") == MODELS
    rates = learning_rates_for(models, {"lstm": 3e-4, "rim": 1e-4, "rim_u6k4": 2e-4}, Path("tune.json"))
    assert rates == {"lstm": 3e-4, "rim": 1e-4, "rim_u6k4": 2e-4, **dict.fromkeys(KNOB_MODELS, 1e-4)}
    plan = Plan(knobs, models, [0, 1, 2], 300000, rates)
    assert plan.sweep_dir("lstm") == Path("multirun/reproduce/doorkey/lstm")
    assert plan.sweep_dir("rim") == Path("multirun/reproduce/doorkey/rim")
    assert plan.sweep_dir("rim_u6k4") == Path("multirun/reproduce/doorkey/rim_u6k4")
    assert plan.sweep_dir("rim_k2") == Path("multirun/reproduce/knobs/rim_k2")
    assert sweep_overrides(plan, "rim")[-1] == "hydra.sweep.dir=multirun/reproduce/doorkey/rim"
    assert "model=rim_k2 agent.learning_rate=0.0001 seed=0,1,2" in " ".join(sweep_overrides(plan, "rim_k2"))


def test_a_job_folder_of_other_settings_is_refused_before_launching(tmp_path: Path) -> None:
    plan = _tune_plan(tmp_path)
    job = tmp_path / "tune" / "lstm" / "3_ppo_lstm_doorkey_s1000"  # job 3: lr 0.0003, seed 1000
    job.mkdir(parents=True)
    config = {"seed": 1000, "total_frames": 300000, "agent": {"learning_rate": 0.0003}}
    (job / "config.yaml").write_text(yaml.safe_dump(config))
    check_sweep_dir(plan, "lstm")  # the same job: resumable
    with pytest.raises(ReproduceError, match=r"total_frames=300000.*total_frames=100000.*--frames"):
        check_sweep_dir(Plan(**{**plan.__dict__, "frames": 100000}), "lstm")
    with pytest.raises(ReproduceError, match=r"seed=1000, but job 3 of this command has seed=1001"):
        check_sweep_dir(Plan(**{**plan.__dict__, "seeds": [1000, 1001]}), "lstm")


def test_a_call_adding_seeds_beside_the_held_ones_is_not_refused(tmp_path: Path) -> None:
    plan = Plan(load_preset("doorkey"), ["lstm"], [0, 1], 300000, {"lstm": 1e-3}, sweep_root=tmp_path)
    job = tmp_path / "doorkey" / "lstm" / "0_ppo_lstm_doorkey_s0"  # seed 0 of an earlier call, job 0
    job.mkdir(parents=True)
    (job / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "total_frames": 300000}))
    adding = Plan(**{**plan.__dict__, "seeds": [5, 6]})  # --first-seed 5 --seeds 2: job 0 is seed 5
    check_sweep_dir(adding, "lstm")
    with pytest.raises(ReproduceError, match=r"total_frames=300000.*total_frames=100000"):
        check_sweep_dir(Plan(**{**adding.__dict__, "frames": 100000}), "lstm")


def _tune_rows(model: str, cells: list[tuple[float, int, float]]) -> list[dict[str, object]]:
    return [
        {"model": model, "learning_rate": lr, "seed": s, "validation_return": ret, "validation_success": 1.0}
        for lr, s, ret in cells
    ]


def test_tune_chooses_the_best_mean_and_needs_every_rate() -> None:
    rows = _tune_rows("lstm", [(1e-4, 0, 0.5), (1e-4, 1, 0.7), (3e-4, 0, 0.9), (3e-4, 1, 0.2), (1e-3, 0, 0.1),
                               (1e-3, 1, 0.1)])  # fmt: skip
    rows += _tune_rows("gru", [(1e-4, 0, 0.9)])
    means, choice = choose(rows, [1e-4, 3e-4, 1e-3])
    assert means["lstm"]["0.0001"]["mean_return"] == pytest.approx(0.6) and means["lstm"]["0.0001"]["seeds"] == [0, 1]
    assert means["lstm"]["0.0003"]["worst_return"] == pytest.approx(0.2)
    assert choice == {"lstm": 1e-4}  # 0.6 > 0.55 + 0.02 > 0.1; gru lacks two rates: no choice


def test_tune_breaks_a_near_tie_toward_the_best_worst_seed() -> None:
    # 3e-4 has the best mean by 0.01 (a near-tie) but one weaker seed; 1e-3 is far behind whatever its worst seed.
    rows = _tune_rows("lstm", [(1e-4, 0, 0.95), (1e-4, 1, 0.95), (3e-4, 0, 1.0), (3e-4, 1, 0.92), (1e-3, 0, 0.97),
                               (1e-3, 1, 0.5)])  # fmt: skip
    assert choose(rows, [1e-4, 3e-4, 1e-3])[1] == {"lstm": 1e-4}
    clear = _tune_rows("lstm", [(1e-4, 0, 0.9), (1e-4, 1, 0.9), (3e-4, 0, 1.0), (3e-4, 1, 0.85), (1e-3, 0, 0.0),
                                (1e-3, 1, 0.0)])  # fmt: skip
    assert choose(clear, [1e-4, 3e-4, 1e-3])[1] == {"lstm": 3e-4}  # 0.925 vs 0.9: more than 0.02 apart


def test_split_table_refuses_without_tuned_rates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "RESULTS_DIR", tmp_path / "results")
    assert cli.main(["doorkey", "--root", str(tmp_path / "runs")]) == 2
    assert "no tuned learning rates" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    assert cli.main(["doorkey", "--smoke", "--out", str(tmp_path / "results" / "doorkey")]) == 2
    assert "never writes into the committed results" in capsys.readouterr().err


def test_smoke_run_writes_every_summary_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    assert cli.main(["doorkey", "--smoke", "--root", str(root)]) == 0
    out = root / "doorkey"
    names = {"report.md", "summary.json", "summary.csv", "learning_curves.png", "ood_bars.png", "meta.json"}
    assert names <= {p.name for p in out.iterdir()}
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"lstm", "rim"}
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["models"]) == ["lstm", "rim"] and summary["split"] == "doorkey"
    conditions = ["iid", "doorkey_6x6", "iid_background", "iid_distractors", "all_ood"]
    assert summary["conditions"] == conditions
    cell = summary["models"]["rim"]["conditions"]["iid"]["return"]
    assert cell["seeds"] == [0] and len(cell["values"]) == 1 and cell["n_seeds"] == 1
    assert set(cell) >= {"mean", "iqm"} and len(cell["iqm"]["ci"]) == 2
    assert {(r["model"], r["baseline"]) for r in summary["improvements"]} == {("rim", "lstm")}
    assert {r["verdict"] for r in summary["improvements"]} <= {BETTER, SAME, WORSE}
    assert "iid" in summary["modularity"]["rim"]["aggregate"] and "lstm" not in summary["modularity"]
    with (out / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["aggregate"] for r in rows} == {"iqm", "mean", "p_improvement"}
    assert {r["endpoint"] for r in summary["improvements"] if r["condition"] == "all_ood"} == {"primary", "secondary"}
    assert [r["condition"] for r in summary["primary"]] == ["all_ood"] and 0 <= summary["primary"][0]["p_holm"] <= 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["budget"]["frames"] == 2048 and meta["budget"]["seeds"] == {"lstm": [0], "rim": [0]}
    assert meta["command"].startswith("python scripts/reproduce.py doorkey --smoke")
    assert set(meta["machine"]) >= {"cpu", "cores", "torch"} and len(meta["commit"]) in (0, 40)
    [batch] = meta["batches"]  # the runs trained by this call
    assert "model=rim seed=0 total_frames=2048" in batch["sweeps"]["rim"]
    cost = batch["cost"]  # the runs' training minutes: the table's price on this machine
    assert set(cost["training_minutes"]) == {"lstm", "rim"} and cost["jobs"] == 1
    assert cost["total_minutes"] == pytest.approx(sum(cost["training_minutes"].values()), abs=0.11)
    report = (out / "report.md").read_text()
    assert "training minutes" in report
    for heading in (
        "## Primary endpoint",
        "## Verdicts per condition",
        "## Return",
        "## Success rate",
        "## Is the modularity used?",
        "## Figures",
    ):
        assert heading in report
    assert "| iid | rim | 1 |" in report and "![learning curves](learning_curves.png)" in report
    first = (out / "summary.json").read_text()
    capsys.readouterr()
    assert cli.main(["doorkey", "--smoke", "--root", str(root), "--only-compare"]) == 0  # no training
    assert json.loads((out / "summary.json").read_text())["models"] == json.loads(first)["models"]
    assert len(json.loads((out / "meta.json").read_text())["batches"]) == 1  # the same runs: no new batch
    with (out / "seeds.csv").open() as handle:  # the seed record: every condition of both seeds
        recorded = list(csv.DictReader(handle))
    assert {(r["model"], r["seed"]) for r in recorded} == {("lstm", "0"), ("rim", "0")} and len(recorded) == 8


def _summary(rim_verdict: str) -> dict:
    """A two-model summary.json as table_summary writes it (two conditions, one collapsed RIM)."""

    def cell(point: float) -> dict:
        return {"return": {"n_seeds": 5, "iqm": {"point": point, "ci": [point - 0.1, point + 0.05]}}}

    modularity = {
        "iid": {"condition": "iid", "n_runs": 5, "collapsed_runs": 5, "switch_rate": 0.004, "switch_rate_std": 0.002}
    }
    return {
        "conditions": ["iid", "all_ood"],
        "cannot_separate": [],
        "models": {"lstm": {"conditions": {"iid": cell(0.96), "all_ood": cell(0.3)}},
                   "rim": {"conditions": {"iid": cell(0.95), "all_ood": cell(0.35)}}},
        "improvements": [
            {"model": "rim", "baseline": "lstm", "condition": c, "metric": "return", "point": 0.7, "ci": [0.55, 0.9],
             "p_value": 0.01, "p_holm": 0.02, "verdict": rim_verdict} for c in ("iid", "all_ood")
        ],
        "iid_learned": {"lstm": {"learned": 4, "seeds": 5}, "rim": {"learned": 5, "seeds": 5}},
        "modularity": {"rim": {"seeds": [0, 1, 2, 3, 4], "aggregate": modularity}},
    }  # fmt: skip


def test_readme_block_shows_the_summarys_numbers_and_verdicts() -> None:
    block = render_block(_summary(BETTER))
    assert "| condition | lstm | rim | P(rim > lstm) |" in block
    assert "| iid | 0.96 [0.86, 1.01] | 0.95 [0.85, 1.00] | 0.70 [0.55, 0.90] p=0.02 **RIM better** |" in block
    assert "| all OOD |" in block and "`lstm` 4/5, `rim` 5/5" in block
    assert "`rim` collapsed in 5/5 seeds on every condition, switch rate on iid 0.004 ± 0.002" in block
    assert "no difference" in render_block(_summary(SAME)) and "**LSTM better**" in render_block(_summary(WORSE))


def test_readme_blocks_are_rewritten_from_the_summaries_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "results" / "doorkey").mkdir(parents=True)
    (tmp_path / "results" / "doorkey" / "summary.json").write_text(json.dumps(_summary(BETTER)))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:doorkey -->\nstale numbers\n<!-- /results:doorkey -->\ntail\n")
    assert update_readme(readme, tmp_path / "results") == ["doorkey"]
    text = readme.read_text()
    assert "stale" not in text and "**RIM better**" in text and text.endswith("<!-- /results:doorkey -->\ntail\n")
    assert update_readme(readme, tmp_path / "results") == [] and readme.read_text() == text
    readme.write_text("<!-- results:empty -->\n<!-- /results:empty -->\n")
    with pytest.raises(ReproduceError, match=r"block for table 'empty', but .*empty/summary.json does not exist"):
        update_readme(readme, tmp_path / "results")


def test_the_summary_block_lists_every_tables_primary_endpoint_and_docs_pages_with_blocks_are_found(
    tmp_path: Path,
) -> None:
    summary = {**_summary(WORSE), "table": "doorkey"}
    summary["primary"] = [{**summary["improvements"][1], "n_seeds": 10, "baseline_seeds": 10}]
    (tmp_path / "doorkey").mkdir()
    (tmp_path / "doorkey" / "summary.json").write_text(json.dumps(summary))
    text = expected_readme("# x\n<!-- results:summary -->\n<!-- /results:summary -->\n", tmp_path)
    row = "| [doorkey](docs/results.md) | `rim` | 10 vs 10 | 0.35 vs 0.30 | 0.70 [0.55, 0.90] p=0.02 **LSTM better** |"
    assert row in text and "protocol.yaml" in text
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(text)
    (tmp_path / "docs" / "results.md").write_text("<!-- results:doorkey -->\n<!-- /results:doorkey -->\n")
    (tmp_path / "docs" / "other.md").write_text("no tables\n")
    assert result_files(tmp_path) == [tmp_path / "README.md", tmp_path / "docs" / "results.md"]


@pytest.mark.parametrize("path", [p.relative_to(REPO).as_posix() for p in result_files()])
def test_the_result_tables_of_readme_and_docs_are_the_committed_summaries(path: str) -> None:
    """README.md and docs/*.md hold what scripts/reproduce/<table>/summary.json say (`reproduce.py readme`)."""
    text = (REPO / path).read_text()
    assert expected_readme(text) == text


def test_model_sweeps_run_in_lanes_that_keep_every_core_busy() -> None:
    preset = load_preset("doorkey")
    plan = Plan(preset, MODELS, list(range(5)), 300000, dict.fromkeys(MODELS, 0.001), jobs=2)
    assert sweep_lanes(plan) == [["lstm", "rim"], ["gru", "rim_u6k4"]]
    assert "hydra.launcher.n_jobs=1" in sweep_overrides(plan, "rim", n_jobs=1)
    assert "hydra.launcher.n_jobs=2" in sweep_overrides(plan, "rim")  # the by-hand command keeps the plan's jobs
    assert sweep_lanes(Plan(**{**plan.__dict__, "jobs": 1})) == [list(MODELS)]
    assert sweep_lanes(Plan(**{**plan.__dict__, "launcher": "slurm"})) == [list(MODELS)]
    assert sweep_lanes(Plan(**{**plan.__dict__, "models": ("rim",)})) == [["rim"]]
    assert sweep_lanes(Plan(**{**plan.__dict__, "jobs": 8})) == [[m] for m in MODELS]


def _rate_run(seed: int, rate: float) -> Run:
    return Run(Path(f"runs/{seed}"), {"seed": seed, "agent": {"learning_rate": rate}}, {}, {})


def test_a_table_notes_runs_at_an_earlier_rate_and_refuses_mixed_rates() -> None:
    """After the tune table changes a core's rate, re-rendering says the rows are at the earlier rate; a
    half-finished rerun (seeds at two rates) is refused, naming each seed's rate."""
    runs = {"lstm": [_rate_run(0, 3e-4), _rate_run(1, 3e-4)], "rim": [_rate_run(0, 1e-4)]}
    notes = run_learning_rates(runs, {"lstm": 1e-3, "rim": 1e-4})
    assert len(notes) == 1 and "`lstm` was trained at learning rate 0.0003" in notes[0] and "chooses 0.001" in notes[0]
    assert run_learning_rates(runs, None) == []
    with pytest.raises(ReproduceError, match=r"`lstm` mixes learning rates across seeds \(\{0: 0.0003, 1: 0.001\}\)"):
        run_learning_rates({"lstm": [_rate_run(0, 3e-4), _rate_run(1, 1e-3)]}, {"lstm": 1e-3})
