"""The output-folder checks a batch run makes before any case, and batch.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines.batch.folder import check_output_folder, remove_stale_staging, write_batch_json
from pipelines.batch.ledger import BATCH_JSON, LEDGER
from pipelines.batch.options import BatchOptions

IDENTITY = {"name": "ct_abdomen_unet", "version": "0.3.0", "model_sha256": "a" * 64}
OTHER = {"name": "ct_abdomen_unet", "version": "0.3.0", "model_sha256": "b" * 64}


def _ledger(output: Path, bundle: dict[str, str], name: str = LEDGER) -> None:
    output.mkdir(parents=True, exist_ok=True)
    record = {"record_id": "1", "case_id": "a", "status": "ok", "bundle": bundle, "finished": "2024-01-01T00:00:01"}
    (output / name).write_text(json.dumps(record) + "\n")


def test_a_new_or_empty_folder_passes(tmp_path: Path) -> None:
    check_output_folder(tmp_path / "new", IDENTITY, BatchOptions())
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / LEDGER).touch()  # an empty ledger holds no run
    check_output_folder(tmp_path / "empty", IDENTITY, BatchOptions())


def test_a_file_is_not_an_output_folder(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("x")
    with pytest.raises(NotADirectoryError, match=rf"{tmp_path / 'out'}: output exists and is not a folder"):
        check_output_folder(tmp_path / "out", IDENTITY, BatchOptions())


def test_an_earlier_run_needs_resume(tmp_path: Path) -> None:
    _ledger(tmp_path, IDENTITY, "ledger.rank1.jsonl")
    with pytest.raises(ValueError, match=r"already holds a batch run \(ledger.rank1.jsonl\); add --resume"):
        check_output_folder(tmp_path, IDENTITY, BatchOptions())
    check_output_folder(tmp_path, IDENTITY, BatchOptions(resume=True))
    check_output_folder(tmp_path, IDENTITY, BatchOptions(retry_failed=True))


@pytest.mark.parametrize("source", ["batch.json", "ledger"])
def test_another_bundle_is_refused(tmp_path: Path, source: str) -> None:
    if source == "ledger":
        _ledger(tmp_path, OTHER)
    else:
        (tmp_path / BATCH_JSON).write_text(json.dumps({"bundle": OTHER}))
    match = (
        r"holds a run of bundle 'ct_abdomen_unet' version 0.3.0 \(model sha256 bbbbbbbbbbbb\), this run uses bundle "
        r"'ct_abdomen_unet' version 0.3.0 \(model sha256 aaaaaaaaaaaa\); write into a new output folder"
    )
    with pytest.raises(ValueError, match=match):
        check_output_folder(tmp_path, IDENTITY, BatchOptions(resume=True))


def test_an_unreadable_batch_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / BATCH_JSON).write_text("{not json")
    with pytest.raises(ValueError, match=rf"{tmp_path / BATCH_JSON}: not a readable batch.json .*new output folder"):
        check_output_folder(tmp_path, IDENTITY, BatchOptions(resume=True))


def test_batch_json_keeps_its_creation_time(tmp_path: Path) -> None:
    manifest = SimpleNamespace(path=tmp_path / "manifest.json")
    output = tmp_path / "out"
    path = write_batch_json(output, IDENTITY, manifest, BatchOptions(outputs=("labels",)), 1)  # type: ignore[arg-type]
    first = json.loads(path.read_text())
    assert first["bundle"] == IDENTITY and first["manifest"] == str(tmp_path / "manifest.json")
    assert first["split"] == "test" and first["outputs"] == ["labels"]
    assert first["last_run"] == {"started": first["last_run"]["started"], "world_size": 1, "resume": False}
    assert {"medseg", "monai", "torch", "numpy", "python"} <= set(first["software"])

    again = json.loads(write_batch_json(output, IDENTITY, manifest, BatchOptions(resume=True), 2).read_text())  # type: ignore[arg-type]
    assert again["created"] == first["created"] and again["outputs"] is None
    assert again["last_run"]["world_size"] == 2 and again["last_run"]["resume"] is True
    check_output_folder(output, IDENTITY, BatchOptions())  # batch.json alone (no ledger) is no earlier run


def test_stale_staging_of_a_killed_run_is_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stale = [".case_00.k2x_9abc.partial", ".case.with.dots.old-4242", ".case_01.failed-0a1b2c3d"]
    for name in stale:
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "sub" / "labels.nii.gz").write_bytes(b"half")
    temporary = [".report-ab12cd.html", ".report-x.csv", ".ledger-q1.jsonl", ".batch-7z.json"]
    for name in temporary:
        (tmp_path / name).write_text("half")
    kept = ["case_00", ".hidden", ".medseg-batch.lock", "ledger.jsonl", ".case_00.partial-notes", "x.abc.partial"]
    for name in kept[:2]:
        (tmp_path / name).mkdir()
    for name in kept[2:]:
        (tmp_path / name).write_text("keep")
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir()
    (tmp_path / ".linked.abcd1234.partial").symlink_to(outside)  # a link is never followed nor removed

    with caplog.at_level(logging.DEBUG, logger="pipelines.batch.folder"):
        assert remove_stale_staging(tmp_path) == len(stale) + len(temporary)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, ".linked.abcd1234.partial"])
    assert outside.is_dir()
    assert f"{tmp_path / stale[0]}: removed, left by an interrupted run" in caplog.text
    assert remove_stale_staging(tmp_path) == 0 and remove_stale_staging(tmp_path / "missing") == 0
