"""Per-structure segmentation metrics in millimetres: Dice, HD95 and average surface distance.

The numbers come from MONAI's metric functions (``compute_dice``, ``compute_hausdorff_distance``,
``compute_average_surface_distance``) given the voxel spacing, so distances are in mm.

Surface definition (MONAI's, with a spacing and the default ``use_subvoxels=False``): the surface
of a mask is its set of boundary voxels, ``mask XOR binary_erosion(mask)`` with 6-connectivity;
a distance is the Euclidean distance in mm between voxel centres of two surfaces.

- ``hd95_mm``: the symmetric 95th-percentile Hausdorff distance, the larger of the 95th
  percentiles of the prediction-to-reference and the reference-to-prediction surface distances.
- ``asd_mm``: the average symmetric surface distance, the mean over both directed sets of
  surface distances taken together.

Empty structures, decided here once for every caller:

- absent in both prediction and reference: ``dice``, ``hd95_mm`` and ``asd_mm`` are NaN (nothing
  to measure); :func:`summarize` leaves the case out of that structure's means.
- present in only one of them: ``dice`` is 0 and both distances are ``inf`` (a missed or
  hallucinated structure has no finite surface distance). :func:`summarize` averages distances
  over the finite values only and counts such cases in ``n_missed``; the Dice mean includes the 0.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance
from scipy import ndimage

from pipelines.geometry import Grid, affine_text, grids_match
from pipelines.io.readers import read_volume
from pipelines.io.writers import write_bytes

logger = logging.getLogger(__name__)

__all__ = [
    "METRIC_NAMES",
    "metrics_for_files",
    "segmentation_metrics",
    "summarize",
    "write_metrics",
]

METRIC_NAMES: tuple[str, ...] = ("dice", "hd95_mm", "asd_mm")
"""The metrics computed for each structure, in CSV column order."""


def _label_map(labels: Mapping[int, str] | Mapping[str, str]) -> dict[int, str]:
    """Normalise ``labels`` to int keys (JSON gives strings) and check the names are unique."""
    result: dict[int, str] = {}
    for key, name in labels.items():
        try:
            value = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"labels: key {key!r} is not an integer label value") from None
        if value < 0:
            raise ValueError(f"labels: key {key!r} is negative; label values are non-negative integers")
        result[value] = str(name)
    names = [name for value, name in result.items() if value != 0]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"labels: structure names used more than once: {', '.join(duplicates)}")
    return dict(sorted(result.items()))


def _as_label_array(array: np.ndarray, what: str) -> np.ndarray:
    """Return ``array`` as a non-negative integer label map, or raise naming ``what``."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"{what}: expected integer label values, got non-integer values ({array.dtype})")
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{what}: expected an integer label map, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError(f"{what}: label values must be non-negative, found {int(array.min())}")
    return array


def _present(array: np.ndarray) -> set[int]:
    """Label values present in an integer map (bincount: linear time, unlike np.unique's sort)."""
    if array.size == 0:
        return set()
    high = int(array.max())
    if high < 1 << 16:
        return {int(v) for v in np.flatnonzero(np.bincount(array.ravel(), minlength=high + 1))}
    return {int(v) for v in np.unique(array)}


def _check_values(array: np.ndarray, labels: Mapping[int, str], what: str) -> None:
    unexpected = sorted(_present(array) - set(labels) - {0})
    if unexpected:
        raise ValueError(
            f"{what}: label values {', '.join(map(str, unexpected))} are not in labels "
            f"(labels has {', '.join(map(str, labels))})"
        )


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None, shape: Sequence[int]) -> tuple[slice, ...]:
    """Bounding box of two boxes grown by one voxel (clipped to the array): cropping there keeps
    every surface voxel and its neighbours, so the metrics equal those of the full volume."""
    boxes = [box for box in (a, b) if box is not None]
    return tuple(
        slice(max(min(box[d].start for box in boxes) - 1, 0), min(max(box[d].stop for box in boxes) + 1, shape[d]))
        for d in range(len(shape))
    )


def segmentation_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    spacing_mm: tuple[float, float, float],
    labels: Mapping[int, str],
) -> dict[str, dict[str, float]]:
    """Dice, HD95 and ASD of every structure of ``labels`` (background 0 excluded).

    Args:
        pred: Predicted label map (I, J, K), integer values.
        truth: Reference label map (I, J, K) on the same grid.
        spacing_mm: Voxel size along (i, j, k) in mm.
        labels: Label value to structure name; value 0 is the background and is skipped.

    Returns:
        ``{structure name: {"dice": float, "hd95_mm": float, "asd_mm": float}}`` in label order.
        See the module docstring for structures missing from one or both maps (NaN / 0 and inf).

    Raises:
        ValueError: shapes differ, the spacing is not positive, values are not integers, or either
            map holds values not in ``labels`` (the message lists them).
        TypeError: a map is not numeric.
    """
    label_map = _label_map(labels)
    pred = _as_label_array(pred, "prediction")
    truth = _as_label_array(truth, "reference")
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {truth.shape}")
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != pred.ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm: expected {pred.ndim} positive sizes in mm, got {tuple(spacing_mm)}")
    _check_values(pred, label_map, "prediction")
    _check_values(truth, label_map, "reference")

    # find_objects gives each value's bounding box in one pass; entry v-1 is None where v is absent
    pred_boxes = ndimage.find_objects(pred)
    truth_boxes = ndimage.find_objects(truth)
    results: dict[str, dict[str, float]] = {}
    for value, name in label_map.items():
        if value == 0:
            continue
        pred_box = pred_boxes[value - 1] if value <= len(pred_boxes) else None
        truth_box = truth_boxes[value - 1] if value <= len(truth_boxes) else None
        if pred_box is None and truth_box is None:
            results[name] = {"dice": math.nan, "hd95_mm": math.nan, "asd_mm": math.nan}
            continue
        if pred_box is None or truth_box is None:
            results[name] = {"dice": 0.0, "hd95_mm": math.inf, "asd_mm": math.inf}
            continue
        box = _union_box(pred_box, truth_box, pred.shape)
        # MONAI metrics take one-hot (batch, channel, I, J, K); one structure is one channel
        y_pred = torch.from_numpy(np.ascontiguousarray(pred[box] == value))[None, None]
        y = torch.from_numpy(np.ascontiguousarray(truth[box] == value))[None, None]
        dice = compute_dice(y_pred, y, include_background=True)
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing)
        asd = compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True, spacing=spacing)
        results[name] = {"dice": float(dice), "hd95_mm": float(hd95), "asd_mm": float(asd)}
    return results


def metrics_for_files(
    pred_path: str | os.PathLike[str],
    label_path: str | os.PathLike[str],
    *,
    labels: Mapping[int, str],
) -> dict[str, dict[str, float]]:
    """Read a predicted and a reference label map and compute :func:`segmentation_metrics`.

    Both are read with :func:`pipelines.io.read_volume` (NIfTI through nibabel; NRRD, MetaImage);
    the spacing comes from the affine.

    Args:
        pred_path: Predicted label map file.
        label_path: Reference label map file.
        labels: Label value to structure name.

    Returns:
        As :func:`segmentation_metrics`.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: the grids differ (shape, or affine beyond :data:`~pipelines.geometry.GRID_TOLERANCE_MM`;
            the message gives both, and a label stored in another axis order is refused too), a
            file is unreadable, or a map holds values not in ``labels`` (naming the file).
    """
    pred = read_volume(pred_path)
    truth = read_volume(label_path)
    # voxel by voxel comparison needs the same storage order, so a reordered grid is refused too
    if not grids_match(Grid(pred.shape, pred.affine), Grid(truth.shape, truth.affine), allow_reorder=False):
        raise ValueError(
            f"grids differ: prediction {pred_path} has shape {pred.shape} and affine {affine_text(pred.affine)}; "
            f"reference {label_path} has shape {truth.shape} and affine {affine_text(truth.affine)}"
        )
    label_map = _label_map(labels)
    pred_array = _as_label_array(pred.array, str(pred_path))
    truth_array = _as_label_array(truth.array, str(label_path))
    _check_values(pred_array, label_map, str(pred_path))
    _check_values(truth_array, label_map, str(label_path))
    return segmentation_metrics(pred_array, truth_array, spacing_mm=pred.spacing_mm, labels=label_map)


def summarize(per_case: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean of each metric per structure over cases.

    Dice is averaged over the cases where it is not NaN (the structure is in the prediction or
    the reference); distances over the cases where they are finite.

    Args:
        per_case: ``{case_id: {structure: {"dice", "hd95_mm", "asd_mm"}}}``.

    Returns:
        ``{structure: {"dice", "hd95_mm", "asd_mm": mean (NaN when no value counts),
        "n_cases": cases where the structure was measured, "n_missed": cases where it was in only
        one of the two maps}}``, structures in first-seen order.
    """
    collected: dict[str, dict[str, list[float]]] = {}
    for structures in per_case.values():
        for name, values in structures.items():
            slot = collected.setdefault(name, {metric: [] for metric in METRIC_NAMES})
            for metric in METRIC_NAMES:
                slot[metric].append(float(values.get(metric, math.nan)))
    summary: dict[str, dict[str, float]] = {}
    for name, slot in collected.items():
        dice = [v for v in slot["dice"] if not math.isnan(v)]
        entry: dict[str, float] = {"dice": float(np.mean(dice)) if dice else math.nan}
        for metric in METRIC_NAMES[1:]:
            finite = [v for v in slot[metric] if math.isfinite(v)]
            entry[metric] = float(np.mean(finite)) if finite else math.nan
        entry["n_cases"] = len(dice)
        entry["n_missed"] = sum(1 for v in slot["hd95_mm"] if math.isinf(v))
        summary[name] = entry
    return summary


def _json_number(value: Any) -> Any:
    """NaN and inf become null (strict JSON has neither; Dice 0 or null tells which it was)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _text(value: float) -> str:
    return repr(round(float(value), 6)) if math.isfinite(value) else repr(float(value))


def write_metrics(
    per_case: Mapping[str, Mapping[str, Mapping[str, float]]],
    folder: str | os.PathLike[str],
) -> tuple[Path, Path]:
    """Write ``metrics.csv`` and ``metrics.json`` into ``folder``, each atomically.

    ``metrics.csv`` has one row per case and structure: ``case_id,structure,dice,hd95_mm,asd_mm``
    (6 decimals; ``nan`` and ``inf`` written as such). ``metrics.json`` is
    ``{"cases": per_case, "mean": summarize(per_case)}`` with NaN and inf written as ``null``.

    Args:
        per_case: ``{case_id: {structure: {"dice", "hd95_mm", "asd_mm"}}}``.
        folder: Output folder; created when missing.

    Returns:
        The CSV path and the JSON path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case_id", "structure", *METRIC_NAMES])
    for case_id, structures in per_case.items():
        for name, values in structures.items():
            writer.writerow([case_id, name, *(_text(values.get(m, math.nan)) for m in METRIC_NAMES)])
    csv_path = write_bytes(buffer.getvalue().encode("utf-8"), folder / "metrics.csv").path

    document = {
        "cases": {
            case_id: {
                name: {m: _json_number(float(v)) for m, v in values.items()} for name, values in structures.items()
            }
            for case_id, structures in per_case.items()
        },
        "mean": {name: {m: _json_number(v) for m, v in values.items()} for name, values in summarize(per_case).items()},
    }
    json_text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    json_path = write_bytes(json_text.encode("utf-8"), folder / "metrics.json").path
    logger.info("wrote %s and %s (%d cases)", csv_path, json_path, len(per_case))
    return csv_path, json_path
