"""Slices that do not form a regular grid: uneven spacing, missing slices, gantry tilt.

A DICOM series is a stack of planes, each with its own ImagePositionPatient. Stacking them as if
they were evenly spaced along their normal puts every slice after an irregular gap at the wrong
position, silently. Here the planes are resampled onto a regular orthogonal grid instead, as
dcm2niix does: the slice spacing is the smallest real gap, the k axis is the slice normal, and a
tilted stack (gantry tilt) has each plane shifted in-plane to where it really lies. What was done
is described by a :class:`SliceCorrection`, which run.json records.

scipy's ``ndimage.shift`` does the in-plane sub-pixel shift; the interpolation across slices is a
two-plane linear blend, written out because it needs each plane's own position and shift.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from pipelines.geometry import LPS_TO_RAS

logger = logging.getLogger(__name__)

__all__ = ["GAP_LIMIT_FACTOR", "SliceCorrection", "labels_on_planes", "plan_regular_grid", "resample_planes"]

# A gap more than this many times the median slice gap is a hole in the acquisition, not
# variable spacing: refused unless the user allows interpolating across it (--allow-gaps).
GAP_LIMIT_FACTOR = 3.0


@dataclass(frozen=True)
class SliceCorrection:
    """How acquired planes were put on a regular grid (recorded in run.json as ``geometry_correction``).

    Attributes:
        kinds: what was corrected: ``uneven_spacing`` and/or ``gantry_tilt``.
        original_positions_mm: each acquired plane's position along the slice normal, in mm.
        spacing_mm: the slice spacing of the regular grid (the smallest real gap).
        max_deviation_mm: the largest distance between an acquired plane and where a regular
            stack of the median gap would have put it (along the normal), in mm.
        tilt_deg: angle between the slice step and the slice normal, in degrees.
        planes: the number of planes of the regular grid.
    """

    kinds: tuple[str, ...]
    original_positions_mm: tuple[float, ...]
    spacing_mm: float
    max_deviation_mm: float
    tilt_deg: float
    planes: int

    def as_record(self) -> dict[str, Any]:
        return {
            "kind": "+".join(self.kinds),
            "original_positions_mm": [round(p, 4) for p in self.original_positions_mm],
            "spacing_mm": round(self.spacing_mm, 6),
            "max_deviation_mm": round(self.max_deviation_mm, 4),
            "tilt_deg": round(self.tilt_deg, 4),
            "planes": self.planes,
        }


@dataclass(frozen=True)
class _Plan:
    affine_lps: np.ndarray
    depths_mm: np.ndarray  # each acquired plane's depth along the normal from the grid origin
    shifts_px: np.ndarray  # (n, 2): each acquired plane's in-plane offset from the grid, (rows, columns) pixels
    correction: SliceCorrection | None


def plan_regular_grid(
    positions: np.ndarray,
    row: np.ndarray,
    col: np.ndarray,
    pixel_spacing: Sequence[float],
    *,
    where: str,
    names: Sequence[str] | None = None,
    allow_gaps: bool = False,
    spacing_tolerance_mm: float = 0.01,
    spacing_tolerance_fraction: float = 0.01,
    tilt_tolerance_rad: float = 1e-3,
) -> _Plan:
    """The regular grid for planes at ``positions`` (LPS, mm, sorted along the normal).

    Args:
        positions: ``(n, 3)`` ImagePositionPatient of each plane, in increasing order along the normal.
        row, col: unit LPS directions of increasing column and increasing row index.
        pixel_spacing: DICOM PixelSpacing: (between rows, between columns) in mm.
        where: names the series in messages.
        names: each plane's file name, for messages (default: plane numbers).
        allow_gaps: interpolate across a gap larger than :data:`GAP_LIMIT_FACTOR` times the median.

    Raises:
        ValueError: two planes at one position, or a gap beyond the limit without ``allow_gaps``.
    """
    names = list(names) if names is not None else [f"plane {n}" for n in range(len(positions))]
    normal = np.cross(row, col)
    origin = positions[0]
    depths = (positions - origin) @ normal
    gaps = np.diff(depths)
    if np.any(gaps < spacing_tolerance_mm):
        at = int(np.argmin(gaps))
        raise ValueError(
            f"{where}: slices {names[at]} and {names[at + 1]} lie at the same position "
            f"({depths[at]:.3f} mm along the normal); the series mixes acquisitions. Split it, or pick one "
            "acquisition with --series-uid if they have their own series"
        )
    median_gap = float(np.median(gaps))
    uneven = float(np.max(np.abs(gaps - median_gap))) > max(
        spacing_tolerance_mm, spacing_tolerance_fraction * median_gap
    )
    if uneven and gaps.max() > GAP_LIMIT_FACTOR * median_gap and not allow_gaps:
        at = int(np.argmax(gaps))
        raise ValueError(
            f"{where}: a gap of {gaps[at]:.2f} mm between slices {names[at]} and {names[at + 1]} "
            f"({gaps[at] / median_gap:.1f}x the "
            f"median {median_gap:.2f} mm, limit {GAP_LIMIT_FACTOR:g}x): that region was not imaged. Use --allow-gaps "
            "to interpolate across it"
        )
    in_plane = (positions - origin) - np.outer(depths, normal)  # each plane's offset within its own plane
    shifts = np.stack([in_plane @ col / pixel_spacing[0], in_plane @ row / pixel_spacing[1]], axis=1)
    step = (positions[-1] - origin) / (len(positions) - 1)
    tilt = float(np.arccos(np.clip(abs(step @ normal) / np.linalg.norm(step), 0.0, 1.0)))
    tilted = tilt > tilt_tolerance_rad
    spacing = float(gaps.min()) if uneven else median_gap
    lps = np.eye(4)
    lps[:3, 0] = row * pixel_spacing[1]
    lps[:3, 1] = col * pixel_spacing[0]
    lps[:3, 3] = origin
    if not uneven and not tilted:
        lps[:3, 2] = step  # the exact regular stack: no resampling
        return _Plan(lps, depths, np.zeros_like(shifts), None)
    planes = int(np.floor(depths[-1] / spacing + 1e-6)) + 1
    lps[:3, 2] = normal * spacing
    regular = np.arange(len(depths)) * median_gap
    correction = SliceCorrection(
        kinds=tuple(k for k, on in (("uneven_spacing", uneven), ("gantry_tilt", tilted)) if on),
        original_positions_mm=tuple(float(p) for p in positions @ normal),
        spacing_mm=spacing,
        max_deviation_mm=float(np.max(np.abs(depths - regular))),
        tilt_deg=float(np.degrees(tilt)),
        planes=planes,
    )
    return _Plan(lps, depths, shifts, correction)


def resample_planes(planes: Sequence[np.ndarray], plan: _Plan, fill_value: float) -> np.ndarray:
    """Acquired planes ``(rows, columns)`` each, onto the plan's regular grid.

    Returns:
        float32 ``(planes, rows, columns)``; voxels the acquisition did not cover hold ``fill_value``.
    """
    correction = plan.correction
    assert correction is not None  # only called when there is something to correct
    spacing = correction.spacing_mm
    out = np.empty((correction.planes, *planes[0].shape), dtype=np.float32)
    shifted: dict[int, np.ndarray] = {}

    def aligned(k: int) -> np.ndarray:
        # plane k moved onto the grid's (rows, columns): its content sits shifts_px[k] further along
        if k not in shifted:
            shift = plan.shifts_px[k]
            plane = planes[k].astype(np.float32, copy=False)
            if np.any(np.abs(shift) > 1e-3):
                plane = ndimage.shift(plane, shift, order=1, mode="constant", cval=fill_value)
            shifted[k] = plane
        return shifted[k]

    depths = plan.depths_mm
    for t in range(correction.planes):
        depth = t * spacing
        k = int(np.clip(np.searchsorted(depths, depth, side="right") - 1, 0, len(depths) - 2))
        weight = float(np.clip((depth - depths[k]) / (depths[k + 1] - depths[k]), 0.0, 1.0))
        if weight < 1e-6:
            out[t] = aligned(k)
        elif weight > 1 - 1e-6:
            out[t] = aligned(k + 1)
        else:
            out[t] = (1 - weight) * aligned(k) + weight * aligned(k + 1)
        for old in [key for key in shifted if key < k]:
            del shifted[old]  # planes behind the sweep are not needed again
    return out


def labels_on_planes(
    labels: np.ndarray,
    affine: np.ndarray,
    positions: np.ndarray,
    row: np.ndarray,
    col: np.ndarray,
    pixel_spacing: Sequence[float],
) -> np.ndarray:
    """A label map ``(i, j, k)`` on a regular grid, sampled (nearest) on each acquired plane.

    DICOM-SEG frames reference the acquired instances; on a corrected series each frame must hold
    the labels at that instance's own plane, not at a plane of the regular grid.

    Returns:
        ``(columns, rows, planes)`` label map, one plane per acquired instance, in their order.
    """
    rows, columns = labels.shape[1], labels.shape[0]
    jj, ii = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    world_to_voxel = np.linalg.inv(LPS_TO_RAS @ np.asarray(affine, dtype=np.float64))  # from LPS
    out = np.zeros((columns, rows, len(positions)), dtype=labels.dtype)
    for k, position in enumerate(positions):
        world = (
            position[:, None, None]
            + row[:, None, None] * (ii * pixel_spacing[1])[None]
            + col[:, None, None] * (jj * pixel_spacing[0])[None]
        )
        voxel = np.tensordot(world_to_voxel[:3, :3], world, axes=1) + world_to_voxel[:3, 3][:, None, None]
        sampled = ndimage.map_coordinates(labels, np.rint(voxel).reshape(3, -1), order=0, mode="constant", cval=0)
        out[:, :, k] = sampled.reshape(rows, columns).T
    return out
