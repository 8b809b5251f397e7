"""Score a predicted label map against a reference stored on another grid, in physical space.

The prediction (on its input's grid) is resampled onto the reference label's grid by world
coordinates, nearest neighbour, with SimpleITK: each grid's origin, spacing and direction come from
its own affine (:func:`pipelines.geometry.itk_from_affine`), so a reference stored in another axis
order (LAS against LPS), with other spacing or another origin is compared voxel by voxel only after
both describe the same points of the patient. Never by array index.

Dice and HD95 (mm, on the reference grid's spacing) then come from
:func:`pipelines.metrics.segmentation_metrics` (MONAI's metric functions).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.evaluation.cases import StructureMatch
from pipelines.geometry import Grid, check_affine, check_label_map, grids_match, itk_from_affine, sitk_image
from pipelines.metrics import segmentation_metrics

__all__ = ["STATUSES", "check_values", "resample_labels", "score_in_physical_space"]

logger = logging.getLogger(__name__)

STATUSES: dict[str, str] = {
    "scored": "in prediction and reference",
    "not predicted": "in the reference, not in the prediction (Dice 0, no finite HD95)",
    "not in scan": "named by the reference's labels but without a voxel in it; predicted (Dice 0)",
    "absent": "named by the reference's labels, in neither map (nothing to score)",
    "not in reference": "predicted by the bundle, not a structure of the reference (not scored)",
}
"""What each structure record's ``status`` means."""


def resample_labels(
    labels: np.ndarray, affine: np.ndarray, target_shape: Sequence[int], target_affine: np.ndarray
) -> np.ndarray:
    """A label map resampled onto another grid by world coordinates, nearest neighbour.

    Args:
        labels: integer label map ``(I, J, K)``.
        affine: its 4x4 voxel-to-RAS affine (mm).
        target_shape: the target grid's ``(I', J', K')``.
        target_affine: the target grid's 4x4 voxel-to-RAS affine (mm).

    Returns:
        ``(I', J', K')`` label map, ``labels``' dtype; 0 where a target voxel's centre lies outside ``labels``' grid.
    """
    import SimpleITK as sitk

    labels = check_label_map(labels, "labels")
    if labels.size and int(labels.max()) > np.iinfo(np.uint16).max:
        raise ValueError(f"labels: values up to {int(labels.max())}; expected at most 65535")
    source = sitk_image(labels.astype(np.uint16, copy=False), check_affine(affine, "labels"))
    target = sitk.Image([int(s) for s in target_shape], sitk.sitkUInt16)
    origin, spacing, direction = itk_from_affine(check_affine(target_affine, "target grid"))
    target.SetOrigin(origin)
    target.SetSpacing(spacing)
    target.SetDirection(direction)
    resampled = sitk.Resample(source, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    return sitk.GetArrayFromImage(resampled).transpose(2, 1, 0).astype(labels.dtype, copy=False)


def _lookup(size: int, pairs: Mapping[int, int]) -> np.ndarray:
    table = np.zeros(size, dtype=np.uint16)
    for source, target in pairs.items():
        if source < size:
            table[source] = target
    return table


def check_values(array: np.ndarray, allowed: set[int], what: str, where: str) -> None:
    """Refuse a label map with a non-zero value outside ``allowed``; ``where`` names what allows them."""
    present = {int(v) for v in np.flatnonzero(np.bincount(array.ravel()))} if array.size else set()
    unexpected = sorted(present - allowed - {0})
    if unexpected:
        raise ValueError(
            f"{what}: label values {', '.join(map(str, unexpected))} are not in {where} "
            f"(expected some of {', '.join(map(str, sorted(allowed)))})"
        )


def score_in_physical_space(
    prediction: np.ndarray,
    prediction_affine: np.ndarray,
    reference: np.ndarray,
    reference_affine: np.ndarray,
    matches: Sequence[StructureMatch],
    *,
    prediction_name: str = "prediction",
    reference_name: str = "reference",
) -> dict[str, Any]:
    """Dice and HD95 of each matched structure, on the reference's grid, after resampling the prediction there.

    Args:
        prediction: predicted label map ``(I, J, K)`` with the bundle's label values.
        prediction_affine: its voxel-to-RAS affine (mm).
        reference: reference label map ``(I', J', K')`` with the reference's label values.
        reference_affine: its voxel-to-RAS affine (mm).
        matches: the bundle's structures and their reference values
            (:func:`~pipelines.evaluation.cases.match_structures`).
        prediction_name, reference_name: the files, for error messages.

    Returns:
        ``{"resampled": bool, "reference_outside_prediction_fraction": float, "structures": [...]}``;
        each structure ``{"structure", "reference_name", "status" (see :data:`STATUSES`), "dice",
        "hd95_mm", "predicted_ml", "reference_ml"}``, Dice and HD95 None when not scored, HD95 None
        when infinite (a structure in only one map).

    Raises:
        ValueError: the prediction holds values the bundle's labels do not name, or the two grids do
            not overlap at all. (The reference's values are checked against its labels by the caller,
            :func:`check_values`.)
    """
    prediction = check_label_map(prediction, prediction_name)
    reference = check_label_map(reference, reference_name)
    prediction_affine = check_affine(prediction_affine, prediction_name)
    reference_affine = check_affine(reference_affine, reference_name)
    check_values(prediction, {m.value for m in matches}, prediction_name, "the bundle's labels")
    same_grid = grids_match(
        Grid(prediction.shape, prediction_affine), Grid(reference.shape, reference_affine), allow_reorder=False
    )
    if same_grid:
        on_reference, covered = prediction, np.ones(reference.shape, dtype=bool)
    else:
        on_reference = resample_labels(prediction, prediction_affine, reference.shape, reference_affine)
        # which reference voxels the prediction's field of view covers (outside it, resampling gives 0)
        coverage = resample_labels(
            np.ones(prediction.shape, np.uint8), prediction_affine, reference.shape, reference_affine
        )
        covered = coverage.astype(bool)
        if not covered.any():
            raise ValueError(
                f"{prediction_name} and {reference_name} do not overlap in physical space; "
                "expected both to describe the same patient"
            )
    scored = [m for m in matches if m.in_reference]
    pred_common = _lookup(int(on_reference.max()) + 1, {m.value: m.value for m in scored})[on_reference]
    ref_common = _lookup(int(reference.max()) + 1, {m.reference_value: m.value for m in scored})[reference]
    foreground = ref_common > 0
    outside = float((foreground & ~covered).sum() / foreground.sum()) if foreground.any() else 0.0
    if outside > 0:
        logger.warning("%.1f%% of %s's scored structures lie outside %s's field of view", 100 * outside,
                       reference_name, prediction_name)  # fmt: skip
    spacing = tuple(float(s) for s in np.linalg.norm(reference_affine[:3, :3], axis=0))
    metrics = segmentation_metrics(
        pred_common, ref_common, spacing_mm=spacing, labels={m.value: m.name for m in scored}
    )
    pred_ml = float(abs(np.linalg.det(prediction_affine[:3, :3]))) / 1000.0
    ref_ml = float(np.prod(spacing)) / 1000.0
    pred_counts = np.bincount(prediction.ravel(), minlength=max((m.value for m in matches), default=0) + 1)
    ref_counts = np.bincount(ref_common.ravel(), minlength=len(pred_counts))
    structures = []
    for m in matches:
        record: dict[str, Any] = {
            "structure": m.name,
            "reference_name": m.reference_name,
            "predicted_ml": round(float(pred_counts[m.value]) * pred_ml, 3),
        }
        if not m.in_reference:
            structures.append(
                {**record, "status": "not in reference", "dice": None, "hd95_mm": None, "reference_ml": None}
            )
            continue
        values = metrics[m.name]
        in_ref, in_pred = bool(ref_counts[m.value]), bool((pred_common == m.value).any())
        status = (
            "scored" if in_ref and in_pred else "not predicted" if in_ref else "not in scan" if in_pred else "absent"
        )
        dice, hd95 = values["dice"], values["hd95_mm"]
        structures.append({
            **record,
            "status": status,
            "dice": None if math.isnan(dice) else round(dice, 4),
            "hd95_mm": round(hd95, 2) if math.isfinite(hd95) else None,
            "reference_ml": round(float(ref_counts[m.value]) * ref_ml, 3),
        })  # fmt: skip
    return {
        "resampled": not same_grid,
        "reference_outside_prediction_fraction": round(outside, 4),
        "structures": structures,
    }
