"""``preview.png``: axial, coronal and sagittal slices through the largest structure, labels overlaid.

Drawn with matplotlib's object API and the Agg canvas (no pyplot state), in radiological convention,
from a label map on the image's own grid (``(i, j, k)`` with a 4x4 voxel-to-RAS affine in mm).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import ndimage

from pipelines.foreground import finite_sample
from pipelines.io.writers import Written, write_bytes
from pipelines.outputs.names import label_colour, name_of
from pipelines.outputs.stats import check_image_and_labels, present_structures

logger = logging.getLogger(__name__)

__all__ = ["CT_WINDOW_HU", "OVERLAY_ALPHA", "PREVIEW_SIZE_PX", "display_window", "write_preview"]

PREVIEW_SIZE_PX = (1500, 560)
"""Width and height of ``preview.png`` in pixels (15 x 5.6 inches at 100 dpi)."""

CT_WINDOW_HU = (40.0, 400.0)
"""The CT display window: level and width in HU (soft tissue, W400/L40)."""

OVERLAY_ALPHA = 0.4
"""Opacity of the label colours over the grey-scale image."""


def write_preview(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    label_names: Mapping[int, str],
    path: str | Path,
    *,
    modality: str = "CT",
    title: str | None = None,
    banner: str | None = None,
) -> Written:
    """Write a PNG with axial, coronal and sagittal slices through the largest structure.

    The volume is first reoriented to RAS (nibabel ``io_orientation``; flips and axis swaps only,
    no resampling), so any stored orientation gives the same picture. Panels are in radiological
    convention: axial with the patient's right on the image's left and anterior up, coronal with
    right on the left and superior up, sagittal with anterior on the left and superior up; pixel
    aspect follows the voxel spacing. The slices cross at the centre of mass of the structure with
    the most voxels; with no structure, at the centre of the volume, and the legend says
    "no structures".

    Display window: :func:`display_window` (W400/L40 HU for ``modality="CT"``, else the 1st-99th
    percentile of the image). Labels are overlaid with alpha :data:`OVERLAY_ALPHA` in the fixed
    colours of :func:`~pipelines.outputs.names.label_colour`, with a legend of the present
    structures. The figure is exactly 1500 x 560 pixels (:data:`PREVIEW_SIZE_PX`: 15 x 5.6 in at
    100 dpi). The PNG is encoded in memory, written atomically and hashed from those bytes.

    Args:
        image: image ``(i, j, k)``.
        labels: integer label map ``(i, j, k)`` on the same grid, 0 = background.
        affine: 4x4 voxel-to-RAS matrix (mm).
        label_names: label id -> structure name.
        path: destination ``.png``.
        modality: ``"CT"``, ``"MR"``... (chooses the display window).
        title: figure title; default names the modality and the structure count.
        banner: a line shown in white across the top: on red for a flagged case, on amber for QC warnings only.

    Returns:
        ``path`` and the sha256 of the PNG written there.

    Raises:
        ValueError: shapes differ, the map is not 3D or has negative ids, the affine is not 4x4 or singular.
        TypeError: the label map is not integer, or a name's key is not a label id.
    """
    labels, image, affine, names = check_image_and_labels(labels, image, affine, label_names)

    # Reorient to RAS: views (transpose + flips), so nothing large is copied.
    ornt = nib.orientations.io_orientation(affine)
    ras_image = nib.orientations.apply_orientation(image, ornt)
    ras_labels = nib.orientations.apply_orientation(labels, ornt)
    ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, image.shape)
    spacing = np.linalg.norm(ras_affine[:3, :3], axis=0)

    structures = present_structures(ras_labels)
    counts = {label: int(np.count_nonzero(ras_labels[box] == label)) for label, box in structures}
    if counts:
        largest = max(counts, key=lambda label: (counts[label], -label))
        box = dict(structures)[largest]
        centre_in_box = ndimage.center_of_mass(ras_labels[box] == largest)
        centre = [round(float(s.start + c)) for s, c in zip(box, centre_in_box, strict=True)]
    else:
        largest, centre = None, [(n - 1) // 2 for n in ras_labels.shape]
    x, y, z = centre
    world = ras_affine @ np.array([x, y, z, 1.0])

    low, high = display_window(ras_image, modality)
    lut = np.zeros((max(counts, default=0) + 1, 4))
    for label in counts:
        lut[label] = (*label_colour(label), OVERLAY_ALPHA)

    def radiological(plane: np.ndarray) -> np.ndarray:
        # plane is (horizontal axis, vertical axis) in RAS index order; show the high end of both
        # axes first: patient's right (or anterior) on the left, anterior (or superior) at the top.
        return plane.T[::-1, ::-1]

    panels = [
        ("axial", f"S {world[2]:.1f} mm", ras_image[:, :, z], ras_labels[:, :, z], spacing[1] / spacing[0], "RLAP"),
        ("coronal", f"A {world[1]:.1f} mm", ras_image[:, y, :], ras_labels[:, y, :], spacing[2] / spacing[0], "RLSI"),
        ("sagittal", f"R {world[0]:.1f} mm", ras_image[x, :, :], ras_labels[x, :, :], spacing[2] / spacing[1], "APSI"),
    ]  # fmt: skip

    width_px, height_px = PREVIEW_SIZE_PX
    fig = Figure(figsize=(width_px / 100, height_px / 100), dpi=100, facecolor="black")
    FigureCanvasAgg(fig)
    heading = title or f"{modality or 'image'} segmentation: {len(counts)} structures"
    fig.suptitle(heading, color="white", fontsize=12, y=0.975)
    if banner:  # QC flags (pipelines.outputs.quality.banner): over the title, impossible to miss; red when flagged
        fig.text(0.5, 0.985, banner[:230], color="white", fontsize=10, fontweight="bold", ha="center", va="top",
                 bbox={"facecolor": "#c00000" if banner.startswith("QC FLAGGED") else "#a35200", "edgecolor": "none",
                       "pad": 4})  # fmt: skip
    for index, (plane, where, image_plane, label_plane, aspect, letters) in enumerate(panels):
        ax = fig.add_axes((0.005 + index * 0.222, 0.03, 0.215, 0.85))
        ax.set_facecolor("black")
        ax.imshow(radiological(image_plane), cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
        ax.imshow(lut[radiological(label_plane)], aspect=aspect, interpolation="nearest")
        ax.set_title(f"{plane}  {where}", color="white", fontsize=9)
        ax.set_axis_off()
        for text, (tx, ty) in zip(letters, ((0.01, 0.5), (0.99, 0.5), (0.5, 0.99), (0.5, 0.01)), strict=True):
            ax.text(tx, ty, text, transform=ax.transAxes, color="yellow", fontsize=9, fontweight="bold",
                    ha="left" if tx < 0.1 else "right" if tx > 0.9 else "center",
                    va="top" if ty > 0.9 else "bottom" if ty < 0.1 else "center")  # fmt: skip

    legend_ax = fig.add_axes((0.672, 0.03, 0.325, 0.85))
    legend_ax.set_axis_off()
    if counts:
        handles = [Patch(facecolor=label_colour(label), label=f"{label} {name_of(label, names)}") for label in counts]
        ncol = max(1, math.ceil(len(handles) / 34))
        fontsize = 7 if ncol <= 3 else 5
    else:
        handles = [Patch(facecolor="black", edgecolor="white", label="no structures")]
        ncol, fontsize = 1, 9
    legend = legend_ax.legend(
        handles=handles, loc="upper left", ncol=ncol, fontsize=fontsize, frameon=False,
        labelcolor="white", handlelength=1.2, columnspacing=1.0, borderaxespad=0.0,
    )  # fmt: skip
    legend.set_in_layout(False)

    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100, facecolor="black")
    written = write_bytes(png.getvalue(), path)
    logger.debug("preview %s: slices %s (RAS indices) through label %s", written.path, centre, largest)
    return written


def display_window(image: np.ndarray, modality: str) -> tuple[float, float]:
    """The grey-scale range ``(low, high)`` in image units for showing ``image``.

    CT: :data:`CT_WINDOW_HU` (-160..240 HU). Any other modality: the 1st and 99th percentile of the
    finite voxels of a strided subsample (at most ~2 million voxels: the same window within display
    precision, without sorting a whole 512x512x200 volume); ``(0, 1)`` when no voxel is finite.
    """
    if modality.upper() == "CT":
        level, width = CT_WINDOW_HU
        return level - width / 2, level + width / 2
    sample = finite_sample(image)
    if sample.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(sample, [1.0, 99.0])
    if high <= low:
        high = low + 1.0
    return float(low), float(high)
