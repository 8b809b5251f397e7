"""Per-structure statistics of a label map: volume, intensities, boxes, components; stats.json and stats.csv.

Works on a predicted integer label map on the input's own grid: an array indexed ``(i, j, k)`` like
the image, with the image's 4x4 voxel-to-RAS affine (mm). Label 0 is background.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from pipelines.geometry import check_affine, check_label_map
from pipelines.io.writers import Written, write_bytes, write_json
from pipelines.outputs.names import name_of, names_by_id

logger = logging.getLogger(__name__)

__all__ = [
    "STATS_CSV_COLUMNS",
    "check_image_and_labels",
    "compute_stats",
    "present_structures",
    "write_stats",
]

STATS_CSV_COLUMNS = (
    "label", "name", "voxels", "volume_ml", "mean", "median", "std", "components",
    "bbox_i0", "bbox_i1", "bbox_j0", "bbox_j1", "bbox_k0", "bbox_k1",
    "bbox_x0_mm", "bbox_x1_mm", "bbox_y0_mm", "bbox_y1_mm", "bbox_z0_mm", "bbox_z1_mm",
    "confidence", "high_entropy_fraction", "tta_agreement", "removed_fraction", "flags", "qc",
)  # fmt: skip
"""Columns of ``stats.csv``: the keys of :func:`compute_stats` with the boxes flattened, then the confidence
and QC columns of :func:`pipelines.outputs.quality.assess_case` (empty when not measured; ``flags`` joined by ``|``)."""

_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def present_structures(labels: np.ndarray) -> list[tuple[int, tuple[slice, slice, slice]]]:
    """Labels present in a map (id > 0, at least one voxel) and their bounding boxes, in increasing id.

    One ``scipy.ndimage.find_objects`` pass over the map.

    Args:
        labels: non-negative integer label map ``(i, j, k)``.

    Returns:
        ``[(label, (slice_i, slice_j, slice_k)), ...]``; each box is the smallest one holding all the label's voxels.
    """
    boxes = ndimage.find_objects(labels)
    return [(index + 1, box) for index, box in enumerate(boxes) if box is not None]


def check_image_and_labels(
    labels: np.ndarray, image: np.ndarray, affine: np.ndarray, label_names: Mapping[int, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
    """The inputs of the statistics and the preview, checked: ``(labels, image, affine, names)``.

    Args:
        labels: integer label map ``(i, j, k)``, 0 = background (booleans are viewed as uint8).
        image: the image ``(i, j, k)`` on the same grid.
        affine: 4x4 voxel-to-RAS matrix (mm), returned as float64.
        label_names: label id -> structure name; ids may be strings (labels.json), returned as ints.

    Raises:
        ValueError: shapes differ, the map is not 3D or has negative ids, the affine is not 4x4 or singular.
        TypeError: the label map is not integer, or a name's key is not a label id.
    """
    labels = check_label_map(labels, "labels")
    image = np.asarray(image)
    if image.shape != labels.shape:
        raise ValueError(f"image: shape {image.shape} differs from the label map's {labels.shape}")
    return labels, image, check_affine(affine, "affine"), names_by_id(label_names)


def compute_stats(
    labels: np.ndarray,
    image: np.ndarray,
    affine: np.ndarray,
    label_names: Mapping[int, str],
) -> list[dict[str, Any]]:
    """Per-structure statistics of a label map on the image's grid.

    Only labels present in the map (at least one voxel, id > 0) are reported, in increasing id
    order; a name listed in ``label_names`` with no voxels is left out, and an id missing from
    ``label_names`` is reported as ``label_<id>``. The work is done inside each label's bounding
    box (one ``scipy.ndimage.find_objects`` pass over the map), never on full-volume masks.

    Args:
        labels: integer label map ``(i, j, k)``, 0 = background.
        image: the image ``(i, j, k)`` on the same grid (HU for CT).
        affine: 4x4 voxel-to-RAS matrix (mm) of that grid.
        label_names: label id -> structure name.

    Returns:
        One dict per present label with keys ``label`` (int), ``name``, ``voxels`` (int),
        ``volume_ml`` (voxels x |det(affine[:3, :3])| mm³ / 1000), ``mean``, ``median``, ``std``
        (population standard deviation) of the image inside the structure in image units,
        ``bbox_voxels`` ``[[i0, i1], [j0, j1], [k0, k1]]`` (inclusive voxel indices),
        ``bbox_mm`` ``[[x0, x1], [y0, y1], [z0, z1]]`` (RAS mm: min and max over the 8 corners
        of the box's outer voxel faces, i.e. indices ``i0 - 0.5`` and ``i1 + 0.5``...), and
        ``components`` (connected components, 26-connectivity).

    Raises:
        ValueError: shapes differ, the map is not 3D or has negative ids, the affine is not 4x4 or singular.
        TypeError: the label map is not integer, or a name's key is not a label id.
    """
    labels, image, affine, names = check_image_and_labels(labels, image, affine, label_names)
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))

    stats: list[dict[str, Any]] = []
    for label, box in present_structures(labels):
        mask = labels[box] == label
        values = image[box][mask].astype(np.float64)
        _, components = ndimage.label(mask, structure=_CONNECTIVITY_26)
        bbox_voxels = [[int(s.start), int(s.stop) - 1] for s in box]
        stats.append(
            {
                "label": int(label),
                "name": name_of(label, names),
                "voxels": int(values.size),
                "volume_ml": values.size * voxel_mm3 / 1000.0,
                "mean": float(values.mean()),
                "median": float(np.median(values)),
                "std": float(values.std()),
                "bbox_voxels": bbox_voxels,
                "bbox_mm": _bbox_mm(bbox_voxels, affine),
                "components": int(components),
            }
        )
    logger.debug("statistics of %d structures, voxel %.4g mm³", len(stats), voxel_mm3)
    return stats


def _bbox_mm(bbox_voxels: list[list[int]], affine: np.ndarray) -> list[list[float]]:
    # The box covers whole voxels: its faces lie half a voxel outside the first and last centres.
    edges = [(lo - 0.5, hi + 0.5) for lo, hi in bbox_voxels]
    corners = np.array([[i, j, k, 1.0] for i in edges[0] for j in edges[1] for k in edges[2]])
    world = (affine @ corners.T)[:3]
    return [[float(world[a].min()), float(world[a].max())] for a in range(3)]


def _csv_row(entry: Mapping[str, Any]) -> list[Any]:
    box = [v for pair in entry["bbox_voxels"] for v in pair]
    box_mm = [repr(float(v)) for pair in entry["bbox_mm"] for v in pair]
    floats = [repr(float(entry[key])) for key in ("volume_ml", "mean", "median", "std")]
    quality = [_optional(entry.get(k)) for k in ("confidence", "high_entropy_fraction", "tta_agreement")]
    quality += [_optional(entry.get("removed_fraction")), "|".join(entry.get("flags") or ()), entry.get("qc", "")]
    return [entry["label"], entry["name"], entry["voxels"], *floats, entry["components"], *box, *box_mm, *quality]


def _optional(value: Any) -> str:
    return "" if value is None else repr(float(value))


def write_stats(stats: Sequence[Mapping[str, Any]], folder: str | Path) -> tuple[Written, Written]:
    """Write ``stats.json`` (the list from :func:`compute_stats`) and ``stats.csv``, atomically.

    The CSV has the columns of :data:`STATS_CSV_COLUMNS`, one row per structure, UTF-8 with CRLF line
    ends (the csv module's default); floats are written with full precision (``repr``), so both files
    hold the same numbers. Both files are serialised in memory and hashed from the bytes written.

    Returns:
        ``(json, csv)``: the path and sha256 of ``stats.json`` and of ``stats.csv``.
    """
    folder = Path(folder)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(STATS_CSV_COLUMNS)
    writer.writerows(_csv_row(entry) for entry in stats)
    json_written = write_json(list(stats), folder / "stats.json")
    csv_written = write_bytes(buffer.getvalue().encode("utf-8"), folder / "stats.csv")
    return json_written, csv_written
