"""The README and docs/ stay true: generated lists, paths, options, flags and names check out, every Python
block runs, every number of the results prose has a committed source, and the README stays short.

The checks live in ``scripts/docs.py`` (``python scripts/docs.py`` rewrites the generated lists,
``--check`` lists what fails); docs/development.md describes the markers a code block may carry.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent


def _load_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_check", REPO / "scripts" / "docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


docs = _load_docs()
BLOCKS = docs.python_blocks()
TINY_RUN = [
    "logger=none", "total_frames=64", "n_envs=2", "eval.every_frames=64", "eval.episodes=1",
    "eval.final_episodes=2", "eval.conditions=[iid]", "eval.gifs=false", "agent.n_steps=16",
    "agent.batch_size=32", "model.hidden_size=16", "progress_bar=false",
]  # fmt: skip
# The five jobs a newcomer comes with, each reachable from a heading near the README's top.
WORKFLOWS = {
    "install and run the main job": r"^## (Install|Quickstart)",
    "sweep RIM vs LSTM": r"^### Sweep RIM against LSTM",
    "evaluate OOD": r"^### Evaluate out of distribution",
    "compare with statistics": r"^### Compare with statistics",
    "the cell in your own PyTorch code": r"^### Use the RIM cell in your own PyTorch code",
}


def test_generated_lists_paths_options_flags_and_names_check_out() -> None:
    """What `python scripts/docs.py --check` prints: nothing stale, missing or unknown."""
    assert docs.problems() == []


@pytest.fixture(scope="session")
def fixture_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run (64 frames, default model and split) for blocks that need a run folder."""
    from agents.experiment.run import train

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=TINY_RUN)
    run = tmp_path_factory.mktemp("docs") / "run"
    train(cfg, run)
    return run


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_python_block_runs(
    block: docs.Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if block.marker == "skip":
        assert block.arg, f"{block.where}: a skipped block says why (<!-- docs-test: skip <reason> -->)"
        pytest.skip(block.arg)
    run = request.getfixturevalue("fixture_run") if block.marker == "fixture-run" else None
    code = docs.runnable(block, run)
    monkeypatch.chdir(tmp_path)  # blocks that save files write them here
    exec(compile(code, block.where, "exec"), {"__name__": "__docs__"})


def _file_names(text: str) -> set[str]:
    """The top-level names of the files and folders a text names in code spans (``eval.{json,csv}`` is two)."""
    names = set()
    for token in re.findall(r"`([^`<>\s]+(?:<[^`]*)?)`", text):
        first = token.split("/")[0] + ("/" if "/" in token else "")
        match = re.fullmatch(r"([\w.]*)\{([\w,]+)\}", first)
        for name in [match[1] + alt for alt in match[2].split(",")] if match else [first]:
            if name.endswith("/") or re.search(r"\.(yaml|pt|zip|json|csv|log|gif)$", name):
                names.add(name.rstrip("/"))
    return names


def test_the_documented_run_folder_is_what_a_run_writes(fixture_run: Path) -> None:
    text = (REPO / "docs" / "suite.md").read_text()
    section = text.split("## The run folder", 1)[1].split("\n## ", 1)[0].split("```", 1)[0]
    documented = _file_names(section) - {"runs", "<sweep dir>"}
    written = {p.name for p in fixture_run.iterdir() if p.name != ".lock"}
    assert written <= documented, f"a run writes what docs/suite.md does not name: {written - documented}"
    # Not in the tiny run: W&B's folder (logger=none), GIFs (eval.gifs=false), a second checkpoint, and what the
    # command line adds around train(): Hydra's record and its log.
    assert documented - written == {"wandb", "media", "checkpoint.1.pt", ".hydra", "train.log"}


def _committed_numbers() -> set[str]:
    """Every number of the committed results, at each precision from 0 to 3 decimals and at 3 significant digits
    (the reports' p-values: ``0.0196``)."""
    found: set[str] = set()
    for path in (REPO / "scripts" / "reproduce").rglob("*"):
        if path.suffix in (".json", ".csv", ".md"):
            for token in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", path.read_text()):
                value = float(token)
                found.update(f"{value:.{d}f}" for d in range(4))
                found.add(f"{value:.3g}")
    return found


def test_every_number_in_the_results_prose_has_a_committed_source() -> None:
    text = (REPO / "docs" / "results.md").read_text()
    prose = re.sub(r"<!-- results:(\w+) -->.*?<!-- /results:\1 -->", "", text, flags=re.S)
    committed = _committed_numbers()
    numbers = re.findall(r"(?<![\w.\-/])\d{1,3}(?:,\d{3})+(?![\w])|(?<![\w.\-/])\d+\.\d+(?![\w.])", prose)
    missing = sorted({n for n in numbers if n.replace(",", "") not in committed})
    assert missing == [], f"numbers in docs/results.md with no committed source under scripts/reproduce/: {missing}"


def test_readme_is_short_and_every_workflow_is_near_the_top() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 220
    for job, heading in WORKFLOWS.items():
        at = [i + 1 for i, line in enumerate(lines) if re.match(heading, line)]
        assert at and at[0] <= 120, f"README: the heading for {job!r} ({heading}) is not within the first 120 lines"


def test_the_site_builds_without_a_warning(tmp_path: Path) -> None:
    """`mkdocs build --strict`, as .ci/run does: a broken link or anchor, a page left out of the nav, or an
    API entry whose object is gone fails it."""
    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.is_file():
        pytest.skip("mkdocs is not installed (the docs extra: scripts/setup.sh installs it)")
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "rims" / "index.html").read_text().count("RIMLSTM") > 3


# ---- the checks fail when the documentation and the repository part ways


def test_a_removed_path_option_key_flag_or_name_is_reported() -> None:
    keys = docs._schema_keys()
    assert docs.check_paths(REPO / "README.md", "see `scripts/no_such_script.py` and [x](nope.md)") == [
        "README.md: link to nope.md, which does not exist",
        "README.md: scripts/no_such_script.py, which does not exist",
    ]
    assert docs.check_paths(REPO / "README.md", "`scripts/reproduce/<table>/summary.json`") == []
    assert "not an option" in docs.check_option("model=no_such_core", keys)
    assert "not a config key" in docs.check_option("model.no_such_key=3", keys)
    assert docs.check_option("model.num_units=6", keys) is None and docs.check_option("model.zip", keys) is None
    bash = "```bash\npython scripts/evaluate.py runs/x --no-such-flag 3\npython scripts/train.py model.k=oops\n```\n"
    found = docs.check_commands(REPO / "README.md", bash, keys)
    assert len(found) == 2 and "has no option --no-such-flag" in found[0] and "model.k" in found[1]
    assert docs.check_names(REPO / "README.md", "`rims.RIMLSTM` and `rims.NoSuchThing`") == [
        "README.md: rims.NoSuchThing cannot be imported"
    ]


def test_a_preset_missing_from_the_generated_lists_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "<!-- generated:config-groups -->\n<!-- /generated:config-groups -->\n"
    current = docs.expected(text)
    assert "`model=rim_k2`" in current and "`sweep=rim_vs_lstm`" in current and "`env=multiroom`" in current
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    (configs / "model" / "rim_k2.yaml").unlink()
    monkeypatch.setattr(docs, "CONFIGS", configs)
    assert docs.expected(current) != current  # the committed list names a preset that is gone: stale


def test_blocks_carry_their_markers_and_a_replacement_must_apply() -> None:
    page = REPO / "docs" / "agents.md"
    (block,) = [b for b in docs.blocks(page) if b.lang == "python"][:1]
    assert block.marker == "replace" and "1_024" in docs.runnable(block)
    broken = docs.Block(page, 1, "python", "x = 1\n", "replace", "100_000 => 1_024")
    with pytest.raises(ValueError, match="does not contain"):
        docs.runnable(broken)
