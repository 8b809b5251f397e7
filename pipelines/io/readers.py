"""Read NIfTI, NRRD, MHA/MHD and DICOM series into a :class:`Volume` with exact geometry.

NIfTI goes through nibabel; everything else through SimpleITK, imported only when such a file is
read (it is large and NIfTI-only runs, the common case, never need it).
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
from isal import igzip, isal_zlib

from pipelines.geometry import affine_from_itk, check_affine
from pipelines.io.dicom import stack_series
from pipelines.io.dicom_tree import is_dicom_container, load_series, scan_tree
from pipelines.io.series_rules import SeriesRules, choose_series

if TYPE_CHECKING:
    import SimpleITK as sitk

logger = logging.getLogger(__name__)

__all__ = ["SUPPORTED_INPUTS", "Volume", "case_id_from_path", "read_volume"]

SUPPORTED_INPUTS = (
    "a NIfTI file (.nii, .nii.gz), FreeSurfer MGH (.mgz, .mgh), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) "
    "or DICOM (a folder, searched recursively, a DICOMDIR or a .zip)"
)
_NIFTI = (".nii", ".nii.gz")
_MGH = (".mgz", ".mgh")
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
        geometry_correction: for DICOM slices that were unevenly spaced or tilted and were
            resampled onto a regular grid, what was done (recorded in run.json); else None.
        series_selection: for DICOM, which rule chose the series and why each other was skipped
            (:meth:`pipelines.io.series_rules.Selection.record`, plus ``study_uid`` and the files
            skipped by kind); else None.
        channels, channel_record: for a multi-channel bundle's input, see :mod:`pipelines.io.channels`.
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
    geometry_correction: dict[str, Any] | None = None
    series_selection: dict[str, Any] | None = None
    # Multi-channel input (pipelines.io.channels): the stack (C, I, J, K) whose channel 0 is ``array``,
    # and what run.json records of each channel image (order, paths, sha256, grid handling).
    channels: np.ndarray | None = field(default=None, repr=False)
    channel_record: dict[str, Any] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along i, j, k in mm."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


def case_id_from_path(path: str | Path) -> str:
    """The input's name without its image extension: ``scan.nii.gz`` -> ``scan``; a folder -> its name;
    ``export.zip`` -> ``export``; ``cd/DICOMDIR`` -> ``cd``."""
    path = Path(path)
    name = path.name
    if name.upper() == "DICOMDIR":  # a DICOMDIR names its folder's export
        return path.parent.name
    for ext in (*_NIFTI, *_MGH, *_ITK, ".zip"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def read_volume(
    path: str | Path,
    *,
    series_uid: str | None = None,
    allow_gaps: bool = False,
    series_rules: SeriesRules | None = None,
) -> Volume:
    """Read one 3D volume.

    Args:
        path: a NIfTI, NRRD or MetaImage file, or DICOM: a folder (searched recursively), a
            DICOMDIR file or a ``.zip`` (see :mod:`pipelines.io.dicom_tree`).
        series_uid: for DICOM holding several series, the one to read. Without it the series is
            chosen by ``series_rules`` and the choice is logged with the reason for every other.
        series_rules: DICOM series selection rules; None for
            :data:`pipelines.io.series_rules.DEFAULT_RULES`.
        allow_gaps: for DICOM, interpolate across a gap between slices larger than
            :data:`pipelines.io.slice_geometry.GAP_LIMIT_FACTOR` times the median instead of refusing.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable image, is truncated, or is not 3D.
    """
    path = Path(path)
    check_readable(path)
    name = path.name.lower()
    if path.is_dir() or is_dicom_container(path):
        volume = _read_dicom(path, series_uid, allow_gaps, series_rules)
    elif name.endswith(_NIFTI) or name.endswith(_MGH):
        volume = _read_nibabel(path)
    elif name.endswith(_ITK):
        volume = _read_itk(path)
    else:
        raise ValueError(f"{path}: unsupported file type (expected {SUPPORTED_INPUTS})")
    check_affine(volume.affine, f"{path}: voxel-to-world affine")
    logger.debug("read %s: shape %s, spacing %s mm", path, volume.shape, volume.spacing_mm)
    return volume


def check_readable(path: Path) -> None:
    """Say why ``path`` cannot be read, before trying: missing, broken or looping link, permission.

    Raises:
        FileNotFoundError: no such file or folder, or a symbolic link to nothing.
        PermissionError: not readable (for a folder: not listable) by this user.
        ValueError: a symbolic link loop.
    """
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{path}: symbolic link loop (a link in this path points back to itself)") from err
        if err.errno == errno.EACCES:
            raise PermissionError(f"{path}: permission denied (a folder on the path cannot be entered)") from err
        if err.errno == errno.ENOENT and os.path.lexists(path):
            raise FileNotFoundError(f"{path}: broken symbolic link (its target does not exist)") from err
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            raise FileNotFoundError(f"{path}: no such file or folder (expected {SUPPORTED_INPUTS})") from err
        raise
    wanted = os.R_OK | (os.X_OK if path.is_dir() else 0)
    if not os.access(path, wanted):
        what = "folder cannot be listed" if path.is_dir() else "file cannot be read"
        raise PermissionError(f"{path}: permission denied (the {what} by this user)")


def check_memory(path: Path, shape: tuple[int, ...], what: str) -> None:
    """Refuse an image whose float32 copy alone would not fit in this machine's memory.

    Checked from the header, before any voxel is allocated: a header that declares 32767³ voxels
    is refused with the size it would need instead of exhausting memory.
    """
    voxels = math.prod(int(s) for s in shape)
    needed = voxels * 4  # preprocessing works on float32
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > total:
        raise ValueError(
            f"{path}: {what} declares shape {tuple(int(s) for s in shape)} ({voxels:,} voxels): "
            f"{needed / 2**30:,.1f} GiB as float32, more than this machine's {total / 2**30:.1f} GiB of memory"
        )


def _as_3d(array: np.ndarray, path: Path) -> np.ndarray:
    # A trailing singleton (a NIfTI "time" axis of length 1) is still a 3D image.
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 3D image, got shape {tuple(array.shape)}")
    if array.dtype.fields is not None or array.dtype.kind not in "biuf":
        what = "RGB voxels" if array.dtype.fields is not None else f"{array.dtype} voxels"
        raise ValueError(f"{path}: {what} (dtype {array.dtype}); expected one greyscale number per voxel")
    if min(array.shape) < 1:
        raise ValueError(f"{path}: image is empty, shape {tuple(array.shape)}")
    return array


def _read_nibabel(path: Path) -> Volume:
    """NIfTI-1/2 and FreeSurfer MGH/MGZ, read once: the same bytes give the checksum and the image."""
    try:
        data = path.read_bytes()
    except PermissionError as err:
        raise PermissionError(f"{path}: permission denied (cannot read this file)") from err
    sha256 = hashlib.sha256(data).hexdigest()
    gzipped = data[:2] == b"\x1f\x8b"
    mgh = path.name.lower().endswith(_MGH)
    header_bytes = _head(data, 544, path) if gzipped else data[:544]
    header = _header(header_bytes, path, mgh)
    try:
        declared = header.get_affine() if mgh else header.get_best_affine()
    except Exception as err:  # nibabel cannot even build the affine (a zero or non-finite voxel size)
        raise ValueError(f"{path}: voxel-to-world affine cannot be built from the header ({err})") from err
    check_affine(declared, f"{path}: voxel-to-world affine")
    shape = tuple(int(s) for s in header.get_data_shape())
    if len(shape) < 3 or (len(shape) > 3 and any(s != 1 for s in shape[3:])):
        raise ValueError(f"{path}: expected a 3D image, got shape {shape}")
    if min(shape) < 1:
        raise ValueError(f"{path}: image is empty, shape {shape}")
    check_memory(path, shape, "the header")
    try:
        # ISA-L's inflate gives the same bytes as zlib's about 3x faster (512x512x200 int16 CT: 0.77 s vs 2.2 s)
        raw = igzip.decompress(data) if gzipped else data
    except (EOFError, OSError, zlib.error, isal_zlib.error) as err:
        raise ValueError(f"{path}: truncated or corrupt image data ({err})") from err
    offset = 284 if mgh else int(header.get_data_offset())
    needed = math.prod(shape) * np.dtype(header.get_data_dtype()).itemsize
    if len(raw) < offset + needed:
        raise ValueError(
            f"{path}: truncated: the header declares shape {shape} of {np.dtype(header.get_data_dtype())} "
            f"({needed:,} bytes of voxel data), the file holds {max(len(raw) - offset, 0):,}"
        )
    try:
        image = _image_class(header).from_bytes(raw)
        array = np.asanyarray(image.dataobj)
    except Exception as err:  # nibabel raises several types for a file it cannot decode
        raise ValueError(f"{path}: not a readable {'MGH' if mgh else 'NIfTI'} image ({err})") from err
    return Volume(
        array=_as_3d(array, path),
        affine=np.asarray(image.affine, dtype=np.float64),
        path=path,
        format="mgh" if mgh else "nifti",
        nifti_header=None if mgh else image.header,
        sha256=sha256,
    )


def _image_class(header: Any) -> type:
    if isinstance(header, nib.Nifti2Header):  # a subclass of Nifti1Header: test it first
        return nib.Nifti2Image
    return nib.Nifti1Image if isinstance(header, nib.Nifti1Header) else nib.MGHImage


def _head(data: bytes, size: int, path: Path) -> bytes:
    """The first ``size`` bytes of gzip-compressed ``data`` (the header), without inflating the rest."""
    try:
        return zlib.decompressobj(wbits=31).decompress(data, size)
    except zlib.error as err:
        raise ValueError(f"{path}: truncated or corrupt gzip data ({err})") from err


def _header(head: bytes, path: Path, mgh: bool) -> Any:
    """Parse a NIfTI-1 / NIfTI-2 (told apart by ``sizeof_hdr``, 348 or 540) or MGH header.

    NIfTI headers are parsed with ``check=False``: nibabel's check would silently set a zero voxel
    size to 1 mm; we want to see it and refuse it (see :func:`pipelines.geometry.check_affine`).
    """
    try:
        if mgh:
            return nib.freesurfer.mghformat.MGHHeader.from_fileobj(io.BytesIO(head))
        size = {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")} if len(head) >= 4 else set()
        if 540 in size:
            return nib.Nifti2Header.from_fileobj(io.BytesIO(head[:540]), check=False)  # extensions are read later
        if 348 in size:
            return nib.Nifti1Header.from_fileobj(io.BytesIO(head[:348]), check=False)  # extensions are read later
    except Exception as err:  # nibabel raises several types for a header it cannot parse
        raise ValueError(f"{path}: not a readable {'MGH' if mgh else 'NIfTI'} image ({err})") from err
    raise ValueError(f"{path}: not a readable NIfTI image (no NIfTI header: sizeof_hdr is neither 348 nor 540)")


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

    # ITK prints its warnings from C++ straight to the terminal; what matters reaches the user as
    # our own message (or a refusal), so its console output is switched off for this process.
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise ValueError(f"{path}: not a readable image ({first})") from err
    return _sitk_to_volume(image, path, "itk")


def _read_dicom(path: Path, series_uid: str | None, allow_gaps: bool, rules: SeriesRules | None) -> Volume:
    """Scan the headers, choose the series, then read and stack only that series' pixel data."""
    tree = scan_tree(path, checksum=True)
    selection = choose_series(list(tree.summaries.values()), rules, series_uid=series_uid, where=str(path))
    series = load_series(tree, selection.uid)
    stacked = stack_series(series, path, allow_gaps=allow_gaps)
    record = {**selection.record(), "study_uid": tree.summaries[selection.uid].study_uid, "skipped_files": tree.skipped}
    return Volume(
        array=_as_3d(stacked.array, path),
        affine=stacked.affine,
        path=path,
        format="dicom",
        modality=series.modality,
        series_uid=series.uid,
        dicom_files=series.files,
        sha256=tree.sha256,
        dicom_headers=stacked.headers,
        geometry_correction=stacked.correction.as_record() if stacked.correction else None,
        series_selection=record,
    )
