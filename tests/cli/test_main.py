"""The command line: manifests, metrics and phantoms subcommands call the library and report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.cli.main import main
from pipelines.data.phantoms.make import make_ct_phantom
from pipelines.data.phantoms.write import write_nifti
from tests.helpers import write_nifti as write_array


def _metrics(tmp_path: Path, truth: np.ndarray, pred: np.ndarray, affine: np.ndarray, *extra: str) -> int:
    """Write the two label maps and a labels.json {1: cube}, then run ``medseg metrics``."""
    write_array(tmp_path / "truth.nii.gz", truth, affine)
    write_array(tmp_path / "pred.nii.gz", pred, affine)
    (tmp_path / "labels.json").write_text(json.dumps({"1": "cube"}))
    pred_path, truth_path = str(tmp_path / "pred.nii.gz"), str(tmp_path / "truth.nii.gz")
    return main(["metrics", pred_path, truth_path, "--labels", str(tmp_path / "labels.json"), *extra])


def test_metrics_command_writes_csv_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    truth = np.zeros((30, 30, 30), np.uint8)
    truth[5:15, 5:15, 5:15] = 1
    pred = np.roll(truth, 2, axis=0)
    code = _metrics(tmp_path, truth, pred, affine, "--output", str(tmp_path / "m"))
    assert code == 0
    out = capsys.readouterr().out
    assert "cube" in out and "0.800" in out  # Dice of a 10-voxel cube shifted by 2 voxels
    written = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert written["mean"]["cube"]["dice"] == pytest.approx(0.8)
    assert written["mean"]["cube"]["hd95_mm"] == pytest.approx(3.0)


def test_metrics_command_names_unknown_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    affine = np.eye(4)
    truth = np.zeros((10, 10, 10), np.uint8)
    truth[2:5, 2:5, 2:5] = 1
    pred = truth.copy()
    pred[7:9, 7:9, 7:9] = 9
    code = _metrics(tmp_path, truth, pred, affine)
    assert code == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'pred.nii.gz'}: label values 9 are not in labels (labels has 1)" in err


def _pairs(folder: Path, n: int) -> None:
    for i in range(n):
        phantom = make_ct_phantom(
            i, shape=(24, 20, 16), spacing_mm=(12.0, 12.0, 12.0), label_ids={"liver": 1, "spleen": 2}
        )
        write_nifti(phantom, folder / f"case{i}")
    (folder / "labels.json").write_text(json.dumps({"1": "liver", "2": "spleen"}))


def test_manifest_create_validate_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _pairs(data, 4)
    assert main(["manifest", "create", str(data)]) == 0
    manifest = data / "dataset.json"
    content = json.loads(manifest.read_text())
    assert len(content["training"]) == 4 and content["labels"]["1"] == "liver"
    assert main(["manifest", "validate", str(manifest)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["manifest", "split", str(manifest), "--folds", "2", "--seed", "3"]) == 0
    folds = [json.loads((data / f"dataset_fold{f}.json").read_text()) for f in range(2)]
    validated = sorted(
        e["case_id"] if isinstance(e, dict) and "case_id" in e else json.dumps(e)
        for f in folds
        for e in f["validation"]
    )
    assert len(validated) == 4 and len(set(validated)) == 4, "every case is validated in exactly one fold"


def test_manifest_validate_reports_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _pairs(data, 2)
    bad = {
        "name": "bad",
        "modality": "CT",
        "labels": {"0": "background", "1": "liver"},
        "training": [
            {"case_id": "a", "image": "case0/image.nii.gz", "label": "case0/label.nii.gz"},  # has label 2: not listed
            {"case_id": "a", "image": "case1/image.nii.gz", "label": "missing/label.nii.gz"},
        ],
    }
    path = data / "bad.json"
    path.write_text(json.dumps(bad))
    assert main(["manifest", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "duplicate case id" in out
    assert "missing/label.nii.gz" in out
    assert "label values not in labels: 2" in out


def test_phantoms_command_writes_a_valid_manifest(tmp_path: Path) -> None:
    from pipelines.data.manifests.validate import validate_manifest

    assert (
        main(["phantoms", "--output", str(tmp_path / "ph"), "--training", "1", "--validation", "1", "--test", "0"]) == 0
    )
    problems = validate_manifest(tmp_path / "ph" / "ct_phantoms.json")
    assert problems == []
