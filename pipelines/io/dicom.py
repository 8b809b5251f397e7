"""DICOM series discovery and selection.

SimpleITK (GDCM) groups files into series and sorts each series along its slice normal; pydicom
reads the few header fields the selection rule needs. Pixel data are decoded by GDCM, which handles
JPEG 2000 and the other common transfer syntaxes natively.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pydicom

logger = logging.getLogger(__name__)

__all__ = ["SELECTION_RULE", "DicomSeries", "find_dicom_series", "select_series"]

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
    """

    uid: str
    files: tuple[Path, ...]
    modality: str
    description: str
    series_number: int | None

    @property
    def num_slices(self) -> int:
        return len(self.files)


def find_dicom_series(folder: str | Path) -> list[DicomSeries]:
    """List the DICOM series stored directly in ``folder``.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: the folder holds no DICOM image series.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    uids = reader.GetGDCMSeriesIDs(str(folder))
    series = []
    for uid in uids:
        files = tuple(Path(f) for f in reader.GetGDCMSeriesFileNames(str(folder), uid))
        if not files:
            continue
        header = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
        number = header.get("SeriesNumber")
        series.append(
            DicomSeries(
                uid=uid,
                files=files,
                modality=str(header.get("Modality", "")),
                description=str(header.get("SeriesDescription", "")),
                series_number=int(number) if number not in (None, "") else None,
            )
        )
    if not series:
        raise ValueError(
            f"{folder}: no DICOM series found (expected a folder holding the DICOM files of one or more series)"
        )
    return series


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
