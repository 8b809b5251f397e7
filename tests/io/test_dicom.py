"""DICOM series: slices placed by their own positions; series that cannot be stacked exactly are refused."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
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


def _shift_positions(files: list[Path], offset_mm: Callable[[int], np.ndarray]) -> None:
    for n, f in enumerate(files):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        position = np.asarray([float(v) for v in ds.ImagePositionPatient]) + offset_mm(n)
        _edit(f, ImagePositionPatient=[float(v) for v in position])


def test_missing_slice_is_interpolated_and_recorded(series: tuple[Path, object]) -> None:
    """One slice missing (a gap of 8 mm among 4 mm): the grid keeps 4 mm, acquired slices land on
    their own planes exactly, the missing plane is interpolated, and the correction says so."""
    folder, phantom = series
    _files_by_position(folder)[4].unlink()
    volume = read_volume(folder)
    np.testing.assert_allclose(volume.affine, phantom.affine, atol=1e-4)
    assert volume.shape == SHAPE
    for k in [0, 1, 2, 3, 5, 6, 7, 8, 9]:
        np.testing.assert_array_equal(volume.array[..., k], phantom.image[..., k])
    expected = (phantom.image[..., 3].astype(np.float32) + phantom.image[..., 5]) / 2
    np.testing.assert_allclose(volume.array[..., 4], expected, atol=1e-3)
    record = volume.geometry_correction
    assert record["kind"] == "uneven_spacing" and record["spacing_mm"] == 4.0 and record["planes"] == 10
    assert len(record["original_positions_mm"]) == 9 and record["max_deviation_mm"] == pytest.approx(4.0)


def test_variable_gaps_go_on_the_smallest_gap(series: tuple[Path, object]) -> None:
    folder, phantom = series
    files = _files_by_position(folder)
    _shift_positions(files, lambda n: np.array([0.0, 0.0, 4.0 if n >= 6 else 0.0]) * np.sign(phantom.affine[2, 2]))
    volume = read_volume(folder)  # 4 mm gaps, then one of 8 mm, then 4 mm again
    assert volume.shape == (*SHAPE[:2], 11)
    # the planes after the gap are where they were acquired: 4 mm further along than before
    for k in range(6):
        np.testing.assert_array_equal(volume.array[..., k], phantom.image[..., k])
    for k in range(6, 10):
        np.testing.assert_array_equal(volume.array[..., k + 1], phantom.image[..., k])
    assert volume.geometry_correction["kind"] == "uneven_spacing"


def test_a_gap_beyond_the_limit_is_refused_unless_allowed(series: tuple[Path, object]) -> None:
    folder, _ = series
    for f in _files_by_position(folder)[3:7]:
        f.unlink()  # a 20 mm hole in a 4 mm series
    with pytest.raises(
        ValueError, match=r"a gap of 20\.00 mm between slices .* \(5\.0x the median 4\.00 mm, limit 3x\).*--allow-gaps"
    ):
        read_volume(folder)
    volume = read_volume(folder, allow_gaps=True)
    assert volume.shape == SHAPE and volume.geometry_correction["kind"] == "uneven_spacing"


def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid(series: tuple[Path, object]) -> None:
    """Each slice moved one pixel along its columns per slice (a strong tilt): the corrected grid
    is orthogonal, and slice k's content sits k rows further down, exactly."""
    folder, phantom = series
    files = _files_by_position(folder)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    col = np.asarray([float(v) for v in first.ImageOrientationPatient[3:]])
    row_spacing = float(first.PixelSpacing[0])
    _shift_positions(files, lambda n: n * row_spacing * col)
    volume = read_volume(folder)
    np.testing.assert_allclose(volume.affine, phantom.affine, atol=1e-4)  # orthogonal: the untilted grid
    for k in range(SHAPE[2]):
        np.testing.assert_allclose(volume.array[:, k:, k], phantom.image[:, : SHAPE[1] - k, k], atol=1e-3)
    record = volume.geometry_correction
    assert record["kind"] == "gantry_tilt" and record["tilt_deg"] == pytest.approx(np.degrees(np.arctan(7.0 / 4.0)))


def test_two_acquisitions_at_the_same_positions_are_refused(series: tuple[Path, object]) -> None:
    folder, _ = series
    first = _files_by_position(folder)[2]
    twin = folder / "twin.dcm"
    shutil.copy(first, twin)
    _edit(twin, SOPInstanceUID=pydicom.uid.generate_uid())
    with pytest.raises(ValueError, match=r"lie at the same position .* mixes acquisitions"):
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
