"""The grid of a DICOM input from headers only: the same grid the reader stacks the pixels onto."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipelines.io.dicom_grid import dicom_grid
from pipelines.io.readers import read_volume
from tests.dicom_export import Export


@pytest.fixture(scope="module")
def export(dicom_export: Export) -> Export:
    return dicom_export


@pytest.mark.parametrize(("which", "series"), [("zip", "thin"), ("dicomdir", "coronal"), ("study folder", "thick")])
def test_header_grid_is_the_grid_the_reader_reads(export: Export, which: str, series: str) -> None:
    study = export.study(1, 2) if which == "zip" else export.study(2, 2) if which == "dicomdir" else export.study(2, 1)
    path = {"zip": export.zipped, "dicomdir": study["folder"] / "DICOMDIR", "study folder": study["folder"]}[which]
    grid = dicom_grid(path, study[series])
    volume = read_volume(path, series_uid=study[series])
    assert grid.shape == volume.shape
    np.testing.assert_allclose(grid.affine, volume.affine, atol=1e-6)


def test_uneven_slices_get_the_corrected_grid_and_absent_series_are_named(tmp_path: Path) -> None:
    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.write import write_dicom_series

    files = write_dicom_series(make_ct_phantom(3, shape=(16, 16, 10), spacing_mm=(8.0, 8.0, 4.0)), tmp_path / "s")
    ds = pydicom.dcmread(files[-1])  # the last slice 6 mm further: uneven, resampled onto 4 mm planes
    ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [float(ds.ImagePositionPatient[2]) - 6]
    ds.save_as(files[-1])
    grid, volume = dicom_grid(tmp_path / "s"), read_volume(tmp_path / "s", allow_gaps=True)
    assert volume.geometry_correction is not None and grid.shape == volume.shape != (16, 16, 10)
    np.testing.assert_allclose(grid.affine, volume.affine, atol=1e-6)
    with pytest.raises(ValueError, match=r"s: no series with SeriesInstanceUID 1\.2\.3; the folder holds: "):
        dicom_grid(tmp_path / "s", "1.2.3")
