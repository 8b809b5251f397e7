"""QC flags in the batch report: each case's verdict from its run.json, flagged cases first, a filter.

The verdict is the ``quality`` record :mod:`pipelines.outputs.quality` wrote into the case's
``run.json`` (``flagged``, ``reasons``); cases without one (failed, or written by an older medseg)
count as not flagged and show no reasons.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["FILTER_HTML", "case_quality", "flagged_cases", "flagged_first", "quality_cell"]

FILTER_HTML = (
    "<p><label><input type='checkbox' id='flagged-only' onchange=\"for (const row of "
    "document.querySelectorAll('tr.case')) {row.style.display = this.checked && "
    "!row.classList.contains('flagged') ? 'none' : '';}\"> show flagged cases only</label></p>\n"
)
"""A checkbox above the cases table that hides the rows of cases without QC flags (no server needed)."""


def case_quality(output: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    """The ``quality`` record of an ok case's run.json, or ``{}`` (failed case, no record, unreadable file)."""
    if record.get("status") != "ok":
        return {}
    entry = record.get("outputs", {}).get("run")
    path = output / entry["path"] if entry else output / str(record["case_id"]) / "run.json"
    try:
        quality = json.loads(path.read_text(encoding="utf-8")).get("quality")
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError, AttributeError) as err:
        logger.warning("%s: unreadable run.json, QC verdict left out of the report (%s)", path, err)
        return {}
    return quality if isinstance(quality, dict) else {}


def flagged_cases(output: str | Path) -> list[str]:
    """Case ids whose latest ledger record is ok and whose run.json says QC-flagged (``--fail-on-flags``).

    Every case of the output folder's ledger counts, those done by an earlier run (``--resume``) too.
    """
    from pipelines.batch.ledger import latest_records, read_ledger

    output = Path(output)
    latest = latest_records(read_ledger(output))
    return [case for case, record in latest.items() if case_quality(output, record).get("flagged")]


def flagged_first(
    records: Sequence[Mapping[str, Any]], qualities: Mapping[str, Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Records with flagged cases first, each group in its original order."""
    return sorted(records, key=lambda r: not qualities.get(str(r["case_id"]), {}).get("flagged", False))


def quality_cell(quality: Mapping[str, Any]) -> str:
    """The report's QC cell: FLAGGED and the reasons, or "no flags"; then the warnings as notes (HTML-escaped)."""
    if not quality:
        return "&mdash;"
    notes = "".join(f"<br>note: {html.escape(str(w))}" for w in quality.get("warnings", []))  # truncated organs...
    if not quality.get("flagged"):
        return f"<span class='ok'>no flags</span>{notes}"
    reasons = "<br>".join(html.escape(str(r)) for r in quality.get("reasons", []))
    return f"<span class='failed'>FLAGGED</span><br>{reasons}{notes}"
