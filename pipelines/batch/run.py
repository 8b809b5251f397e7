"""``run_batch``: every case of a manifest split, on this rank's share, with a ledger, a log and a report.

The order of one run: rank 0 locks the output folder (:mod:`pipelines.batch.lock`) while the other
ranks wait; set up (manifest, bundle, output-folder checks, and on rank 0 the staging a killed run
left; every rank agrees before any starts), ``batch.json``, this rank's cases through
:class:`~pipelines.batch.pipeline.Pipeline`, the ranks' figures gathered, and on rank 0 the ledger
shards merged, the report written and the lock released (also when the run fails).
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from pipelines.batch.dicom_cases import check_identifier_policy
from pipelines.batch.folder import bundle_identity, check_output_folder, remove_stale_staging, write_batch_json
from pipelines.batch.ledger import LEDGER, latest_records, ledger_path, merge_ledger, read_ledger, utc_now
from pipelines.batch.lock import FolderLock, lock_output_folder
from pipelines.batch.options import BatchOptions, BatchSummary
from pipelines.batch.pipeline import Pipeline, Tally
from pipelines.batch.ranks import Ranks
from pipelines.batch.report import write_report
from pipelines.data.manifests.datalist import load_cases_file
from pipelines.data.manifests.model import SPLITS, Case, Manifest
from pipelines.io.output_folder import check_output_folder as check_writable
from pipelines.segment import Segmenter, SegmentOptions

logger = logging.getLogger(__name__)

__all__ = ["LOG_DIR", "run_batch"]

LOG_DIR = "logs"
"""Folder of the output where each run and rank writes ``batch-<UTC time>-rank<r>.log``."""


def run_batch(
    manifest: str | Path | Manifest,
    bundle: str | Path,
    output: str | Path,
    options: BatchOptions | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
    run_id: str | None = None,
) -> BatchSummary:
    """Segment every case of a manifest split into ``output/<case_id>/``, with a ledger and a report.

    Cases are sorted by case id; case ``i`` goes to rank ``i % world_size``. Each finished case adds
    one record to the ledger (``output/ledger.jsonl``, or ``output/ledger.rank<r>.jsonl`` when
    ``world_size > 1``, merged by rank 0 at the end)::

        {"record_id", "case_id", "status": "ok" | "failed", "error": str | None,
         "input": {"path", "sha256"}, "bundle": {"name", "version", "model_sha256"},
         "outputs": {name: {"path" (relative to output), "sha256"}}, "seconds": {stage: s},
         "rank", "world_size", "device", "precision", "started", "finished" (ISO 8601 UTC)}

    The input's sha256 is the one computed while the input was read; ``seconds["hash"]`` is the
    time spent hashing it separately (resumed cases, unreadable inputs), else 0. The outputs'
    sha256 are those their writers computed.

    A case that raises (unreadable file, bad geometry, out of memory...) is recorded as failed with
    a one-line error naming its input, leaves no case folder, and the run goes on.

    Rank 0 holds the output folder's lock (:func:`~pipelines.batch.lock.lock_output_folder`) for the
    whole run, before anything else is read; the other ranks start only once it has it. Once the run
    is accepted, staging folders left by a killed run are removed. A report that cannot be written (a
    full disk) does not fail the run: the ledger is complete, and ``report_error`` says why.

    Args:
        manifest: a manifest file or an already loaded :class:`~pipelines.data.manifests.model.Manifest`.
        bundle: the bundle folder.
        output: the output folder (created when missing).
        options: split, resume, device, precision, outputs... (see :class:`BatchOptions`).
        rank: this process's rank; with ``world_size > 1`` torch.distributed must be initialised.
        world_size: number of ranks sharing the run.
        run_id: torchrun's run id, recorded in the lock file so that a refused run can name it.

    Returns:
        The :class:`BatchSummary` over all ranks (every rank returns the same counts).

    Raises:
        OutputFolderLocked: (an ``OSError``, see :class:`~pipelines.batch.lock.OutputFolderLocked`)
            another run holds the output folder; the message names its host and PID.
        FileNotFoundError: manifest or bundle (or its weights) missing.
        NotADirectoryError, PermissionError: the output folder is a file, or cannot be written.
        ValueError: bad manifest (:class:`~pipelines.data.manifests.model.ManifestError`, paths
            outside its folder without ``allow_outside_paths`` included), empty split, an output folder
            with a ledger and no ``resume``, or holding another bundle's run; a manifest made by
            ``manifest create --dicom --keep-identifiers`` for a run without ``keep_identifiers``; on
            ranks other than 0, any error of rank 0's start, naming rank 0.
    """
    options = options or BatchOptions()
    ranks = Ranks(rank, world_size)
    output = Path(output).expanduser().absolute()
    clock = time.perf_counter()

    # Rank 0 takes the lock before anything else; the other ranks wait for it in agree().
    lock: FolderLock | None = None
    error: BaseException | None = None
    if ranks.rank == 0:
        try:
            check_writable(output)  # a clear message for a file or a read-only folder, before the lock file
            lock = lock_output_folder(output, run_id=run_id, world_size=ranks.world_size)
        except Exception as err:
            error = err
    try:
        ranks.agree(error)
        return _run(manifest, bundle, output, options, ranks, clock)
    finally:
        if lock is not None:
            lock.release()


def _dataset_dir(options: BatchOptions) -> Path | None:
    """Where a Zoo datalist's relative paths start: ``--dataset-dir``, else ``--override dataset_dir=DIR``."""
    if options.dataset_dir is not None:
        return Path(options.dataset_dir)
    value = options.overrides.get("dataset_dir")
    return Path(value) if isinstance(value, str) and value and not value.startswith(("$", "@", "%")) else None


def _run(
    manifest: str | Path | Manifest, bundle: str | Path, output: Path, options: BatchOptions, ranks: Ranks, clock: float
) -> BatchSummary:
    """:func:`run_batch` once rank 0 holds the output folder's lock."""
    started = utc_now()
    error: BaseException | None = None
    cases: tuple[Case, ...] = ()
    segmenter: Segmenter | None = None
    stale = 0
    try:
        if ranks.rank != 0:
            check_writable(output)
        loaded = (
            manifest
            if isinstance(manifest, Manifest)
            else load_cases_file(  # a medseg manifest or a Zoo datalist ({"testing": [...]})
                manifest, dataset_dir=_dataset_dir(options), allow_outside_paths=options.allow_outside_paths
            )
        )
        check_identifier_policy(loaded, options.keep_identifiers)  # manifest create --dicom --keep-identifiers
        cases = tuple(sorted(loaded.split(options.split), key=lambda c: c.case_id))
        if not cases:
            counts = ", ".join(f"{s} {len(loaded.split(s))}" for s in SPLITS)
            raise ValueError(
                f"{loaded.path}: split {options.split!r} has no cases (cases per split: {counts}); "
                "choose another with --split"
            )
        segmenter = Segmenter(
            bundle,
            SegmentOptions(
                device=options.device,
                precision=options.precision,
                outputs=options.outputs,
                nan_policy=options.nan_policy,
                allow_gaps=options.allow_gaps,
                series_rules=options.series_rules,
                keep_identifiers=options.keep_identifiers,
                overrides=options.overrides,
                tta=options.tta,
                channel_grids=options.channel_grids,
                mesh_smoothing=options.mesh_smoothing,
            ),
        )
        identity = bundle_identity(segmenter)
        check_output_folder(output, identity, options)
        if ranks.rank == 0:
            stale = remove_stale_staging(output)  # under the lock, before any rank starts a case
    except Exception as err:
        error = err
    ranks.agree(error)  # raises on every rank when one could not start
    if segmenter is None:
        raise RuntimeError("batch: set-up ended without a segmenter")  # unreachable after agree()

    if ranks.rank == 0:
        write_batch_json(output, identity, loaded, options, ranks.world_size)
    state = latest_records(read_ledger(output)) if options.resuming else {}
    mine = [(index, case) for index, case in enumerate(cases) if ranks.owns(index)]

    with _run_log(output, ranks.rank) as (log_path, log_trace):
        logger.info(
            "batch: %d case(s) of split %r from %s, %d on rank %d of %d; bundle %s %s on %s (%s); log %s",
            len(cases), options.split, loaded.path, len(mine), ranks.rank, ranks.world_size,
            identity["name"], identity["version"], segmenter.device, segmenter.precision, log_path,
        )  # fmt: skip
        if stale:
            logger.info(
                "batch: removed %d staging folder(s) and temporary file(s) a killed run left in %s", stale, output
            )
        pipeline = Pipeline(
            segmenter, output, identity, options, ranks, ledger_path(output, ranks.rank, ranks.world_size), state,
            log_trace,
        )  # fmt: skip
        tally = pipeline.run(mine)
        tally.wall_seconds = time.perf_counter() - clock
        tally.device, tally.precision = str(segmenter.device), segmenter.precision
        tallies = ranks.gather(tally)  # also the barrier: every rank's ledger shard is complete
        summary = _combine(tallies, output, len(cases), ranks.world_size)
        if ranks.rank == 0:
            merge_ledger(output)
            summary = _finish(summary, output, options, tallies, started, log_trace)
        logger.info(
            "batch: %d ok, %d failed, %d skipped, %d failed earlier, in %.1f s (%.1f cases/min)",
            summary.ok, summary.failed, summary.skipped, summary.failed_earlier, summary.wall_seconds,
            summary.cases_per_minute,
        )  # fmt: skip
    return summary


def _combine(tallies: Sequence[Tally], output: Path, total: int, world_size: int) -> BatchSummary:
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
    summary: BatchSummary,
    output: Path,
    options: BatchOptions,
    tallies: Sequence[Tally],
    started: str,
    log_trace: Callable[[str], None],
) -> BatchSummary:
    """Write the report (rank 0, when ``options.report``) with this run's figures.

    A report that cannot be written (full disk, quota, a folder gone read-only) costs nothing else:
    the ledger is already complete, the traceback goes to the run's log, and the summary's
    ``report_error`` says, in one line, what happened and how to write the report later.
    """
    if not options.report:
        return summary
    run = {
        "started": started,
        "finished": utc_now(),
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
    try:
        csv_path, html_path = write_report(output, run=run)
    except OSError as err:
        log_trace("report not written:\n" + "".join(traceback.format_exception(err)).rstrip())
        reason = err.strerror or str(err) or type(err).__name__
        message = (
            f"{output}: could not write the report ({reason}); the ledger {summary.ledger} is complete: "
            "free space, then run again with --resume to write the report"
        )
        return replace(summary, report_error=message)
    return replace(summary, report_csv=csv_path, report_html=html_path)


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
