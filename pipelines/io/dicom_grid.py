"""The voxel grid a DICOM input would be read onto, from headers only (for ``manifest validate``).

Any DICOM input :func:`pipelines.io.readers.read_volume` takes (a folder searched recursively, a
DICOMDIR, a ``.zip``) is scanned once, header only (:func:`pipelines.io.dicom_tree.scan_tree`); the
series is the one the reader would read: ``series_uid`` when given (checked present), else the one
the rules choose. The grid is planned exactly as the reader plans it
(:func:`pipelines.io.slice_geometry.plan_regular_grid`), so an uneven or tilted series gets the
corrected grid its labels will lie on. No pixel data is decoded.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipelines.geometry import LPS_TO_RAS, Grid
from pipelines.io.dicom import plane_geometry
from pipelines.io.dicom_tree import scan_tree
from pipelines.io.series_rules import SeriesRules, choose_series
from pipelines.io.slice_geometry import plan_regular_grid

logger = logging.getLogger(__name__)

__all__ = ["dicom_grid"]


def dicom_grid(path: str | Path, series_uid: str | None = None, rules: SeriesRules | None = None) -> Grid:
    """The grid ``(columns, rows, slices)`` and voxel-to-RAS affine of one series of a DICOM input.

    Args:
        path: a folder (searched recursively), a DICOMDIR file or a ``.zip``.
        series_uid: the series to take; None: chosen by ``rules``.
        rules: selection rules; None for :data:`pipelines.io.series_rules.DEFAULT_RULES`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no DICOM series; ``series_uid`` not in the input (the message lists what is);
            several patients without ``series_uid``; no series the rules accept; a single slice;
            slices lacking the geometry tags; two slices at one position.
    """
    path = Path(path)
    tree = scan_tree(path)
    selection = choose_series(list(tree.summaries.values()), rules, series_uid=series_uid, where=str(path), log=False)
    series = tree.series_by_uid(selection.uid)
    headers = series.datasets
    if len(headers) < 2:
        raise ValueError(f"{path}: expected a 3D image, series {series.uid} has a single slice")
    try:
        positions, row, col, pixel_spacing = plane_geometry(headers)
    except ValueError as err:
        raise ValueError(f"{path}: series {series.uid}: {err}; cannot place the slices in space") from err
    # Gaps are a policy of the run (--allow-gaps), not of the grid: plan as if interpolated.
    plan = plan_regular_grid(positions, row, col, pixel_spacing, where=f"{path}: series {series.uid}", allow_gaps=True)
    planes = plan.correction.planes if plan.correction is not None else len(headers)
    columns, rows = int(headers[0].Columns), int(headers[0].Rows)
    return Grid((columns, rows, planes), LPS_TO_RAS @ plan.affine_lps)
