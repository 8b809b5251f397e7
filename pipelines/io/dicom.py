"""DICOM series: discovery, selection and stacking into a volume with exact geometry.

pydicom reads every file of the folder once: the bytes are hashed (the input checksum), parsed
(headers for series selection, geometry and DICOM-SEG) and, for the chosen series, decoded
(pylibjpeg handles JPEG and JPEG 2000). Slices are ordered by their ImagePositionPatient along the
slice normal and the spacing is taken from those positions, never assumed: a series whose slices
are not evenly spaced, or whose positions are not along the normal (gantry tilt), is resampled
onto a regular grid and the correction is recorded (stacking it as if regular would put labels on
the wrong slices). GDCM (through SimpleITK) could do the decoding too, but it hides exactly these
geometry problems behind a warning and would need a second read of every file.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from pipelines.geometry import LPS_TO_RAS
from pipelines.io.hashing import add_member, folder_members
from pipelines.io.slice_geometry import SliceCorrection, plan_regular_grid, resample_planes

logger = logging.getLogger(__name__)

__all__ = [
    "SELECTION_RULE",
    "DicomSeries",
    "StackedSeries",
    "find_dicom_series",
    "group_series",
    "plane_geometry",
    "read_file_bytes",
    "scan_dicom_folder",
    "select_series",
    "stack_series",
]

SELECTION_RULE = "the CT series with the most slices; without a CT series, the series with the most slices"


@dataclass(frozen=True)
class DicomSeries:
    """One series found in a folder.

    Attributes:
        uid: SeriesInstanceUID.
        files: instance files sorted along the slice normal (the order of the volume's k axis).
        modality: DICOM Modality (``CT``, ``MR``...), ``""`` when absent.
        description: SeriesDescription, ``""`` when absent.
        series_number: SeriesNumber, or None.
        datasets: the parsed instances in ``files`` order (pixel data not decoded yet), when the
            folder was read by :func:`scan_dicom_folder`; empty after a header-only scan.
    """

    uid: str
    files: tuple[Path, ...]
    modality: str
    description: str
    series_number: int | None
    datasets: tuple[pydicom.Dataset, ...] = field(default=(), repr=False)

    @property
    def num_slices(self) -> int:
        return len(self.files)


@dataclass(frozen=True, eq=False)
class StackedSeries:
    """A series stacked into a volume.

    Attributes:
        array: voxels ``(i, j, k)``: i along the rows (ImageOrientationPatient's first vector), j
            down the columns, k across the slices; rescaled (HU for CT).
        affine: 4x4 voxel-to-RAS matrix in mm.
        headers: the acquired instances in order along the normal, without pixel data (for DICOM-SEG).
        correction: how uneven or tilted planes were put on the regular grid; None when they
            already formed one (then k indexes ``headers`` one to one).
    """

    array: np.ndarray
    affine: np.ndarray
    headers: tuple[pydicom.Dataset, ...]
    correction: SliceCorrection | None = None


def _is_image(ds: pydicom.Dataset) -> bool:
    return "SOPInstanceUID" in ds and "SeriesInstanceUID" in ds and ("PixelData" in ds or "Rows" in ds)


def _parse(path: Path, data: bytes | None = None) -> pydicom.Dataset | None:
    """Parse one file (from ``data`` when given); None when it is not a DICOM image instance."""
    try:
        if data is None:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        else:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except PermissionError:
        raise
    except Exception as err:  # pydicom raises many types (struct.error, InvalidDicomError...) on non-DICOM bytes
        logger.debug("%s: not a DICOM file (%s: %s)", path, type(err).__name__, err)
        return None
    return ds if _is_image(ds) else None


def read_file_bytes(path: Path) -> bytes:
    """The bytes of one file of a DICOM input, with errors that name it.

    Raises:
        PermissionError: the file cannot be read by this user.
        ValueError: any other read error (named, with its reason).
    """
    try:
        return path.read_bytes()
    except PermissionError as err:
        raise PermissionError(f"{path}: permission denied (cannot read this file of the DICOM input)") from err
    except OSError as err:
        raise ValueError(f"{path}: could not be read ({err.strerror or err})") from err


def _group(folder: Path, parsed: Sequence[tuple[Path, pydicom.Dataset]], keep: bool) -> list[DicomSeries]:
    by_uid: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for path, ds in parsed:
        by_uid.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    series = []
    for uid, members in by_uid.items():
        members = sorted(members, key=lambda m: (_position_along_normal(m[1]), m[0].name))
        first = members[0][1]
        number = first.get("SeriesNumber")
        series.append(
            DicomSeries(
                uid=uid,
                files=tuple(m[0] for m in members),
                modality=str(first.get("Modality", "")),
                description=str(first.get("SeriesDescription", "")),
                series_number=int(number) if number not in (None, "") else None,
                datasets=tuple(m[1] for m in members) if keep else (),
            )
        )
    if not series:
        raise ValueError(
            f"{folder}: no DICOM series found (expected a folder holding the DICOM files of one or more series)"
        )
    return series


group_series = _group
"""Group ``(path, dataset)`` pairs into :class:`DicomSeries` sorted along the normal (used by :mod:`.dicom_tree`)."""


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    try:
        next(folder.iterdir(), None)
    except PermissionError as err:
        raise PermissionError(f"{folder}: permission denied (cannot list this DICOM folder)") from err


def find_dicom_series(folder: str | Path) -> list[DicomSeries]:
    """List the DICOM series stored directly in ``folder`` from their headers (no pixel data read).

    Raises:
        FileNotFoundError: the folder does not exist.
        PermissionError: the folder or a file in it cannot be read.
        ValueError: the folder holds no DICOM image series.
    """
    folder = Path(folder)
    _check_folder(folder)
    parsed = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = _parse(path)
        except PermissionError as err:
            raise PermissionError(f"{path}: permission denied (cannot read this file of the DICOM folder)") from err
        if ds is not None:
            parsed.append((path, ds))
    return _group(folder, parsed, keep=False)


def scan_dicom_folder(folder: str | Path) -> tuple[list[DicomSeries], str]:
    """Read every file under ``folder`` once: parse the DICOM files in it and checksum them all.

    Returns:
        The series stored directly in ``folder`` (with their parsed datasets) and the folder's
        sha256, the same value as :func:`pipelines.io.hashing.input_sha256` of the folder.

    Raises:
        FileNotFoundError: the folder does not exist.
        PermissionError: the folder or a file in it cannot be read (named).
        ValueError: the folder holds no DICOM image series.
    """
    folder = Path(folder)
    _check_folder(folder)
    digest = hashlib.sha256()
    parsed = []
    for path in folder_members(folder):
        data = read_file_bytes(path)
        add_member(digest, path.relative_to(folder).as_posix(), hashlib.sha256(data).digest())
        if path.parent == folder:
            ds = _parse(path, data)
            if ds is not None:
                parsed.append((path, ds))
    return _group(folder, parsed, keep=True), digest.hexdigest()


def select_series(series: list[DicomSeries], folder: str | Path, series_uid: str | None = None) -> DicomSeries:
    """Pick one series: the one asked for by UID, else by :data:`SELECTION_RULE`.

    The choice is logged with the alternatives so that a run's log says which series was read.
    """
    if series_uid is not None:
        for candidate in series:
            if candidate.uid == series_uid:
                return candidate
        available = ", ".join(f"{s.uid} ({s.modality}, {s.num_slices} slices)" for s in series)
        raise ValueError(f"{folder}: no series with SeriesInstanceUID {series_uid}; the folder holds: {available}")
    ct = [s for s in series if s.modality.upper() == "CT"]
    pool = ct or series
    chosen = max(pool, key=lambda s: (s.num_slices, -(s.series_number or 0)))
    if len(series) > 1:
        others = "; ".join(f"{s.uid} ({s.modality}, {s.num_slices} slices)" for s in series if s is not chosen)
        logger.info(
            "%s holds %d series; chose %s (%s, %d slices) as %s. Others: %s. Use --series-uid to choose.",
            folder,
            len(series),
            chosen.uid,
            chosen.modality,
            chosen.num_slices,
            SELECTION_RULE,
            others,
        )
    return chosen


# -- geometry ---------------------------------------------------------------------------------


def _orientation(ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Row direction, column direction and slice normal (LPS unit vectors), or None when absent."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row = np.asarray([float(v) for v in iop[:3]])
    col = np.asarray([float(v) for v in iop[3:]])
    normal = np.cross(row, col)
    return row, col, normal


def _position(ds: pydicom.Dataset) -> np.ndarray | None:
    ipp = ds.get("ImagePositionPatient")
    return None if ipp is None or len(ipp) != 3 else np.asarray([float(v) for v in ipp])


def _position_along_normal(ds: pydicom.Dataset) -> float:
    axes, position = _orientation(ds), _position(ds)
    if axes is None or position is None:
        number = ds.get("InstanceNumber")
        return float(number) if number not in (None, "") else 0.0
    return float(position @ axes[2])


def plane_geometry(headers: Sequence[pydicom.Dataset]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """``(positions (n, 3), row, col, pixel_spacing)`` of a series' planes, LPS, from its headers."""
    axes = _orientation(headers[0])
    positions = [_position(ds) for ds in headers]
    if axes is None or any(p is None for p in positions) or "PixelSpacing" not in headers[0]:
        raise ValueError("the headers lack ImageOrientationPatient, ImagePositionPatient or PixelSpacing")
    return np.stack(positions), axes[0], axes[1], [float(v) for v in headers[0].PixelSpacing]  # type: ignore[arg-type]


def _same(values: Sequence[object]) -> bool:
    return all(v == values[0] for v in values[1:])


def stack_series(series: DicomSeries, folder: str | Path, *, allow_gaps: bool = False) -> StackedSeries:
    """Decode a series read by :func:`scan_dicom_folder` and stack it into a volume.

    Slices that are unevenly spaced (variable gaps, a missing slice) or tilted (gantry tilt) are
    resampled onto a regular orthogonal grid (:mod:`pipelines.io.slice_geometry`) and the
    correction is returned with the volume; a gap beyond
    :data:`~pipelines.io.slice_geometry.GAP_LIMIT_FACTOR` times the median is refused unless
    ``allow_gaps``.

    Raises:
        ValueError: the series cannot be placed in space: a single slice, slices of different
            size, orientation or pixel spacing, missing geometry, two slices at one position
            (mixed acquisitions), a gap beyond the limit. Each message names the folder, the
            series and what was found.
    """
    folder = Path(folder)
    where = f"{folder}: series {series.uid}"
    datasets = series.datasets
    if not datasets:
        raise ValueError(f"{where}: headers not loaded (read the folder with scan_dicom_folder)")
    if len(datasets) < 2:
        raise ValueError(f"{folder}: expected a 3D image, series {series.uid} has a single slice")
    geometry = [(_orientation(ds), _position(ds), ds.get("PixelSpacing")) for ds in datasets]
    missing = [
        series.files[n].name for n, (axes, pos, ps) in enumerate(geometry) if axes is None or pos is None or ps is None
    ]
    if missing:
        raise ValueError(
            f"{where}: {len(missing)} slice(s) lack ImageOrientationPatient, ImagePositionPatient or PixelSpacing "
            f"(first: {missing[0]}); cannot place the slices in space"
        )
    sizes = [(int(ds.Rows), int(ds.Columns)) for ds in datasets]
    if not _same(sizes):
        raise ValueError(f"{where}: slices differ in size ({sorted(set(sizes))} rows x columns); expected one size")
    row, col, _ = geometry[0][0]  # type: ignore[misc]
    for n, (axes, _, _) in enumerate(geometry):
        if not (np.allclose(axes[0], row, atol=1e-4) and np.allclose(axes[1], col, atol=1e-4)):  # type: ignore[index]
            raise ValueError(
                f"{where}: slice {series.files[n].name} has another ImageOrientationPatient than the first; "
                "expected one orientation for the whole series"
            )
    spacings = [tuple(round(float(v), 6) for v in ps) for _, _, ps in geometry]  # type: ignore[union-attr]
    if not _same(spacings):
        raise ValueError(f"{where}: slices differ in PixelSpacing ({sorted(set(spacings))}); expected one spacing")
    positions = np.stack([pos for _, pos, _ in geometry])  # type: ignore[misc]
    pixel_spacing = [float(v) for v in datasets[0].PixelSpacing]  # (between rows, between columns) in mm
    plan = plan_regular_grid(
        positions, row, col, pixel_spacing, where=where, names=[f.name for f in series.files], allow_gaps=allow_gaps
    )
    planes = _decode(datasets, series, where)
    if plan.correction is None:
        # (k, rows, columns) in C order is (columns, rows, k) = (i, j, k) in Fortran order, as NIfTI stores it.
        array = np.stack(planes).transpose(2, 1, 0)
    else:
        fill = float(min(p.min() for p in planes))
        array = resample_planes(planes, plan, fill_value=fill).transpose(2, 1, 0)
        logger.warning(
            "%s: %s corrected: %d acquired planes resampled onto %d planes %.3g mm apart (largest deviation "
            "%.2f mm, tilt %.2f degrees); recorded in run.json",
            where,
            " and ".join(plan.correction.kinds),
            len(planes),
            plan.correction.planes,
            plan.correction.spacing_mm,
            plan.correction.max_deviation_mm,
            plan.correction.tilt_deg,
        )
    headers = []
    for ds in datasets:
        if "PixelData" in ds:
            del ds.PixelData  # decoded: keep the header only
        headers.append(ds)
    return StackedSeries(
        array=array, affine=LPS_TO_RAS @ plan.affine_lps, headers=tuple(headers), correction=plan.correction
    )


def _decode(datasets: Sequence[pydicom.Dataset], series: DicomSeries, where: str) -> list[np.ndarray]:
    """Each slice's pixel data ``(rows, columns)``, rescaled by its slope and intercept (HU for CT)."""
    rescale = [(float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)) for ds in datasets]
    integral = all(s == 1.0 and i == int(i) for s, i in rescale)
    slices = []
    for n, ds in enumerate(datasets):
        try:
            pixels = ds.pixel_array
        except Exception as err:  # pydicom raises several types for unsupported or corrupt pixel data
            raise ValueError(
                f"{where}: slice {series.files[n].name}: pixel data cannot be decoded ({str(err).splitlines()[0]})"
            ) from err
        if pixels.ndim != 2:
            raise ValueError(
                f"{where}: slice {series.files[n].name} holds pixel data of shape {pixels.shape}; "
                "expected one 2D greyscale frame per file"
            )
        slope, intercept = rescale[n]
        slices.append(pixels.astype(np.int32) + int(intercept) if integral else pixels * slope + intercept)
    if integral:
        low, high = min(int(s.min()) for s in slices), max(int(s.max()) for s in slices)
        dtype = np.int16 if np.iinfo(np.int16).min <= low and high <= np.iinfo(np.int16).max else np.int32
    else:
        dtype = np.float32
    return [s.astype(dtype, copy=False) for s in slices]
