"""run_batch: every case of a split, failure isolation, provenance, a bad manifest or bundle refused up front."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import pipelines.outputs.preview
from pipelines.batch.options import BatchOptions
from pipelines.batch.run import run_batch
from pipelines.bundles.bundle import load_bundle
from pipelines.data.manifests.model import ManifestError
from pipelines.io.hashing import input_sha256
from tests.batch.study import CASES, LABELS, make_study, parse, records
from tests.helpers import copy_bundle_with_random_weights


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
    assert rows[0] == "case_id,label,structure,volume_ml,mean_intensity,components,voxels"
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
