"""What a segmentation run hands to people: statistics, a preview picture and DICOM-SEG.

Everything here works on a predicted integer label map on the input's own grid: an array indexed
``(i, j, k)`` like the image, with the image's 4x4 voxel-to-RAS affine (mm). Label 0 is background.

* :func:`compute_stats` / :func:`write_stats`: per-structure volume (mL), intensity statistics,
  bounding boxes and connected components, as ``stats.json`` and ``stats.csv``.
* :func:`write_preview`: ``preview.png`` with axial, coronal and sagittal slices through the largest
  structure, in radiological convention, with the labels overlaid.
* :func:`write_dicom_seg`: a DICOM Segmentation object (highdicom) referencing the source series, for
  PACS viewers and annotation tools.

Every file is written to a temporary name beside its destination and renamed into place.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from scipy import ndimage

from pipelines import __version__
from pipelines.io.readers import Volume
from pipelines.io.writers import atomic_path, write_json

logger = logging.getLogger(__name__)

__all__ = [
    "SNOMED",
    "STATS_CSV_COLUMNS",
    "compute_stats",
    "label_colour",
    "write_dicom_seg",
    "write_preview",
    "write_stats",
]

SNOMED: dict[str, tuple[str, str]] = {
    "spleen": ("78961009", "Spleen"),
    "kidney_right": ("9846003", "Right kidney"),
    "kidney_left": ("18639004", "Left kidney"),
    "gallbladder": ("28231008", "Gallbladder"),
    "esophagus": ("32849002", "Esophagus"),
    "liver": ("10200004", "Liver"),
    "stomach": ("69695003", "Stomach"),
    "aorta": ("15825003", "Aorta"),
    "inferior_vena_cava": ("64131007", "Inferior vena cava"),
    "portal_vein": ("32764006", "Portal vein"),
    # TotalSegmentator's combined label; coded as its main part, the segment label keeps the full name.
    "portal_vein_and_splenic_vein": ("32764006", "Portal vein"),
    "pancreas": ("15776009", "Pancreas"),
    # Sided adrenal glands are coded as "Adrenal gland" plus a laterality modifier (see _LATERALITY).
    "adrenal_gland_right": ("23451007", "Adrenal gland"),
    "adrenal_gland_left": ("23451007", "Adrenal gland"),
    "duodenum": ("38848004", "Duodenum"),
    "small_bowel": ("30315005", "Small intestine"),
    "colon": ("71854001", "Colon"),
    "spinal_cord": ("2748008", "Spinal cord"),
    "liver_tumor": ("108369006", "Neoplasm"),
    "tumor": ("108369006", "Neoplasm"),
}
"""Structure name -> (SNOMED CT code, code meaning) for the structures our bundles name.

Kidneys use SNOMED's sided concepts; adrenal glands use the unsided concept with a DICOM laterality
modifier; tumours are "Neoplasm" (with the organ as anatomic region where the name says which)."""

# Names whose code is unsided: DICOM-SEG adds SegmentedPropertyTypeModifierCodeSequence (CID 244).
_LATERALITY = {"adrenal_gland_right": codes.SCT.Right, "adrenal_gland_left": codes.SCT.Left}
_TUMOURS = {"liver_tumor": "liver", "tumor": None}  # name -> organ it lies in, when the name says

STATS_CSV_COLUMNS = (
    "label", "name", "voxels", "volume_ml", "mean", "median", "std", "components",
    "bbox_i0", "bbox_i1", "bbox_j0", "bbox_j1", "bbox_k0", "bbox_k1",
    "bbox_x0_mm", "bbox_x1_mm", "bbox_y0_mm", "bbox_y1_mm", "bbox_z0_mm", "bbox_z1_mm",
)  # fmt: skip
"""Columns of ``stats.csv``: the keys of :func:`compute_stats` with the boxes flattened."""

PREVIEW_SIZE_PX = (1500, 560)
"""Width and height of ``preview.png`` in pixels (15 x 5.6 inches at 100 dpi)."""

_CT_WINDOW_HU = (40.0, 400.0)  # soft-tissue window: level, width
_OVERLAY_ALPHA = 0.4
_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


# --------------------------------------------------------------------------------------------
# shared helpers


def _check_label_map(labels: np.ndarray, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"{what}: expected a 3D label map (i, j, k), got shape {labels.shape}")
    if labels.dtype == np.bool_:
        return labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{what}: label map must have an integer dtype, got {labels.dtype}")
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise ValueError(f"{what}: label map has negative values (min {labels.min()}); expected ids >= 0")
    return labels


def _check_affine(affine: np.ndarray, what: str) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"{what}: expected a 4x4 affine, got shape {affine.shape}")
    if abs(np.linalg.det(affine[:3, :3])) == 0.0:
        raise ValueError(f"{what}: affine is singular (zero voxel volume): {affine[:3, :3].tolist()}")
    return affine


def _names(label_names: Mapping[int, str]) -> dict[int, str]:
    # labels.json files carry their ids as strings; accept both.
    try:
        return {int(k): str(v) for k, v in label_names.items()}
    except (TypeError, ValueError) as err:
        raise TypeError(f"label_names: keys must be integer label ids, got {list(label_names)[:5]}") from err


def _name_of(label: int, names: Mapping[int, str]) -> str:
    return names.get(label, f"label_{label}")


def _structures(labels: np.ndarray) -> list[tuple[int, tuple[slice, slice, slice]]]:
    """Present labels (> 0) and their bounding boxes, from one pass of scipy.ndimage.find_objects."""
    boxes = ndimage.find_objects(labels)
    return [(index + 1, box) for index, box in enumerate(boxes) if box is not None]


def label_colour(label: int) -> tuple[float, float, float]:
    """The fixed display colour (RGB in 0..1) of a label id, shared by the preview and DICOM-SEG.

    The table is matplotlib's tab20, tab20b and tab20c without their greys (which vanish on a
    grey-scale image): 54 colours, the saturated half of each map first, so that consecutive ids
    get clearly different colours; ids repeat every 54.
    """
    table = _colour_table()
    return table[(int(label) - 1) % len(table)]


@functools.cache
def _colour_table() -> tuple[tuple[float, float, float], ...]:
    import matplotlib as mpl  # imported here: only colours are needed, no backend is touched

    table: list[tuple[float, float, float]] = []
    for name in ("tab20", "tab20b", "tab20c"):
        colours = [tuple(float(c) for c in rgb[:3]) for rgb in mpl.colormaps[name].colors if np.ptp(rgb[:3]) > 0.05]
        table += colours[0::2] + colours[1::2]
    return tuple(table)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# statistics


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
        ValueError: shapes differ, the map is not 3D or has negative ids, the affine is not 4x4.
        TypeError: the label map is not integer.
    """
    labels = _check_label_map(labels, "labels")
    image = np.asarray(image)
    if image.shape != labels.shape:
        raise ValueError(f"image: shape {image.shape} differs from the label map's {labels.shape}")
    affine = _check_affine(affine, "affine")
    names = _names(label_names)
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))

    stats: list[dict[str, Any]] = []
    for label, box in _structures(labels):
        mask = labels[box] == label
        values = image[box][mask].astype(np.float64)
        _, components = ndimage.label(mask, structure=_CONNECTIVITY_26)
        bbox_voxels = [[int(s.start), int(s.stop) - 1] for s in box]
        stats.append(
            {
                "label": int(label),
                "name": _name_of(label, names),
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
    return [entry["label"], entry["name"], entry["voxels"], *floats, entry["components"], *box, *box_mm]


def write_stats(stats: Sequence[Mapping[str, Any]], folder: str | Path) -> tuple[Path, Path]:
    """Write ``stats.json`` (the list from :func:`compute_stats`) and ``stats.csv``, atomically.

    The CSV has the columns of :data:`STATS_CSV_COLUMNS`, one row per structure; floats are written
    with full precision (``repr``), so both files hold the same numbers.

    Returns:
        ``(json_path, csv_path)``.
    """
    folder = Path(folder)
    json_path = write_json(list(stats), folder / "stats.json")
    csv_path = folder / "stats.csv"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(STATS_CSV_COLUMNS)
        writer.writerows(_csv_row(entry) for entry in stats)
    return json_path, csv_path


# --------------------------------------------------------------------------------------------
# preview


def write_preview(
    image: np.ndarray,
    labels: np.ndarray,
    affine: np.ndarray,
    label_names: Mapping[int, str],
    path: str | Path,
    *,
    modality: str = "CT",
    title: str | None = None,
) -> Path:
    """Write a PNG with axial, coronal and sagittal slices through the largest structure.

    The volume is first reoriented to RAS (nibabel ``io_orientation``; flips and axis swaps only,
    no resampling), so any stored orientation gives the same picture. Panels are in radiological
    convention: axial with the patient's right on the image's left and anterior up, coronal with
    right on the left and superior up, sagittal with anterior on the left and superior up; pixel
    aspect follows the voxel spacing. The slices cross at the centre of mass of the structure with
    the most voxels; with no structure, at the centre of the volume, and the legend says
    "no structures".

    Display window: W400/L40 HU (soft tissue) for ``modality="CT"``; any other modality uses the
    1st-99th percentile of the image. Labels are overlaid with alpha 0.4 in the fixed colours of
    :func:`label_colour`, with a legend of the present structures. The figure is exactly
    1500 x 560 pixels (:data:`PREVIEW_SIZE_PX`: 15 x 5.6 in at 100 dpi), drawn with matplotlib's
    object API and the Agg canvas (no pyplot state).

    Args:
        image: image ``(i, j, k)``.
        labels: integer label map ``(i, j, k)`` on the same grid, 0 = background.
        affine: 4x4 voxel-to-RAS matrix (mm).
        label_names: label id -> structure name.
        path: destination ``.png``.
        modality: ``"CT"``, ``"MR"``... (chooses the display window).
        title: figure title; default names the modality and the structure count.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    labels = _check_label_map(labels, "labels")
    image = np.asarray(image)
    if image.shape != labels.shape:
        raise ValueError(f"image: shape {image.shape} differs from the label map's {labels.shape}")
    affine = _check_affine(affine, "affine")
    names = _names(label_names)

    # Reorient to RAS: views (transpose + flips), so nothing large is copied.
    ornt = nib.orientations.io_orientation(affine)
    ras_image = nib.orientations.apply_orientation(image, ornt)
    ras_labels = nib.orientations.apply_orientation(labels, ornt)
    ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, image.shape)
    spacing = np.linalg.norm(ras_affine[:3, :3], axis=0)

    structures = _structures(ras_labels)
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

    low, high = _display_window(ras_image, modality)
    lut = np.zeros((max(counts, default=0) + 1, 4))
    for label in counts:
        lut[label] = (*label_colour(label), _OVERLAY_ALPHA)

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
        handles = [Patch(facecolor=label_colour(label), label=f"{label} {_name_of(label, names)}") for label in counts]
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

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, facecolor="black")
    logger.debug("preview %s: slices %s (RAS indices) through label %s", path, centre, largest)
    return path


def _display_window(image: np.ndarray, modality: str) -> tuple[float, float]:
    if modality.upper() == "CT":
        level, width = _CT_WINDOW_HU
        return level - width / 2, level + width / 2
    # Percentiles of a strided subsample (<= ~2 million voxels): the same window within display
    # precision, without sorting a whole 512x512x200 volume.
    step = max(1, math.ceil((image.size / 2e6) ** (1 / 3)))
    sample = np.asarray(image[::step, ::step, ::step], dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(sample, [1.0, 99.0])
    if high <= low:
        high = low + 1.0
    return float(low), float(high)


# --------------------------------------------------------------------------------------------
# DICOM-SEG


def write_dicom_seg(
    labels: np.ndarray,
    volume: Volume,
    label_names: Mapping[int, str],
    path: str | Path,
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_description: str = "medseg segmentation",
    series_number: int = 100,
) -> Path:
    """Write the label map as a DICOM Segmentation (BINARY) that references the source series.

    One segment per present label, numbered 1..N in increasing label id (DICOM needs contiguous
    segment numbers). Each segment's label is the structure name, its SegmentDescription is
    ``"label <id>: <name>"`` (the original id), its property type the SNOMED CT code of
    :data:`SNOMED` (category "Anatomical Structure"; tumours: category "Morphologically Abnormal
    Structure", type "Neoplasm"), or "Tissue" for names without a code. Frames hold no empty slices.
    The content is marked RESEARCH (ContentQualification). Source headers are read without pixel
    data; identifying UIDs that an anonymiser blanked are restored in memory (see
    :func:`_source_headers`), the files are never modified.

    Args:
        labels: integer label map ``(i, j, k)`` on ``volume``'s grid: i along the columns, j along
            the rows, k across the slices in the order of ``volume.dicom_files``.
        volume: the DICOM input as read by :func:`pipelines.io.read_volume`.
        label_names: label id -> structure name.
        path: destination file (``.dcm``).
        algorithm_name: the bundle's name (AlgorithmIdentificationSequence).
        algorithm_version: the bundle's version.
        series_description: SeriesDescription of the new series.
        series_number: SeriesNumber of the new series.

    Returns:
        ``path``.

    Raises:
        ValueError: the input is not a DICOM series, the label map's shape differs from the
            volume's, has negative ids or holds no structure (a Segmentation needs at least one
            segment), or a source file has no SOP Instance UID anywhere.
        TypeError: the label map is not integer.
    """
    path = Path(path)
    if volume.format != "dicom" or not volume.dicom_files:
        raise ValueError(
            f"{volume.path}: DICOM-SEG needs a DICOM series as input; this input is {volume.format} "
            "(choose --outputs without dicom-seg for non-DICOM inputs)"
        )
    labels = _check_label_map(labels, "labels")
    if labels.shape != volume.shape:
        raise ValueError(f"{volume.path}: label map shape {labels.shape} differs from the series' {volume.shape}")
    names = _names(label_names)
    present = [label for label, _ in _structures(labels)]
    if not present:
        raise ValueError(f"{path}: the label map holds no structures; a DICOM-SEG needs at least one segment")

    sources = _source_headers(volume.dicom_files)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=algorithm_version
    )
    descriptions = [
        _segment_description(number, label, _name_of(label, names), algorithm)
        for number, label in enumerate(present, start=1)
    ]
    lut = np.zeros(int(present[-1]) + 1, dtype=np.uint8 if len(present) < 256 else np.uint16)
    lut[present] = np.arange(1, len(present) + 1)
    # (i, j, k) -> (frames, rows, columns) = (k, j, i), one frame per source instance in k order.
    pixel_array = np.ascontiguousarray(lut[labels].transpose(2, 1, 0))

    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medseg",
        manufacturer_model_name=algorithm_name[:64],
        software_versions=f"medseg {__version__}",
        device_serial_number="medseg",
        series_description=series_description[:64],
        content_label="MEDSEG",
        content_description=f"{algorithm_name} {algorithm_version}"[:64],
        content_qualification=hd.ContentQualificationValues.RESEARCH,
        omit_empty_frames=True,
    )
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    logger.info("wrote DICOM-SEG %s: %d segments over %d slices", path, len(present), len(sources))
    return path


def _source_headers(files: Sequence[Path]) -> list[pydicom.Dataset]:
    """The series' headers (no pixel data), with identifying UIDs that anonymisation blanked restored.

    A Segmentation references its source instances by SOP Class/Instance UID and joins their study
    and series. Some anonymisers empty these attributes in the data set while the file meta keeps
    the instance's identity (Media Storage SOP Class/Instance UID): take them from there. An empty
    StudyInstanceUID or SeriesInstanceUID is replaced, in memory only, by one UID derived from the
    instance UIDs (the same on every run), and a warning says the SEG cannot join the original study.
    """
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    for header, file in zip(headers, files, strict=True):
        meta = getattr(header, "file_meta", None)
        for attribute, meta_attribute in (
            ("SOPClassUID", "MediaStorageSOPClassUID"),
            ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ):
            if not header.get(attribute):
                value = meta.get(meta_attribute) if meta is not None else None
                if not value:
                    raise ValueError(f"{file}: no {attribute} in the data set or its file meta; cannot reference it")
                setattr(header, attribute, value)
    instance_uids = [str(h.SOPInstanceUID) for h in headers]
    for attribute in ("StudyInstanceUID", "SeriesInstanceUID"):
        values = {str(h.get(attribute) or "") for h in headers}
        if len(values) > 1:
            raise ValueError(f"{files[0].parent}: the instances disagree on {attribute}: {sorted(values)}")
        if values == {""}:
            uid = pydicom.uid.generate_uid(entropy_srcs=[attribute, *instance_uids])
            logger.warning(
                "%s: the series has no %s (anonymised?); the DICOM-SEG uses %s and will not join the original study",
                files[0].parent, attribute, uid,
            )  # fmt: skip
            for header in headers:
                setattr(header, attribute, uid)
    return headers


def _segment_description(
    number: int, label: int, name: str, algorithm: hd.AlgorithmIdentificationSequence
) -> hd.seg.SegmentDescription:
    key = name.lower()
    anatomic_regions = None
    if key in _TUMOURS:
        category = codes.cid7150.MorphologicallyAbnormalStructure
        prop_type: Any = codes.SCT.Neoplasm
        organ = _TUMOURS[key]
        if organ is not None:
            anatomic_regions = [hd.sr.CodedConcept(SNOMED[organ][0], "SCT", SNOMED[organ][1])]
    elif key in SNOMED:
        category = codes.cid7150.AnatomicalStructure
        value, meaning = SNOMED[key]
        prop_type = hd.sr.CodedConcept(value, "SCT", meaning)
    else:
        category = codes.cid7150.Tissue
        prop_type = codes.SCT.Tissue
    r, g, b = (round(255 * c) for c in label_colour(label))
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=category,
        segmented_property_type=prop_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=anatomic_regions,
        display_color=hd.color.CIELabColor.from_rgb(r, g, b),
    )
    description.SegmentDescription = f"label {label}: {name}"[:64]
    if key in _LATERALITY:
        side = _LATERALITY[key]
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept(side.value, side.scheme_designator, side.meaning)
        ]
    return description
