"""A DICOM export as a hospital hands it over, written with pydicom: 2 patients x 2 studies.

Each study holds a localizer, a thick (5 mm) and a thin (2.5 mm) axial CT reconstruction, a
coronal reformat, a DERIVED/SECONDARY axial series and an SR object; the export also holds a
README.txt. Patient 2's second study is written with a DICOMDIR (pydicom FileSet); patient 1's
second study is also written as a ``.zip`` beside the tree. Identifiers are long, unusual strings
so that a grep of outputs (PNG thumbnails in base64 included) cannot hit them by chance.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
PIXELS = 16

PATIENTS = (
    {"name": "DOEWICZ^JANEKA", "id": "PIDX48213Q", "birth": "19610412"},
    {"name": "ROEBERTSKI^RICHARDO", "id": "PIDX77102Z", "birth": "19550923"},
)
IDENTIFIERS = ("DOEWICZ", "JANEKA", "PIDX48213Q", "19610412", "ROEBERTSKI", "RICHARDO", "PIDX77102Z", "19550923")
"""Strings that must not appear in outputs without --keep-identifiers."""

# (name, series number, description, image type, plane, slices, thickness mm)
SERIES = (
    ("localizer", 1, "Topogram", ["ORIGINAL", "PRIMARY", "LOCALIZER"], "axial", 2, 1.0),
    ("thick", 2, "Abdomen 5.0 B30f", ["ORIGINAL", "PRIMARY", "AXIAL"], "axial", 32, 5.0),
    ("thin", 3, "Abdomen 2.5 B30f", ["ORIGINAL", "PRIMARY", "AXIAL"], "axial", 64, 2.5),
    ("coronal", 4, "Cor MPR 3.0", ["ORIGINAL", "PRIMARY", "OTHER"], "coronal", 40, 3.0),
    ("derived", 5, "MIP axial", ["DERIVED", "SECONDARY", "AXIAL"], "axial", 64, 2.5),
)


@dataclass
class Export:
    root: Path
    zipped: Path
    studies: list[dict] = field(default_factory=list)
    """Per study: patient index, study uid, folder, and series name -> SeriesInstanceUID."""

    def study(self, patient: int, number: int) -> dict:
        return next(s for s in self.studies if s["patient"] == patient and s["number"] == number)


def _slice(patient: dict, study_uid: str, series_uid: str, spec: tuple, k: int, date: str) -> Dataset:
    _, number, description, image_type, plane, slices, thickness = spec
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_STORAGE
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(k)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CT_STORAGE
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = image_type
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient["name"], patient["id"], patient["birth"]
    ds.PatientSex = "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate = ds.SeriesDate = date
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.StudyDescription = "CT abdomen"
    ds.Modality, ds.Manufacturer = "CT", "test"
    ds.SeriesNumber, ds.InstanceNumber = number, k + 1
    ds.SeriesDescription = description
    ds.ConvolutionKernel = "B30f"
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "frame"])
    ds.PositionReferenceIndicator = ""
    ds.SliceThickness = f"{thickness:g}"
    if plane == "axial":
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        position = [-40.0, -40.0, k * thickness]
    else:
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
        position = [-40.0, -20.0 + k * thickness, 80.0]
    ds.ImagePositionPatient = [f"{v:g}" for v in position]
    ds.PixelSpacing = ["5", "5"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = PIXELS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    hu = np.full((PIXELS, PIXELS), 100, dtype=np.int32)
    if slices // 4 <= k < 3 * slices // 4:
        hu[4:12, 4:12] = 900  # bright box: the threshold bundle's foreground
    ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
    return ds


def _sr(patient: dict, study_uid: str, date: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[study_uid, "sr"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.Modality = BASIC_TEXT_SR, "SR"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient["name"], patient["id"], patient["birth"]
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study_uid, "sr-series"])
    ds.StudyDate = ds.ContentDate = date
    ds.SeriesNumber, ds.InstanceNumber = 99, 1
    return ds


def _study_datasets(patient: dict, study_uid: str, date: str) -> tuple[dict[str, str], list[tuple[str, Dataset]]]:
    uids, files = {}, []
    for spec in SERIES:
        series_uid = generate_uid(entropy_srcs=[study_uid, spec[0]])
        uids[spec[0]] = series_uid
        for k in range(spec[5]):
            files.append((f"{spec[0]}/IM{k:04d}.dcm", _slice(patient, study_uid, series_uid, spec, k, date)))
    files.append(("report/SR0001.dcm", _sr(patient, study_uid, date)))
    return uids, files


def write_export(tmp_path: Path) -> Export:
    """Write ``tmp_path/export/`` (study/series/*.dcm, one study with a DICOMDIR) and ``tmp_path/study.zip``."""
    from pydicom.fileset import FileSet

    root = tmp_path / "export"
    export = Export(root, tmp_path / "study.zip")
    root.mkdir(parents=True)
    (root / "README.txt").write_text("Research CD. Open with any DICOM viewer.\n")
    for p, patient in enumerate(PATIENTS, start=1):
        for number in (1, 2):
            study_uid = generate_uid(entropy_srcs=[patient["id"], str(number)])
            date = f"2023010{number + 2 * p}"
            uids, files = _study_datasets(patient, study_uid, date)
            folder = root / f"P{p}" / f"ST{number}"
            if (p, number) == (2, 2):
                fileset = FileSet()
                for _, ds in files[:-1]:  # the SR stays outside the DICOMDIR, as on many CDs
                    fileset.add(ds)
                folder.mkdir(parents=True)
                fileset.write(folder)
                pydicom.dcmwrite(folder / "SR0001", files[-1][1], enforce_file_format=True)
            else:
                for relative, ds in files:
                    path = folder / relative
                    path.parent.mkdir(parents=True, exist_ok=True)
                    ds.save_as(path, enforce_file_format=True)
            if (p, number) == (1, 2):
                with zipfile.ZipFile(export.zipped, "w") as archive:
                    for relative, _ in files:
                        archive.write(folder / relative, f"ST2/{relative}")
            export.studies.append({"patient": p, "number": number, "study_uid": study_uid, "folder": folder, **uids})
    return export
