"""One rank's cases through three threads: load -> infer -> write, joined by bounded queues.

The loader thread reads and preprocesses the next cases (and decides, when resuming, which are
done already), the calling thread runs the network, the writer thread writes each case's outputs
and appends its ledger record. Queues of ``queue_size`` items keep memory flat however long the
run; nothing per case stays in memory once its record is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pipelines.batch.dicom_cases import record_manifest_selection
from pipelines.batch.ledger import LedgerWriter, utc_now
from pipelines.batch.options import BatchOptions
from pipelines.batch.ranks import Ranks
from pipelines.data.manifests.model import Case
from pipelines.io.hashing import input_sha256, sha256_file
from pipelines.segment import CaseResult, Prepared, Segmenter, check_case_id

logger = logging.getLogger(__name__)

__all__ = ["Item", "Pipeline", "Tally", "output_entries"]

ERROR_CHARS = 1000
"""Longest error message kept in a ledger record (characters)."""
_DONE = object()  # end-of-stream marker on the queues
_POLL_S = 0.5


@dataclass
class Tally:
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


@dataclass
class Item:
    """One case travelling through the stages."""

    case: Case
    index: int
    started: str
    sha256: str | None = None
    prepared: Prepared | None = None
    labels: np.ndarray | None = None
    outputs: tuple[str, ...] = ()
    error: str | None = None
    trace: str | None = None
    skip: str | None = None  # "done" or "failed-earlier"
    previous_error: str | None = None
    hash_seconds: float = 0.0


def output_entries(result: CaseResult, output: Path) -> dict[str, dict[str, str]]:
    """The ledger's ``outputs`` of one case: ``{name: {"path" (relative to output), "sha256"}}``.

    The checksums are the ones the writers computed from the bytes they wrote
    (``result.sha256``); a file whose writer reported none is read back and hashed (a fallback:
    every writer of :mod:`pipelines.segment` reports its checksum).
    """
    entries = {}
    for name, path in result.files.items():
        digest = result.sha256.get(name)
        if digest is None:
            digest = sha256_file(path)
        entries[name] = {"path": path.relative_to(output).as_posix(), "sha256": digest}
    return entries


def one_line(err: BaseException, paths: Sequence[Path]) -> str:
    """A one-line error message (at most :data:`ERROR_CHARS`) that names the input file."""
    text = " ".join(str(err).split()) or type(err).__name__
    if len(text) > ERROR_CHARS:
        text = text[: ERROR_CHARS - 3] + "..."
    if not isinstance(err, ValueError | FileNotFoundError | TypeError | OSError):
        text = f"{type(err).__name__}: {text}"
    if not any(str(p) in text for p in paths):
        text = f"{paths[0]}: {text}"
    return text


class Pipeline:
    """Loader thread -> inference (calling thread) -> writer thread, through bounded queues.

    Args:
        segmenter: the bundle loaded once for every case.
        output: the output folder (absolute); cases go to ``output/<case_id>/``.
        identity: the bundle's ``{"name", "version", "model_sha256"}``, copied into every record.
        options: the run's options (resume, retry_failed, queue_size, progress).
        ranks: this process's rank and the world size, recorded in every record.
        ledger_path: the ledger file (or rank shard) this rank appends to.
        state: the latest ledger record of each case id from earlier runs (empty when not resuming).
        log_trace: writes a failed case's traceback to the run's log file.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        output: Path,
        identity: dict[str, Any],
        options: BatchOptions,
        ranks: Ranks,
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
        self.tally = Tally()
        self.thread_error: BaseException | None = None

    # -- the three stages --------------------------------------------------------------------
    def run(self, cases: Sequence[tuple[int, Case]]) -> Tally:
        """Run ``(index, case)`` pairs through the stages; returns this rank's counts.

        Raises:
            BaseException: what stopped a stage (a bug, a ledger that cannot be written), after the
                cases already predicted have been written.
        """
        show = self.options.progress
        if show is None:
            show = sys.stderr.isatty()
        show = bool(show) and self.ranks.rank == 0
        label = "batch" if self.ranks.world_size == 1 else f"batch rank 0/{self.ranks.world_size}"
        with (
            tqdm(total=len(cases), desc=label, unit="case", disable=not show, file=sys.stderr) as bar,
            _redirect_logging_to(bar) if show else contextlib.nullcontext(),
            LedgerWriter(self.ledger_path) as ledger,
        ):
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
                item = self.prepare(index, case)
                if not self._put(self.loaded, item):
                    return
        finally:
            self._put(self.loaded, _DONE, always=True)

    def prepare(self, index: int, case: Case) -> Item:
        """Decide whether a resumed run skips the case; if not, read and preprocess it (loader thread).

        The input's sha256 comes from the read itself (``Volume.sha256``) when the reader provides
        it. Two cases hash the input file(s) separately: a case with a ledger record from an earlier
        run (see below), and a case whose read failed, so that its failed record still names the
        input it failed on and a resumed run can tell an unchanged bad input from a fixed one.
        """
        item = Item(case, index, utc_now())
        paths = case.image_paths
        unreadable: Exception | None = None
        previous = self.state.get(case.case_id)
        if previous is not None:
            # Resuming: whether the case is done depends on its input's sha256, and a case that is
            # done must not be read at all. So the input is hashed before it is read; a case that
            # then runs reads its input a second time (this hash, then the read).
            unreadable = self._hash_input(item)
            item.skip, item.previous_error = self._decide(case, previous, item.sha256)
            if item.skip:
                return item
        try:
            if unreadable is not None:
                raise unreadable
            check_case_id(case.case_id)
            item.outputs = self.segmenter.outputs_for(paths[0])
            # several images: one per channel, in the manifest's order (pipelines.io.channels checks them)
            item.prepared = self.segmenter.prepare(paths if len(paths) > 1 else paths[0], case.series_uid)
            record_manifest_selection(item.prepared, case)  # the rule that chose a DICOM case's series
            # The hash of the bytes actually read wins over one taken before the read.
            item.sha256 = item.prepared.volume.sha256 or item.sha256
        except Exception as err:
            self._fail(item, err)
        if item.sha256 is None and unreadable is None:
            # The read failed before it hashed the input (or the reader does not hash): hash it here.
            self._hash_input(item)
        return item

    def _hash_input(self, item: Item) -> Exception | None:
        """Hash the case's input file(s) into ``item.sha256``; returns the error when they cannot be read."""
        tick = time.perf_counter()
        try:
            item.sha256 = input_sha256(item.case.image_paths)
            return None
        except Exception as err:  # a missing input fails the case, after the resume decision
            return err
        finally:
            item.hash_seconds += time.perf_counter() - tick

    def _decide(self, case: Case, previous: dict[str, Any], sha256: str | None) -> tuple[str | None, str | None]:
        """Whether a resumed run skips the case: ``done``, ``failed-earlier`` or None (run it)."""
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

    def _write(self, ledger: LedgerWriter, bar: Any) -> None:
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

    def _finish_case(self, item: Item, ledger: LedgerWriter) -> None:
        files: dict[str, dict[str, str]] = {}
        seconds: dict[str, float] = {"hash": item.hash_seconds}
        if item.error is None:
            try:
                result = self.segmenter.write(
                    item.prepared, item.labels, self.output, item.case.case_id, item.outputs, input_sha256=item.sha256
                )
                files = output_entries(result, self.output)
            except Exception as err:
                self._fail(item, err)
        if item.prepared is not None:
            seconds.update(item.prepared.seconds)
        item.prepared, item.labels = None, None
        if item.error is not None:
            files = {}
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
            "finished": utc_now(),
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

    def _fail(self, item: Item, err: Exception) -> None:
        item.error = one_line(err, item.case.image_paths)
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
    with logging_redirect_tqdm(loggers=[logging.getLogger()], tqdm_class=type(bar)):
        yield
