"""A small pool of scratch tensors reused between calls of the fused RIM sequence.

The fused training path (:mod:`rims.fast_paths.fused`) keeps tens of megabytes of per-step values
between forward and backward. On CPU, allocations that large come straight from the
operating system and every call pays for zero-filling fresh pages (for the seed configuration
this was ~20% of a forward+backward). The pool hands such tensors back out once nothing refers
to them any more. It holds at most :data:`MAX_FREE` idle tensors per shape and
:data:`MAX_SHAPES` shapes, least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import Tensor

MAX_FREE = 2
MAX_SHAPES = 48

_Key = tuple[tuple[int, ...], torch.dtype, torch.device]
_free: OrderedDict[_Key, list[Tensor]] = OrderedDict()
_lock = threading.RLock()  # shared by threads; re-entrant: a garbage-collected graph may give back inside take/give


def take(shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised tensor of ``shape`` with ``like``'s dtype and device."""
    key = (shape, like.dtype, like.device)
    with _lock:
        idle = _free.get(key)
        if idle:
            _free.move_to_end(key)
            return idle.pop()
    return like.new_empty(shape)


def give(tensors: list[Tensor]) -> None:
    """Return tensors obtained from :func:`take` that nothing else refers to any more."""
    with _lock:
        for tensor in tensors:
            key = (tuple(tensor.shape), tensor.dtype, tensor.device)
            idle = _free.setdefault(key, [])
            _free.move_to_end(key)
            if len(idle) < MAX_FREE:
                idle.append(tensor)
        while len(_free) > MAX_SHAPES:
            _free.popitem(last=False)


def clear() -> None:
    """Drop every idle tensor."""
    with _lock:
        _free.clear()
