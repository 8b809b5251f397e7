"""The output folder of a batch run: the checks before any case runs, stale staging, and ``batch.json``.

Every check on the folder a run writes into lives here, run once by each rank before its first
case (cheap checks before expensive work): the folder is a folder, it holds no other bundle's run,
and it holds no earlier run unless the run resumes. A run killed mid-case leaves hidden staging
folders and temporary files; :func:`remove_stale_staging` clears them once the folder's lock is held
(see :mod:`pipelines.batch.lock`), so they cannot belong to a live run. ``batch.json`` records the
bundle the folder belongs to, the manifest and split, and the software versions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from pipelines.batch.ledger import BATCH_JSON, LEDGER, ledger_files, read_jsonl, utc_now
from pipelines.batch.options import BatchOptions
from pipelines.data.manifests.model import Manifest
from pipelines.io.writers import write_json
from pipelines.segment import Segmenter, software_versions

logger = logging.getLogger(__name__)

__all__ = [
    "STALE_FILE",
    "STALE_FOLDER",
    "bundle_identity",
    "check_output_folder",
    "remove_stale_staging",
    "write_batch_json",
]

_IDENTITY_KEYS = ("name", "version", "model_sha256")

STALE_FOLDER = re.compile(r"^\..+(\.[A-Za-z0-9_]+\.partial|\.old-\d+|\.failed-[0-9a-f]{8})$")
"""Hidden folders a case leaves when its run is killed: ``.<case>.<random>.partial`` (staging of
:class:`~pipelines.segment.Segmenter`), ``.<case>.old-<pid>`` (the outputs it was replacing) and
``.<case>.failed-<hex>`` (outputs of a case that failed, being removed)."""
STALE_FILE = re.compile(
    rf"^\.(report-.+\.(csv|html)|{re.escape(LEDGER.split('.')[0])}-.+\.jsonl|{re.escape(BATCH_JSON.split('.')[0])}-.+\.json)$"
)
"""Temporary files of the run's own top-level files (written atomically by
:func:`pipelines.io.writers.atomic_path`: ``.report-<random>.html``, ``.ledger-<random>.jsonl``...)."""


def bundle_identity(segmenter: Segmenter) -> dict[str, Any]:
    """What ties an output folder to one model: ``{"name", "version", "model_sha256"}`` of the bundle."""
    return {
        "name": segmenter.bundle.name,
        "version": segmenter.bundle.version,
        "model_sha256": segmenter.weights_sha256,
        # --override changes the model's answer: a run with other overrides is another run
        **({"overrides": segmenter.options.overrides} if segmenter.options.overrides else {}),
    }


def _describe(identity: dict[str, Any]) -> str:
    sha = identity.get("model_sha256") or "?"
    return f"{identity.get('name')!r} version {identity.get('version')} (model sha256 {sha[:12]})"


def check_output_folder(output: Path, identity: dict[str, Any], options: BatchOptions) -> None:
    """Refuse a folder that holds another bundle's run, or a ledger when not resuming.

    The bundle of an earlier run comes from ``batch.json``, else from the first ledger record.

    Args:
        output: the output folder (need not exist yet).
        identity: this run's bundle (see :func:`bundle_identity`).
        options: the run's options (``resuming`` allows an earlier ledger).

    Raises:
        NotADirectoryError: ``output`` exists and is a file.
        ValueError: an unreadable ``batch.json``, another bundle's run, or an earlier run without resume.
    """
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"{output}: output exists and is not a folder")
    previous: dict[str, Any] | None = None
    info = output / BATCH_JSON
    if info.is_file():
        try:
            previous = json.loads(info.read_text(encoding="utf-8")).get("bundle")
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"{info}: not a readable batch.json ({err}); use a new output folder") from err
    ledgers = [p for p in ledger_files(output) if p.stat().st_size > 0] if output.is_dir() else []
    if previous is None and ledgers:
        first = next((r for p in ledgers for r in read_jsonl(p)), None)
        previous = first.get("bundle") if first else None
    if previous is not None and any(previous.get(k) != identity[k] for k in _IDENTITY_KEYS):
        raise ValueError(
            f"{output}: holds a run of bundle {_describe(previous)}, this run uses bundle "
            f"{_describe(identity)}; write into a new output folder"
        )
    if previous is not None and previous.get("overrides") != identity.get("overrides"):
        raise ValueError(
            f"{output}: holds a run with --override {previous.get('overrides') or 'none'}, this run has "
            f"{identity.get('overrides') or 'none'}; use the same overrides, or write into a new output folder"
        )
    if ledgers and not options.resuming:
        raise ValueError(
            f"{output}: already holds a batch run ({ledgers[0].name}); add --resume to continue it "
            "(--retry-failed to rerun failed cases too) or choose a new output folder"
        )


def remove_stale_staging(output: Path) -> int:
    """Remove the staging folders and temporary files a killed run left in ``output`` (top level only).

    Call it only while holding the folder's lock (:func:`pipelines.batch.lock.lock_output_folder`) and
    before any rank starts a case: then nothing matching :data:`STALE_FOLDER` or :data:`STALE_FILE`
    can belong to a live run. Symbolic links are never followed or removed.

    Returns:
        The number of folders and files removed (each is logged at debug level; the caller reports the count).
    """
    if not output.is_dir():
        return 0
    removed = 0
    for entry in output.iterdir():
        if entry.is_symlink():
            continue
        try:
            if entry.is_dir() and STALE_FOLDER.match(entry.name):
                shutil.rmtree(entry)
            elif entry.is_file() and STALE_FILE.match(entry.name):
                entry.unlink()
            else:
                continue
        except FileNotFoundError:
            continue
        logger.debug("%s: removed, left by an interrupted run", entry)
        removed += 1
    return removed


def write_batch_json(
    output: Path, identity: dict[str, Any], manifest: Manifest, options: BatchOptions, world_size: int
) -> Path:
    """Write ``output/batch.json`` (atomically), keeping the ``created`` time of an earlier run.

    Fields: ``bundle`` (identity), ``manifest`` (path), ``split``, ``outputs``, ``created``,
    ``last_run`` (``started``, ``world_size``, ``resume``) and ``software`` (versions).

    Returns:
        The path of ``batch.json``.
    """
    info = output / BATCH_JSON
    created = utc_now()
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
            "last_run": {"started": utc_now(), "world_size": world_size, "resume": options.resuming},
            "software": software_versions(),
        },
        info,
    )
    return info
