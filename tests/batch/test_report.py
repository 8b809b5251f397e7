"""report.csv and report.html, written from an output folder made by hand (ledger, batch.json, stats, previews)."""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipelines.batch.ledger import BATCH_JSON, LEDGER
from pipelines.batch.report import REPORT_CSV_COLUMNS, THUMBNAIL_PX, write_report

BUNDLE = {"name": "ct_abdomen_unet", "version": "0.3.0", "model_sha256": "c0ffee" + "0" * 58}
STATS = {
    "a": [
        {"label": 1, "name": "liver", "volume_ml": 1250.5, "mean": 60.25, "components": 1, "voxels": 1000},
        {"label": 2, "name": "spleen", "volume_ml": 180.0, "mean": 48.0, "components": 2, "voxels": 144},
        {"label": 3, "name": "no volume: left out"},
    ],
    "b<&>": [{"label": 1, "name": "liver", "volume_ml": 0.5, "mean": -3.0, "components": 1, "voxels": 4}],
}
RUN = {
    "started": "2024-01-01T10:00:00+00:00", "finished": "2024-01-01T10:01:00+00:00", "split": "test",
    "world_size": 2, "devices": ["cuda:0", "cuda:1"], "precision": ["bf16"], "total": 5, "ok": 2, "failed": 1,
    "skipped": 1, "failed_earlier": 0, "wall_seconds": 60.0, "cases_per_minute": 3.0,
}  # fmt: skip


def _record(case_id: str, status: str, finished: str, **extra: Any) -> dict[str, Any]:
    return {"record_id": f"{case_id}-{finished}", "case_id": case_id, "status": status, "bundle": BUNDLE,
            "input": {"path": f"/data/{case_id}.nii.gz", "sha256": "0" * 64}, "finished": finished,
            "seconds": {"load": 1.0, "infer": 2.5}, **extra}  # fmt: skip


def _ok(output: Path, case_id: str, preview: bool = True) -> dict[str, Any]:
    folder = output / case_id
    folder.mkdir(parents=True)
    outputs = {"stats_json": {"path": f"{case_id}/stats.json", "sha256": "1" * 64}}
    (folder / "stats.json").write_text(json.dumps(STATS[case_id]))
    if preview:
        Image.fromarray(np.full((600, 960, 3), 200, np.uint8)).save(folder / "preview.png")
        outputs["preview"] = {"path": f"{case_id}/preview.png", "sha256": "2" * 64}
    return outputs


@pytest.fixture()
def output(tmp_path: Path) -> Path:
    """An output folder as a run leaves it: a case ok after an earlier failure, one with an awkward id,
    one failed, one ok whose statistics are gone."""
    output = tmp_path / "out"
    records = [
        _record("a", "failed", "2024-01-01T09:00:00+00:00", error="an earlier failure"),
        _record("a", "ok", "2024-01-01T10:00:01+00:00", outputs=_ok(output, "a")),
        _record("b<&>", "ok", "2024-01-01T10:00:02+00:00", outputs=_ok(output, "b<&>", preview=False)),
        _record("c", "failed", "2024-01-01T10:00:03+00:00", error="/data/c.nii.gz: truncated or corrupt <data>",
                outputs={}),
        _record("d", "ok", "2024-01-01T10:00:04+00:00", outputs={}),
    ]  # fmt: skip
    (output / LEDGER).write_text("".join(json.dumps(r) + "\n" for r in records))
    batch = {"bundle": BUNDLE, "manifest": "/data/manifest.json", "split": "test",
             "software": {"medseg": "9.9.9", "monai": "1.5.2"}}  # fmt: skip
    (output / BATCH_JSON).write_text(json.dumps(batch))
    return output


def test_csv_has_one_row_per_case_and_structure(output: Path) -> None:
    csv_path, _ = write_report(output)
    assert csv_path == output / "report.csv"
    rows = list(csv.reader(csv_path.read_text(encoding="utf-8").splitlines()))
    assert tuple(rows[0]) == REPORT_CSV_COLUMNS
    assert rows[1:] == [
        ["a", "1", "liver", "1250.5", "60.25", "1", "1000", "0", "", ""],
        ["a", "2", "spleen", "180.0", "48.0", "2", "144", "0", "", ""],
        ["b<&>", "1", "liver", "0.5", "-3.0", "1", "4", "0", "", ""],
    ]  # the failed case and the one without statistics have no rows


def test_html_shows_summary_provenance_failures_and_cases(output: Path) -> None:
    _, html_path = write_report(output)
    page = html_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<title>medseg batch report: out</title>" in page
    assert "<tr><th>cases in the ledger</th><td>4</td></tr><tr><th>ok</th><td>3</td></tr>" in page
    assert "<tr><th>failed</th><td>1</td></tr>" in page and "this run" not in page
    assert "<tr><th>bundle</th><td>ct_abdomen_unet 0.3.0</td></tr>" in page
    assert f"<tr><th>model sha256</th><td>{BUNDLE['model_sha256']}</td></tr>" in page
    assert "<tr><th>manifest</th><td>/data/manifest.json</td></tr>" in page
    assert "<tr><th>medseg</th><td>9.9.9</td></tr><tr><th>monai</th><td>1.5.2</td></tr>" in page

    # failures: the latest record of each case decides ("a" failed once, then succeeded)
    assert "<h2>Failures (1)</h2>" in page and "an earlier failure" not in page
    assert (
        "<tr><td>c</td><td class='failed'>/data/c.nii.gz: truncated or corrupt &lt;data&gt;</td>"
        "<td><code>/data/c.nii.gz</code></td><td>2024-01-01T10:00:03+00:00</td></tr>"
    ) in page

    # cases, sorted by id, special characters escaped
    assert "<h2>Cases (4)</h2>" in page
    cases = page.split("<h2>Cases (4)</h2>")[1]
    found = re.findall(r"<tr class='case'><td>([^<]*)</td><td class='(?:ok|failed)'>", cases)
    assert found == ["a", "b&lt;&amp;&gt;", "c", "d"]
    assert "b<&>" not in page
    assert "<td>liver: 1250.5 mL, 60<br>spleen: 180.0 mL, 48</td><td class='num'>3.5</td>" in page
    assert "<tr class='case'><td>d</td><td class='ok'>ok</td><td>&mdash;</td><td>&mdash;</td>" in page


def test_previews_are_embedded_as_small_thumbnails(output: Path) -> None:
    _, html_path = write_report(output)
    uris = re.findall(r"src='data:image/png;base64,([^']+)'", html_path.read_text(encoding="utf-8"))
    assert len(uris) == 1  # only case "a" has a preview
    with Image.open(io.BytesIO(base64.b64decode(uris[0]))) as thumbnail:
        assert thumbnail.format == "PNG" and thumbnail.size == (THUMBNAIL_PX, 300)


def test_the_run_that_just_ended_is_summarised(output: Path) -> None:
    _, html_path = write_report(output, run=RUN)
    page = html_path.read_text(encoding="utf-8")
    assert "<tr><th>this run: ok / failed / skipped / failed earlier</th><td>2 / 1 / 1 / 0</td></tr>" in page
    assert "<tr><th>this run: cases in split</th><td>5 (split test)</td></tr>" in page
    assert "<tr><th>this run: wall time</th><td>60.0 s</td></tr>" in page
    assert "<tr><th>this run: throughput</th><td>3.00 cases/min</td></tr>" in page
    assert "<tr><th>devices</th><td>cuda:0, cuda:1</td></tr><tr><th>precision</th><td>bf16</td></tr>" in page
    assert "<tr><th>ranks</th><td>2</td></tr>" in page


def test_unreadable_statistics_and_previews_are_left_out_with_a_warning(
    output: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (output / "a" / "stats.json").write_text("{torn")
    (output / "a" / "preview.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="pipelines.batch.report"):
        csv_path, html_path = write_report(output)
    assert [row.split(",")[0] for row in csv_path.read_text().splitlines()[1:]] == ["b<&>"]
    assert "data:image/png" not in html_path.read_text()
    assert f"{output / 'a' / 'stats.json'}: unreadable statistics" in caplog.text
    assert f"{output / 'a' / 'preview.png'}: unreadable preview" in caplog.text


def test_the_report_is_rebuilt_from_the_folder_alone(output: Path) -> None:
    first = [p.read_bytes() for p in write_report(output)]
    (output / BATCH_JSON).unlink()  # without batch.json the bundle comes from the ledger
    csv_path, html_path = write_report(output)
    assert csv_path.read_bytes() == first[0]
    assert "<tr><th>bundle</th><td>ct_abdomen_unet 0.3.0</td></tr>" in html_path.read_text()
    assert sorted(p.name for p in output.iterdir() if p.is_file()) == [LEDGER, "report.csv", "report.html"]


def test_an_empty_ledger_gives_an_empty_report(tmp_path: Path) -> None:
    csv_path, html_path = write_report(tmp_path)
    assert csv_path.read_text().splitlines() == [",".join(REPORT_CSV_COLUMNS)]
    page = html_path.read_text()
    assert "<h2>Failures (0)</h2>\n<p>None.</p>" in page and "<h2>Cases (0)</h2>" in page
