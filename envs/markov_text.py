"""A synthetic text source for language-model checks: a sparse Markov chain over tokens.

Shipped as code, not data: the corpus is generated from a seed, needs no download, and its
best achievable cross-entropy is known (the chain's own conditional entropy), so a model's
perplexity can be read against a floor instead of against nothing.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class MarkovText:
    """Markov chain of order ``order``: each context (the last ``order`` tokens) allows
    ``branching`` next tokens.

    :param vocab: number of token ids ``0 .. vocab - 1``.
    :param branching: next tokens allowed per context (their probabilities are a Dirichlet(1) draw).
    :param order: how many previous tokens the next one depends on (1 or 2).
    :param seed: seed of the chain's transition table.
    """

    def __init__(self, vocab: int = 32, branching: int = 4, order: int = 2, seed: int = 0) -> None:
        if vocab < 2 or not 1 <= branching <= vocab or order not in (1, 2):
            raise ValueError(
                "need vocab >= 2, 1 <= branching <= vocab and order 1 or 2, "
                f"got vocab={vocab}, branching={branching}, order={order}"
            )
        self.vocab, self.branching, self.order = vocab, branching, order
        gen = torch.Generator().manual_seed(seed)
        contexts = vocab**order
        # (V*V, B) allowed next tokens and their probabilities
        self.next_tokens = torch.stack([torch.randperm(vocab, generator=gen)[:branching] for _ in range(contexts)])
        weights = -torch.log(torch.rand(contexts, branching, generator=gen, dtype=torch.float64))  # Exp(1)
        self.probs = weights / weights.sum(-1, keepdim=True)

    def sample(self, num_tokens: int, seed: int = 0) -> Tensor:
        """A corpus of ``num_tokens`` token ids, ``(num_tokens,)`` int64."""
        gen = torch.Generator().manual_seed(seed)
        draws = torch.rand(num_tokens, generator=gen, dtype=torch.float64).tolist()
        cumulative = self.probs.cumsum(-1).tolist()
        next_tokens = self.next_tokens.tolist()
        a, b = 0, 1
        out = []
        for u in draws:
            ctx = self._context(a, b)
            row = cumulative[ctx]
            j = next(i for i, c in enumerate(row) if u <= c or i == len(row) - 1)
            a, b = b, next_tokens[ctx][j]
            out.append(b)
        return torch.tensor(out, dtype=torch.int64)

    def _context(self, before_last: int, last: int) -> int:
        """Row of the transition table for the last two tokens."""
        return before_last * self.vocab + last if self.order == 2 else last

    def cross_entropy(self, tokens: Tensor) -> float:
        """Mean ``-log p(token | context)`` under the true chain (nats), from the third token on:
        the cross-entropy an ideal model reaches on ``tokens``."""
        ids = tokens.tolist()
        table = {}
        total = 0.0
        for t in range(2, len(ids)):
            ctx = self._context(ids[t - 2], ids[t - 1])
            if ctx not in table:
                table[ctx] = dict(zip(self.next_tokens[ctx].tolist(), self.probs[ctx].tolist(), strict=True))
            total -= math.log(table[ctx][ids[t]])
        return total / max(len(ids) - 2, 1)
