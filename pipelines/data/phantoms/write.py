"""Writing phantoms to disk: NIfTI files and DICOM series, never half-written.

NIfTI files go through :func:`pipelines.io.writers.atomic_path`; a DICOM series is written into a
temporary sibling folder that replaces the destination folder in one rename.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from pipelines import __version__
from pipelines.data.phantoms.make import Phantom
from pipelines.geometry import check_affine, itk_from_affine, lps_to_ras
from pipelines.io.writers import atomic_path

logger = logging.getLogger(__name__)

__all__ = ["write_dicom_series", "write_nifti", "write_nifti_channels"]

_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def write_nifti(phantom: Phantom, folder: Path) -> tuple[Path, Path]:
    """Write ``folder/image.nii.gz`` and ``folder/label.nii.gz`` atomically.

    A channel-first image (C, i, j, k) is stored as a 4D NIfTI (i, j, k, C), as in the Medical
    Segmentation Decathlon. Both files carry the phantom's affine as qform and sform (scanner).

    Args:
        phantom: The phantom to write.
        folder: Output folder; created if missing. Existing files of the same names are replaced.

    Returns:
        (image path, label path).
    """
    folder = Path(folder)
    image = phantom.image
    if image.ndim == 4:
        image = np.moveaxis(image, 0, -1)
    image_path = _save_nifti(image, phantom.affine, folder / "image.nii.gz")
    label_path = _save_nifti(phantom.label.astype(np.uint8, copy=False), phantom.affine, folder / "label.nii.gz")
    return image_path, label_path


def write_nifti_channels(phantom: Phantom, folder: Path, names: Sequence[str]) -> list[Path]:
    """Write a channel-first phantom as one 3D NIfTI per channel plus ``label.nii.gz``, atomically.

    Args:
        phantom: A phantom with a channel-first image (C, i, j, k).
        folder: Output folder; created if missing. Existing files of the same names are replaced.
        names: File stems of the C channels, in channel order (``folder/<name>.nii.gz``).

    Returns:
        The channel paths in channel order, then the label path.

    Raises:
        ValueError: The image is not channel-first 4D or has not ``len(names)`` channels.
    """
    folder = Path(folder)
    image = phantom.image
    if image.ndim != 4 or image.shape[0] != len(names):
        raise ValueError(
            f"phantom.image: expected a channel-first image with {len(names)} channels ({', '.join(names)}), "
            f"got shape {image.shape}"
        )
    paths = [_save_nifti(image[c], phantom.affine, folder / f"{name}.nii.gz") for c, name in enumerate(names)]
    paths.append(_save_nifti(phantom.label.astype(np.uint8, copy=False), phantom.affine, folder / "label.nii.gz"))
    return paths


def _save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Save ``data`` with ``affine`` as qform and sform (code 1, scanner), units mm, atomically."""
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return path


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text if len(text) <= 16 else f"{value:.8g}"


def write_dicom_series(
    phantom: Phantom,
    folder: Path,
    *,
    series_uid: str | None = None,
    patient_id: str = "PHANTOM",
    series_number: int = 1,
    compress: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """Write a single-channel phantom as a DICOM series, one file per slice along k.

    CT phantoms become CT Image Storage (stored uint16 = HU + 1024, RescaleIntercept -1024),
    MR phantoms MR Image Storage (stored uint16 = rounded signal). Slice k holds
    ``image[:, :, k].T`` (rows run along j, columns along i); ImageOrientationPatient,
    ImagePositionPatient and PixelSpacing (row spacing, column spacing) come from the affine in
    DICOM's LPS patient coordinates. UIDs are derived from the image content, so writing the
    same phantom twice gives the same UIDs. The series is written into a temporary sibling
    folder that is renamed to ``folder`` at the end.

    Args:
        phantom: A phantom with a 3D image and an affine whose axes are orthogonal.
        folder: Output folder; must not exist unless it is empty or ``overwrite``.
        series_uid: SeriesInstanceUID; None derives one from the content.
        patient_id: PatientID and PatientName.
        series_number: SeriesNumber.
        compress: Encode the pixel data with RLE Lossless.
        overwrite: Replace an existing non-empty ``folder``.

    Returns:
        Paths of the files, in InstanceNumber order (k = 0 first).

    Raises:
        ValueError: On a multi-channel image, an oblique/sheared affine or an unknown modality.
        FileExistsError: If ``folder`` exists, is not empty and ``overwrite`` is False.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        ExplicitVRLittleEndian,
        RLELossless,
        generate_uid,
    )

    pydicom3 = int(pydicom.__version__.split(".")[0]) >= 3
    folder = Path(folder)
    image = phantom.image
    if image.ndim != 3:
        raise ValueError(
            f"phantom.image: DICOM series need a single-channel 3D image, got shape {image.shape}; "
            "select one channel first"
        )
    if phantom.modality not in ("CT", "MR"):
        raise ValueError(f"phantom.modality: expected 'CT' or 'MR', got {phantom.modality!r}")
    affine = check_affine(phantom.affine, "phantom.affine")
    _origin, spacing_mm, direction = itk_from_affine(affine)
    spacing = np.asarray(spacing_mm)
    unit_lps = np.asarray(direction).reshape(3, 3)  # columns: LPS directions of the i, j, k axes
    if not np.allclose(unit_lps.T @ unit_lps, np.eye(3), atol=1e-6):
        raise ValueError(f"phantom.affine: axes must be orthogonal for a DICOM series, got {affine[:3, :3]}")
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{folder}: folder exists and is not empty (pass overwrite=True)")

    if phantom.modality == "CT":
        stored = np.clip(np.rint(image.astype(np.float64)) + 1024, 0, 65535).astype(np.uint16)
        intercept, sop_class = -1024.0, _CT_IMAGE_STORAGE
    else:
        stored = np.clip(np.rint(image.astype(np.float64)), 0, 65535).astype(np.uint16)
        intercept, sop_class = 0.0, _MR_IMAGE_STORAGE
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    digest.update(affine.tobytes())
    digest.update(phantom.modality.encode())
    key = digest.hexdigest()
    study_uid = generate_uid(entropy_srcs=[key, patient_id, "study"])
    frame_uid = generate_uid(entropy_srcs=[key, patient_id, "frame-of-reference"])
    series_uid = series_uid or generate_uid(entropy_srcs=[key, patient_id, str(series_number)])
    row_dir, col_dir = unit_lps[:, 0], unit_lps[:, 1]  # i along a row, j down a column
    normal = np.cross(row_dir, col_dir)
    orientation = [_ds(v) for v in (*row_dir, *col_dir)]
    description = "Synthetic abdomen" if phantom.modality == "CT" else "Synthetic MR phantom"

    temporary = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex}"
    temporary.mkdir(parents=True)
    names = []
    try:
        for k in range(image.shape[2]):
            ds = Dataset()
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["DERIVED", "PRIMARY", "AXIAL"]
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(series_uid), str(k)])
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = "20240101"
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = "120000"
            ds.AccessionNumber = key[:16]
            ds.Modality = phantom.modality
            ds.Manufacturer = "medseg"
            ds.ManufacturerModelName = "synthetic phantom"
            ds.SoftwareVersions = __version__
            ds.InstitutionName = "medseg phantoms"
            ds.ReferringPhysicianName = ""
            ds.StudyDescription = description
            ds.SeriesDescription = f"{description} series {series_number}"
            ds.PatientName = f"{patient_id}^"  # family name only, unambiguous
            ds.PatientID = patient_id
            ds.PatientBirthDate = "19700101"
            ds.PatientSex = "O"
            ds.PatientAge = "054Y"
            ds.BodyPartExamined = "HEAD" if "tumor" in phantom.labels.values() else "ABDOMEN"
            ds.SliceThickness = _ds(spacing[2])
            ds.SpacingBetweenSlices = _ds(spacing[2])
            ds.PatientPosition = "HFS"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = "1"
            ds.SeriesNumber = int(series_number)
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = k + 1
            position = lps_to_ras((affine @ np.array([0.0, 0.0, float(k), 1.0]))[:3])  # RAS -> LPS, same flip
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.ImageOrientationPatient = orientation
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = _ds(float(position @ normal))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = image.shape[1]
            ds.Columns = image.shape[0]
            ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing, column spacing
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = _ds(intercept)
            ds.RescaleSlope = "1"
            ds.BurnedInAnnotation = "NO"
            ds.LossyImageCompression = "00"
            if phantom.modality == "CT":
                ds.RescaleType = "HU"
                ds.KVP = "120"
                ds.WindowCenter = "40"
                ds.WindowWidth = "400"
                ds.ConvolutionKernel = "STANDARD"
            else:
                ds.ScanningSequence = "SE"
                ds.SequenceVariant = "NONE"
                ds.ScanOptions = ""
                ds.MRAcquisitionType = "2D"
                ds.RepetitionTime = "500"
                ds.EchoTime = "10"
                ds.EchoTrainLength = 1
                ds.MagneticFieldStrength = "1.5"
                ds.ImagedNucleus = "1H"
            pixels = np.ascontiguousarray(stored[:, :, k].T)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds.file_meta = meta
            if compress:
                # pydicom 2 (the MONAI Label environment) keeps the instance UID without being asked
                ds.compress(RLELossless, pixels, **({"generate_instance_uid": False} if pydicom3 else {}))
            else:
                ds.PixelData = pixels.tobytes()
            name = f"IM{k + 1:05d}.dcm"
            ds.save_as(
                temporary / name, **({"enforce_file_format": True} if pydicom3 else {"write_like_original": False})
            )
            names.append(name)
        _replace_folder(temporary, folder, overwrite)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.debug("wrote %d DICOM slices to %s", len(names), folder)
    return [folder / name for name in names]


def _replace_folder(temporary: Path, folder: Path, overwrite: bool) -> None:
    """Move a finished temporary folder into place; an old one is swapped out, then removed."""
    if folder.exists():
        if not folder.is_dir():
            raise FileExistsError(f"{folder}: exists and is not a folder")
        if any(folder.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{folder}: folder exists and is not empty")
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex}"
            os.replace(folder, old)
            os.replace(temporary, folder)
            shutil.rmtree(old, ignore_errors=True)
            return
        folder.rmdir()
    os.replace(temporary, folder)
