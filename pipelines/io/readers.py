"""Read NIfTI, NRRD, MHA/MHD and DICOM series into a :class:`Volume` with exact geometry.

NIfTI goes through nibabel; everything else through SimpleITK, imported only when such a file is
read (it is large and NIfTI-only runs, the common case, never need it).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np

from pipelines.geometry import affine_from_itk
from pipelines.io.dicom import scan_dicom_folder, select_series, stack_series

if TYPE_CHECKING:
    import SimpleITK as sitk

logger = logging.getLogger(__name__)

__all__ = ["SUPPORTED_INPUTS", "Volume", "case_id_from_path", "read_volume"]

SUPPORTED_INPUTS = "a NIfTI file (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a DICOM folder"
_NIFTI = (".nii", ".nii.gz")
_ITK = (".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image and its geometry.

    Attributes:
        array: voxels indexed ``(i, j, k)``, the file's own data type (int16 HU for most CT).
        affine: 4x4 float64 matrix from ``(i, j, k, 1)`` to RAS world coordinates in mm.
        path: what was read (file or DICOM folder).
        format: ``"nifti"``, ``"itk"`` or ``"dicom"``.
        modality: ``"CT"``, ``"MR"``... when the file says so (DICOM), else ``""``.
        series_uid: SeriesInstanceUID for DICOM input.
        dicom_files: the series' instance files in k order, for DICOM input.
        nifti_header: the input's NIfTI header, to write outputs with the identical stored affine.
        sha256: the input's checksum, computed from the bytes the reader read (see
            :func:`pipelines.io.hashing.input_sha256` for what it covers); None when not computed.
        dicom_headers: the series' instances in k order without pixel data, for DICOM input
            (DICOM-SEG references them; nothing has to read the files again).
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path
    format: str
    modality: str = ""
    series_uid: str | None = None
    dicom_files: tuple[Path, ...] = field(default_factory=tuple)
    nifti_header: nib.Nifti1Header | None = None
    sha256: str | None = None
    dicom_headers: tuple[Any, ...] = field(default_factory=tuple, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along i, j, k in mm."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


def case_id_from_path(path: str | Path) -> str:
    """The input's name without its image extension: ``scan.nii.gz`` -> ``scan``; a folder -> its name."""
    path = Path(path)
    name = path.name
    for ext in (*_NIFTI, *_ITK):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def read_volume(path: str | Path, *, series_uid: str | None = None) -> Volume:
    """Read one 3D volume.

    Args:
        path: a NIfTI, NRRD or MetaImage file, or a folder of DICOM files.
        series_uid: for a DICOM folder holding several series, the one to read. Without it the
            series is chosen by :data:`pipelines.io.dicom.SELECTION_RULE` and the choice is logged.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable image, is truncated, or is not 3D.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (expected {SUPPORTED_INPUTS})")
    if path.is_dir():
        volume = _read_dicom(path, series_uid)
    elif path.name.lower().endswith(_NIFTI):
        volume = _read_nifti(path)
    elif path.name.lower().endswith(_ITK):
        volume = _read_itk(path)
    else:
        raise ValueError(f"{path}: unsupported file type (expected {SUPPORTED_INPUTS})")
    logger.debug("read %s: shape %s, spacing %s mm", path, volume.shape, volume.spacing_mm)
    return volume


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    # A trailing singleton (a NIfTI "time" axis of length 1) is still a 3D image.
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 3D image, got shape {tuple(array.shape)}")
    if min(array.shape) < 1:
        raise ValueError(f"{path}: image is empty, shape {tuple(array.shape)}")
    return array


def _read_nifti(path: Path) -> Volume:
    # The file is read once: its bytes give the checksum and the image.
    try:
        data = path.read_bytes()
    except PermissionError as err:
        raise PermissionError(f"{path}: permission denied (cannot read this file)") from err
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{path}: truncated or corrupt image data ({err})") from err
    try:
        image = _nifti_from_bytes(raw)
    except Exception as err:  # nibabel raises several types for a file that is not NIfTI
        raise ValueError(f"{path}: not a readable NIfTI image ({err})") from err
    if len(image.shape) < 3 or (len(image.shape) > 3 and any(s != 1 for s in image.shape[3:])):
        raise ValueError(f"{path}: expected a 3D image, got shape {tuple(image.shape)}")
    try:
        array = np.asanyarray(image.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as err:
        raise ValueError(f"{path}: truncated or corrupt image data ({err})") from err
    return Volume(
        array=_as_3d(array, path),
        affine=np.asarray(image.affine, dtype=np.float64),
        path=path,
        format="nifti",
        nifti_header=image.header,
        sha256=sha256,
    )


def _nifti_from_bytes(raw: bytes) -> nib.Nifti1Image | nib.Nifti2Image:
    """NIfTI-1 or NIfTI-2 (told apart by ``sizeof_hdr``, 348 or 540, in either byte order)."""
    if len(raw) < 4:
        raise ValueError(f"file has {len(raw)} bytes; a NIfTI header has at least 348")
    size = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
    if 540 in size:
        return nib.Nifti2Image.from_bytes(raw)
    if 348 not in size:
        raise ValueError("no NIfTI header (sizeof_hdr is neither 348 nor 540)")
    return nib.Nifti1Image.from_bytes(raw)


def _sitk_to_volume(image: sitk.Image, path: Path, fmt: str, **extra: object) -> Volume:
    import SimpleITK as sitk

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        size = tuple(image.GetSize())
        comps = image.GetNumberOfComponentsPerPixel()
        shape = size if comps == 1 else (*size, comps)
        raise ValueError(f"{path}: expected a 3D image, got shape {shape}")
    # SimpleITK arrays are (k, j, i); reverse the axes to get the (i, j, k) voxel order.
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    affine = affine_from_itk(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return Volume(array=_as_3d(array, path), affine=affine, path=path, format=fmt, **extra)  # type: ignore[arg-type]


def _read_itk(path: Path) -> Volume:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise ValueError(f"{path}: not a readable image ({first})") from err
    return _sitk_to_volume(image, path, "itk")


def _read_dicom(folder: Path, series_uid: str | None) -> Volume:
    series_list, sha256 = scan_dicom_folder(folder)
    series = select_series(series_list, folder, series_uid)
    stacked = stack_series(series, folder)
    return Volume(
        array=_as_3d(stacked.array, folder),
        affine=stacked.affine,
        path=folder,
        format="dicom",
        modality=series.modality,
        series_uid=series.uid,
        dicom_files=series.files,
        sha256=sha256,
        dicom_headers=stacked.headers,
    )
