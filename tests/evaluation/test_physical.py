"""pipelines.evaluation.physical: scoring a prediction against a reference stored on another grid, by world position."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation.cases import StructureMatch, match_structures
from pipelines.evaluation.physical import resample_labels, score_in_physical_space
from pipelines.metrics import segmentation_metrics
from tests.helpers import oriented_affine

CENTRE = np.array([6.0, 2.0, 14.0])  # world (RAS) mm, away from both grids' centres


def _ball(shape: tuple[int, int, int], affine: np.ndarray, centre: np.ndarray, radius_mm: float, value: int = 1):
    """A ball in WORLD coordinates rasterised on a grid: voxel centres within ``radius_mm`` of ``centre``."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    inside = np.linalg.norm(world - centre, axis=1) <= radius_mm
    return (inside.reshape(shape) * value).astype(np.uint8)


def _grids() -> tuple[tuple[int, int, int], np.ndarray, tuple[int, int, int], np.ndarray]:
    """A 1 mm LPS prediction grid and a 2 mm LAS reference grid whose voxel centres are prediction centres."""
    pred_shape = (40, 40, 40)
    pred_affine = oriented_affine("LPS", pred_shape, spacing=(1.0, 1.0, 1.0))
    ref_affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # L, A, S
    ref_affine[:3, 3] = pred_affine[:3, :3] @ np.array([1, 39, 1]) + pred_affine[:3, 3]
    return pred_shape, pred_affine, (20, 20, 20), ref_affine


LIVER = [StructureMatch("liver", 1, "liver", 5)]


def test_lps_prediction_on_a_las_grid_of_other_spacing_scores_dice_one() -> None:
    pred_shape, pred_affine, ref_shape, ref_affine = _grids()
    pred = _ball(pred_shape, pred_affine, CENTRE, 9.0)
    ref = _ball(ref_shape, ref_affine, CENTRE, 9.0, value=5)
    scores = score_in_physical_space(pred, pred_affine, ref, ref_affine, LIVER)
    (liver,) = scores["structures"]
    assert scores["resampled"] and scores["reference_outside_prediction_fraction"] == 0.0
    assert liver["status"] == "scored" and liver["dice"] == pytest.approx(1.0)
    assert liver["hd95_mm"] == pytest.approx(0.0)
    # the same arrays compared by index (every second voxel, as if the grids were the same) disagree:
    # the test above cannot pass without the world coordinates
    by_index = segmentation_metrics(pred[1::2, 1::2, 1::2], (ref == 5).astype(np.uint8), spacing_mm=(2, 2, 2),
                                    labels={1: "liver"})  # fmt: skip
    assert by_index["liver"]["dice"] < 0.5


def test_unaligned_grids_of_other_spacing_score_close_to_one() -> None:
    pred_shape = (48, 44, 40)
    pred_affine = oriented_affine("LPS", pred_shape, spacing=(0.8, 0.9, 1.0))
    ref_shape = (26, 24, 16)
    ref_affine = oriented_affine("LAS", ref_shape, spacing=(1.5, 1.6, 2.5))
    pred = _ball(pred_shape, pred_affine, CENTRE, 11.0)
    ref = _ball(ref_shape, ref_affine, CENTRE, 11.0, value=5)
    (liver,) = score_in_physical_space(pred, pred_affine, ref, ref_affine, LIVER)["structures"]
    assert liver["dice"] > 0.95
    assert liver["hd95_mm"] <= 2.5  # at most about one reference voxel
    assert liver["predicted_ml"] == pytest.approx(liver["reference_ml"], rel=0.1)
    assert liver["predicted_ml"] == pytest.approx(4 / 3 * np.pi * 11.0**3 / 1000, rel=0.05)


def test_a_one_voxel_shift_in_world_space_lowers_dice_as_the_shifted_ball_does() -> None:
    """The prediction array is unchanged; its affine alone moves it 2 mm (a reference voxel) to the patient's right."""
    pred_shape, pred_affine, ref_shape, ref_affine = _grids()
    pred = _ball(pred_shape, pred_affine, CENTRE, 9.0)
    ref = _ball(ref_shape, ref_affine, CENTRE, 9.0, value=5)
    shifted_affine = pred_affine.copy()
    shifted_affine[0, 3] -= 2.0  # RAS x - 2 mm: towards the patient's right
    (liver,) = score_in_physical_space(pred, shifted_affine, ref, ref_affine, LIVER)["structures"]
    # what it must be: the ball and the ball 2 mm along -x, both rasterised on the reference grid
    moved = _ball(ref_shape, ref_affine, CENTRE - np.array([2.0, 0, 0]), 9.0)
    expected = 2 * np.sum(moved & (ref == 5)) / (moved.sum() + (ref == 5).sum())
    assert 0.7 < expected < 0.95
    assert liver["dice"] == pytest.approx(expected, abs=1e-4)
    assert liver["hd95_mm"] == pytest.approx(2.0)


def test_names_are_mapped_and_structures_missing_from_the_reference_are_not_scored() -> None:
    pred_shape, pred_affine, ref_shape, ref_affine = _grids()
    # bundle: 1 spleen, 4 liver, 5 liver_tumor; reference: 1 spleen, 5 liver, 2 kidney_right (not predicted)
    pred = _ball(pred_shape, pred_affine, CENTRE, 9.0, value=4)
    pred[_ball(pred_shape, pred_affine, CENTRE, 3.0).astype(bool)] = 5  # a tumour inside the liver
    ref = _ball(ref_shape, ref_affine, CENTRE, 9.0, value=5)
    ref[_ball(ref_shape, ref_affine, CENTRE + np.array([0, 0, -20.0]), 5.0).astype(bool)] = 1  # spleen, never predicted
    ref[_ball(ref_shape, ref_affine, CENTRE + np.array([0, 14.0, 0]), 4.0).astype(bool)] = 2
    matches = match_structures({0: "background", 1: "spleen", 4: "liver", 5: "liver_tumor"},
                               {1: "spleen", 5: "liver", 2: "kidney_right"})  # fmt: skip
    scores = {
        s["structure"]: s for s in score_in_physical_space(pred, pred_affine, ref, ref_affine, matches)["structures"]
    }
    assert list(scores) == ["spleen", "liver", "liver_tumor"]
    assert scores["spleen"]["status"] == "not predicted"
    assert scores["spleen"]["dice"] == 0.0 and scores["spleen"]["hd95_mm"] is None
    assert scores["liver_tumor"]["status"] == "not in reference"
    assert scores["liver_tumor"]["dice"] is None and scores["liver_tumor"]["predicted_ml"] > 0
    liver = scores["liver"]
    assert liver["status"] == "scored" and liver["reference_name"] == "liver"
    # the tumour voxels are not liver in the prediction: Dice = 2|L∩R| / (|L| + |R|) on the reference grid
    liver_pred = _ball(ref_shape, ref_affine, CENTRE, 9.0) & ~_ball(ref_shape, ref_affine, CENTRE, 3.0)
    expected = 2 * liver_pred.sum() / (liver_pred.sum() + (ref == 5).sum())
    assert liver["dice"] == pytest.approx(expected, abs=1e-4) and liver["dice"] < 1.0


def test_grids_that_do_not_overlap_are_refused() -> None:
    pred_shape, pred_affine, ref_shape, ref_affine = _grids()
    far = pred_affine.copy()
    far[2, 3] += 500.0
    with pytest.raises(ValueError, match="do not overlap in physical space"):
        score_in_physical_space(_ball(pred_shape, far, CENTRE, 9.0), far, np.zeros(ref_shape, np.uint8), ref_affine,
                                LIVER, prediction_name="pred.nii.gz")  # fmt: skip


def test_a_prediction_value_the_bundle_does_not_name_is_refused() -> None:
    pred_shape, pred_affine, ref_shape, ref_affine = _grids()
    pred = _ball(pred_shape, pred_affine, CENTRE, 9.0, value=7)
    with pytest.raises(ValueError, match=r"pred\.nii\.gz: label values 7 are not in the bundle's labels"):
        score_in_physical_space(pred, pred_affine, np.zeros(ref_shape, np.uint8), ref_affine, LIVER,
                                prediction_name="pred.nii.gz")  # fmt: skip


def test_part_of_the_reference_outside_the_prediction_field_of_view_is_reported() -> None:
    pred_shape, pred_affine, ref_shape, ref_affine = _grids()
    cropped = _ball(pred_shape, pred_affine, CENTRE, 9.0)[:, :, :20]  # the prediction covers the lower half only
    ref = _ball(ref_shape, ref_affine, CENTRE, 9.0, value=5)
    scores = score_in_physical_space(cropped, pred_affine, ref, ref_affine, LIVER)
    assert 0.2 < scores["reference_outside_prediction_fraction"] < 0.8
    assert scores["structures"][0]["dice"] < 0.9


def test_resample_labels_is_nearest_neighbour_and_keeps_values() -> None:
    pred_shape, pred_affine, ref_shape, ref_affine = _grids()
    labels = _ball(pred_shape, pred_affine, CENTRE, 9.0, value=3)
    out = resample_labels(labels, pred_affine, ref_shape, ref_affine)
    assert out.shape == ref_shape and out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 3}
    np.testing.assert_array_equal(out, _ball(ref_shape, ref_affine, CENTRE, 9.0, value=3))
