"""The ledger: torn lines ignored, shards merged with every record kept once, appends that start on a fresh line."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.batch.ledger import LEDGER, LedgerWriter, latest_records, ledger_path, merge_ledger, read_ledger
from pipelines.batch.report import write_report
from tests.batch.study import records


def _record(case_id: str, status: str, finished: str, record_id: str) -> str:
    return json.dumps({"record_id": record_id, "case_id": case_id, "status": status, "finished": finished})


def test_ledger_reading_ignores_a_torn_line_and_merging_keeps_every_record(tmp_path: Path) -> None:
    (tmp_path / LEDGER).write_text(_record("a", "failed", "2024-01-01T00:00:01", "1") + "\n")
    (tmp_path / "ledger.rank0.jsonl").write_text(
        _record("a", "ok", "2024-01-01T00:00:03", "2") + "\n" + _record("b", "ok", "2024-01-01T00:00:02", "3") + "\n"
    )
    # rank 1 was killed in the middle of a line, and its first record had already been merged once
    torn = '{"case_id": "c", "sta'
    (tmp_path / "ledger.rank1.jsonl").write_text(_record("a", "failed", "2024-01-01T00:00:01", "1") + "\n" + torn)
    ledger = read_ledger(tmp_path)
    assert [r["record_id"] for r in ledger] == ["1", "3", "2"]
    assert {k: r["status"] for k, r in latest_records(ledger).items()} == {"a": "ok", "b": "ok"}
    merge_ledger(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [LEDGER]
    assert [r["record_id"] for r in records(tmp_path)] == ["1", "3", "2"]
    csv_path, html_path = write_report(tmp_path)
    assert csv_path.read_text().count("\n") == 1 and "<td>a</td>" in html_path.read_text()


def test_lines_that_are_not_records_are_ignored(tmp_path: Path) -> None:
    (tmp_path / LEDGER).write_text(
        "\n".join(["", "[1, 2]", '{"case_id": "a"}', _record("a", "ok", "2024-01-01T00:00:01", "1"), "  "]) + "\n"
    )
    assert [r["record_id"] for r in read_ledger(tmp_path)] == ["1"]
    assert read_ledger(tmp_path / "missing") == []


def test_merging_without_shards_leaves_the_ledger_alone(tmp_path: Path) -> None:
    (tmp_path / LEDGER).write_text(_record("a", "ok", "2024-01-01T00:00:01", "1") + "\n")
    before = (tmp_path / LEDGER).stat().st_mtime_ns
    assert merge_ledger(tmp_path) == tmp_path / LEDGER
    assert (tmp_path / LEDGER).stat().st_mtime_ns == before


def test_shards_are_read_in_rank_order(tmp_path: Path) -> None:
    # Same finished time: the order of the files (rank 2 before rank 10) decides.
    (tmp_path / "ledger.rank10.jsonl").write_text(_record("b", "ok", "2024-01-01T00:00:01", "10") + "\n")
    (tmp_path / "ledger.rank2.jsonl").write_text(_record("a", "ok", "2024-01-01T00:00:01", "2") + "\n")
    assert [r["record_id"] for r in read_ledger(tmp_path)] == ["2", "10"]


def test_a_writer_appends_on_a_fresh_line_after_a_torn_one(tmp_path: Path) -> None:
    path = tmp_path / "out" / LEDGER
    path.parent.mkdir()
    path.write_text(_record("a", "ok", "2024-01-01T00:00:01", "1") + "\n" + '{"case_id": "b", "sta')
    with LedgerWriter(path) as writer:
        writer.append({"record_id": "2", "case_id": "b", "status": "ok", "finished": "2024-01-01T00:00:02"})
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["record_id"] == "2"
    assert [r["record_id"] for r in read_ledger(path.parent)] == ["1", "2"]


def test_each_rank_appends_to_its_own_file(tmp_path: Path) -> None:
    assert ledger_path(tmp_path, 0, 1) == tmp_path / LEDGER
    assert ledger_path(tmp_path, 3, 4) == tmp_path / "ledger.rank3.jsonl"
