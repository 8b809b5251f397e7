"""The ledger of a batch run: one JSON record per finished case, appended durably, read back for resume.

A single-rank run appends to ``OUTDIR/ledger.jsonl``; under ``torchrun`` each rank appends to its own
shard ``OUTDIR/ledger.rank<r>.jsonl`` and rank 0 folds the shards into ``ledger.jsonl`` at the end
(:func:`merge_ledger`). Readers take the merged file and every shard together, so a run killed
before the merge still resumes from everything it recorded. The latest record of a case decides
its state. The record's fields are listed in :func:`pipelines.batch.run.run_batch`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from pipelines.io.writers import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "BATCH_JSON",
    "LEDGER",
    "LedgerWriter",
    "latest_records",
    "ledger_files",
    "ledger_path",
    "merge_ledger",
    "read_jsonl",
    "read_ledger",
    "utc_now",
]

LEDGER = "ledger.jsonl"
"""The merged ledger of an output folder (and the only one of a single-rank run)."""
BATCH_JSON = "batch.json"
"""The file naming the bundle (name, version, model sha256) an output folder belongs to."""
SHARD_PREFIX = "ledger.rank"
"""Rank ``r`` of a multi-rank run appends to ``ledger.rank<r>.jsonl``."""


def utc_now() -> str:
    """The current time as ISO 8601 UTC with microseconds: the ``started``/``finished`` of records."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def ledger_path(output: Path, rank: int, world_size: int) -> Path:
    """The file rank ``rank`` appends to: ``ledger.jsonl`` alone, else its ``ledger.rank<r>.jsonl`` shard."""
    return output / (LEDGER if world_size == 1 else f"{SHARD_PREFIX}{rank}.jsonl")


def ledger_files(output: Path) -> list[Path]:
    """The merged ledger (when present) and every rank shard, shards in rank order."""

    def rank_of(path: Path) -> int:
        digits = path.name[len(SHARD_PREFIX) : -len(".jsonl")]
        return int(digits) if digits.isdigit() else sys.maxsize

    shards = sorted(output.glob(f"{SHARD_PREFIX}*.jsonl"), key=rank_of)
    merged = output / LEDGER
    return ([merged] if merged.is_file() else []) + shards


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The ledger records of one file, in file order; torn or foreign lines are skipped with a warning."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # Only a run killed in the middle of a write leaves a torn line; that case is not done.
                logger.warning("%s: line %d is not a complete JSON record; ignored", path, number)
                continue
            if isinstance(record, dict) and "case_id" in record and "status" in record:
                yield record
            else:
                logger.warning("%s: line %d is not a ledger record; ignored", path, number)


def read_ledger(output: str | Path) -> list[dict[str, Any]]:
    """Every ledger record of an output folder, merged ledger and rank shards, in time order.

    Records that appear twice (a shard already merged) are kept once.

    Args:
        output: the batch output folder.

    Returns:
        The records (dicts, see :func:`pipelines.batch.run.run_batch`), ordered by their
        ``finished`` time (ISO UTC).
    """
    seen: set[str] = set()
    records = []
    for path in ledger_files(Path(output)):
        for record in read_jsonl(path):
            key = str(record.get("record_id") or json.dumps(record, sort_keys=True))
            if key not in seen:
                seen.add(key)
                records.append(record)
    records.sort(key=lambda r: (str(r.get("finished", "")), str(r.get("started", ""))))
    return records


def latest_records(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The latest record of each case (records in time order, as :func:`read_ledger` returns them)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        latest[str(record["case_id"])] = record
    return latest


def merge_ledger(output: str | Path) -> Path:
    """Fold the rank shards into ``ledger.jsonl`` (all records, time order) and remove the shards.

    Written to a temporary file, fsynced and renamed, so ``ledger.jsonl`` is always whole; a shard is
    removed only after the merged file holding its records is in place.

    Returns:
        The path of ``ledger.jsonl``.
    """
    output = Path(output)
    target = output / LEDGER
    shards = [p for p in ledger_files(output) if p != target]
    if not shards:
        return target
    records = read_ledger(output)
    with atomic_path(target) as temporary, temporary.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    for shard in shards:
        shard.unlink(missing_ok=True)
    logger.info("merged %d ledger shard(s) into %s (%d records)", len(shards), target, len(records))
    return target


class LedgerWriter:
    """Appends one line per record and makes it durable (flush + fsync) before returning.

    Args:
        path: the ledger file or rank shard (created with its folder when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: TextIO = path.open("a+", encoding="utf-8")
        # A run killed during a write can leave a line without its newline; start on a fresh line.
        self._handle.seek(0, os.SEEK_END)
        if self._handle.tell() > 0:
            self._handle.seek(self._handle.tell() - 1)
            last = self._handle.read(1)
            self._handle.seek(0, os.SEEK_END)
            if last != "\n":
                self._handle.write("\n")

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` as one JSON line and fsync it: once this returns, the record survives a kill."""
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
