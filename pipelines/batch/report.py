"""The report of a batch run: ``report.csv`` (volumes per case and structure) and ``report.html``.

Both are rebuilt from the output folder alone (the ledger, ``batch.json`` and each case's
``stats.json`` and preview), so a report can be written again at any time, e.g. after a resumed run.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from PIL import Image  # Pillow comes with matplotlib

from pipelines.batch.flags import FILTER_HTML, case_quality, flagged_first, quality_cell
from pipelines.batch.ledger import BATCH_JSON, latest_records, read_ledger
from pipelines.io.writers import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["REPORT_CSV", "REPORT_CSV_COLUMNS", "REPORT_HTML", "write_report"]

REPORT_CSV = "report.csv"
REPORT_HTML = "report.html"
REPORT_CSV_COLUMNS = (
    "case_id", "label", "structure", "volume_ml", "mean_intensity", "components", "voxels", "case_flagged",
    "confidence", "flags",
)  # fmt: skip
"""Columns of ``report.csv``: one row per case and structure, from each case's ``stats.json``."""

THUMBNAIL_PX = 480
"""Largest side, in pixels, of the preview thumbnails embedded in ``report.html``."""


def write_report(output: str | Path, run: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``report.csv`` and ``report.html`` from the ledger and the case folders, atomically.

    Both describe the latest state of every case in the ledger. ``report.csv`` has the columns of
    :data:`REPORT_CSV_COLUMNS`: one row per case and structure, from each ok case's ``stats.json``
    (volume in mL, mean intensity in image units, e.g. HU). ``report.html`` opens in a browser
    without a server: run summary and throughput, provenance, failures with their errors, and one
    row per case with its structures and the preview as an embedded thumbnail. Cases are streamed
    to the files one at a time, so memory does not grow with the number of cases.

    Args:
        output: the batch output folder.
        run: figures of the run that just ended (counts, wall time, devices), shown in the summary.

    Returns:
        ``(report.csv, report.html)``.
    """
    output = Path(output)
    latest = latest_records(read_ledger(output))
    records = [latest[k] for k in sorted(latest)]
    qualities = {str(r["case_id"]): case_quality(output, r) for r in records}  # QC verdicts: flagged cases first
    records = flagged_first(records, qualities)  # type: ignore[assignment]
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        info = json.loads((output / BATCH_JSON).read_text(encoding="utf-8"))

    csv_path = output / REPORT_CSV
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(REPORT_CSV_COLUMNS)
        for record in records:
            for entry in _case_stats(output, record):
                writer.writerow(
                    [record["case_id"], entry.get("label"), entry.get("name"), repr(float(entry["volume_ml"])),
                     repr(float(entry["mean"])), entry.get("components"), entry.get("voxels"),
                     int(bool(qualities[str(record["case_id"])].get("flagged"))),
                     "" if entry.get("confidence") is None else repr(float(entry["confidence"])),
                     "|".join(entry.get("flags") or ())]
                )  # fmt: skip

    html_path = output / REPORT_HTML
    with atomic_path(html_path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        _write_html(handle, output, records, info, run or {}, qualities)
    logger.info("wrote %s and %s (%d cases)", csv_path, html_path, len(records))
    return csv_path, html_path


def _case_stats(output: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    if record.get("status") != "ok":
        return []
    entry = record.get("outputs", {}).get("stats_json")
    path = output / entry["path"] if entry else output / str(record["case_id"]) / "stats.json"
    if not path.is_file():
        return []
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        logger.warning("%s: unreadable statistics, left out of the report (%s)", path, err)
        return []
    return [s for s in stats if isinstance(s, dict) and "volume_ml" in s and "mean" in s]


def _thumbnail(path: Path) -> str | None:
    """The preview as a PNG data URI, scaled to at most :data:`THUMBNAIL_PX` pixels a side."""
    if not path.is_file():
        return None
    try:
        with Image.open(path) as image:
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
    except OSError as err:
        logger.warning("%s: unreadable preview, left out of the report (%s)", path, err)
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.failed{color:#b00020;font-weight:bold}.ok{color:#1b7f2a}
code{font-size:90%}img{display:block}
"""


def _write_html(
    handle: TextIO,
    output: Path,
    records: Sequence[dict[str, Any]],
    info: dict[str, Any],
    run: dict[str, Any],
    qualities: dict[str, dict[str, Any]] | None = None,
) -> None:
    e = html.escape
    ok = sum(r.get("status") == "ok" for r in records)
    failed = [r for r in records if r.get("status") != "ok"]
    bundle = info.get("bundle") or (records[0].get("bundle") if records else {}) or {}
    software = info.get("software") or {}

    def rows(pairs: Iterable[tuple[str, Any]]) -> str:
        return "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in pairs)

    handle.write("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>")
    handle.write(f"<title>medseg batch report: {e(output.name)}</title><style>{_CSS}</style></head><body>\n")
    handle.write(f"<h1>medseg batch report: {e(output.name)}</h1>\n<h2>Summary</h2><table>")
    qualities = qualities or {}
    summary: list[tuple[str, Any]] = [("cases in the ledger", len(records)), ("ok", ok), ("failed", len(failed))]
    summary.append(("QC flagged (listed first)", sum(bool(q.get("flagged")) for q in qualities.values())))
    if run:
        summary += [
            ("this run: ok / failed / skipped / failed earlier",
             f"{run.get('ok')} / {run.get('failed')} / {run.get('skipped')} / {run.get('failed_earlier')}"),
            ("this run: cases in split", f"{run.get('total')} (split {run.get('split')})"),
            ("this run: wall time", f"{run.get('wall_seconds', 0):.1f} s"),
            ("this run: throughput", f"{run.get('cases_per_minute', 0):.2f} cases/min"),
            ("this run: started / finished (UTC)", f"{run.get('started')} / {run.get('finished')}"),
        ]  # fmt: skip
    handle.write(rows(summary) + "</table>\n<h2>Provenance</h2><table>")
    provenance: list[tuple[str, Any]] = [
        ("bundle", f"{bundle.get('name')} {bundle.get('version')}"),
        ("model sha256", bundle.get("model_sha256")),
        ("manifest", info.get("manifest", "")),
        ("split", info.get("split", "")),
    ]
    if run:
        provenance += [
            ("devices", ", ".join(run.get("devices", []))),
            ("precision", ", ".join(run.get("precision", []))),
            ("ranks", run.get("world_size")),
        ]
    provenance += [(name, version) for name, version in software.items()]
    handle.write(rows(provenance) + "</table>\n")

    handle.write(f"<h2>Failures ({len(failed)})</h2>\n")
    if failed:
        handle.write("<table><tr><th>case</th><th>error</th><th>input</th><th>finished (UTC)</th></tr>")
        for r in failed:
            handle.write(
                f"<tr><td>{e(str(r['case_id']))}</td><td class='failed'>{e(str(r.get('error')))}</td>"
                f"<td><code>{e(str(r.get('input', {}).get('path')))}</code></td>"
                f"<td>{e(str(r.get('finished')))}</td></tr>"
            )
        handle.write("</table>\n")
    else:
        handle.write("<p>None.</p>\n")

    handle.write(f"<h2>Cases ({len(records)})</h2>\n{FILTER_HTML}<table><tr><th>case</th><th>status</th><th>QC</th>"
                 "<th>structures (volume mL, mean)</th><th>time s</th><th>preview</th></tr>\n")  # fmt: skip
    for r in records:
        case_id = str(r["case_id"])
        status = str(r.get("status"))
        stats = _case_stats(output, r)
        structures = "<br>".join(
            f"{e(str(s.get('name')))}: {float(s['volume_ml']):.1f} mL, {float(s['mean']):.0f}" for s in stats
        ) or ("&mdash;" if status == "ok" else e(str(r.get("error"))))
        seconds = sum(float(v) for v in (r.get("seconds") or {}).values())
        preview = r.get("outputs", {}).get("preview")
        uri = _thumbnail(output / preview["path"]) if status == "ok" and preview else None
        image = f"<img src='{uri}' alt='preview of {e(case_id)}' width='{THUMBNAIL_PX}'>" if uri else ""
        handle.write(
            f"<tr class='case{' flagged' if qualities.get(case_id, {}).get('flagged') else ''}'><td>{e(case_id)}</td>"
            f"<td class='{'ok' if status == 'ok' else 'failed'}'>{e(status)}</td>"
            f"<td>{quality_cell(qualities.get(case_id, {}))}</td><td>{structures}</td>"
            f"<td class='num'>{seconds:.1f}</td><td>{image}</td></tr>\n"
        )
    handle.write("</table>\n</body></html>\n")
