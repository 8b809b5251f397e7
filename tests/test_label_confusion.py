"""scripts/bench/label_confusion.py: where a structure's truth voxels go, and the contrast split of a Dice change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "scripts" / "bench"))

import label_confusion

NAMES = {0: "background", 1: "liver", 2: "tumour"}


def _case(rim: int) -> tuple[np.ndarray, np.ndarray]:
    """A 20^3 liver (1) holding a 6^3 tumour (2); the prediction gives ``rim`` voxels of its edge to the liver."""
    truth = np.zeros((24, 24, 24), np.uint8)
    truth[2:22, 2:22, 2:22] = 1
    truth[9:15, 9:15, 9:15] = 2
    pred = truth.copy()
    pred[9 : 9 + rim, 9:15, 9:15] = 1  # the tumour's first `rim` slices drawn as liver
    pred[0, 0, 0] = 2  # one false tumour voxel in the air
    return truth, pred


def test_truth_fates_count_the_structure_by_the_label_predicted_there() -> None:
    truth, pred = _case(rim=2)
    assert label_confusion.truth_fates(truth, pred, 2, 3).tolist() == [0, 72, 144]
    row = label_confusion.case_row(truth, pred, 2, 3)
    assert row["truth_voxels"] == 216 and row["predicted_voxels"] == 145 and row["false_voxels"] == 1
    assert row["dice"] == pytest.approx(2 * 144 / (216 + 145))


def test_summary_pools_voxels_over_cases_and_takes_the_median_volume_ratio() -> None:
    rows = [label_confusion.case_row(*_case(rim), 2, 3) for rim in (0, 3, 6)]
    summary = label_confusion.summarise(rows, NAMES)
    # 648 truth voxels: 0 + 108 + 216 given to the liver
    assert summary["truth_labelled_as"] == {"background": 0.0, "liver": 0.5, "tumour": 0.5}
    assert summary["median_predicted_over_true_volume"] == pytest.approx(round(109 / 216, 3))
    assert summary["false_voxels"] == 3


def test_contrast_split_puts_the_loss_in_the_faint_half() -> None:
    contrast = [10.0, 20.0, 40.0, 50.0]
    split = label_confusion.contrast_split(contrast, [0.8, 0.8, 0.8, 0.8], [0.5, 0.6, 0.8, 0.8])
    assert split["median_contrast"] == 30.0
    assert split["change_low_contrast"] == pytest.approx(-0.25) and split["change_high_contrast"] == 0.0
    assert split["correlation"] > 0.8
    assert label_confusion.contrast_split(contrast, [0.8] * 4, [0.8] * 4)["correlation"] is None  # no change


SCRIPT = REPO / "scripts" / "bench" / "label_confusion.py"


def _dataset(tmp_path: Path) -> Path:
    """Two cases of ``_case`` (rims 0 and 3, lesion contrast 20 and 40) under a manifest, with the truth saved as
    ``before/`` predictions and ``_case``'s predictions as ``after/``; returns the manifest."""
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    cases = []
    for index, rim in enumerate((0, 3)):
        truth, pred = _case(rim)
        image = np.where(truth == 1, 100.0, np.where(truth == 2, 100.0 - 20 * (index + 1), -100.0)).astype(np.float32)
        folder = tmp_path / "test" / f"case_{index}"
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(image, affine), folder / "image.nii.gz")
        nib.save(nib.Nifti1Image(truth, affine), folder / "label.nii.gz")
        for name, array in (("before", truth), ("after", pred)):
            (tmp_path / name / f"case_{index}").mkdir(parents=True)
            nib.save(nib.Nifti1Image(array, affine), tmp_path / name / f"case_{index}" / "image_seg.nii.gz")
        cases.append(
            {
                "case_id": f"case_{index}",
                "image": f"test/case_{index}/image.nii.gz",
                "label": f"test/case_{index}/label.nii.gz",
            }
        )
    manifest = tmp_path / "manifest.json"
    document = {"name": "t", "modality": {"0": "CT"}, "labels": {str(k): v for k, v in NAMES.items()}, "test": cases}
    manifest.write_text(json.dumps(document | {"training": [], "validation": []}))
    return manifest


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO)


def test_the_script_reads_a_manifest_and_saved_predictions_and_writes_its_record(tmp_path: Path) -> None:
    manifest, out = _dataset(tmp_path), tmp_path / "record.json"
    before, after = f"before={tmp_path / 'before'}", f"after={tmp_path / 'after'}"
    done = _run("--manifest", str(manifest), "--structure", "tumour", "--contrast-against", "liver",
                "--json", str(out), "--predictions", before, after)  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["cases"] == 2
    assert record["summary"]["before"]["truth_labelled_as"]["tumour"] == 1.0
    assert record["summary"]["after"]["truth_labelled_as"] == {"background": 0.0, "liver": 0.25, "tumour": 0.75}
    assert record["contrast"]["after - before"]["median_contrast"] == 30.0  # contrasts 20 and 40 HU
    assert str(tmp_path) not in out.read_text()  # placeholders, not this machine's folders


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"manifest": "missing.json"}, "missing.json: manifest file not found"),
        ({"split": "tests"}, "unknown split 'tests'; expected one of training, validation, test or 'all'"),
        ({"structure": "spleen"}, "manifest.json: no label 'spleen'; expected one of"),
        ({"predictions": "{root}/after"}, "--predictions {root}/after: expected NAME=FOLDER"),
        ({"predictions": "x={root}/nowhere"}, "{root}/nowhere: no such folder of saved predictions"),
        ({"predictions": "x={root}/empty"}, "{root}/empty: no saved prediction of case_0"),
        ({"predictions": "x={root}/shrunk"}, "image_seg.nii.gz: shape (24, 24, 12), expected the label's (24, 24, 24)"),
    ],
)
def test_bad_input_is_refused_in_one_line_naming_the_file(tmp_path: Path, change: dict, message: str) -> None:
    manifest = _dataset(tmp_path)
    (tmp_path / "empty").mkdir()
    for index in (0, 1):  # predictions on another grid than the labels'
        shrunk = tmp_path / "shrunk" / f"case_{index}"
        shrunk.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.zeros((24, 24, 12), np.uint8), np.eye(4)), shrunk / "image_seg.nii.gz")
    options = {"manifest": "manifest.json", "split": "test", "structure": "tumour", "predictions": "x={root}/after"}
    options |= change
    done = _run(
        "--manifest", str(manifest.parent / options["manifest"]),
        "--split", options["split"],
        "--structure", options["structure"],
        "--predictions", options["predictions"].format(root=tmp_path),
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert message.format(root=tmp_path) in done.stderr.strip().splitlines()[-1]
