"""A stateful word-level language model, written the way PyTorch's word-language-model example is,
run with ``nn.LSTM``, ``nn.GRU``, ``RIMLSTM`` and ``RIMGRU`` as its recurrent layer.

The state is carried, detached (``repackage_hidden``), from one 35-token window to the next over
the whole corpus, which is what exposes an unbounded recurrent state: with the paper's residual
communication update a RIM's ``h`` can grow window after window. The script prints, per model,
train/validation perplexity per epoch, the largest ``|h|`` seen over the carried stream, and
the ideal perplexity of the synthetic corpus (:class:`envs.markov_text.MarkovText`).

Usage::

    python scripts/stateful_lm.py                                   # 4 classes, SGD + clipping, 2 epochs
    python scripts/stateful_lm.py --optimizer adamw --lr 0.002 --models rim rim_residual --epochs 1
    python scripts/stateful_lm.py --json out.json                   # also write the numbers
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from envs.markov_text import MarkovText
from rims import RIMGRU, RIMLSTM

Hidden = Tensor | tuple[Tensor, ...]

# name -> (factory(input, hidden, layers, dropout), LSTM-style state)
RNNS: dict[str, tuple[Callable[[int, int, int, float], nn.Module], bool]] = {
    "lstm": (lambda i, h, n, p: nn.LSTM(i, h, n, dropout=p), True),
    "gru": (lambda i, h, n, p: nn.GRU(i, h, n, dropout=p), False),
    "rim": (lambda i, h, n, p: RIMLSTM(i, h, 6, 4, n, dropout=p), True),
    "rim_gru": (lambda i, h, n, p: RIMGRU(i, h, 6, 4, n, dropout=p), False),
    "rim_residual": (lambda i, h, n, p: RIMLSTM(i, h, 6, 4, n, dropout=p, communication_update="residual"), True),
    "rim_gru_residual": (lambda i, h, n, p: RIMGRU(i, h, 6, 4, n, dropout=p, communication_update="residual"), False),
}


class RNNModel(nn.Module):
    """Embedding -> recurrent layer -> linear decoder, dropout on both sides of the recurrent layer.

    :param rnn_type: a key of :data:`RNNS`.
    :param ntoken: vocabulary size.
    :param ninp: embedding width.
    :param nhid: recurrent width (divisible by 6 for the RIM classes; the example uses 200, we use 204).
    :param nlayers: recurrent layers.
    :param dropout: dropout probability.
    """

    def __init__(self, rnn_type: str, ntoken: int, ninp: int, nhid: int, nlayers: int, dropout: float = 0.2) -> None:
        super().__init__()
        make, self.lstm_state = RNNS[rnn_type]
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = make(ninp, nhid, nlayers, dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.nhid, self.nlayers = nhid, nlayers
        self.peak = 0.0

    def forward(self, input: Tensor, hidden: Hidden) -> tuple[Tensor, Hidden]:
        """:param input: ``(L, N)`` token ids. :returns: log-probabilities ``(L, N, ntoken)`` and the state."""
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        self.peak = float(output.detach().abs().max())  # largest |h| of the top layer at any step
        return F.log_softmax(self.decoder(self.drop(output)), dim=-1), hidden

    def init_hidden(self, bsz: int) -> Hidden:
        """Zero state for a batch of ``bsz`` streams, each ``(nlayers, bsz, nhid)``."""
        weight = next(self.parameters())
        zeros = weight.new_zeros(self.nlayers, bsz, self.nhid)
        return (zeros, weight.new_zeros(self.nlayers, bsz, self.nhid)) if self.lstm_state else zeros


def repackage_hidden(h: Hidden) -> Hidden:
    """Detach the state from the graph of the previous window."""
    return h.detach() if isinstance(h, Tensor) else tuple(repackage_hidden(v) for v in h)


def batchify(data: Tensor, bsz: int) -> Tensor:
    """``(T,)`` tokens -> ``(T // bsz, bsz)``: ``bsz`` parallel streams, one per column."""
    nbatch = data.size(0) // bsz
    return data.narrow(0, 0, nbatch * bsz).view(bsz, -1).t().contiguous()


def get_batch(source: Tensor, i: int, bptt: int) -> tuple[Tensor, Tensor]:
    """Window ``i : i + bptt`` of the streams and its next-token targets, ``(L, N)`` each."""
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len]


def max_abs(h: Hidden) -> float:
    """Largest ``|h|`` of the hidden state of every layer (the first tensor of an LSTM-style state)."""
    first = h if isinstance(h, Tensor) else h[0]
    return float(first.detach().abs().max())


@dataclass
class EpochLog:
    """What one training epoch measured."""

    train_loss: float  # mean cross-entropy (nats) over the epoch's windows
    max_h: float  # largest |h| of the epoch: top layer at every step, every layer at window ends
    window_loss: list[float] = field(default_factory=list)  # per window
    window_max_h: list[float] = field(default_factory=list)  # per window, as max_h


def train_epoch(
    model: RNNModel,
    data: Tensor,
    bptt: int,
    clip: float,
    lr: float,
    optimizer: torch.optim.Optimizer | None = None,
    max_windows: int | None = None,
) -> EpochLog:
    """One pass over ``data`` ``(T, N)`` with the state carried across windows.

    Without ``optimizer`` the update is the example's hand-written SGD step
    (``p.data.add_(p.grad, alpha=-lr)``, which needs a gradient on every parameter).
    """
    model.train()
    hidden = model.init_hidden(data.size(1))
    log = EpochLog(train_loss=0.0, max_h=0.0)
    for batch, i in enumerate(range(0, data.size(0) - 1, bptt)):
        if max_windows is not None and batch >= max_windows:
            break
        inputs, targets = get_batch(data, i, bptt)
        hidden = repackage_hidden(hidden)
        model.zero_grad()
        output, hidden = model(inputs, hidden)
        loss = F.nll_loss(output.view(-1, output.size(-1)), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if optimizer is None:
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
        else:
            optimizer.step()
        log.window_loss.append(loss.item())
        log.window_max_h.append(max(model.peak, max_abs(hidden)))
    log.train_loss = sum(log.window_loss) / max(len(log.window_loss), 1)
    log.max_h = max(log.window_max_h, default=0.0)
    return log


@torch.no_grad()
def evaluate(model: RNNModel, data: Tensor, bptt: int) -> float:
    """Mean cross-entropy (nats per token) on ``data`` ``(T, N)``, state carried across windows."""
    model.eval()
    hidden = model.init_hidden(data.size(1))
    total, count = 0.0, 0
    for i in range(0, data.size(0) - 1, bptt):
        inputs, targets = get_batch(data, i, bptt)
        output, hidden = model(inputs, hidden)
        total += F.nll_loss(output.view(-1, output.size(-1)), targets.reshape(-1), reduction="sum").item()
        count += targets.numel()
    return total / max(count, 1)


@dataclass
class RunResult:
    """Per-model results of :func:`run`."""

    model: str
    epochs: list[dict[str, float]]
    max_h: float
    seconds: float
    window_max_h: list[float]


def run(
    models: Iterable[str],
    *,
    tokens: int = 300_000,
    epochs: int = 2,
    batch_size: int = 20,
    bptt: int = 35,
    nhid: int = 204,
    ninp: int = 200,
    nlayers: int = 2,
    dropout: float = 0.2,
    lr: float = 2.0,
    clip: float = 0.25,
    optimizer: str = "sgd",
    seed: int = 0,
    max_windows: int | None = None,
    order: int = 2,
) -> tuple[list[RunResult], float]:
    """Train each model on the same synthetic corpus; returns results and the ideal cross-entropy.

    :param optimizer: ``"sgd"`` (the example's manual update, learning rate ``lr`` divided by 4
        when validation loss stops improving) or ``"adamw"`` (``torch.optim.AdamW(lr=lr)``).
    :param order: Markov order of the synthetic corpus (2: the next token depends on the last two).
    """
    source = MarkovText(order=order, seed=seed)
    train_tokens, valid_tokens = source.sample(tokens, seed=seed + 1), source.sample(tokens // 10, seed=seed + 2)
    train_data, valid_data = batchify(train_tokens, batch_size), batchify(valid_tokens, 10)
    results = []
    for name in models:
        torch.manual_seed(seed)
        model = RNNModel(name, source.vocab, ninp, nhid, nlayers, dropout)
        opt = torch.optim.AdamW(model.parameters(), lr=lr) if optimizer == "adamw" else None
        rate, best, rows, trace = lr, math.inf, [], []
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            log = train_epoch(model, train_data, bptt, clip, rate, opt, max_windows)
            valid = evaluate(model, valid_data, bptt)
            trace += log.window_max_h
            rows.append({"epoch": epoch, "train_loss": log.train_loss, "valid_loss": valid, "max_h": log.max_h})
            if opt is None and not valid < best:
                rate /= 4.0
            best = min(best, valid)
        seconds = time.perf_counter() - start
        results.append(RunResult(name, rows, max(trace, default=0.0), seconds, trace))
    return results, source.cross_entropy(valid_tokens)


def _ppl(loss: float) -> str:
    return f"{math.exp(loss):9.2f}" if math.isfinite(loss) and loss < 50 else "      inf"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["lstm", "gru", "rim", "rim_gru"], choices=sorted(RNNS))
    parser.add_argument("--tokens", type=int, default=300_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    parser.add_argument("--lr", type=float, default=None, help="default 2.0 for sgd, 0.002 for adamw")
    parser.add_argument("--clip", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lr = args.lr if args.lr is not None else (2.0 if args.optimizer == "sgd" else 0.002)
    results, ideal = run(
        args.models, tokens=args.tokens, epochs=args.epochs, optimizer=args.optimizer, lr=lr, clip=args.clip,
        seed=args.seed,
    )  # fmt: skip
    per_epoch = len(results[0].window_max_h) // max(args.epochs, 1) * 35 if results else 0
    print(f"corpus: {args.tokens} tokens, ideal validation perplexity {math.exp(ideal):.2f}; {args.optimizer} lr {lr}")
    print(f"{'model':18s} {'epoch':>5s} {'train ppl':>9s} {'valid ppl':>9s} {'max |h|':>10s}")
    for r in results:
        for row in r.epochs:
            print(
                f"{r.model:18s} {row['epoch']:5d} {_ppl(row['train_loss'])} {_ppl(row['valid_loss'])} "
                f"{row['max_h']:10.3g}"
            )
        first = r.window_max_h[: 10_000 // 35 + 1]  # the first 10,000 carried steps
        print(
            f"{r.model:18s} max |h|: {max(first, default=0.0):.4g} over the first 10,000 carried steps, "
            f"{r.max_h:.4g} over {args.epochs} epochs of {per_epoch} carried steps ({r.seconds:.0f} s)"
        )
    if args.json:
        payload = {"ideal_valid_loss": ideal, "args": vars(args), "lr": lr, "results": [asdict(r) for r in results]}
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=1)


if __name__ == "__main__":
    main()
