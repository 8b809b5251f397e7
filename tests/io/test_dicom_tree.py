"""DICOM exports read from headers: folder trees, DICOMDIR, .zip; non-images skipped and counted."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipelines.io.dicom_tree import scan_tree
from pipelines.io.hashing import input_sha256
from pipelines.io.readers import read_volume
from pipelines.io.series_rules import rules_from_document
from tests.dicom_export import Export

THIN_AXIAL = rules_from_document(
    {"rules": [{"name": "thin axial", "image_type_all": ["ORIGINAL"], "image_type_none": ["LOCALIZER"],
                "orientation": ["axial"], "thickness_mm": {"max": 3}}]},
    "test rules",
)  # fmt: skip


@pytest.fixture(scope="module")
def export(dicom_export: Export) -> Export:
    return dicom_export


def test_folder_tree_is_scanned_recursively_and_non_images_are_counted(export: Export) -> None:
    tree = scan_tree(export.root)
    assert tree.kind == "folder" and len(tree.series) == 20 and len(tree.studies) == 4
    # 3 SR objects in folders, 1 beside the DICOMDIR; the DICOMDIR file; README.txt
    assert tree.skipped == {"SR": 4, "DICOMDIR": 1, "not DICOM": 1}
    assert all("PixelData" not in ds for s in tree.series for ds in s.datasets)  # headers only
    study = export.study(1, 1)
    by_uid = tree.summaries
    assert by_uid[study["localizer"]].localizer and by_uid[study["localizer"]].slices == 2
    assert by_uid[study["coronal"]].orientation == "coronal"
    thin, thick = by_uid[study["thin"]], by_uid[study["thick"]]
    assert (thin.slices, thin.thickness_mm, thin.spacing_mm, thin.orientation) == (64, 2.5, 2.5, "axial")
    assert (thick.slices, thick.thickness_mm) == (32, 5.0)
    assert by_uid[study["derived"]].image_type[:2] == ("DERIVED", "SECONDARY")
    assert thin.gaps == thin.duplicates == 0 and thin.tilt_deg == 0.0


def test_dicomdir_lists_its_files_with_pydicom_fileset(export: Export) -> None:
    tree = scan_tree(export.study(2, 2)["folder"] / "DICOMDIR")
    assert tree.kind == "dicomdir" and len(tree.series) == 5
    assert tree.skipped == {"DICOMDIR": 1, "not in DICOMDIR": 1}  # the SR beside it is not referenced


def test_zip_is_read_in_place_with_the_checksum_of_its_bytes(export: Export) -> None:
    tree = scan_tree(export.zipped, checksum=True)
    assert tree.kind == "zip" and len(tree.series) == 5 and tree.skipped == {"SR": 1}
    assert tree.sha256 == input_sha256(export.zipped)


def test_folder_checksum_is_the_input_checksum(export: Export) -> None:
    folder = export.study(1, 1)["folder"]
    assert scan_tree(folder, checksum=True).sha256 == input_sha256(folder)


def test_zip_slip_members_are_skipped(export: Export, tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(export.zipped) as source, zipfile.ZipFile(evil, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info))
        target.writestr("../../escape.dcm", source.read(source.infolist()[0]))
        target.writestr("/abs/escape.dcm", source.read(source.infolist()[0]))
    tree = scan_tree(evil)
    assert tree.skipped["unsafe zip member"] == 2 and len(tree.series) == 5


@pytest.mark.parametrize("which", ["zip", "dicomdir", "study folder"])
def test_read_volume_chooses_by_rules_and_records_why(export: Export, which: str) -> None:
    study = export.study(1, 2) if which == "zip" else export.study(2, 2) if which == "dicomdir" else export.study(2, 1)
    path = {"zip": export.zipped, "dicomdir": study["folder"] / "DICOMDIR", "study folder": study["folder"]}[which]
    volume = read_volume(path, series_rules=THIN_AXIAL)
    assert volume.series_uid == study["thin"] and volume.shape == (16, 16, 64)
    assert volume.array.max() == 900 and volume.array.min() == 100  # HU after rescale
    np.testing.assert_allclose(volume.spacing_mm, (5.0, 5.0, 2.5))
    record = volume.series_selection
    assert record["rule"] == "thin axial" and record["rules_source"] == "test rules"
    assert record["study_uid"] == study["study_uid"]
    assert record["skipped"][study["thick"]] == "rule 'thin axial': thickness 5 mm > 3 mm"
    assert record["skipped"][study["coronal"]] == "rule 'thin axial': orientation coronal not axial"
    assert "LOCALIZER" in record["skipped"][study["localizer"]]
    assert volume.sha256 == (input_sha256(path) if which != "dicomdir" else input_sha256(path.parent))


def test_an_export_of_several_patients_is_refused_without_naming_them(export: Export) -> None:
    with pytest.raises(ValueError, match=r"export: holds 2 patients in 4 studies; one run segments one") as err:
        read_volume(export.root)
    assert "DOEWICZ" not in str(err.value) and "PIDX" not in str(err.value)
    # --series-uid still wins
    assert read_volume(export.root, series_uid=export.study(1, 1)["thick"]).shape == (16, 16, 32)


def test_a_folder_without_dicom_says_what_it_skipped(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"no DICOM series found \(skipped: 1 not DICOM;"):
        scan_tree(tmp_path)
    with pytest.raises(ValueError, match=r"not a readable zip archive"):
        (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 broken")
        scan_tree(tmp_path / "broken.zip")


def test_default_rules_read_the_original_series_of_a_mixed_study_and_a_phantom_alone(tmp_path: Path) -> None:
    """The phantom writer labels its images DERIVED: alone they are read; beside an ORIGINAL series
    (fewer slices, so 'most slices' alone would pick the derived one) the original wins."""
    import pydicom

    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.write import write_dicom_series

    study = tmp_path / "study"
    derived = write_dicom_series(make_ct_phantom(1, shape=(20, 20, 20), spacing_mm=(8.0, 8.0, 8.0)), study / "mip")
    original = write_dicom_series(
        make_ct_phantom(2, shape=(20, 20, 12), spacing_mm=(8.0, 8.0, 8.0)), study / "axial", series_number=2
    )
    for path in original:
        ds = pydicom.dcmread(path)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.save_as(path)
    derived_uid = str(pydicom.dcmread(derived[0], stop_before_pixels=True).SeriesInstanceUID)

    alone = read_volume(study / "mip")
    assert alone.shape == (20, 20, 20) and alone.series_selection["rule"].startswith("derived or secondary CT")
    mixed = read_volume(study)
    assert mixed.shape == (20, 20, 12) and mixed.series_uid != derived_uid
    assert mixed.series_selection["rule"] == "original CT series with the most slices"
    assert mixed.series_selection["skipped"][derived_uid].endswith("image type DERIVED/PRIMARY/AXIAL is DERIVED")
