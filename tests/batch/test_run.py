"""run_batch: every case of a split, failure isolation, provenance, a bad manifest or bundle refused up front."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

import pipelines.batch.report
import pipelines.outputs.preview
from pipelines.batch.ledger import LEDGER
from pipelines.batch.options import BatchOptions
from pipelines.batch.run import run_batch
from pipelines.bundles.bundle import load_bundle
from pipelines.data.manifests.model import ManifestError
from pipelines.io.hashing import input_sha256
from tests.batch.study import (
    CASES,
    FAST,
    LABELS,
    make_study,
    medseg,
    parse,
    phantom,
    records,
    subprocess_env,
    write_manifest,
)
from tests.helpers import REPO, copy_bundle_with_random_weights


@pytest.mark.slow
def test_batch_runs_every_case_and_isolates_a_corrupt_file(
    tmp_path: Path, unet_bundle: Path, no_torchrun: None, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = make_study(tmp_path, CASES)
    output = tmp_path / "out"
    args = parse([str(manifest), "--bundle", str(unet_bundle), "--output", str(output), "--device", "cpu"])
    assert args.func(args) == 1  # a failed case makes the command fail...

    ledger = records(output)  # ...after running every other case
    assert sorted(r["case_id"] for r in ledger) == sorted([*CASES, "corrupt"])
    assert [r["status"] for r in ledger].count("ok") == 6
    (failed,) = [r for r in ledger if r["status"] == "failed"]
    corrupt = tmp_path / "data" / "corrupt.nii.gz"
    assert str(corrupt) in failed["error"] and "\n" not in failed["error"]
    assert "truncated or corrupt" in failed["error"]
    assert not (output / "corrupt").exists()
    assert not [p for p in output.iterdir() if p.name.startswith(".")]  # no staging folders left

    ok = next(r for r in ledger if r["case_id"] == "case_03")
    assert ok["input"]["sha256"] and ok["bundle"]["model_sha256"]
    # one checksum, computed once: the ledger and the case's run.json record the same value
    run = json.loads((output / "case_03" / "run.json").read_text())
    assert run["input"]["sha256"] == ok["input"]["sha256"] == input_sha256(ok["input"]["path"])
    assert ok["bundle"]["name"] == load_bundle(unet_bundle).name
    assert set(ok["outputs"]) >= {"labels", "stats_json", "preview", "run"}
    assert ok["outputs"]["labels"] == {"path": "case_03/labels.nii.gz", "sha256": ok["outputs"]["labels"]["sha256"]}
    assert {"load", "preprocess", "infer", "postprocess", "save"} <= set(ok["seconds"])
    assert ok["rank"] == 0 and ok["started"] <= ok["finished"] and ok["finished"].endswith("+00:00")

    printed = capsys.readouterr().out
    assert "6 ok, 1 failed, 0 skipped of 7 case(s)" in printed and "cases/min" in printed
    assert f"corrupt: {corrupt}" in printed

    report = (output / "report.html").read_text()
    assert all(case_id in report for case_id in [*CASES, "corrupt"])
    assert report.count("data:image/png;base64,") == 6 and "truncated or corrupt" in report
    rows = (output / "report.csv").read_text().splitlines()
    assert rows[0] == "case_id,label,structure,volume_ml,mean_intensity,components,voxels,case_flagged,confidence,flags"
    assert {row.split(",")[0] for row in rows[1:]} <= set(CASES)
    assert json.loads((output / "batch.json").read_text())["bundle"] == ok["bundle"]
    (log,) = (output / "logs").glob("batch-*-rank0.log")
    assert "case corrupt: failed" in log.read_text() and "Traceback" in log.read_text()


def test_a_failure_while_writing_leaves_no_case_folder(
    tmp_path: Path, unet_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = make_study(tmp_path, CASES[:2], with_corrupt=False)
    real = pipelines.outputs.preview.write_preview

    def preview_fails_for_case_01(*args: Any, **kwargs: Any) -> Any:
        if "case_01" in str(kwargs.get("title")):
            raise RuntimeError("disk quota exceeded")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipelines.outputs.preview, "write_preview", preview_fails_for_case_01)
    summary = run_batch(manifest, unet_bundle, tmp_path / "out", BatchOptions(device="cpu"))
    assert (summary.ok, summary.failed) == (1, 1) and summary.has_failures
    ((case_id, error),) = summary.failures
    assert case_id == "case_01" and error.startswith(str(tmp_path / "data" / "case_01" / "image.nii.gz"))
    assert "RuntimeError: disk quota exceeded" in error
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["case_00", "logs"]


def test_a_different_bundle_is_refused(tmp_path: Path, unet_bundle: Path) -> None:
    manifest = make_study(tmp_path, CASES[:1], with_corrupt=False)
    output = tmp_path / "out"
    run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=("labels",)))
    other = copy_bundle_with_random_weights("ct_abdomen_unet", tmp_path / "other", seed=1)
    name = re.escape(repr(load_bundle(other).name))
    pattern = (
        rf"holds a run of bundle {name} version \S+ \(model sha256 [0-9a-f]{{12}}\), "
        rf"this run uses bundle {name} version \S+ \(model sha256 [0-9a-f]{{12}}\); write into a new output folder"
    )
    for resume in (False, True):
        with pytest.raises(ValueError, match=pattern):
            run_batch(manifest, other, output, BatchOptions(device="cpu", resume=resume))


@pytest.mark.parametrize(
    ("content", "split", "error", "match"),
    [
        ("{not json", "test", ManifestError, r"manifest.json: not valid JSON: line 1"),
        ({"name": "x", "modality": "CT", "test": ["a.nii.gz"]}, "test", ManifestError,
         r"missing required key 'labels'"),
        ({"name": "x", "modality": "CT", "labels": LABELS, "training": [{"image": "a.nii.gz", "label": "b.nii.gz"}]},
         "test", ValueError, r"split 'test' has no cases \(cases per split: training 1, validation 0, test 0\)"),
        (None, "test", FileNotFoundError, r"manifest.json: manifest file not found"),
    ],
)  # fmt: skip
def test_a_bad_manifest_stops_before_any_case(
    tmp_path: Path, unet_bundle: Path, content: Any, split: str, error: type[Exception], match: str
) -> None:
    path = tmp_path / "manifest.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(error, match=match):
        run_batch(path, unet_bundle, tmp_path / "out", BatchOptions(split=split, device="cpu"))
    assert not (tmp_path / "out").exists()


def test_stale_staging_is_removed_once_the_run_holds_the_folder(
    tmp_path: Path, unet_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = make_study(tmp_path, CASES[:1], with_corrupt=False)
    output = tmp_path / "out"
    run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=("labels",)))
    left = [".case_00.a1b2c3d4.partial", ".case_00.old-31337", ".report-zz9.html"]  # as kill -9 leaves them
    (output / left[0]).mkdir()
    (output / left[0] / "labels.nii.gz").write_bytes(b"half written")
    (output / left[1]).mkdir()
    (output / left[2]).write_text("<html>half")
    with caplog.at_level(logging.INFO, logger="pipelines"):
        summary = run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=("labels",), resume=True))
    assert summary.skipped == 1
    assert not [p for p in output.iterdir() if p.name.startswith(".")]
    assert f"batch: removed 3 staging folder(s) and temporary file(s) a killed run left in {output}" in caplog.text
    # the run's own log (kept in the output folder) says it too
    assert any("removed 3 staging folder(s)" in log.read_text() for log in (output / "logs").glob("batch-*.log"))


def test_a_full_disk_while_writing_the_report_keeps_the_ledger_and_ends_with_one_line(
    tmp_path: Path, unet_bundle: Path, no_torchrun: None, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from pipelines.cli.main import main

    manifest = make_study(tmp_path, CASES[:2], with_corrupt=False)
    output = tmp_path / "out"
    real = pipelines.batch.report._write_html

    def full_disk(handle: Any, *args: Any) -> None:
        handle.write("<!DOCTYPE html>\n<html lang='en'>")  # part of the page went out, then the disk was full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipelines.batch.report, "_write_html", full_disk)
    argv = ["-q", "batch", str(manifest), "--bundle", str(unet_bundle), "--output", str(output),
            "--outputs", "labels,stats", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 1
    printed = capsys.readouterr()
    assert "batch: 2 ok, 0 failed, 0 skipped of 2 case(s)" in printed.out  # the summary still prints
    assert f"ledger: {output / LEDGER}" in printed.out and "report:" not in printed.out
    *notes, line = printed.err.strip().splitlines()  # random weights: each case's QC flag is logged first
    assert all("QC: result flagged" in note for note in notes) and "Traceback" not in printed.err
    assert line == (
        f"medseg: error: {output}: could not write the report (No space left on device); the ledger "
        f"{output / LEDGER} is complete: free space, then run again with --resume to write the report"
    )
    ledger = records(output)
    assert sorted(r["case_id"] for r in ledger) == CASES[:2] and {r["status"] for r in ledger} == {"ok"}
    assert not (output / "report.html").exists()
    assert not [p for p in output.iterdir() if p.name.startswith(".")]  # no temporary page, no lock
    log = next((output / "logs").glob("batch-*.log")).read_text()
    assert "report not written:" in log and "Traceback" in log and "No space left on device" in log

    monkeypatch.setattr(pipelines.batch.report, "_write_html", real)  # space again
    again = run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=FAST, resume=True))
    assert again.skipped == 2 and again.report_error is None and again.report_html is not None
    assert again.report_html.is_file() and records(output) == ledger


def _outside_study(root: Path) -> tuple[Path, Path]:
    """A study whose data lie beside the manifest's folder: ``../data/case_00/...`` and an absolute path."""
    make_study(root, CASES[:2], with_corrupt=False)
    (root / "manifests").mkdir()
    entries = [
        {"image": "../data/case_00/image.nii.gz", "case_id": "case_00"},
        {"image": str(root / "data" / "case_01" / "image.nii.gz"), "case_id": "case_01"},
    ]
    return write_manifest(root / "manifests" / "outside.json", entries), root / "data" / "case_00" / "image.nii.gz"


def test_manifest_paths_outside_its_folder_need_allow_outside_paths(tmp_path: Path, unet_bundle: Path) -> None:
    manifest, first = _outside_study(tmp_path)
    output = tmp_path / "out"
    with pytest.raises(ManifestError) as refused:
        run_batch(manifest, unet_bundle, output, BatchOptions(device="cpu", outputs=("labels",)))
    assert str(refused.value).splitlines() == [
        f"case case_00: {manifest}: test[0].image: path '../data/case_00/image.nii.gz' resolves to {first}, outside "
        f"the manifest's folder {manifest.parent} (manifest paths stay inside it unless allowed with "
        "--allow-outside-paths)",
        f"case case_01: {manifest}: test[1].image: path '{tmp_path / 'data' / 'case_01' / 'image.nii.gz'}' is "
        f"absolute, outside the manifest's folder {manifest.parent} (manifest paths stay inside it unless allowed "
        "with --allow-outside-paths)",
    ]
    assert not output.exists()
    options = BatchOptions(device="cpu", outputs=("labels",), allow_outside_paths=True)
    summary = run_batch(manifest, unet_bundle, output, options)
    assert (summary.ok, summary.failed) == (2, 0)
    assert {r["input"]["path"] for r in records(output)} == {str(first), str(tmp_path / "data/case_01/image.nii.gz")}


def test_medseg_batch_opens_no_file_of_a_manifest_that_leaves_its_folder(tmp_path: Path, unet_bundle: Path) -> None:
    secret = tmp_path / "etc" / "passwd"
    secret.parent.mkdir()
    os.mkfifo(secret)  # reading it would block the run until the timeout fails the test
    study = tmp_path / "a" / "b"
    study.mkdir(parents=True)
    phantom(study / "ok", seed=0)
    manifest = write_manifest(
        study / "manifest.json",
        ["../../etc/passwd", str(secret), {"image": "ok/image.nii.gz", "label": "ok/../../../etc/passwd"}],
    )
    output = tmp_path / "out"
    command = medseg(manifest, "--bundle", unet_bundle, "--output", output, "--device", "cpu")
    done = subprocess.run(command, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"medseg: error: case passwd: {manifest}: test[0]: path '../../etc/passwd' resolves to ")
    assert f"test[1]: path '{secret}' is absolute" in line
    assert f"case image: {manifest}: test[2].label: path 'ok/../../../etc/passwd' resolves to {secret}" in line
    assert not output.exists()
