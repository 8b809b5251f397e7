"""What a batch run decides (:class:`BatchOptions`) and what it did (:class:`BatchSummary`).

Light on purpose: the command line imports this module while it parses its arguments, so it
imports nothing beyond the standard library (no torch, no numpy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.io.series_rules import SeriesRules

__all__ = ["BATCH_SPLITS", "DISTRIBUTED_TIMEOUT", "BatchOptions", "BatchSummary"]

BATCH_SPLITS = ("test", "all", "training", "validation")
"""Manifest splits a batch run can take; ``test`` is the default."""

DISTRIBUTED_TIMEOUT = timedelta(hours=24)
"""Process-group timeout the CLI sets under torchrun: at the end of a run of possibly many hours
the ranks wait at a barrier for the slowest one, far longer than torch's default of minutes."""


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
        outputs: outputs per case (see :data:`pipelines.keys.OUTPUTS`); None for the defaults.
        queue_size: cases waiting between two stages (bounds memory: about ``3 * queue_size + 3``
            cases are in memory at once).
        progress: show a tqdm progress bar; None shows it when stderr is a terminal (rank 0 only).
        report: write ``report.csv`` and ``report.html`` at the end (rank 0).
        nan_policy, allow_gaps: per case, as :class:`pipelines.segment.SegmentOptions` (NaN/Inf
            voxels refused or filled; DICOM gaps beyond 3x the median refused or interpolated).
        allow_outside_paths: accept manifest paths outside the manifest's folder (absolute ones
            included); without it such a manifest is refused before any file is opened.
        series_rules, keep_identifiers: per case, as :class:`pipelines.segment.SegmentOptions`.
        overrides: bundle config id -> value (``--override``), as :class:`pipelines.segment.SegmentOptions`.
        dataset_dir: for a MONAI Model Zoo datalist (``{"testing": [...]}``) given instead of a
            manifest, the folder its relative paths are resolved against (``--dataset-dir``); None:
            an ``overrides`` ``dataset_dir`` when given, else the datalist's folder. Refused with a
            medseg manifest (see :mod:`pipelines.data.manifests.datalist`).
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
    allow_outside_paths: bool = False
    nan_policy: str = "refuse"
    allow_gaps: bool = False
    series_rules: SeriesRules | None = None
    keep_identifiers: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    tta: str | None = None  # as pipelines.segment.SegmentOptions: none, flips, full; None: the bundle's default
    channel_grids: str = "refuse"  # as pipelines.segment.SegmentOptions: multi-channel images on several grids
    mesh_smoothing: int = 0  # as pipelines.segment.SegmentOptions: Taubin iterations of --outputs mesh
    dataset_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.split not in BATCH_SPLITS:
            raise ValueError(f"split {self.split!r}: expected one of {', '.join(BATCH_SPLITS)}")
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int) or self.queue_size < 1:
            raise ValueError(f"queue_size: expected an integer >= 1, got {self.queue_size!r}")
        if self.outputs is not None and isinstance(self.outputs, str):
            raise TypeError(f"outputs: expected a tuple of output names, got the string {self.outputs!r}")

    @property
    def resuming(self) -> bool:
        """True when the run continues an earlier one (``resume`` or ``retry_failed``)."""
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
        report_error: why the report could not be written (a full disk...), one line; the ledger
            is complete all the same. None when it was written or not asked for.
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
    report_error: str | None = None

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
