"""Train and test ``nn.LSTM`` and ``RIMLSTM`` on the RIMs paper's copying task (:mod:`envs.copying`): one run.

The run lifecycle of the copying table (its summaries, verdicts and per-seed record are the analysis layer's:
:mod:`agents.analysis.reproduce.copying`).

Each model reads one-hot-like embeddings of the tokens and predicts a token per step (a linear head
on the core's output); the loss is the cross entropy over every position (the paper's CE). Training
uses blank length 50, testing 50 and 200, with the same step budget, batch, optimizer (Adam, lr 1e-3)
and gradient clipping (1.0) for every model, as the authors' ``train_copying.py``. A run keeps a
checkpoint in its folder and continues from it when started again; a finished run returns its result.

Models: ``lstm`` (``torch.nn.LSTM``), ``rim`` (``rims.RIMLSTM`` with the library's paper defaults:
1 input head, key 64, value 400; 4 communication heads, key/value 32; ``num_units`` units, ``k``
active) and ``rim_residual`` (the same with ``communication_update="residual"``, the paper's exact
update; the keyword is passed only for this model, so ``rim`` runs on any version of the library).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from agents.experiment.atomic import atomic_path, atomic_write_text
from envs.copying import COPY_LENGTH, SYMBOLS, VOCAB, copying_batch, copying_dataset, sequence_length
from rims import RIMLSTM

log = logging.getLogger(__name__)

MODELS = ("lstm", "rim", "rim_residual")
METRICS = ("ce", "copy_ce", "accuracy", "sequence_accuracy")  # what :func:`evaluate` measures
TEST_SEED = 20191023  # the test sets are the same for every model and seed
RESULT = "result.json"
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class CopySettings:
    """One copying experiment's settings.

    The defaults are the paper's except the width: at the paper's 600 a training step costs ~0.9 CPU-s
    for either core on our 2-vCPU machine (one thread), ~75 CPU-min per 5,000-step run; at 120 (6 units
    of 20) a step costs ~0.06 s (LSTM) and ~0.16 s (RIM) with one torch thread, so three seeds of
    5,000 steps fit in about 15 (LSTM) and 40 (RIM) CPU-minutes. ``--hidden 600 --embed 600
    --dropout 0.5`` is the authors' setting.

    :param steps: training steps (batches).
    :param hidden_size: total width of every core (the paper: 600 = 6 units x 100).
    :param embed_size: token embedding width (the authors' code: the hidden size).
    :param num_units: RIM units; ``k``: active units per step.
    :param batch_size: sequences per step.
    :param learning_rate: Adam's learning rate; ``clip``: gradient-norm clipping.
    :param dropout: dropout on the embeddings and the core's outputs (the authors' code: 0.5).
    :param train_blank: dormant phase of the training sequences; ``test_blanks``: of the test sets.
    :param test_size: sequences per test set; ``curve_size``: of the periodic evaluations.
    :param eval_every: steps between periodic evaluations (and checkpoints).
    """

    steps: int = 5000
    hidden_size: int = 120
    embed_size: int = 120
    num_units: int = 6
    k: int = 4
    batch_size: int = 64
    learning_rate: float = 1e-3
    clip: float = 1.0
    dropout: float = 0.0
    train_blank: int = 50
    test_blanks: tuple[int, ...] = (50, 200)
    test_size: int = 640
    curve_size: int = 128
    eval_every: int = 250


def make_core(name: str, settings: CopySettings) -> nn.Module:
    """The recurrent core ``name`` (a key of :data:`MODELS`) with ``nn.LSTM``'s calling convention.

    :raises ValueError: an unknown name, or ``rim_residual`` with a library that lacks ``communication_update``.
    """
    size, hidden = settings.embed_size, settings.hidden_size
    if name == "lstm":
        return nn.LSTM(size, hidden)
    if name not in MODELS:
        raise ValueError(f"model must be one of {list(MODELS)}, got {name!r}")
    extra = {"communication_update": "residual"} if name == "rim_residual" else {}
    try:
        return RIMLSTM(size, hidden, settings.num_units, settings.k, **extra)
    except TypeError as error:
        raise ValueError(f"{name} needs RIMLSTM(communication_update=...), which this rims lacks: {error}") from error


class CopyModel(nn.Module):
    """Token embedding -> recurrent core -> linear head, one prediction per step."""

    def __init__(self, name: str, settings: CopySettings) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, settings.embed_size)
        self.dropout = nn.Dropout(settings.dropout)
        self.core = make_core(name, settings)
        self.head = nn.Linear(settings.hidden_size, VOCAB)

    def forward(self, tokens: Tensor) -> Tensor:
        """:param tokens: ``(L, N)`` int64. :returns: ``(L, N, VOCAB)`` logits."""
        x = self.dropout(self.embed(tokens))  # (L, N, E)
        out, _ = self.core(x)  # (L, N, H)
        return self.head(self.dropout(out))


@torch.no_grad()
def evaluate(model: CopyModel, inputs: Tensor, targets: Tensor, batch_size: int = 128) -> dict[str, float]:
    """Test metrics on a fixed set.

    :param inputs: ``(L, N)``; ``targets``: ``(L, N)``.
    :returns: ``ce`` (mean over every position: the paper's number), ``copy_ce`` (over the copied
        positions only), ``accuracy`` (copied symbols predicted right) and ``sequence_accuracy``
        (sequences copied without an error).
    """
    model.eval()
    sums = {"ce": 0.0, "copy_ce": 0.0, "accuracy": 0.0, "sequence_accuracy": 0.0}
    for start in range(0, inputs.shape[1], batch_size):
        x, y = inputs[:, start : start + batch_size], targets[:, start : start + batch_size]
        logits = model(x)  # (L, n, VOCAB)
        ce = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1), reduction="none").view(y.shape)
        right = logits[-COPY_LENGTH:].argmax(-1) == y[-COPY_LENGTH:]  # (10, n)
        sums["ce"] += float(ce.mean(0).sum())
        sums["copy_ce"] += float(ce[-COPY_LENGTH:].mean(0).sum())
        sums["accuracy"] += float(right.float().mean(0).sum())
        sums["sequence_accuracy"] += float(right.all(0).float().sum())
    model.train()
    return {key: value / inputs.shape[1] for key, value in sums.items()}


def chance_ce(blank_length: int) -> float:
    """CE over all positions of a model that predicts every blank and guesses the symbols: 10 ln 8 / (T + 20)."""
    return COPY_LENGTH * math.log(SYMBOLS) / sequence_length(blank_length)


def _test_sets(settings: CopySettings, size: int) -> dict[int, tuple[Tensor, Tensor]]:
    """The first ``size`` sequences of each fixed test set (one seed per blank length, whatever the run)."""
    out = {}
    for blank in settings.test_blanks:
        inputs, targets = copying_dataset(settings.test_size, blank, TEST_SEED + blank)
        out[blank] = inputs[:, :size], targets[:, :size]
    return out


def _settings_dict(settings: CopySettings) -> dict[str, Any]:
    """JSON-able settings (tuples as lists)."""
    return json.loads(json.dumps(asdict(settings)))


def _check_same(saved: dict[str, Any], settings: CopySettings, where: Path) -> None:
    """Refuse to continue a run folder of other settings."""
    given = _settings_dict(settings)
    diff = [k for k in given if saved.get(k) != given[k]]
    if diff:
        key = diff[0]
        raise ValueError(
            f"{where} holds a run with {key}={saved.get(key)!r}, this call asks for {key}={given[key]!r}: "
            "use the same settings to continue it, or another --root"
        )


def train_run(name: str, seed: int, settings: CopySettings, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train one model with one seed and test it; continue from the folder's checkpoint, if any.

    :param run_dir: the run folder (``checkpoint.pt``, ``result.json``).
    :returns: the result: ``model``, ``seed``, ``settings``, ``final`` (``{blank: metrics}``),
        ``curve`` (periodic evaluations), ``parameters``, ``seconds_per_step`` (wall) and
        ``cpu_seconds_per_step`` (this process's CPU time).
    :raises ValueError: an unknown model, or a run folder of other settings.
    """
    if (run_dir / RESULT).is_file():
        result = json.loads((run_dir / RESULT).read_text())
        _check_same(result["settings"], settings, run_dir)
        return result
    torch.manual_seed(seed)
    model = CopyModel(name, settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, Any] = {"step": 0, "curve": [], "seconds": 0.0, "cpu_seconds": 0.0, "window": []}
    if (run_dir / CHECKPOINT).is_file():
        saved = torch.load(run_dir / CHECKPOINT, weights_only=False)
        _check_same(saved["settings"], settings, run_dir)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        log.info("%s: continuing from step %d", run_dir, state["step"])
    curve_sets = _test_sets(settings, settings.curve_size)
    model.train()
    with tqdm(total=settings.steps, initial=state["step"], desc=f"{name} s{seed}", disable=not progress) as bar:
        while state["step"] < settings.steps:
            wall, cpu = time.perf_counter(), time.process_time()
            inputs, targets = copying_batch(settings.batch_size, settings.train_blank, generator)
            loss = nn.functional.cross_entropy(model(inputs).reshape(-1, VOCAB), targets.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            optimizer.step()
            state["seconds"] += time.perf_counter() - wall
            state["cpu_seconds"] += time.process_time() - cpu
            state["step"] += 1
            state["window"].append(float(loss.detach()))
            bar.update(1)
            if state["step"] % settings.eval_every == 0 or state["step"] == settings.steps:
                row = {"step": state["step"], "train_ce": sum(state["window"]) / len(state["window"])}
                for blank, (x, y) in curve_sets.items():
                    row.update({f"{key}_{blank}": v for key, v in evaluate(model, x, y).items()})
                state["curve"].append(row)
                state["window"] = []
                bar.set_postfix(train_ce=f"{row['train_ce']:.3f}")
                _save_checkpoint(run_dir, model, optimizer, generator, state, settings)
    final = {str(blank): evaluate(model, x, y) for blank, (x, y) in _test_sets(settings, settings.test_size).items()}
    steps = max(state["step"], 1)
    result = {
        "model": name,
        "seed": seed,
        "settings": _settings_dict(settings),
        "final": final,
        "curve": state["curve"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds_per_step": state["seconds"] / steps,
        "cpu_seconds_per_step": state["cpu_seconds"] / steps,
    }
    atomic_write_text(run_dir / RESULT, json.dumps(result, indent=2) + "\n")
    return result


def _save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: dict[str, Any],
    settings: CopySettings,
) -> None:
    """Write ``checkpoint.pt`` atomically: weights, optimizer, both RNG states, progress and settings."""
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "state": state,
        "settings": _settings_dict(settings),
    }
    with atomic_path(run_dir / CHECKPOINT) as tmp:
        torch.save(payload, tmp)
