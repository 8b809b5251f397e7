"""Batch runs over a manifest: overlap of stages, a resumable ledger, sharding over ranks, a report.

A batch run sends every case of one manifest split through the same :class:`~pipelines.segment.Segmenter`
as ``medseg segment`` and writes ``OUTDIR/<case_id>/``. Around that it keeps what a study needs to
stop, resume and audit a run of hundreds of cases:

* ``OUTDIR/ledger.jsonl``: one JSON record per finished case (ok or failed), appended, flushed and
  fsynced as each case ends. A case is done only when its record says so. Under ``torchrun`` each
  rank appends to ``OUTDIR/ledger.rank<r>.jsonl`` and rank 0 merges the shards into ``ledger.jsonl``
  at the end; the merged file keeps every record in time order and the latest record of a case
  decides its state.
* ``OUTDIR/batch.json``: the bundle (name, version, model sha256) the folder belongs to. A run of a
  different bundle into the same folder is refused.
* ``OUTDIR/logs/batch-<UTC time>-rank<r>.log``: the log of each run and rank, with tracebacks.
* ``OUTDIR/report.csv`` and ``OUTDIR/report.html``: per-structure volumes of every case, and a
  self-contained page (summary, provenance, failures, previews embedded as data URIs).

Three threads per rank share the work: one reads, hashes and preprocesses the next cases, the
calling thread runs the network, one writes outputs and ledger records. They talk through queues
of two items, so memory stays flat however long the run, and nothing per case is kept in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import operator
import os
import platform
import queue
import shutil
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pipelines import __version__
from pipelines.io.hashing import input_sha256, sha256_file

if TYPE_CHECKING:
    import numpy as np

    from pipelines.data.manifests import Case, Manifest

# The command line builds this module's parser on every start, so heavy imports (torch, MONAI,
# nibabel...) wait inside the functions that need them.

logger = logging.getLogger(__name__)

__all__ = [
    "BATCH_SPLITS",
    "BatchOptions",
    "BatchSummary",
    "add_batch_parser",
    "latest_records",
    "merge_ledger",
    "read_ledger",
    "run_batch",
]

BATCH_SPLITS = ("test", "all", "training", "validation")
"""Manifest splits a batch run can take; ``test`` is the default."""

LEDGER = "ledger.jsonl"
BATCH_JSON = "batch.json"
LOG_DIR = "logs"
DISTRIBUTED_TIMEOUT = timedelta(hours=24)
"""Process-group timeout the CLI sets under torchrun: at the end of a run of possibly many hours
the ranks wait at a barrier for the slowest one, far longer than torch's default of minutes."""

_SHARD_PREFIX = "ledger.rank"
_DONE = object()  # end-of-stream marker on the queues
_POLL_S = 0.5
_ERROR_CHARS = 1000  # longest error message kept in a ledger record


# --------------------------------------------------------------------------------------------
# options and summary


@dataclass(frozen=True)
class BatchOptions:
    """What a batch run decides; the model itself comes from the bundle.

    Attributes:
        split: manifest split to run: ``test`` (default), ``training``, ``validation`` or ``all``.
        resume: skip cases whose latest ledger record is ok for the same input (sha256) and model
            (sha256); rerun the rest, except cases that failed on an unchanged input. A case done
            earlier whose input cannot be read now is kept as it is (with a warning), not rerun.
        retry_failed: also rerun cases that failed before (implies ``resume``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        outputs: outputs per case (see :data:`pipelines.segment.OUTPUTS`); None for the defaults.
        queue_size: cases waiting between two stages (bounds memory: about ``3 * queue_size + 3``
            cases are in memory at once).
        progress: show a tqdm progress bar; None shows it when stderr is a terminal (rank 0 only).
        report: write ``report.csv`` and ``report.html`` at the end (rank 0).
    """

    split: str = "test"
    resume: bool = False
    retry_failed: bool = False
    device: str = "auto"
    precision: str = "auto"
    outputs: tuple[str, ...] | None = None
    queue_size: int = 2
    progress: bool | None = None
    report: bool = True

    def __post_init__(self) -> None:
        if self.split not in BATCH_SPLITS:
            raise ValueError(f"split {self.split!r}: expected one of {', '.join(BATCH_SPLITS)}")
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise ValueError(f"queue_size: expected an integer >= 1, got {self.queue_size!r}")
        if self.outputs is not None and isinstance(self.outputs, str):
            raise TypeError(f"outputs: expected a tuple of output names, got the string {self.outputs!r}")

    @property
    def resuming(self) -> bool:
        return self.resume or self.retry_failed


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run did, over all ranks.

    Attributes:
        output: the output folder.
        total: cases in the manifest split.
        ok: cases segmented in this run.
        failed: cases that failed in this run.
        skipped: cases already done (ok ledger record, same input and model), not rerun.
        failed_earlier: cases that failed in an earlier run on the same input and were not retried.
        wall_seconds: time from the start of the run to the end of the slowest rank (s).
        failures: ``(case_id, error)`` of every failed case of this run, then those failed earlier.
        world_size: ranks that shared the run.
        ledger: the ledger file (merged, once the run has ended).
        report_csv: ``report.csv`` when it was written, else None.
        report_html: ``report.html`` when it was written, else None.
    """

    output: Path
    total: int
    ok: int
    failed: int
    skipped: int
    failed_earlier: int
    wall_seconds: float
    failures: tuple[tuple[str, str], ...] = ()
    world_size: int = 1
    ledger: Path | None = None
    report_csv: Path | None = None
    report_html: Path | None = None

    @property
    def processed(self) -> int:
        """Cases run in this run (ok or failed)."""
        return self.ok + self.failed

    @property
    def cases_per_minute(self) -> float:
        """Throughput of this run: cases run per minute of wall time."""
        return 60.0 * self.processed / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def has_failures(self) -> bool:
        """True when a case of the split failed, in this run or (not retried) in an earlier one."""
        return bool(self.failed or self.failed_earlier)


@dataclass
class _Tally:
    """One rank's counts, gathered on every rank at the end."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    failed_earlier: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    earlier: list[tuple[str, str]] = field(default_factory=list)
    wall_seconds: float = 0.0
    device: str = ""
    precision: str = ""


# --------------------------------------------------------------------------------------------
# ledger


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _ledger_files(output: Path) -> list[Path]:
    """The merged ledger (when present) and every rank shard, shards in rank order."""

    def rank_of(path: Path) -> int:
        digits = path.name[len(_SHARD_PREFIX) : -len(".jsonl")]
        return int(digits) if digits.isdigit() else sys.maxsize

    shards = sorted(output.glob(f"{_SHARD_PREFIX}*.jsonl"), key=rank_of)
    merged = output / LEDGER
    return ([merged] if merged.is_file() else []) + shards


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
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
        The records (dicts, see :func:`run_batch`), ordered by their ``finished`` time (ISO UTC).
    """
    seen: set[str] = set()
    records = []
    for path in _ledger_files(Path(output)):
        for record in _read_jsonl(path):
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
    shards = [p for p in _ledger_files(output) if p != target]
    if not shards:
        return target
    from pipelines.io.writers import atomic_path

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


class _LedgerWriter:
    """Appends one line per record and makes it durable (flush + fsync) before returning."""

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
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


# --------------------------------------------------------------------------------------------
# ranks


class _Ranks:
    """The few collective steps a run needs; plain calls when there is one rank."""

    def __init__(self, rank: int, world_size: int) -> None:
        for name, value in (("rank", rank), ("world_size", world_size)):
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"rank {rank} of world_size {world_size}: expected world_size >= 1 and 0 <= rank < world_size"
            )
        self.rank = operator.index(rank)
        self.world_size = operator.index(world_size)
        if self.world_size > 1:
            import torch.distributed as dist

            if not (dist.is_available() and dist.is_initialized()):
                raise ValueError(
                    f"world_size {world_size}: a run over several ranks needs torch.distributed initialised "
                    "(run under torchrun through `medseg batch`, or call init_process_group first)"
                )
            if dist.get_world_size() != self.world_size or dist.get_rank() != self.rank:
                raise ValueError(
                    f"rank {rank} of {world_size} given, but the process group is rank "
                    f"{dist.get_rank()} of {dist.get_world_size()}"
                )

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def agree(self, error: BaseException | None) -> None:
        """Raise on every rank when any rank failed to start, so that none waits for the others."""
        messages = self.gather(None if error is None else str(error))
        if error is not None:
            raise error
        for rank, message in enumerate(messages):
            if message is not None:
                raise ValueError(f"rank {rank} could not start: {message}")


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class _Item:
    """One case travelling through the stages."""

    case: Case
    index: int
    started: str
    sha256: str | None = None
    prepared: Any = None  # pipelines.segment.Prepared
    labels: np.ndarray | None = None
    outputs: tuple[str, ...] = ()
    error: str | None = None
    trace: str | None = None
    skip: str | None = None  # "done" or "failed-earlier"
    previous_error: str | None = None
    hash_seconds: float = 0.0


def run_batch(
    manifest: str | Path | Manifest,
    bundle: str | Path,
    output: str | Path,
    options: BatchOptions | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> BatchSummary:
    """Segment every case of a manifest split into ``output/<case_id>/``, with a ledger and a report.

    Cases are sorted by case id; case ``i`` goes to rank ``i % world_size``. Each finished case adds
    one record to the ledger (``output/ledger.jsonl``, or ``output/ledger.rank<r>.jsonl`` when
    ``world_size > 1``, merged by rank 0 at the end)::

        {"record_id", "case_id", "status": "ok" | "failed", "error": str | None,
         "input": {"path", "sha256"}, "bundle": {"name", "version", "model_sha256"},
         "outputs": {name: {"path" (relative to output), "sha256"}}, "seconds": {stage: s},
         "rank", "world_size", "device", "precision", "started", "finished" (ISO 8601 UTC)}

    A case that raises (unreadable file, bad geometry, out of memory...) is recorded as failed with
    a one-line error naming its input, leaves no case folder, and the run goes on.

    Args:
        manifest: a manifest file or an already loaded :class:`~pipelines.data.manifests.Manifest`.
        bundle: the bundle folder.
        output: the output folder (created when missing).
        options: split, resume, device, precision, outputs... (see :class:`BatchOptions`).
        rank: this process's rank; with ``world_size > 1`` torch.distributed must be initialised.
        world_size: number of ranks sharing the run.

    Returns:
        The :class:`BatchSummary` over all ranks (every rank returns the same counts).

    Raises:
        FileNotFoundError: manifest or bundle (or its weights) missing.
        ValueError: bad manifest (:class:`~pipelines.data.manifests.ManifestError`), empty split, an
            output folder with a ledger and no ``resume``, or holding another bundle's run.
    """
    from pipelines.data.manifests import SPLITS, Manifest, load_manifest
    from pipelines.segment import Segmenter, SegmentOptions

    options = options or BatchOptions()
    ranks = _Ranks(rank, world_size)
    output = Path(output).expanduser().absolute()
    clock = time.perf_counter()
    started = _now()

    error: BaseException | None = None
    cases: tuple[Case, ...] = ()
    segmenter: Segmenter | None = None
    try:
        loaded = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
        cases = tuple(sorted(loaded.split(options.split), key=lambda c: c.case_id))
        if not cases:
            counts = ", ".join(f"{s} {len(loaded.split(s))}" for s in SPLITS)
            raise ValueError(
                f"{loaded.path}: split {options.split!r} has no cases (cases per split: {counts}); "
                "choose another with --split"
            )
        segmenter = Segmenter(
            bundle, SegmentOptions(device=options.device, precision=options.precision, outputs=options.outputs)
        )
        identity = _bundle_identity(segmenter)
        _check_output_folder(output, identity, options)
    except Exception as err:
        error = err
    ranks.agree(error)  # raises on every rank when one could not start
    if segmenter is None:
        raise RuntimeError("batch: set-up ended without a segmenter")  # unreachable after agree()

    if ranks.rank == 0:
        _write_batch_json(output, identity, loaded, options, ranks.world_size)
    state = latest_records(read_ledger(output)) if options.resuming else {}
    mine = [(index, case) for index, case in enumerate(cases) if index % ranks.world_size == ranks.rank]
    ledger_path = output / (LEDGER if ranks.world_size == 1 else f"{_SHARD_PREFIX}{ranks.rank}.jsonl")

    with _run_log(output, ranks.rank) as (log_path, log_trace):
        logger.info(
            "batch: %d case(s) of split %r from %s, %d on rank %d of %d; bundle %s %s on %s (%s); log %s",
            len(cases), options.split, loaded.path, len(mine), ranks.rank, ranks.world_size,
            identity["name"], identity["version"], segmenter.device, segmenter.precision, log_path,
        )  # fmt: skip
        pipeline = _Pipeline(segmenter, output, identity, options, ranks, ledger_path, state, log_trace)
        tally = pipeline.run(mine)
        tally.wall_seconds = time.perf_counter() - clock
        tally.device, tally.precision = str(segmenter.device), segmenter.precision
        tallies = ranks.gather(tally)  # also the barrier: every rank's ledger shard is complete
        summary = _combine(tallies, output, len(cases), ranks.world_size)
        if ranks.rank == 0:
            merge_ledger(output)
            summary = _finish(summary, output, options, tallies, started)
        logger.info(
            "batch: %d ok, %d failed, %d skipped, %d failed earlier, in %.1f s (%.1f cases/min)",
            summary.ok, summary.failed, summary.skipped, summary.failed_earlier, summary.wall_seconds,
            summary.cases_per_minute,
        )  # fmt: skip
    return summary


def _combine(tallies: Sequence[_Tally], output: Path, total: int, world_size: int) -> BatchSummary:
    return BatchSummary(
        output=output,
        total=total,
        ok=sum(t.ok for t in tallies),
        failed=sum(t.failed for t in tallies),
        skipped=sum(t.skipped for t in tallies),
        failed_earlier=sum(t.failed_earlier for t in tallies),
        wall_seconds=max(t.wall_seconds for t in tallies),
        failures=tuple(sorted(f for t in tallies for f in t.failures))
        + tuple(sorted(f for t in tallies for f in t.earlier)),
        world_size=world_size,
        ledger=output / LEDGER,
    )


def _finish(
    summary: BatchSummary, output: Path, options: BatchOptions, tallies: Sequence[_Tally], started: str
) -> BatchSummary:
    if not options.report:
        return summary
    run = {
        "started": started,
        "finished": _now(),
        "split": options.split,
        "world_size": summary.world_size,
        "devices": sorted({t.device for t in tallies}),
        "precision": sorted({t.precision for t in tallies}),
        "total": summary.total,
        "ok": summary.ok,
        "failed": summary.failed,
        "skipped": summary.skipped,
        "failed_earlier": summary.failed_earlier,
        "wall_seconds": round(summary.wall_seconds, 3),
        "cases_per_minute": round(summary.cases_per_minute, 3),
    }
    from pipelines.batch.report import write_report

    csv_path, html_path = write_report(output, run=run)
    return replace(summary, report_csv=csv_path, report_html=html_path)


def _bundle_identity(segmenter: Any) -> dict[str, Any]:
    return {
        "name": segmenter.bundle.name,
        "version": segmenter.bundle.version,
        "model_sha256": segmenter.weights_sha256,
    }


def _describe(identity: dict[str, Any]) -> str:
    sha = identity.get("model_sha256") or "?"
    return f"{identity.get('name')!r} version {identity.get('version')} (model sha256 {sha[:12]})"


def _check_output_folder(output: Path, identity: dict[str, Any], options: BatchOptions) -> None:
    """Refuse a folder that holds another bundle's run, or a ledger when not resuming."""
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"{output}: output exists and is not a folder")
    previous: dict[str, Any] | None = None
    info = output / BATCH_JSON
    if info.is_file():
        try:
            previous = json.loads(info.read_text(encoding="utf-8")).get("bundle")
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"{info}: not a readable batch.json ({err}); use a new output folder") from err
    ledgers = [p for p in _ledger_files(output) if p.stat().st_size > 0] if output.is_dir() else []
    if previous is None and ledgers:
        first = next((r for p in ledgers for r in _read_jsonl(p)), None)
        previous = first.get("bundle") if first else None
    if previous is not None:
        keys = ("name", "version", "model_sha256")
        if any(previous.get(k) != identity[k] for k in keys):
            raise ValueError(
                f"{output}: holds a run of bundle {_describe(previous)}, this run uses bundle "
                f"{_describe(identity)}; write into a new output folder"
            )
    if ledgers and not options.resuming:
        raise ValueError(
            f"{output}: already holds a batch run ({ledgers[0].name}); add --resume to continue it "
            "(--retry-failed to rerun failed cases too) or choose a new output folder"
        )


def _write_batch_json(
    output: Path, identity: dict[str, Any], manifest: Manifest, options: BatchOptions, world_size: int
) -> None:
    from pipelines.io.writers import write_json

    info = output / BATCH_JSON
    created = _now()
    if info.is_file():
        with contextlib.suppress(json.JSONDecodeError, AttributeError, OSError):
            created = json.loads(info.read_text(encoding="utf-8")).get("created", created)
    output.mkdir(parents=True, exist_ok=True)
    write_json(
        {
            "bundle": identity,
            "manifest": str(manifest.path),
            "split": options.split,
            "outputs": list(options.outputs) if options.outputs is not None else None,
            "created": created,
            "last_run": {"started": _now(), "world_size": world_size, "resume": options.resuming},
            "software": _software(),
        },
        info,
    )


def _software() -> dict[str, str]:
    import monai
    import numpy as np
    import torch

    return {
        "medseg": __version__,
        "monai": monai.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


@contextlib.contextmanager
def _run_log(output: Path, rank: int) -> Iterator[tuple[Path, Callable[[str], None]]]:
    """Log the ``pipelines`` loggers to ``output/logs/batch-<UTC time>-rank<r>.log`` for the run.

    The file receives what the ``pipelines`` logger lets through (its level is left as the caller
    set it: INFO under the command line, warnings only with ``-q``). Yields the log file and a
    function that writes text (tracebacks of failed cases) to that file only, whatever the level.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = output / LOG_DIR / f"batch-{stamp}-rank{rank}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    package = logging.getLogger("pipelines")
    package.addHandler(handler)

    def log_trace(text: str) -> None:
        handler.handle(logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "%s", (text,), None))

    try:
        yield path, log_trace
    finally:
        package.removeHandler(handler)
        handler.close()


def _one_line(err: BaseException, paths: Sequence[Path]) -> str:
    """A one-line error message that names the input file."""
    text = " ".join(str(err).split()) or type(err).__name__
    if len(text) > _ERROR_CHARS:
        text = text[: _ERROR_CHARS - 3] + "..."
    if not isinstance(err, ValueError | FileNotFoundError | TypeError | OSError):
        text = f"{type(err).__name__}: {text}"
    if not any(str(p) in text for p in paths):
        text = f"{paths[0]}: {text}"
    return text


class _Pipeline:
    """Loader thread -> inference (calling thread) -> writer thread, through bounded queues."""

    def __init__(
        self,
        segmenter: Any,
        output: Path,
        identity: dict[str, Any],
        options: BatchOptions,
        ranks: _Ranks,
        ledger_path: Path,
        state: dict[str, dict[str, Any]],
        log_trace: Callable[[str], None],
    ) -> None:
        self.log_trace = log_trace
        self.segmenter = segmenter
        self.output = output
        self.identity = identity
        self.options = options
        self.ranks = ranks
        self.ledger_path = ledger_path
        self.state = state
        self.stop = threading.Event()
        self.loaded: queue.Queue[Any] = queue.Queue(maxsize=options.queue_size)
        self.predicted: queue.Queue[Any] = queue.Queue(maxsize=options.queue_size)
        self.tally = _Tally()
        self.thread_error: BaseException | None = None

    # -- the three stages --------------------------------------------------------------------
    def run(self, cases: Sequence[tuple[int, Case]]) -> _Tally:
        from tqdm.auto import tqdm

        show = self.options.progress
        if show is None:
            show = sys.stderr.isatty()
        show = bool(show) and self.ranks.rank == 0
        label = "batch" if self.ranks.world_size == 1 else f"batch rank 0/{self.ranks.world_size}"
        with (
            tqdm(total=len(cases), desc=label, unit="case", disable=not show, file=sys.stderr) as bar,
            _redirect_logging_to(bar) if show else contextlib.nullcontext(),
        ):
            ledger = _LedgerWriter(self.ledger_path)
            loader = threading.Thread(target=self._guard, args=(self._load, cases), name="batch-load", daemon=True)
            writer = threading.Thread(target=self._guard, args=(self._write, ledger, bar), name="batch-write",
                                      daemon=True)  # fmt: skip
            loader.start()
            writer.start()
            try:
                self._infer()
            except BaseException:
                self.stop.set()
                raise
            finally:
                # Let the writer finish what was already predicted, then stop it.
                self._put(self.predicted, _DONE, always=True, alive=writer)
                writer.join()
                self.stop.set()
                loader.join(timeout=60)
                ledger.close()
        if self.thread_error is not None:
            raise self.thread_error
        return self.tally

    def _guard(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except BaseException as err:  # a bug or a ledger that cannot be written: stop the run
            self.thread_error = err
            self.stop.set()

    def _load(self, cases: Sequence[tuple[int, Case]]) -> None:
        try:
            for index, case in cases:
                if self.stop.is_set():
                    return
                item = self._prepare(index, case)
                if not self._put(self.loaded, item):
                    return
        finally:
            self._put(self.loaded, _DONE, always=True)

    def _prepare(self, index: int, case: Case) -> _Item:
        item = _Item(case, index, _now())
        paths = case.image_paths
        unreadable: Exception | None = None
        tick = time.perf_counter()
        try:
            item.sha256 = input_sha256(paths)
        except Exception as err:  # a missing input fails the case, after the resume decision
            unreadable = err
        item.hash_seconds = time.perf_counter() - tick
        item.skip, item.previous_error = self._decide(case, item.sha256)
        if item.skip:
            return item
        try:
            if unreadable is not None:
                raise unreadable
            from pipelines.segment import _check_case_id

            _check_case_id(case.case_id)
            if len(paths) != 1:
                raise ValueError(
                    f"{paths[0]}: case {case.case_id} lists {len(paths)} channel images; "
                    "medseg batch segments one image (file or DICOM folder) per case"
                )
            item.outputs = self.segmenter.outputs_for(paths[0])
            item.prepared = self.segmenter.prepare(paths[0])
        except Exception as err:
            self._fail(item, err)
        return item

    def _decide(self, case: Case, sha256: str | None) -> tuple[str | None, str | None]:
        """Whether a resumed run skips the case: ``done``, ``failed-earlier`` or None (run it)."""
        previous = self.state.get(case.case_id)
        if previous is None:
            return None, None
        same_input = previous.get("input", {}).get("sha256") == sha256
        same_model = previous.get("bundle", {}).get("model_sha256") == self.identity["model_sha256"]
        if previous.get("status") == "ok":
            if same_input and same_model:
                return "done", None
            if sha256 is None:
                # An input that cannot be read now (moved, unmounted) is no reason to lose good outputs.
                logger.warning(
                    "case %s: input %s cannot be read now; keeping the outputs of its earlier run",
                    case.case_id, case.image_paths[0],
                )  # fmt: skip
                return "done", None
            logger.info("case %s: %s changed since its last run; running it again", case.case_id,
                        "input" if not same_input else "model")  # fmt: skip
            return None, None
        if same_input and not self.options.retry_failed:
            return "failed-earlier", str(previous.get("error") or "failed")
        return None, None

    def _infer(self) -> None:
        while True:
            item = self._get(self.loaded)
            if item is _DONE:
                return
            if item.prepared is not None and item.error is None:
                try:
                    item.labels = self.segmenter.predict(item.prepared)
                except Exception as err:
                    self._fail(item, err)
                    item.prepared = None
            if not self._put(self.predicted, item):
                return

    def _write(self, ledger: _LedgerWriter, bar: Any) -> None:
        while True:
            item = self._get(self.predicted, drain=True)
            if item is _DONE:
                return
            if item.skip == "done":
                self.tally.skipped += 1
                logger.debug("case %s: done in an earlier run; skipped", item.case.case_id)
            elif item.skip == "failed-earlier":
                self.tally.failed_earlier += 1
                self.tally.earlier.append((item.case.case_id, item.previous_error or "failed"))
                logger.info("case %s: failed in an earlier run, not retried (--retry-failed)", item.case.case_id)
            else:
                self._finish_case(item, ledger)
            bar.update(1)

    def _finish_case(self, item: _Item, ledger: _LedgerWriter) -> None:
        files: dict[str, dict[str, str]] = {}
        seconds: dict[str, float] = {"hash": item.hash_seconds}
        if item.error is None:
            try:
                result = self.segmenter.write(
                    item.prepared, item.labels, self.output, item.case.case_id, item.outputs, input_sha256=item.sha256
                )
                for name, path in result.files.items():
                    files[name] = {"path": path.relative_to(self.output).as_posix(), "sha256": sha256_file(path)}
            except Exception as err:
                self._fail(item, err)
        if item.prepared is not None:
            seconds.update(item.prepared.seconds)
        item.prepared, item.labels = None, None
        if item.error is not None:
            self._remove_stale_folder(item.case.case_id)
        record = {
            "record_id": uuid.uuid4().hex,
            "case_id": item.case.case_id,
            "status": "ok" if item.error is None else "failed",
            "error": item.error,
            "input": {"path": str(item.case.image_paths[0]), "sha256": item.sha256},
            "bundle": self.identity,
            "outputs": files,
            "seconds": {k: round(v, 4) for k, v in seconds.items()},
            "rank": self.ranks.rank,
            "world_size": self.ranks.world_size,
            "device": str(self.segmenter.device),
            "precision": self.segmenter.precision,
            "started": item.started,
            "finished": _now(),
        }
        ledger.append(record)
        if item.error is None:
            self.tally.ok += 1
            logger.info("case %s: ok in %.1f s", item.case.case_id, sum(seconds.values()))
        else:
            self.tally.failed += 1
            self.tally.failures.append((item.case.case_id, item.error))
            logger.warning("case %s: failed: %s", item.case.case_id, item.error)
            if item.trace:
                self.log_trace(f"case {item.case.case_id} traceback:\n{item.trace.rstrip()}")

    def _fail(self, item: _Item, err: Exception) -> None:
        item.error = _one_line(err, item.case.image_paths)
        item.trace = "".join(traceback.format_exception(err))

    def _remove_stale_folder(self, case_id: str) -> None:
        """A failed case keeps no outputs: drop a folder left by an earlier run of an older input."""
        folder = self.output / case_id
        if case_id in (".", "..") or not folder.is_dir():
            return
        stale = folder.with_name(f".{case_id}.failed-{uuid.uuid4().hex[:8]}")
        os.replace(folder, stale)
        shutil.rmtree(stale, ignore_errors=True)
        logger.warning("case %s: removed its outputs of an earlier run (%s)", case_id, folder)

    # -- queues that give up when the run stops -----------------------------------------------
    def _put(
        self, target: queue.Queue[Any], item: Any, *, always: bool = False, alive: threading.Thread | None = None
    ) -> bool:
        while True:
            if self.stop.is_set() and not always:
                return False
            if alive is not None and not alive.is_alive():
                return False
            try:
                target.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                if always and alive is None and self.stop.is_set():
                    # nobody may read any more: drop an item to make room for the end marker
                    with contextlib.suppress(queue.Empty):
                        target.get_nowait()

    def _get(self, source: queue.Queue[Any], *, drain: bool = False) -> Any:
        while True:
            if self.stop.is_set() and not drain and self.thread_error is not None:
                return _DONE
            try:
                return source.get(timeout=_POLL_S)
            except queue.Empty:
                continue


@contextlib.contextmanager
def _redirect_logging_to(bar: Any) -> Iterator[None]:
    """Route console log lines through tqdm while the bar is shown, so they do not tear it."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm(loggers=[logging.getLogger()], tqdm_class=type(bar)):
        yield
