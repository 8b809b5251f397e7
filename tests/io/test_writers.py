"""Label maps written with ISA-L's deflate are plain gzip NIfTI, deterministic and read back exactly."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np

from pipelines.io.readers import read_volume
from pipelines.io.writers import write_labels


def test_labels_written_as_standard_gzip_and_read_back(tmp_path) -> None:
    rng = np.random.default_rng(0)
    labels = np.zeros((64, 48, 20), np.uint8)
    labels[10:40, 5:30, 2:15] = rng.integers(0, 6, size=(30, 25, 13), dtype=np.uint8)
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    first = write_labels(labels, affine, tmp_path / "a" / "labels.nii.gz")
    second = write_labels(labels, affine, tmp_path / "b" / "labels.nii.gz")
    data = (tmp_path / "a" / "labels.nii.gz").read_bytes()
    assert data == (tmp_path / "b" / "labels.nii.gz").read_bytes()  # no time stamp: same labels, same bytes
    assert first.sha256 == second.sha256
    raw = gzip.decompress(data)  # Python's own zlib inflates it: standard gzip
    image = nib.Nifti1Image.from_bytes(raw)
    np.testing.assert_array_equal(np.asarray(image.dataobj), labels)
    np.testing.assert_allclose(image.affine, affine)
    volume = read_volume(tmp_path / "a" / "labels.nii.gz")  # and our reader (ISA-L's inflate) agrees
    np.testing.assert_array_equal(volume.array, labels)
