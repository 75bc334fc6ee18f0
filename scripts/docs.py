"""The documentation's generated lists and the checks that keep README.md and docs/ true.

python scripts/docs.py            # rewrite every generated block of README.md and docs/*.md
python scripts/docs.py --check    # exit 1 and list what is stale or wrong (tests/test_docs.py runs the same checks)

A generated block sits between ``<!-- generated:<name> -->`` and ``<!-- /generated:<name> -->`` and is
rebuilt from the repository itself: the config groups and their presets from ``configs/``, every key
from the typed schemas (``agents/experiment/config/``), the splits from ``configs/env/``, the scripts
from their docstrings. The checks (``problems``) read every documentation file and fail on a
repository path that does not exist, a config group option, key or override that the config tree
rejects, a command-line flag a script does not define, or a ``rims.*`` / ``agents.*`` / ``envs.*``
name that cannot be imported. Python code blocks are run by the test (see ``python_blocks``); a block
is preceded by ``<!-- docs-test: skip <reason> -->`` to leave it out, ``<!-- docs-test: fixture-run -->``
to run it with ``runs/<date>/<run>`` pointing at a tiny trained run, or ``<!-- docs-test: replace A => B -->``
to run it with ``A`` replaced by ``B`` (a smaller budget).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import re
import shlex
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
GROUPS = ("model", "agent", "env", "logger", "sweep", "hydra/launcher", "sweep/meta_rim_models")
HYDRA_LAUNCHERS = {"basic", "joblib", "submitit_local", "submitit_slurm"}  # Hydra's own and its plugins'
REPO_DIRS = ("rims", "agents", "envs", "configs", "scripts", "tests", "docs", ".ci")
KEY_PREFIXES = ("model", "agent", "env", "logger", "eval", "checkpoint")
FILE_SUFFIXES = (".zip", ".pt", ".json", ".csv", ".yaml", ".png", ".gif", ".md", ".py", ".txt", ".lock")
GENERATED = re.compile(r"<!-- generated:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /generated:(?P=name) -->", re.S)
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<code>.*?)^```", re.S | re.M)
MARKER = re.compile(r"<!-- docs-test: (?P<kind>skip|fixture-run|replace)(?P<arg>.*?) -->\s*$")
RUN_PLACEHOLDER = "runs/<date>/<run>"
CONSOLE_SCRIPTS = set(re.findall(r"^(rims-[\w-]+) = ", (REPO / "pyproject.toml").read_text(), re.M))  # rims-train, ...


def doc_files() -> list[Path]:
    """The files the checks read: the README, every page of docs/, and the READMEs beside configs and results."""
    pages = sorted((REPO / "docs").rglob("*.md"))
    return [REPO / "README.md", *pages, CONFIGS / "README.md", REPO / "scripts" / "reproduce" / "README.md"]


# ---------------------------------------------------------------- generated blocks


def _header(path: Path) -> str:
    """The first sentence of a config file's leading comment."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith(("@package", "python ", "rims-")):
            continue
        lines.append(text)
    text = re.sub(r"\s*\(issues? \d+[^)]*\)", "", " ".join(lines))  # the tracker is not public
    depth = 0
    for i, char in enumerate(text):  # the first sentence: up to a . or ? (or a : before a capital) outside brackets
        depth += (char == "(") - (char == ")")
        after = text[i + 1 : i + 3]
        ends = char in ".?" or (char == ":" and (not after.strip() or after[1:].isupper()))
        if depth == 0 and ends and (not after or after[0] == " ") and not re.search(r"(\bal|e\.g|i\.e)$", text[:i]):
            return text[:i].rstrip() + ("?" if char == "?" else ".")
    return text.rstrip(":.") + "."


def _defaults() -> dict[str, str]:
    chosen = {}
    for entry in yaml.safe_load((CONFIGS / "train.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            ((key, value),) = entry.items()
            chosen[key.split()[-1]] = value
    return chosen


def options(group: str) -> list[str]:
    """The options of a config group: its files in ``configs/<group>/``."""
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def config_groups() -> str:
    """Every group of ``configs/`` with each option and the first sentence of its file's comment."""
    chosen = _defaults()
    out = []
    for group in GROUPS:
        rows = []
        for option in options(group):
            mark = " (default)" if chosen.get(group) == option else ""
            rows.append([f"`{group}={option}`{mark}", _header(CONFIGS / group / f"{option}.yaml")])
        out += [f"**{group}** (`configs/{group}/`)", "", _table(["option", "what it is"], rows), ""]
    return "\n".join(out)


def config_keys() -> str:
    """Every key of the typed schemas, as ``rims-train --help`` prints them, one table per section."""
    from agents.experiment.config.describe import _NESTED, SECTIONS, _default, _type_name
    from agents.experiment.config.run import TrainConfig

    out = []
    for title, prefix, schema in SECTIONS:
        hints = typing.get_type_hints(schema)
        rows = [
            [f"`{prefix}{item.name}`", f"`{_type_name(hints[item.name])}`", f"`{_default(item)}`",
             item.metadata.get("help", "").replace("|", "\\|")]
            for item in dataclasses.fields(schema)
            if not (schema is TrainConfig and item.name in _NESTED)
        ]  # fmt: skip
        out += [f"**{title}**", "", _table(["key", "type", "default", "meaning"], rows), ""]
    return "\n".join(out)


def splits() -> str:
    """Every split of ``configs/env/``: its training environment and its named test conditions."""
    rows = []
    for option in options("env"):
        data = yaml.safe_load((CONFIGS / "env" / f"{option}.yaml").read_text())
        data = data.get("env", data)
        tests = (
            ", ".join(f"`{name}`" for name in data.get("test") or {})
            or "none: unseen levels of the training environment"
        )
        rows.append([f"`env={option}`", f"`{data['train']['env_id']}`", tests])
    return _table(["split", "trained on", "test conditions (besides `iid` and the perturbed `iid_*`)"], rows)


def rim_options() -> str:
    """The keyword-only options of ``rims.RIMLSTM`` / ``RIMGRU`` with their defaults (read from the signature)
    and meanings (the help of the suite's typed model schema, which exposes the same options)."""
    import inspect

    from agents.experiment.config.model import RIMModelConfig
    from rims import RIMLSTM

    helps = {item.name: item.metadata.get("help", "") for item in dataclasses.fields(RIMModelConfig)}
    helps |= {"device": "as in nn.LSTM", "dtype": "as in nn.LSTM"}
    rows = []
    for name, param in inspect.signature(RIMLSTM.__init__).parameters.items():
        if param.kind is not param.KEYWORD_ONLY:
            continue
        meaning = helps.get(name, "")
        meaning = meaning.replace("; null: ", "; None: ") if param.default is None else meaning.split("; null:")[0]
        rows.append([f"`{name}`", f"`{param.default!r}`", meaning.replace("|", "\\|")])
    return _table(["option", "default", "meaning"], rows)


def _docstring_line(path: Path) -> str:
    if path.suffix == ".py":
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""
    comments = [line.lstrip("#").strip() for line in path.read_text().splitlines()[1:] if line.startswith("#")]
    return " ".join(comments).split(". ")[0].rstrip(".") + "." if comments else ""


def scripts() -> str:
    """Every script of ``scripts/`` with the first line of its docstring (or comment)."""
    rows = [
        [f"`scripts/{p.name}`", _docstring_line(p).replace("|", "\\|")]
        for p in sorted((REPO / "scripts").iterdir())
        if p.suffix in (".py", ".sh")
    ]
    return _table(["script", "what it does"], rows)


GENERATORS: dict[str, Callable[[], str]] = {
    "config-groups": config_groups,
    "config-keys": config_keys,
    "splits": splits,
    "scripts": scripts,
    "rim-options": rim_options,
}


def expected(text: str) -> str:
    """``text`` with every generated block rebuilt."""

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in GENERATORS:
            raise KeyError(f"unknown generated block {name!r}; known: {sorted(GENERATORS)}")
        return f"<!-- generated:{name} -->\n{GENERATORS[name]().rstrip()}\n<!-- /generated:{name} -->"

    return GENERATED.sub(fill, text)


# ---------------------------------------------------------------- code blocks


@dataclass(frozen=True)
class Block:
    """A fenced code block of a documentation file and the docs-test marker before it, if any."""

    path: Path
    line: int
    lang: str
    code: str
    marker: str | None = None
    arg: str = ""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> Iterator[Block]:
    text = path.read_text()
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.search(before)
        kind, arg = (marker["kind"], marker["arg"].strip()) if marker else (None, "")
        yield Block(path, line, match["lang"], match["code"], kind, arg)


def python_blocks() -> list[Block]:
    """Every ``python`` block of the documentation files, with its marker."""
    return [b for path in doc_files() for b in blocks(path) if b.lang == "python"]


def runnable(block: Block, run_dir: Path | None = None) -> str:
    """The code the test runs for ``block``: substitutions applied."""
    code = block.code
    if block.marker == "replace":
        old, _, new = block.arg.partition(" => ")
        if old not in code:
            raise ValueError(f"{block.where}: the marker replaces {old!r}, which the block does not contain")
        code = code.replace(old, new)
    if block.marker == "fixture-run":
        if run_dir is None or RUN_PLACEHOLDER not in code:
            raise ValueError(f"{block.where}: a fixture-run block uses {RUN_PLACEHOLDER!r} for the run folder")
        code = code.replace(RUN_PLACEHOLDER, str(run_dir))
    return code


# ---------------------------------------------------------------- checks


def _code_spans(text: str) -> list[str]:
    prose = FENCE.sub("", text)
    return re.findall(r"`([^`\n]+)`", prose)


def _path_exists(token: str) -> bool:
    token = token.rstrip(".,:;)")
    for part in re.findall(r"\{([^}]*)\}", token):  # eval.{json,csv}: one of the alternatives is enough
        token = token.replace("{" + part + "}", part.split(",")[0])
    pattern = re.sub(r"<[^>]*>", "*", token)
    if "*" in pattern:
        return any(REPO.glob(pattern.rstrip("/")))
    return (REPO / token).exists()


REPO_PATH = re.compile(rf"(?<![\w./~<>-])((?:{'|'.join(re.escape(d) for d in REPO_DIRS)})/[\w./<>*{{}},-]*)")


def check_paths(path: Path, text: str) -> list[str]:
    found = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:|#", target):
            continue
        if not (path.parent / target.split("#")[0]).exists():
            found.append(f"{path.relative_to(REPO)}: link to {target}, which does not exist")
    for token in REPO_PATH.findall(text):
        if not _path_exists(token):
            found.append(f"{path.relative_to(REPO)}: {token}, which does not exist")
    return found


def _schema_keys() -> set[str]:
    from agents.experiment.config.describe import SECTIONS

    keys = {f"{prefix}{item.name}" for _, prefix, schema in SECTIONS for item in dataclasses.fields(schema)}
    return keys


def check_option(token: str, keys: set[str]) -> str | None:
    """A reason if ``token`` (``group=option[,option]``, ``key``, ``key=value``) names what configs/ lacks."""
    name, eq, value = token.lstrip("+~").partition("=")
    if name in GROUPS and eq:
        known = set(options(name)) | (HYDRA_LAUNCHERS if name == "hydra/launcher" else set())
        wrong = [v for v in value.split(",") if v and "<" not in v and v not in known]
        return f"{name}={','.join(wrong)} is not an option of configs/{name}/" if wrong else None
    if re.fullmatch(rf"(?:{'|'.join(KEY_PREFIXES)})\.[\w.<>*]+", name) and not name.endswith(FILE_SUFFIXES):
        if "<" in name or "*" in name:
            pattern = re.escape(name).replace(r"\*", r"\w+")
            pattern = re.sub(r"<[^>]*>", r"[\\w.<>]+", pattern)
            return None if any(re.fullmatch(pattern, k) for k in keys) else f"{name} matches no config key"
        return None if name in keys else f"{name} is not a config key (rims-train --help lists them)"
    return None


def _commands(text: str) -> Iterator[list[str]]:
    """Every command line of the bash blocks, continuation lines joined, comments removed."""
    for match in FENCE.finditer(text):
        if match["lang"] not in ("bash", "sh", "console"):
            continue
        for line in match["code"].replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                try:
                    yield shlex.split(line)
                except ValueError:
                    yield line.split()


def _script_source(script: str) -> str | None:
    """The text of a script and of the ``agents.cli`` module it wraps, where its flags are defined."""
    name = script.removeprefix("rims-")
    path = REPO / script if script.endswith(".py") else REPO / "scripts" / f"{name}.py"
    if not path.is_file():
        return None
    text = path.read_text()
    for module in re.findall(r"from (agents\.cli\.\w+) import", text):
        text += (REPO / (module.replace(".", "/") + ".py")).read_text()
    return text


def _compose(overrides: list[str]) -> str | None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from agents.experiment.config.schema import composition_error

    GlobalHydra.instance().clear()  # a Hydra left initialized by the caller would refuse the next one
    try:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            compose(config_name="train", overrides=overrides)
    except Exception as error:  # Hydra's and OmegaConf's errors: report the key
        return composition_error(error)
    return None


def check_commands(path: Path, text: str, keys: set[str]) -> list[str]:
    found = []
    where = path.relative_to(REPO)
    for argv in _commands(text):
        scripts_run = [i for i, a in enumerate(argv) if re.fullmatch(r"scripts/\w+\.py", a) or a in CONSOLE_SCRIPTS]
        if not scripts_run:
            continue
        start = scripts_run[0]
        script, args = argv[start], argv[start + 1 :]
        source = _script_source(script)
        if source is None:
            found.append(f"{where}: {script} does not exist")
            continue
        if script in ("scripts/train.py", "rims-train"):
            overrides = [a for a in args if not a.startswith("-") and "=" in a]
            for override in overrides:
                reason = check_option(override, keys)
                if reason:
                    found.append(f"{where}: `{' '.join(argv)}`: {reason}")
            task = [
                o.split("=", 1)[0] + "=" + o.split("=", 1)[1].split(",")[0] if not o.split("=", 1)[1].startswith("[")
                else o
                for o in overrides
                if not o.startswith(("hydra.", "hydra/", "resume=")) and "<" not in o
            ]  # fmt: skip
            reason = _compose(task) if task else None
            if reason:
                found.append(f"{where}: `{' '.join(argv)}`: {reason}")
            continue
        for flag in (a.split("=")[0] for a in args if re.fullmatch(r"--[\w-]+(=.*)?", a)):
            if f'"{flag}"' not in source and flag != "--help":
                found.append(f"{where}: `{' '.join(argv)}`: {script} has no option {flag}")
    return found


def _importable(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def check_names(path: Path, text: str) -> list[str]:
    found = []
    for span in _code_spans(text):
        span = span.strip().removesuffix("()")
        if re.fullmatch(r"(?:rims|agents|envs)(?:\.[A-Za-z_]\w*)+", span) and not _importable(span):
            found.append(f"{path.relative_to(REPO)}: {span} cannot be imported")
    return found


def problems() -> list[str]:
    """Everything stale or wrong in the documentation files, one line each (empty: all true)."""
    keys = _schema_keys()
    found = []
    for path in doc_files():
        text = path.read_text()
        where = path.relative_to(REPO)
        try:
            if expected(text) != text:
                found.append(f"{where}: generated blocks are stale (run `python scripts/docs.py`)")
        except KeyError as error:
            found.append(f"{where}: {error.args[0]}")
        found += check_paths(path, text)
        for span in _code_spans(text):
            for token in span.split():
                reason = check_option(token, keys)
                if reason:
                    found.append(f"{where}: `{span}`: {reason}")
        found += check_commands(path, text, keys)
        found += check_names(path, text)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is stale or wrong")
    args = parser.parse_args(argv)
    if not args.check:
        for path in doc_files():
            text = path.read_text()
            new = expected(text)
            if new != text:
                path.write_text(new)
                print(f"{path.relative_to(REPO)}: rewrote its generated blocks")
    found = problems()
    print("\n".join(found) if found else "docs: every generated block, path, option, flag and name checks out")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
