"""``medseg batch`` given a MONAI Model Zoo datalist (``{"testing": [...]}``) and ``--dataset-dir``."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipelines.cli.main import main
from tests.batch.study import parse, records
from tests.helpers import cube_scan, write_nifti


def _dataset(root: Path) -> Path:
    """``root/Task/imagesTs/case_{a,b}.nii.gz``: two scans whose labels the threshold bundle knows exactly."""
    (root / "Task" / "imagesTs").mkdir(parents=True)
    for name, codes in (("case_a", "LPS"), ("case_b", "RAS")):
        image, affine, _ = cube_scan(codes)
        write_nifti(root / "Task" / "imagesTs" / f"{name}.nii.gz", image, affine)
    return root / "Task"


@pytest.mark.slow
def test_batch_runs_a_zoo_datalist_against_dataset_dir(
    tmp_path: Path, zoo_bundle: Path, no_torchrun: None, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _dataset(tmp_path)
    datalist = tmp_path / "lists" / "datalist.json"
    datalist.parent.mkdir()
    datalist.write_text(json.dumps({"testing": [{"image": "imagesTs/case_a.nii.gz"}, "imagesTs/case_b.nii.gz"]}))
    output = tmp_path / "out"
    argv = [str(datalist), "--bundle", str(zoo_bundle), "--output", str(output), "--device", "cpu"]
    args = parse([*argv, "--dataset-dir", str(data), "--outputs", "labels", "--precision", "fp32"])
    assert args.func(args) == 0, capsys.readouterr().out
    assert sorted((r["case_id"], r["status"]) for r in records(output)) == [("case_a", "ok"), ("case_b", "ok")]
    for name, codes in (("case_a", "LPS"), ("case_b", "RAS")):
        _, _, truth = cube_scan(codes)
        labels = np.asarray(nib.load(output / name / "labels.nii.gz").dataobj)
        dice = 2 * np.sum((labels == 1) & truth) / (np.sum(labels == 1) + np.sum(truth))
        assert dice > 0.9, f"{name}: the box was segmented at the wrong place (Dice {dice:.3f})"  # resampled twice
    assert json.loads((output / "batch.json").read_text())["manifest"] == str(datalist)


def test_batch_refuses_a_datalist_leaving_dataset_dir_before_any_case(
    tmp_path: Path, zoo_bundle: Path, no_torchrun: None, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _dataset(tmp_path)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"testing": [{"image": "imagesTs/case_a.nii.gz"}, {"image": "../x.nii.gz"}]}))
    output = tmp_path / "out"
    code = main(
        ["batch", str(datalist), "--bundle", str(zoo_bundle), "--output", str(output), "--dataset-dir", str(data)]
    )
    assert code != 0
    err = capsys.readouterr().err
    assert f"{datalist}: testing[1].image: path '../x.nii.gz' resolves to" in err and "outside the dataset_dir" in err
    assert "Traceback" not in err
    assert not (output / "case_a").exists()
    # a medseg manifest takes no --dataset-dir: its paths are relative to its own folder
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps({"name": "x", "modality": "CT", "labels": {"0": "bg"}, "test": ["Task/imagesTs/case_a.nii.gz"]})
    )
    code = main(
        ["batch", str(manifest), "--bundle", str(zoo_bundle), "--output", str(output), "--dataset-dir", str(data)]
    )
    assert code != 0 and "dataset_dir applies to Zoo datalists" in capsys.readouterr().err
