"""``run_batch``: every case of a manifest split, on this rank's share, with a ledger, a log and a report.

The order of one run: set up (manifest, bundle, output-folder checks; every rank agrees before any
starts), ``batch.json``, this rank's cases through :class:`~pipelines.batch.pipeline.Pipeline`, the
ranks' figures gathered, and on rank 0 the ledger shards merged and the report written.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from pipelines.batch.folder import bundle_identity, check_output_folder, write_batch_json
from pipelines.batch.ledger import LEDGER, latest_records, ledger_path, merge_ledger, read_ledger, utc_now
from pipelines.batch.options import BatchOptions, BatchSummary
from pipelines.batch.pipeline import Pipeline, Tally
from pipelines.batch.ranks import Ranks
from pipelines.batch.report import write_report
from pipelines.data.manifests.model import SPLITS, Case, Manifest, load_manifest
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

    Args:
        manifest: a manifest file or an already loaded :class:`~pipelines.data.manifests.model.Manifest`.
        bundle: the bundle folder.
        output: the output folder (created when missing).
        options: split, resume, device, precision, outputs... (see :class:`BatchOptions`).
        rank: this process's rank; with ``world_size > 1`` torch.distributed must be initialised.
        world_size: number of ranks sharing the run.

    Returns:
        The :class:`BatchSummary` over all ranks (every rank returns the same counts).

    Raises:
        FileNotFoundError: manifest or bundle (or its weights) missing.
        ValueError: bad manifest (:class:`~pipelines.data.manifests.model.ManifestError`), empty split,
            an output folder with a ledger and no ``resume``, or holding another bundle's run.
    """
    options = options or BatchOptions()
    ranks = Ranks(rank, world_size)
    output = Path(output).expanduser().absolute()
    clock = time.perf_counter()
    started = utc_now()

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
        identity = bundle_identity(segmenter)
        check_output_folder(output, identity, options)
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
            summary = _finish(summary, output, options, tallies, started)
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
    summary: BatchSummary, output: Path, options: BatchOptions, tallies: Sequence[Tally], started: str
) -> BatchSummary:
    """Write the report (rank 0, when ``options.report``) with this run's figures."""
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
    csv_path, html_path = write_report(output, run=run)
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
