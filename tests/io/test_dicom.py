"""DICOM series: slices placed by their own positions; series that cannot be stacked exactly are refused."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipelines.io.dicom import find_dicom_series, scan_dicom_folder
from pipelines.io.hashing import input_sha256
from pipelines.io.readers import read_volume

SHAPE = (24, 20, 10)
SPACING_MM = (6.0, 7.0, 4.0)


@pytest.fixture()
def series(tmp_path: Path) -> tuple[Path, object]:
    """A small CT phantom written as one DICOM file per slice; returns (folder, phantom)."""
    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.write import write_dicom_series

    phantom = make_ct_phantom(3, shape=SHAPE, spacing_mm=SPACING_MM)
    folder = tmp_path / "series"
    write_dicom_series(phantom, folder)
    return folder, phantom


def _files_by_position(folder: Path) -> list[Path]:
    files = sorted(folder.iterdir())
    return sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))


def _edit(path: Path, **values: object) -> None:
    ds = pydicom.dcmread(path)
    for key, value in values.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_series_voxels_and_geometry_match_the_phantom(series: tuple[Path, object]) -> None:
    folder, phantom = series
    volume = read_volume(folder)
    np.testing.assert_allclose(volume.affine, phantom.affine, atol=1e-4)
    np.testing.assert_array_equal(volume.array, phantom.image)
    assert volume.format == "dicom" and len(volume.dicom_headers) == SHAPE[2]
    assert all("PixelData" not in ds for ds in volume.dicom_headers)  # headers only, pixels decoded once


def test_file_order_does_not_matter(series: tuple[Path, object], tmp_path: Path) -> None:
    folder, phantom = series
    reversed_folder = tmp_path / "reversed"
    reversed_folder.mkdir()
    for n, f in enumerate(reversed(_files_by_position(folder))):
        shutil.copy(f, reversed_folder / f"{n:03d}.dcm")  # names now run against the slice order
    volume = read_volume(reversed_folder)
    np.testing.assert_allclose(volume.affine, phantom.affine, atol=1e-4)
    np.testing.assert_array_equal(volume.array, phantom.image)


def test_checksum_is_the_folder_checksum_from_one_read(series: tuple[Path, object]) -> None:
    folder, _ = series
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("not DICOM")
    assert read_volume(folder).sha256 == input_sha256(folder)
    _, digest = scan_dicom_folder(folder)
    assert digest == input_sha256(folder)
    # a file that is not DICOM is hashed but not mistaken for a slice
    (folder / "extra.txt").write_bytes(b"hello")
    assert find_dicom_series(folder)[0].num_slices == SHAPE[2]
    assert hashlib.sha256(b"hello").hexdigest() != input_sha256(folder)


def test_missing_slice_is_refused(series: tuple[Path, object]) -> None:
    folder, _ = series
    _files_by_position(folder)[4].unlink()
    with pytest.raises(ValueError, match=r"slices are not evenly spaced \(gaps from 4\.000 to 8\.000 mm.*wrong slices"):
        read_volume(folder)


def test_variable_gaps_are_refused(series: tuple[Path, object]) -> None:
    folder, _ = series
    files = _files_by_position(folder)
    for f in files[6:]:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        _edit(f, ImagePositionPatient=[x, y, z + 3.0])  # 4 mm gaps, then one of 7 mm
    with pytest.raises(ValueError, match=r"not evenly spaced \(gaps from 4\.000 to 7\.000 mm, median 4\.000 mm"):
        read_volume(folder)


def test_two_acquisitions_at_the_same_positions_are_refused(series: tuple[Path, object]) -> None:
    folder, _ = series
    first = _files_by_position(folder)[2]
    twin = folder / "twin.dcm"
    shutil.copy(first, twin)
    _edit(twin, SOPInstanceUID=pydicom.uid.generate_uid())
    with pytest.raises(ValueError, match=r"lie at the same position .* mixes acquisitions"):
        read_volume(folder)


def test_gantry_tilt_is_refused(series: tuple[Path, object]) -> None:
    folder, _ = series
    for n, f in enumerate(_files_by_position(folder)):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        _edit(f, ImagePositionPatient=[x, y + n * 4.0 * np.tan(np.radians(12.0)), z])
    with pytest.raises(ValueError, match=r"lean 12\.00 degrees from the slice normal \(gantry tilt\)"):
        read_volume(folder)


def test_slices_of_different_size_are_refused(series: tuple[Path, object]) -> None:
    folder, _ = series
    f = _files_by_position(folder)[0]
    ds = pydicom.dcmread(f)
    ds.Rows = ds.Rows - 1
    ds.PixelData = ds.PixelData[: ds.Rows * ds.Columns * 2]
    ds.save_as(f)
    with pytest.raises(ValueError, match=r"slices differ in size"):
        read_volume(folder)
