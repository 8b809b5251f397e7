"""How deep a structure lies under the body's surface, for the ``too_superficial`` QC flag.

Some structures cannot touch the skin: a brain tumour lies inside the skull, under the scalp and the
bone. A network that has learned "bright ring = tumour" can paint the scalp of a scan with another
contrast at high confidence, so its own probabilities do not catch it; where the structure lies does.
The body is found from the input alone (:func:`pipelines.foreground.body_mask`: Otsu's foreground,
each slice's holes filled, the largest component). The depth of a voxel is its distance in mm to the
nearest voxel outside the body (SciPy's Euclidean distance transform with the grid's spacing); the
faces of the field of view are not a surface, so a structure at a cut face is not called superficial
for that. The QC measures it on the input's grid taken every ``step`` voxels (:func:`qc_step`: about
1.5 mm), since the filling and the distance transform cost seconds on a fine 512 x 512 x 200 grid and
an 8 mm limit needs no finer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from pipelines.foreground import body_mask

__all__ = ["body_depth_mm", "qc_step"]

QC_GRID_MM = 1.5
"""Grid the QC measures depth on: the input's voxels taken every ``step`` along each axis, about this fine."""


def qc_step(spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxels to step along each axis so that the grid is about :data:`QC_GRID_MM` (never coarser than the input)."""
    return tuple(max(1, math.floor(QC_GRID_MM / float(s))) for s in spacing)


def body_depth_mm(image: np.ndarray, spacing: Sequence[float], step: Sequence[int] = (1, 1, 1)) -> np.ndarray | None:
    """Depth (mm) under the body's surface of every voxel of ``image[::step]``: 0 outside the body; None
    without a body.

    Args:
        image: the input ``(i, j, k)`` on the label map's grid.
        spacing: voxel spacing in mm along ``i, j, k``.
        step: take every ``step``-th voxel along each axis (the depth of voxel ``v`` is then at ``v // step``).
    """
    body = body_mask(image[:: step[0], :: step[1], :: step[2]])
    if body is None:
        return None
    sampling = [float(s) * n for s, n in zip(spacing, step, strict=True)]
    return ndimage.distance_transform_edt(body, sampling=sampling).astype(np.float32)
