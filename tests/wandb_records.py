"""Read the records of a W&B offline run file (``run-<id>.wandb``) for tests.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB
blocks of chunks ``crc32 (4) | length (2) | type (1) | data``; types 1 full, 2 first,
3 middle, 4 last. Each reassembled record is a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7


def records(path: Path) -> Iterator[Any]:
    """Every protobuf record of the run file, in order."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 2):
            parts = chunk
        elif kind in (3, 4):
            parts += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            yield record


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def logged(path: Path) -> dict[str, dict[str, Any]]:
    """``{"history": {key: last value}, "summary": {...}, "config": {...}}`` of a run file."""
    found: dict[str, dict[str, Any]] = {"history": {}, "summary": {}, "config": {}}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            found["history"].update({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            found["summary"].update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "run":
            found["config"].update({_key(i): json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            found["config"].update({_key(i): json.loads(i.value_json) for i in record.config.update})
    return found


def record_kinds(path: Path) -> dict[str, int]:
    """How many records of each type the run file holds (for failure messages)."""
    kinds: dict[str, int] = {}
    for record in records(path):
        kind = str(record.WhichOneof("record_type"))
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def run_file(run_dir: Path, timeout: float = 60.0) -> Path:
    """The single offline run file under ``run_dir/wandb``, once W&B has written its exit record.

    ``run.finish()`` can return before W&B's service process has written the file (seen under
    load: an empty file right after training), so this waits for the record that ends a run.
    """
    (path,) = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    deadline = time.monotonic() + timeout
    while "exit" not in _kinds_or_empty(path) and time.monotonic() < deadline:
        time.sleep(0.2)
    return path


def _kinds_or_empty(path: Path) -> dict[str, int]:
    """:func:`record_kinds`, or nothing while the file is still too short to parse."""
    try:
        return record_kinds(path)
    except (ValueError, struct.error, DecodeError):
        return {}
