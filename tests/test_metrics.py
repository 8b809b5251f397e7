"""Tests of pipelines.metrics: hand-worked surface distances, empty structures, files, outputs."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from pipelines.metrics import metrics_for_files, segmentation_metrics, summarize, write_metrics
from tests.helpers import write_nifti

LABELS = {0: "background", 1: "cube", 2: "ball"}


def _cube(shape: tuple[int, int, int], start: tuple[int, int, int], size: int, value: int = 1) -> np.ndarray:
    volume = np.zeros(shape, dtype=np.uint8)
    volume[tuple(slice(s, s + size) for s in start)] = value
    return volume


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.5, 1.5, 1.5), (0.7, 1.2, 3.0)])
def test_identical_masks_are_perfect(spacing: tuple[float, float, float]) -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((16, 14, 12), dtype=np.uint8)
    truth[3:9, 2:10, 4:8] = 1
    truth[rng.random(truth.shape) > 0.97] = 2
    result = segmentation_metrics(truth, truth.copy(), spacing_mm=spacing, labels=LABELS)
    assert set(result) == {"cube", "ball"}  # background is not scored
    for name in ("cube", "ball"):
        assert result[name] == {"dice": pytest.approx(1.0), "hd95_mm": 0.0, "asd_mm": 0.0}


# A 10x10x10 cube shifted by 2 voxels along one axis (spacing s along the shift, p across it).
# MONAI's surface (spacing given, no subvoxels) is the set of boundary voxels, mask XOR
# binary_erosion(mask), and distances run between voxel centres. Each surface holds
# 10^3 - 8^3 = 488 voxels. Taking the shift axis as i and the prediction 2 voxels ahead, the
# prediction's surface voxels by layer t = 0..9 (t = 0 lies in the reference's layer 2):
#   t = 0, the 10x10 face inside the reference: the nearest reference surface voxel is either the
#     reference face 2 voxels behind (2s) or its side wall, r voxels away across the shift, where
#     r = distance of the voxel to the edge of the 10x10 face (rings: r=0: 36 voxels, r=1: 28,
#     r=2: 20, r=3: 12, r=4: 4): distance min(2s, r*p).
#   t = 1..7, side walls only (36 each, 252): they lie on the reference's side walls: 0.
#   t = 8, side walls just outside the reference (36): the reference's last layer is 1 voxel back: s.
#   t = 9, the far face (100): the reference's far face is 2 voxels back: 2s.
# Mirror symmetry gives the reference-to-prediction distances the same distribution, so the
# symmetric ASD is the mean of one direction and HD95 its 95th percentile (torch.quantile, linear;
# position 0.95 * 487 = 462.65 of the sorted 488 values).
#   s = p = 1.5 mm: distances 0 (36+252=288), 1.5 mm (28+36=64), 3 mm (20+12+4+100=136):
#     ASD = (64*1.5 + 136*3) / 488 = 504 / 488 = 1.032787 mm; sorted values 352..487 are 3 mm,
#     so HD95 = 3.0 mm.
#   s = 1.5 mm, p = 1.0 mm: t = 0 gives 0 (36), 1 mm (28), 2 mm (20), 3 mm (12 + 4); t = 8 gives
#     1.5 mm (36); t = 9 gives 3 mm (100): ASD = (28*1 + 20*2 + 16*3 + 36*1.5 + 100*3) / 488
#     = 470 / 488 = 0.963115 mm; 3 mm values start at sorted position 372, so HD95 = 3.0 mm.
# Dice: the overlap is 8 of 10 layers, 2*800 / (1000 + 1000) = 0.8.
@pytest.mark.parametrize(
    ("axis", "spacing", "asd_mm"),
    [
        (0, (1.5, 1.5, 1.5), 504 / 488),
        (1, (1.5, 1.5, 1.5), 504 / 488),
        (2, (1.5, 1.5, 1.5), 504 / 488),
        (0, (1.5, 1.0, 1.0), 470 / 488),
        (2, (1.0, 1.0, 1.5), 470 / 488),
    ],
)
def test_shifted_cube_distances_match_hand_computation(
    axis: int, spacing: tuple[float, float, float], asd_mm: float
) -> None:
    start = [5, 5, 5]
    truth = _cube((20, 20, 20), tuple(start), 10)
    start[axis] += 2
    pred = _cube((20, 20, 20), tuple(start), 10)
    result = segmentation_metrics(pred, truth, spacing_mm=spacing, labels={0: "background", 1: "cube"})["cube"]
    assert result["dice"] == pytest.approx(0.8, abs=1e-6)
    assert result["hd95_mm"] == pytest.approx(3.0, abs=1e-5)
    assert result["asd_mm"] == pytest.approx(asd_mm, abs=1e-5)


def test_cube_at_array_border_gives_same_distances() -> None:
    # Cropping to the structure must not change the result when the mask touches the border.
    truth = _cube((12, 10, 10), (0, 0, 0), 10)
    pred = _cube((12, 10, 10), (2, 0, 0), 10)
    result = segmentation_metrics(pred, truth, spacing_mm=(1.5, 1.5, 1.5), labels={1: "cube"})["cube"]
    assert result["hd95_mm"] == pytest.approx(3.0, abs=1e-5)
    assert result["asd_mm"] == pytest.approx(504 / 488, abs=1e-5)


@pytest.mark.parametrize(
    ("in_pred", "in_truth", "expected"),
    [
        (False, False, {"dice": math.nan, "hd95_mm": math.nan, "asd_mm": math.nan}),
        (True, False, {"dice": 0.0, "hd95_mm": math.inf, "asd_mm": math.inf}),
        (False, True, {"dice": 0.0, "hd95_mm": math.inf, "asd_mm": math.inf}),
    ],
)
def test_empty_structures(in_pred: bool, in_truth: bool, expected: dict[str, float]) -> None:
    base = _cube((12, 12, 12), (1, 1, 1), 4, value=1)
    pred, truth = base.copy(), base.copy()
    if in_pred:
        pred[7:10, 7:10, 7:10] = 2
    if in_truth:
        truth[7:10, 7:10, 7:10] = 2
    result = segmentation_metrics(pred, truth, spacing_mm=(1.0, 1.0, 1.0), labels=LABELS)
    assert result["cube"]["dice"] == pytest.approx(1.0)
    for metric, value in expected.items():
        assert result["ball"][metric] == pytest.approx(value, nan_ok=True)


def test_prediction_label_not_in_labels_raises() -> None:
    pred = _cube((8, 8, 8), (1, 1, 1), 3, value=5)
    truth = _cube((8, 8, 8), (1, 1, 1), 3, value=1)
    with pytest.raises(ValueError, match=r"prediction: label values 5 are not in labels \(labels has 0, 1, 2\)"):
        segmentation_metrics(pred, truth, spacing_mm=(1.0, 1.0, 1.0), labels=LABELS)


@pytest.mark.parametrize(
    ("pred", "truth", "spacing", "error", "match"),
    [
        (
            np.zeros((4, 4, 4), np.uint8),
            np.zeros((4, 4, 5), np.uint8),
            (1, 1, 1),
            ValueError,
            r"prediction shape \(4, 4, 4\) differs from reference shape \(4, 4, 5\)",
        ),
        (
            np.zeros((4, 4, 4), np.uint8),
            np.zeros((4, 4, 4), np.uint8),
            (1, 0, 1),
            ValueError,
            r"spacing_mm: expected 3 positive sizes in mm, got \(1, 0, 1\)",
        ),
        (
            np.full((4, 4, 4), 0.5),
            np.zeros((4, 4, 4), np.uint8),
            (1, 1, 1),
            ValueError,
            r"prediction: expected integer label values",
        ),
        (
            np.zeros((4, 4, 4), np.uint8),
            np.full((4, 4, 4), -1, np.int16),
            (1, 1, 1),
            ValueError,
            r"reference: label values must be non-negative, found -1",
        ),
        (
            np.zeros((4, 4, 4), np.uint8),
            np.full((4, 4, 4), "a"),
            (1, 1, 1),
            TypeError,
            r"reference: expected an integer label map, got dtype <U1",
        ),
    ],
)
def test_bad_inputs_raise(pred: np.ndarray, truth: np.ndarray, spacing: tuple, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        segmentation_metrics(pred, truth, spacing_mm=spacing, labels=LABELS)


def test_labels_with_string_keys_and_float_maps_are_accepted() -> None:
    truth = _cube((10, 10, 10), (2, 2, 2), 5).astype(np.float32)
    result = segmentation_metrics(truth, truth, spacing_mm=(1, 1, 1), labels={"0": "background", "1": "cube"})
    assert result["cube"]["dice"] == pytest.approx(1.0)


def test_metrics_for_files_takes_spacing_from_affine(tmp_path: Path) -> None:
    truth = _cube((20, 20, 20), (5, 5, 5), 10)
    pred = _cube((20, 20, 20), (5, 5, 7), 10)
    # spacing (1.0, 1.0, 1.5) mm with flipped and swapped axes: spacing is the column norm
    affine = np.array([[0.0, -1.0, 0.0, 10.0], [-1.0, 0.0, 0.0, 5.0], [0.0, 0.0, 1.5, -3.0], [0, 0, 0, 1]])
    pred_path = write_nifti(tmp_path / "pred.nii.gz", pred, affine)
    label_path = write_nifti(tmp_path / "label.nii.gz", truth, affine)
    result = metrics_for_files(pred_path, label_path, labels={0: "background", 1: "cube"})
    assert result["cube"]["dice"] == pytest.approx(0.8, abs=1e-6)
    assert result["cube"]["hd95_mm"] == pytest.approx(3.0, abs=1e-5)
    assert result["cube"]["asd_mm"] == pytest.approx(470 / 488, abs=1e-5)


@pytest.mark.parametrize(
    ("pred_shape", "pred_affine"),
    [((8, 8, 9), np.eye(4)), ((8, 8, 8), np.diag([1.0, 1.0, 1.01, 1.0]))],
)
def test_metrics_for_files_grid_mismatch_names_both_files(
    tmp_path: Path, pred_shape: tuple[int, int, int], pred_affine: np.ndarray
) -> None:
    pred_path = write_nifti(tmp_path / "pred.nii.gz", np.zeros(pred_shape, np.uint8), pred_affine)
    label_path = write_nifti(tmp_path / "label.nii.gz", np.zeros((8, 8, 8), np.uint8), np.eye(4))
    pattern = (
        rf"grids differ: prediction {re.escape(str(pred_path))} has shape \(8, 8, {pred_shape[2]}\) and affine .*; "
        rf"reference {re.escape(str(label_path))} has shape \(8, 8, 8\) and affine"
    )
    with pytest.raises(ValueError, match=pattern):
        metrics_for_files(pred_path, label_path, labels=LABELS)


def test_metrics_for_files_refuses_same_voxels_stored_in_another_order(tmp_path: Path) -> None:
    # the label holds the same voxel centres with the j axis reversed: a manifest accepts that, but
    # a voxel-by-voxel comparison would pair the wrong voxels, so the metrics refuse it
    flipped = np.diag([1.0, -1.0, 1.0, 1.0])
    flipped[1, 3] = 7.0
    pred_path = write_nifti(tmp_path / "pred.nii.gz", np.zeros((8, 8, 8), np.uint8), np.eye(4))
    label_path = write_nifti(tmp_path / "label.nii.gz", np.zeros((8, 8, 8), np.uint8), flipped)
    with pytest.raises(
        ValueError, match=r"grids differ: prediction .* reference .* affine \[\[1, 0, 0, 0\], \[0, -1, 0, 7\]"
    ):
        metrics_for_files(pred_path, label_path, labels=LABELS)


def test_metrics_for_files_names_file_with_unknown_labels(tmp_path: Path) -> None:
    pred_path = write_nifti(tmp_path / "pred.nii.gz", _cube((8, 8, 8), (1, 1, 1), 3, value=9), np.eye(4))
    label_path = write_nifti(tmp_path / "label.nii.gz", _cube((8, 8, 8), (1, 1, 1), 3), np.eye(4))
    with pytest.raises(ValueError, match=rf"{re.escape(str(pred_path))}: label values 9 are not in labels"):
        metrics_for_files(pred_path, label_path, labels=LABELS)


def test_metrics_for_files_missing_file(tmp_path: Path) -> None:
    label_path = write_nifti(tmp_path / "label.nii.gz", np.zeros((4, 4, 4), np.uint8), np.eye(4))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "pred.nii.gz"))):
        metrics_for_files(tmp_path / "pred.nii.gz", label_path, labels=LABELS)


PER_CASE = {
    "a": {"cube": {"dice": 0.8, "hd95_mm": 3.0, "asd_mm": 1.0}, "ball": {"dice": 0.6, "hd95_mm": 5.0, "asd_mm": 2.0}},
    "b": {
        "cube": {"dice": 1.0, "hd95_mm": 1.0, "asd_mm": 0.5},
        "ball": {"dice": 0.0, "hd95_mm": math.inf, "asd_mm": math.inf},
    },
    "c": {
        "cube": {"dice": math.nan, "hd95_mm": math.nan, "asd_mm": math.nan},
        "ball": {"dice": 0.9, "hd95_mm": 2.0, "asd_mm": 1.0},
    },
}


def test_summarize_skips_nan_and_keeps_inf_out_of_distance_means() -> None:
    summary = summarize(PER_CASE)
    assert list(summary) == ["cube", "ball"]
    assert summary["cube"] == {
        "dice": pytest.approx(0.9),
        "hd95_mm": pytest.approx(2.0),
        "asd_mm": pytest.approx(0.75),
        "n_cases": 2,
        "n_missed": 0,
    }
    assert summary["ball"] == {
        "dice": pytest.approx(0.5),
        "hd95_mm": pytest.approx(3.5),
        "asd_mm": pytest.approx(1.5),
        "n_cases": 3,
        "n_missed": 1,
    }


def test_summarize_structure_never_present_is_nan() -> None:
    summary = summarize({"a": {"x": {"dice": math.nan, "hd95_mm": math.nan, "asd_mm": math.nan}}})
    assert math.isnan(summary["x"]["dice"]) and math.isnan(summary["x"]["hd95_mm"])
    assert summary["x"]["n_cases"] == 0


def test_write_metrics_csv_and_strict_json(tmp_path: Path) -> None:
    csv_path, json_path = write_metrics(PER_CASE, tmp_path / "out")
    assert (csv_path.name, json_path.name) == ("metrics.csv", "metrics.json")
    with csv_path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["case_id", "structure", "dice", "hd95_mm", "asd_mm"]
    assert len(rows) == 6
    assert rows[0] == {"case_id": "a", "structure": "cube", "dice": "0.8", "hd95_mm": "3.0", "asd_mm": "1.0"}
    assert rows[3]["hd95_mm"] == "inf" and rows[4]["dice"] == "nan"

    def reject(token: str) -> None:
        raise AssertionError(f"non-standard JSON constant {token}")

    document = json.loads(json_path.read_text(), parse_constant=reject)
    assert document["cases"]["b"]["ball"] == {"dice": 0.0, "hd95_mm": None, "asd_mm": None}
    assert document["cases"]["c"]["cube"]["dice"] is None
    assert document["mean"]["ball"]["hd95_mm"] == pytest.approx(3.5)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["metrics.csv", "metrics.json"]


@pytest.mark.shared_data
def test_real_label_against_itself(shared_data: Path) -> None:
    case = shared_data / "ct_abdomen_3mm"
    labels = {int(k): v for k, v in json.loads((case / "labels.json").read_text()).items()}
    labels[0] = "background"
    result = metrics_for_files(case / "label.nii.gz", case / "label.nii.gz", labels=labels)
    assert len(result) == len(labels) - 1
    measured = [v for v in result.values() if not math.isnan(v["dice"])]
    assert measured and all(v["dice"] == pytest.approx(1.0) and v["hd95_mm"] == 0.0 for v in measured)
