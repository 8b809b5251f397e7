"""Reading and writing volumes with their geometry.

Every reader returns a :class:`Volume`: a numpy array indexed ``(i, j, k)`` (the NIfTI voxel
order) and a 4x4 affine from voxel indices to RAS world coordinates in mm, the convention of
nibabel and of MONAI's ``MetaTensor``.
"""

from __future__ import annotations

from pipelines.io.dicom import DicomSeries, find_dicom_series, select_series
from pipelines.io.hashing import input_sha256, sha256_file
from pipelines.io.readers import SUPPORTED_INPUTS, Volume, read_volume, to_metatensor
from pipelines.io.writers import atomic_path, write_json, write_labels

__all__ = [
    "SUPPORTED_INPUTS",
    "DicomSeries",
    "Volume",
    "atomic_path",
    "find_dicom_series",
    "input_sha256",
    "read_volume",
    "select_series",
    "sha256_file",
    "to_metatensor",
    "write_json",
    "write_labels",
]
