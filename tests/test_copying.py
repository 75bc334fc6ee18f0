"""The copying task: data layout, metrics, resumable runs, and scripts/copying.py end to end (smoke)."""

from __future__ import annotations

import csv
import inspect
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from agents.analysis.reproduce import copying_report
from agents.analysis.reproduce.copying import SCORES, load_record
from agents.analysis.reproduce.copying_report import TOO_FEW, verdicts, write_copying
from agents.analysis.reproduce.readme import render_block
from agents.analysis.reproduce.summary import SAME
from agents.cli import copying as cli
from agents.cli import reproduce
from agents.experiment import copying as copying_module
from agents.experiment.copying import CopyModel, CopySettings, chance_ce, evaluate, make_core, train_run
from envs.copying import BLANK, COPY_LENGTH, DELIMITER, VOCAB, copying_batch, copying_dataset
from rims import RIMLSTM

TINY = CopySettings(
    steps=4, hidden_size=12, embed_size=6, batch_size=4, train_blank=3, test_blanks=(3, 6), test_size=8,
    curve_size=4, eval_every=2,
)  # fmt: skip
HAS_RESIDUAL = "communication_update" in inspect.signature(RIMLSTM.__init__).parameters


def test_batch_layout_follows_the_authors_generator() -> None:
    inputs, targets = copying_batch(5, 7, torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (7 + 2 * COPY_LENGTH, 5) and inputs.dtype == torch.int64
    symbols = inputs[:COPY_LENGTH]
    assert ((symbols >= 1) & (symbols <= 8)).all()
    assert (inputs[COPY_LENGTH : COPY_LENGTH + 6] == BLANK).all()  # blank_length - 1 blanks
    assert (inputs[COPY_LENGTH + 6] == DELIMITER).all()
    assert (inputs[-COPY_LENGTH:] == BLANK).all()
    assert (targets[:-COPY_LENGTH] == BLANK).all() and torch.equal(targets[-COPY_LENGTH:], symbols)


def test_datasets_are_deterministic_from_the_seed() -> None:
    a, b, c = copying_dataset(6, 4, seed=1), copying_dataset(6, 4, seed=1), copying_dataset(6, 4, seed=2)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    with pytest.raises(ValueError, match="blank_length"):
        copying_batch(2, 0, torch.Generator())


def test_chance_ce_is_ten_guesses_over_the_sequence() -> None:
    assert chance_ce(50) == pytest.approx(10 * math.log(8) / 70)


class _Oracle(torch.nn.Module):
    """Logits that put almost all mass on the right answer (or a wrong symbol at the copied positions)."""

    def __init__(self, wrong: bool = False) -> None:
        super().__init__()
        self.wrong = wrong

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        answer = torch.full_like(tokens, BLANK)
        answer[-COPY_LENGTH:] = tokens[:COPY_LENGTH] % 8 + 1 if self.wrong else tokens[:COPY_LENGTH]
        return torch.nn.functional.one_hot(answer, VOCAB).float() * 50.0


def test_evaluate_metrics() -> None:
    inputs, targets = copying_dataset(10, 5, seed=0)
    perfect = evaluate(_Oracle(), inputs, targets, batch_size=4)
    assert perfect["ce"] == pytest.approx(0.0, abs=1e-6) and perfect["accuracy"] == perfect["sequence_accuracy"] == 1
    wrong = evaluate(_Oracle(wrong=True), inputs, targets, batch_size=4)
    assert wrong["accuracy"] == wrong["sequence_accuracy"] == 0
    assert wrong["copy_ce"] == pytest.approx(50.0) and wrong["ce"] == pytest.approx(50.0 * 10 / 25)


def test_models_share_the_width_and_rim_residual_passes_the_keyword() -> None:
    logits = CopyModel("rim", TINY)(copying_batch(3, 3, torch.Generator().manual_seed(0))[0])
    assert logits.shape == (23, 3, VOCAB)
    assert make_core("lstm", TINY).hidden_size == make_core("rim", TINY).hidden_size == 12
    with pytest.raises(ValueError, match="model must be one of"):
        make_core("gru", TINY)
    if HAS_RESIDUAL:
        updates = {getattr(m, "communication_update", None) for m in make_core("rim_residual", TINY).modules()}
        assert "residual" in updates


def test_an_interrupted_run_continues_to_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = train_run("rim", 0, TINY, tmp_path / "whole", progress=False)
    calls = {"n": 0}
    real = copying_module.copying_batch

    def stop_after_two(*args: object) -> tuple[torch.Tensor, torch.Tensor]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(copying_module, "copying_batch", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        train_run("rim", 0, TINY, tmp_path / "split", progress=False)
    monkeypatch.setattr(copying_module, "copying_batch", real)
    assert (tmp_path / "split" / "checkpoint.pt").is_file() and not (tmp_path / "split" / "result.json").exists()
    resumed = train_run("rim", 0, TINY, tmp_path / "split", progress=False)
    assert resumed["final"] == whole["final"]
    assert [r["train_ce"] for r in resumed["curve"]] == [r["train_ce"] for r in whole["curve"]]
    again = train_run("rim", 0, TINY, tmp_path / "split", progress=False)  # finished: read back
    assert again == json.loads((tmp_path / "split" / "result.json").read_text())
    with pytest.raises(ValueError, match=r"steps=4, this call asks for steps=6"):
        train_run("rim", 0, CopySettings(**{**TINY.__dict__, "steps": 6}), tmp_path / "split", progress=False)


def test_verdict_is_the_exact_test_and_needs_enough_seeds() -> None:
    def model(values: list[float]) -> dict:
        cell = {"values": values, "mean": sum(values) / len(values)}
        return {"seeds": list(range(len(values))), "final": {"200": {"ce": cell}}}

    lower = verdicts({"lstm": model([4.0, 4.2, 4.1, 4.3, 4.4]), "rim": model([0.1, 0.2, 0.0, 0.3, 0.4])})
    assert [(v["model"], v["blank"], v["verdict"]) for v in lower] == [("rim", "200", "better")]
    assert lower[0]["p_value"] == pytest.approx(2 / 252) and lower[0]["p_lower_ce"] == 1.0
    three = verdicts({"lstm": model([4.0, 4.2, 4.1]), "rim": model([0.1, 0.2, 0.0])})[0]
    assert three["verdict"] == SAME and three["p_value"] == pytest.approx(0.1) == three["min_p"]  # 3 vs 3: never 95%
    assert verdicts({"lstm": model([4.0]), "rim": model([0.1])})[0]["verdict"] == TOO_FEW


def test_smoke_writes_the_summary_and_reproduce_delegates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = ["lstm", "rim", *(["rim_residual"] if HAS_RESIDUAL else [])]
    out = tmp_path / "out"
    assert cli.main(["--smoke", "--models", *models, "--root", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"report.md", "summary.json", "summary.csv", "learning_curves.png",
                                              "meta.json", "seeds.csv", "curves.csv"}  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["models"]) == models and summary["settings"]["test_blanks"] == [5, 20]
    cell = summary["models"]["rim"]["final"]["20"]["accuracy"]
    assert len(cell["values"]) == 1 and len(cell["ci"]) == 2
    assert {v["model"] for v in summary["verdicts"]} == set(models) - {"lstm"}
    assert "## Verdicts" in (out / "report.md").read_text()
    block = render_block(summary)  # the README's block of a copying table
    assert "| rim | 20 | 1 | " in block and "blank 20: `rim` vs `lstm`" in block
    assert render_block({**summary, "verdicts": []}).rstrip().endswith(copying_report.NO_VERDICTS)
    assert json.loads((out / "meta.json").read_text())["budget"]["steps"] == 4
    via = ["copying", "--smoke", "--root", str(tmp_path / "runs"), "--out", str(tmp_path / "via_reproduce")]
    assert reproduce.main(via) == 0
    assert (tmp_path / "via_reproduce" / "summary.json").is_file()
    assert cli.main(["--smoke", "--out", str(cli.RESULTS_DIR / "copying")]) == 2
    assert "never writes into the committed results" in capsys.readouterr().err
    assert cli.main(["--smoke", "--threads", "0", "--root", str(tmp_path / "runs"), "--out", str(out)]) == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_first_seed_adds_seeds_to_the_committed_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, smoke = tmp_path / "out", ["--smoke", "--models", "lstm", "--no-progress"]
    assert cli.main([*smoke, "--root", str(tmp_path / "a"), "--out", str(out)]) == 0
    first = json.loads((out / "summary.json").read_text())["models"]["lstm"]["final"]["20"]["ce"]["values"]
    more = ["--first-seed", "1", "--seeds", "2"]
    assert cli.main([*smoke, *more, "--root", str(tmp_path / "a"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["lstm"]["seeds"] == [0, 1, 2]
    assert summary["models"]["lstm"]["final"]["20"]["ce"]["values"][:1] == first  # the committed seed stays
    assert {(r["seed"], r["blank"]) for r in _rows(out / SCORES)} == {(s, b) for s in "012" for b in ("5", "20")}
    assert {r["seed"] for r in _rows(out / "curves.csv")} == {"0", "1", "2"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["budget"]["seeds"] == {"lstm": [0, 1, 2]}
    assert [b["budget"]["seeds"] for b in meta["batches"]] == [[0], [1, 2]]
    assert "| lstm | 20 | 3 | " in (out / "report.md").read_text()
    # training is deterministic on CPU: seed 0 trained again in another folder joins with the same values
    assert cli.main([*smoke, "--root", str(tmp_path / "b"), "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["models"]["lstm"]["final"]["20"]["ce"]["values"][:1] == first
    via = ["copying", "--smoke", "--first-seed", "3", "--root", str(tmp_path / "r"), "--out", str(out)]
    assert reproduce.main(via) == 0  # rims-reproduce copying forwards --first-seed
    assert json.loads((out / "summary.json").read_text())["models"]["lstm"]["seeds"] == [0, 1, 2, 3]
    assert json.loads((out / "summary.json").read_text())["models"]["rim"]["seeds"] == [3]  # its first seed
    capsys.readouterr()
    other = ["--steps", "6", "--first-seed", "3"]
    assert cli.main([*smoke, *other, "--root", str(tmp_path / "c"), "--out", str(out)]) == 2
    assert "was trained with steps=4; this call asks for steps=6: pass the table's settings" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # refused before training
    rows = _rows(out / SCORES)
    rows[2]["ce"] = "9.5"  # seed 1's committed value, not what training gives
    with (out / SCORES).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert cli.main([*smoke, "--first-seed", "1", "--root", str(tmp_path / "d"), "--out", str(out)]) == 2
    assert "lstm seed 1 is in the table with CE 9.5 at blank 5, this run gives" in capsys.readouterr().err
    assert cli.main([*smoke, "--first-seed", "-1", "--out", str(out)]) == 2
    assert "--first-seed must be >= 0, got -1" in capsys.readouterr().err


def test_a_table_without_a_record_is_read_from_its_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    committed = cli.RESULTS_DIR / "copying"
    table = tmp_path / "copying"
    table.mkdir()
    for name in ("summary.json", "meta.json"):
        shutil.copy(committed / name, table / name)
    record = load_record(table)
    summary = json.loads((table / "summary.json").read_text())
    assert record.settings == summary["settings"] and all(not r["curve"] for r in record.results)
    expected = [(m, s) for m, info in summary["models"].items() for s in info["seeds"]]
    assert [(r["model"], r["seed"]) for r in record.results] == expected
    out = tmp_path / "rendered"
    write_copying(record.results, record.settings, record.meta, out)
    again = json.loads((out / "summary.json").read_text())
    assert again["verdicts"] == summary["verdicts"]
    for name, model in summary["models"].items():
        assert again["models"][name]["final"] == model["final"]
        assert again["models"][name]["seeds_without_curve"] == model["seeds"]  # summary.json holds no curves
    assert "Not kept (their run folders were removed before curves were recorded)" in (out / "report.md").read_text()
    assert load_record(out).results[0]["final"] == record.results[0]["final"]  # seeds.csv reads back
    assert cli.main(["--smoke", "--no-progress", "--root", str(tmp_path / "runs"), "--out", str(table)]) == 2
    error = capsys.readouterr().err
    assert "was trained with steps=5000, hidden_size=120," in error
    assert "this call asks for steps=4, hidden_size=24," in error
