"""DICOM as hospitals hand it over: a folder tree, a DICOMDIR or a ``.zip``, scanned from headers only.

One pass over the input parses each file's header (``stop_before_pixels``; optionally hashing its
bytes for the input checksum); no pixel data is read until a series has been chosen
(:func:`load_series` then reads only that series' files in full). Files that are not DICOM (no
``DICM`` preamble: README files, viewers on a research CD, thumbnails) and DICOM objects that are
not images (SR, PR, KO, SEG, RTSTRUCT, encapsulated PDF, the DICOMDIR itself) are skipped and
counted by kind, so a listing says what was left out.

A DICOMDIR is read with pydicom's :class:`~pydicom.fileset.FileSet`; every file it references must
lie inside the DICOMDIR's folder. A ``.zip`` is read in place, never extracted: a member whose name
is absolute or climbs out with ``..`` (zip-slip) is refused, and member sizes are checked against
this machine's memory before one is read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from pipelines.io.dicom import DicomSeries, group_series, read_file_bytes
from pipelines.io.hashing import add_member, folder_members

logger = logging.getLogger(__name__)

__all__ = [
    "NON_IMAGE_SOP_CLASSES",
    "DicomTree",
    "SeriesSummary",
    "is_dicom_container",
    "load_series",
    "scan_tree",
    "summarize",
]

NON_IMAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.1.3.10": "DICOMDIR",
    "1.2.840.10008.5.1.4.1.1.88.": "SR",
    "1.2.840.10008.5.1.4.1.1.88.59": "KO",
    "1.2.840.10008.5.1.4.1.1.11.": "PR",
    "1.2.840.10008.5.1.4.1.1.66": "SEG/REG",
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.481.": "RT",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
}
"""SOP Class UIDs (exact, or a prefix ending in ``.``) of DICOM objects that hold no image to segment."""

_NON_IMAGE_MODALITIES = {"SR", "PR", "KO", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "REG", "DOC"}


@dataclass(frozen=True)
class SeriesSummary:
    """What the headers say about one series: what listings show and selection rules test.

    Attributes:
        uid: SeriesInstanceUID. study_uid: StudyInstanceUID.
        patient_id, patient_name, birth_date: identifiers; shown only with ``--keep-identifiers``.
        modality, date (SeriesDate, else StudyDate, ``YYYYMMDD``), description (SeriesDescription),
        protocol (ProtocolName), study_description, kernel (ConvolutionKernel, joined with ``\\``).
        image_type: ImageType values, upper case (``("ORIGINAL", "PRIMARY", "AXIAL")``).
        series_number: SeriesNumber or None.
        slices: number of instances.
        pixel_spacing_mm: (between rows, between columns) or None.
        thickness_mm: SliceThickness, else the median distance between slices, else None.
        spacing_mm: median distance between neighbouring slices along the normal, or None.
        orientation: ``axial``, ``coronal``, ``sagittal``, ``oblique`` or ``unknown``.
        tilt_deg: angle between the slice normal and the line through the slices (gantry tilt).
        gaps: gaps between slices over 1.5x the median; duplicates: slices at one position.
        contrast: ContrastBolusAgent given (True), given empty or absent (False).
        phase: ContrastBolusAgentPhase (enhanced CT/MR) or ``""``.
    """

    uid: str
    study_uid: str
    patient_id: str
    patient_name: str
    birth_date: str
    modality: str
    date: str
    description: str
    protocol: str
    study_description: str
    kernel: str
    image_type: tuple[str, ...]
    series_number: int | None
    slices: int
    pixel_spacing_mm: tuple[float, float] | None
    thickness_mm: float | None
    spacing_mm: float | None
    orientation: str
    tilt_deg: float
    gaps: int
    duplicates: int
    contrast: bool
    phase: str

    @property
    def localizer(self) -> bool:
        return "LOCALIZER" in self.image_type

    @property
    def image_kind(self) -> str:
        """``ORIGINAL/PRIMARY``, ``DERIVED/SECONDARY`` ... and ``LOCALIZER`` when flagged, for listings."""
        kind = "/".join(self.image_type[:2]) or "?"
        return f"{kind} LOCALIZER" if self.localizer else kind

    def as_dict(self, keep_identifiers: bool = False) -> dict[str, Any]:
        """JSON-ready fields; the patient identifiers only with ``keep_identifiers``."""
        data = {
            "series_uid": self.uid,
            "study_uid": self.study_uid,
            "modality": self.modality,
            "date": self.date,
            "description": self.description,
            "protocol": self.protocol,
            "kernel": self.kernel,
            "image_type": list(self.image_type),
            "series_number": self.series_number,
            "slices": self.slices,
            "pixel_spacing_mm": list(self.pixel_spacing_mm) if self.pixel_spacing_mm else None,
            "thickness_mm": self.thickness_mm,
            "spacing_mm": self.spacing_mm,
            "orientation": self.orientation,
            "tilt_deg": self.tilt_deg,
            "gaps": self.gaps,
            "duplicates": self.duplicates,
            "contrast": self.contrast,
            "phase": self.phase,
        }
        if keep_identifiers:
            data.update(patient_id=self.patient_id, patient_name=self.patient_name, birth_date=self.birth_date)
        return data


@dataclass(frozen=True)
class DicomTree:
    """The DICOM image series found under one input, from their headers.

    Attributes:
        path: the input as given (folder, DICOMDIR file or ``.zip``).
        kind: ``folder``, ``dicomdir`` or ``zip``.
        series: every image series, files sorted along the slice normal, header-only datasets.
        summaries: :class:`SeriesSummary` per series UID.
        skipped: files left out, by kind (``{"not DICOM": 3, "SR": 1}``).
        sha256: the input checksum when asked for (the same value as
            :func:`pipelines.io.hashing.input_sha256` of a folder or ``.zip``; for a DICOMDIR the
            checksum of the folder that holds it), else None.
    """

    path: Path
    kind: str
    series: tuple[DicomSeries, ...]
    summaries: dict[str, SeriesSummary]
    skipped: dict[str, int] = field(default_factory=dict)
    sha256: str | None = None

    @property
    def studies(self) -> dict[str, list[SeriesSummary]]:
        """Study UID -> its series summaries, in series number order."""
        found: dict[str, list[SeriesSummary]] = {}
        for summary in self.summaries.values():
            found.setdefault(summary.study_uid, []).append(summary)
        return {k: sorted(v, key=lambda s: (s.series_number or 0, s.uid)) for k, v in sorted(found.items())}

    def series_by_uid(self, uid: str) -> DicomSeries:
        for series in self.series:
            if series.uid == uid:
                return series
        raise KeyError(uid)

    def skipped_text(self) -> str:
        """``"3 not DICOM, 1 SR"``, or ``"none"``."""
        return ", ".join(f"{n} {kind}" for kind, n in sorted(self.skipped.items())) or "none"


def is_dicom_container(path: Path) -> bool:
    """True for a file :func:`scan_tree` reads: a ``.zip`` or a file named ``DICOMDIR``."""
    return path.is_file() and (path.name.lower().endswith(".zip") or path.name.upper() == "DICOMDIR")


# -- reading headers -------------------------------------------------------------------------


def _skip_reason(ds: pydicom.Dataset) -> str | None:
    """Why a parsed DICOM object is not an image series instance, or None when it is one."""
    sop_class = str(ds.get("SOPClassUID", ""))
    kind = NON_IMAGE_SOP_CLASSES.get(sop_class)
    if kind is None:
        prefixes = [(p, k) for p, k in NON_IMAGE_SOP_CLASSES.items() if p.endswith(".") and sop_class.startswith(p)]
        kind = max(prefixes, key=lambda pk: len(pk[0]))[1] if prefixes else None
    modality = str(ds.get("Modality", "")).upper()
    if kind is None and modality in _NON_IMAGE_MODALITIES:
        kind = modality
    if kind is not None:
        return kind
    if "SeriesInstanceUID" not in ds or "SOPInstanceUID" not in ds:
        return "no series UID"
    if "Rows" not in ds or "Columns" not in ds:
        return "no pixel data"
    return None


def _header(source: str | Path | BinaryIO, name: str) -> tuple[pydicom.Dataset | None, str | None]:
    """Parse one file's header: ``(dataset, None)`` for an image instance, else ``(None, why skipped)``."""
    try:
        ds = pydicom.dcmread(source, stop_before_pixels=True)
    except PermissionError as err:
        raise PermissionError(f"{name}: permission denied (cannot read this file of the DICOM input)") from err
    except InvalidDicomError:
        logger.debug("%s: no DICOM preamble; skipped", name)
        return None, "not DICOM"
    except Exception as err:  # pydicom raises many types on damaged files (struct.error, EOFError...)
        logger.debug("%s: not a readable DICOM file (%s: %s); skipped", name, type(err).__name__, err)
        return None, "unreadable DICOM"
    reason = _skip_reason(ds)
    return (None, reason) if reason else (ds, None)


def _folder_files(root: Path, checksum: bool) -> Iterator[tuple[Path, Any]]:
    """``(path, source)`` of every file under ``root``; the source is the bytes when hashing."""
    for path in folder_members(root):
        yield path, (read_file_bytes(path) if checksum else path)


def _dicomdir_files(dicomdir: Path) -> list[Path]:
    """The files a DICOMDIR references, each checked to lie inside its folder."""
    from pydicom.fileset import FileSet

    try:
        fileset = FileSet(pydicom.dcmread(dicomdir))
    except Exception as err:  # pydicom raises several types for a damaged or non-DICOMDIR file
        raise ValueError(f"{dicomdir}: not a readable DICOMDIR ({type(err).__name__}: {err})") from err
    root = Path(os.path.realpath(dicomdir.parent))
    files = []
    for instance in fileset:
        path = Path(instance.path)
        if not Path(os.path.realpath(path)).is_relative_to(root):
            raise ValueError(f"{dicomdir}: references {path}, outside the DICOMDIR's folder {root}; refused")
        files.append(path)
    return sorted(files)


def _safe_member(info: zipfile.ZipInfo, archive: Path) -> bool:
    """False (logged) for a member whose name would leave the archive's root if extracted (zip-slip)."""
    name = info.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        logger.warning("%s: member %r has an absolute or '..' name (zip-slip); skipped", archive, name)
        return False
    return True


def _member_limit_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{path}: not a readable zip archive ({err})") from err


def scan_tree(path: str | Path, *, checksum: bool = False) -> DicomTree:
    """Scan a folder (recursively), a DICOMDIR or a ``.zip`` for DICOM image series, headers only.

    Args:
        path: the input.
        checksum: also hash every file (the input checksum recorded in run.json and the ledger);
            the bytes are read once for both.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        PermissionError: a file cannot be read (named).
        ValueError: a damaged zip or DICOMDIR, a zip-slip DICOMDIR reference, or no image series
            at all (the message counts what was skipped).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    skipped: Counter[str] = Counter()
    zip_sha256: str | None = None
    parsed: list[tuple[Path, pydicom.Dataset]] = []
    digest = hashlib.sha256() if checksum else None
    if path.is_dir():
        kind = "folder"
        for member, source in _folder_files(path, checksum):
            if digest is not None:
                add_member(digest, member.relative_to(path).as_posix(), hashlib.sha256(source).digest())
            _take(member, _as_stream(source), parsed, skipped)
    elif path.name.upper() == "DICOMDIR":
        kind = "dicomdir"
        referenced = set(_dicomdir_files(path))
        for member, source in _folder_files(path.parent, checksum):
            if digest is not None:
                add_member(digest, member.relative_to(path.parent).as_posix(), hashlib.sha256(source).digest())
            if member in referenced:
                _take(member, _as_stream(source), parsed, skipped)
            elif member != path:
                skipped["not in DICOMDIR"] += 1
        skipped["DICOMDIR"] += 1
    elif path.name.lower().endswith(".zip"):
        kind = "zip"
        if digest is not None:
            digest = None  # a zip's checksum is that of its bytes, as input_sha256 takes it
            zip_sha256 = _sha256_file(path)
        with _open_zip(path) as archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if info.is_dir():
                    continue
                if not _safe_member(info, path):
                    skipped["unsafe zip member"] += 1
                    continue
                with archive.open(info) as handle:
                    _take(path / info.filename, handle, parsed, skipped)
    else:
        raise ValueError(f"{path}: not a DICOM input (expected a folder, a DICOMDIR file or a .zip of DICOM files)")
    if not parsed:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(skipped.items())) or "no files"
        raise ValueError(
            f"{path}: no DICOM series found (skipped: {counts}; expected DICOM image files in this folder or "
            "below it, a DICOMDIR or a .zip of them)"
        )
    series = group_series(path, parsed, keep=True)
    summaries = {s.uid: summarize(s) for s in series}
    if skipped:
        logger.info("%s: %d series; skipped %s", path, len(series), ", ".join(f"{n} {k}" for k, n in skipped.items()))
    sha256 = digest.hexdigest() if digest is not None else zip_sha256
    return DicomTree(path, kind, tuple(series), summaries, dict(skipped), sha256)


def _as_stream(source: Any) -> Any:
    import io

    return io.BytesIO(source) if isinstance(source, bytes) else source


def _sha256_file(path: Path) -> str:
    from pipelines.io.hashing import sha256_file

    try:
        return sha256_file(path)
    except PermissionError as err:
        raise PermissionError(f"{path}: permission denied (cannot read this file)") from err


def _take(name: Path, source: Any, parsed: list[tuple[Path, pydicom.Dataset]], skipped: Counter[str]) -> None:
    if name.name.upper() == "DICOMDIR":
        skipped["DICOMDIR"] += 1
        return
    ds, reason = _header(source, str(name))
    if ds is None:
        skipped[reason or "skipped"] += 1
    else:
        parsed.append((name, ds))


# -- reading the chosen series ---------------------------------------------------------------


def load_series(tree: DicomTree, uid: str) -> DicomSeries:
    """The series ``uid`` of ``tree`` with its full datasets (pixel data included), in slice order.

    Only this series' files are read; from a ``.zip`` each member is read in place, after checking
    its declared size against a quarter of this machine's memory.

    Raises:
        ValueError: a file that can no longer be read as DICOM, a member too large.
    """
    series = tree.series_by_uid(uid)
    datasets = []
    if tree.kind == "zip":
        limit = _member_limit_bytes()
        with _open_zip(tree.path) as archive:
            for file in series.files:
                member = file.relative_to(tree.path).as_posix()
                info = archive.getinfo(member)
                if info.file_size > limit:
                    raise ValueError(
                        f"{tree.path}: member {member} declares {info.file_size:,} bytes, more than a quarter of "
                        "this machine's memory; refused"
                    )
                with archive.open(info) as handle:
                    datasets.append(_full(handle, file))
    else:
        datasets = [_full(file, file) for file in series.files]
    return replace(series, datasets=tuple(datasets))


def _full(source: Any, name: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(source)
    except PermissionError as err:
        raise PermissionError(f"{name}: permission denied (cannot read this file of the DICOM input)") from err
    except Exception as err:  # pydicom raises many types on damaged files
        raise ValueError(f"{name}: cannot be read as DICOM any more ({type(err).__name__}: {err})") from err


# -- summaries -------------------------------------------------------------------------------


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _float(ds: pydicom.Dataset, keyword: str) -> float | None:
    try:
        value = ds.get(keyword)
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _orientation_name(normal: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < 0.8:  # more than ~37 degrees off every patient axis
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def summarize(series: DicomSeries) -> SeriesSummary:
    """The :class:`SeriesSummary` of a series from its headers (files already sorted along the normal)."""
    first = series.datasets[0]
    iop = first.get("ImageOrientationPatient")
    orientation, tilt, spacing, gaps, duplicates = "unknown", 0.0, None, 0, 0
    if iop is not None and len(iop) == 6:
        row, col = np.asarray([float(v) for v in iop[:3]]), np.asarray([float(v) for v in iop[3:]])
        normal = np.cross(row, col)
        orientation = _orientation_name(normal)
        positions = [ds.get("ImagePositionPatient") for ds in series.datasets]
        if len(positions) > 1 and all(p is not None and len(p) == 3 for p in positions):
            points = np.asarray([[float(v) for v in p] for p in positions])
            along = np.sort(points @ normal)
            steps = np.diff(along)
            positive = steps[steps > 1e-3]
            duplicates = int(np.sum(steps <= 1e-3))
            if positive.size:
                spacing = round(float(np.median(positive)), 4)
                gaps = int(np.sum(positive > 1.5 * spacing))
            line = points[-1] - points[0]
            if np.linalg.norm(line) > 1e-6:
                cosine = abs(float(line @ normal)) / float(np.linalg.norm(line))
                tilt = round(float(np.degrees(np.arccos(min(1.0, cosine)))), 3)
    gantry = _float(first, "GantryDetectorTilt")
    if gantry is not None and abs(gantry) > tilt:
        tilt = round(abs(gantry), 3)
    ps = first.get("PixelSpacing")
    number = first.get("SeriesNumber")
    thickness = _float(first, "SliceThickness")
    return SeriesSummary(
        uid=series.uid,
        study_uid=_text(first, "StudyInstanceUID"),
        patient_id=_text(first, "PatientID"),
        patient_name=_text(first, "PatientName"),
        birth_date=_text(first, "PatientBirthDate"),
        modality=series.modality.upper(),
        date=_text(first, "SeriesDate") or _text(first, "StudyDate"),
        description=series.description,
        protocol=_text(first, "ProtocolName"),
        study_description=_text(first, "StudyDescription"),
        kernel=_text(first, "ConvolutionKernel"),
        image_type=tuple(v.strip().upper() for v in _text(first, "ImageType").split("\\") if v.strip()),
        series_number=int(number) if number not in (None, "") else None,
        slices=series.num_slices,
        pixel_spacing_mm=(float(ps[0]), float(ps[1])) if ps is not None and len(ps) == 2 else None,
        thickness_mm=thickness if thickness is not None and thickness > 0 else spacing,
        spacing_mm=spacing,
        orientation=orientation,
        tilt_deg=tilt,
        gaps=gaps,
        duplicates=duplicates,
        contrast=bool(_text(first, "ContrastBolusAgent")),
        phase=_text(first, "ContrastBolusAgentPhase"),
    )
