"""The copying task of the RIMs paper (Goyal et al. 2019, *Recurrent Independent Mechanisms*, Table 1).

A sequence shows :data:`COPY_LENGTH` symbols drawn uniformly from ``1 .. SYMBOLS``, then a dormant
phase of ``blank_length`` steps (``blank_length - 1`` blanks and the delimiter), then
:data:`COPY_LENGTH` blanks during which the model must output the symbols in order; the target is
the blank everywhere else. Length ``blank_length + 2 * COPY_LENGTH``. This is the layout of the
authors' generator (``event_based/copying_data.py`` of github.com/anirudh9119/RIMs: symbols 1-8,
blank 0, delimiter 9; the paper trains with a dormant phase of 50 and tests with 200), and the
paper's cross entropy is the mean over every position of the sequence, blanks included.

Deterministic from a seed and torch only: the same ``torch.Generator`` state gives the same batches
on any machine.
"""

from __future__ import annotations

import torch
from torch import Tensor

SYMBOLS = 8  # symbols 1 .. 8 to copy
BLANK = 0
DELIMITER = 9
VOCAB = 10  # blank, 8 symbols, delimiter
COPY_LENGTH = 10


def sequence_length(blank_length: int) -> int:
    """Length of a sequence with a dormant phase of ``blank_length`` steps."""
    return blank_length + 2 * COPY_LENGTH


def copying_batch(batch_size: int, blank_length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One batch of copying sequences, time-major.

    :param batch_size: sequences ``N``.
    :param blank_length: the dormant phase ``T`` (>= 1): ``T - 1`` blanks, then the delimiter.
    :param generator: the source of the symbols (CPU generator).
    :returns: ``(inputs, targets)``, each ``(T + 20, N)`` int64 in ``0 .. VOCAB - 1``; the last
        :data:`COPY_LENGTH` targets are the first :data:`COPY_LENGTH` inputs, all other targets blank.
    :raises ValueError: ``batch_size < 1`` or ``blank_length < 1``.
    """
    if batch_size < 1 or blank_length < 1:
        raise ValueError(f"batch_size and blank_length must be >= 1, got {batch_size} and {blank_length}")
    symbols = torch.randint(1, SYMBOLS + 1, (COPY_LENGTH, batch_size), generator=generator)  # (10, N)
    length = sequence_length(blank_length)
    inputs = torch.full((length, batch_size), BLANK, dtype=torch.int64)  # (T + 20, N)
    inputs[:COPY_LENGTH] = symbols
    inputs[COPY_LENGTH + blank_length - 1] = DELIMITER
    targets = torch.full((length, batch_size), BLANK, dtype=torch.int64)
    targets[-COPY_LENGTH:] = symbols
    return inputs, targets


def copying_dataset(size: int, blank_length: int, seed: int) -> tuple[Tensor, Tensor]:
    """A fixed set of ``size`` sequences (a test set), drawn from ``torch.Generator().manual_seed(seed)``.

    :returns: ``(inputs, targets)``, each ``(T + 20, size)`` int64.
    """
    return copying_batch(size, blank_length, torch.Generator().manual_seed(seed))
