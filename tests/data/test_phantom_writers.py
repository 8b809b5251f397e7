"""Tests of pipelines.data.phantoms.write: NIfTI files and DICOM series, their geometry and atomicity."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pipelines.data.phantoms.make import Phantom, make_brain_tumor_phantom, make_ct_phantom, make_mr_phantom
from pipelines.data.phantoms.write import write_dicom_series, write_nifti, write_nifti_channels
from pipelines.geometry import affine_from_itk

# a tiny anisotropic, non-square grid: catches row/column and spacing-order mistakes
TINY = {"shape": (40, 32, 12), "spacing_mm": (1.5, 1.2, 2.5)}


def _sitk_to_ras(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(i, j, k) array and RAS affine of a SimpleITK image (which works in LPS)."""
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return array, affine_from_itk(image.GetOrigin(), image.GetSpacing(), image.GetDirection())


def _read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


# ---------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------


def test_write_nifti_round_trip(tmp_path: Path) -> None:
    ph = make_ct_phantom(0, orientation="LPS", **TINY)
    image_path, label_path = write_nifti(ph, tmp_path / "case")
    assert image_path == tmp_path / "case" / "image.nii.gz"
    assert label_path == tmp_path / "case" / "label.nii.gz"
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == ["image.nii.gz", "label.nii.gz"]
    image, label = nib.load(image_path), nib.load(label_path)
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), ph.image)
    np.testing.assert_array_equal(np.asanyarray(label.dataobj), ph.label)
    assert label.get_data_dtype() == np.uint8
    np.testing.assert_allclose(image.affine, ph.affine, atol=1e-5)
    assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1


def test_write_nifti_multichannel_is_channels_last(tmp_path: Path) -> None:
    ph = make_brain_tumor_phantom(0, shape=(32, 32, 10), channels=3)
    image_path, _ = write_nifti(ph, tmp_path)
    data = np.asanyarray(nib.load(image_path).dataobj)
    assert data.shape == (32, 32, 10, 3)
    np.testing.assert_array_equal(np.moveaxis(data, -1, 0), ph.image)


def test_write_nifti_channels_writes_one_3d_file_per_contrast(tmp_path: Path) -> None:
    ph = make_brain_tumor_phantom(2, shape=(32, 30, 10), orientation="LAS", channels=3)
    paths = write_nifti_channels(ph, tmp_path / "case", ["image_t1c", "image_t1", "image_t2"])
    assert [p.name for p in paths] == ["image_t1c.nii.gz", "image_t1.nii.gz", "image_t2.nii.gz", "label.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == sorted(p.name for p in paths)  # no temporaries
    for channel, path in enumerate(paths[:3]):
        image = nib.load(path)
        assert image.shape == (32, 30, 10)
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), ph.image[channel])
        np.testing.assert_allclose(image.affine, ph.affine, atol=1e-5)
        assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1
    label = nib.load(paths[3])
    assert label.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(label.dataobj), ph.label)


@pytest.mark.parametrize(
    ("channels", "names"),
    [(1, ["image"]), (2, ["image_t1c"]), (2, ["image_t1c", "image_t1", "image_t2"])],
)
def test_write_nifti_channels_needs_one_name_per_channel(tmp_path: Path, channels: int, names: list[str]) -> None:
    ph = make_brain_tumor_phantom(0, shape=(16, 16, 8), channels=channels)
    with pytest.raises(ValueError, match=rf"phantom\.image: expected a channel-first image with {len(names)} channels"):
        write_nifti_channels(ph, tmp_path / "case", names)
    assert not (tmp_path / "case").exists()


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "LAS"])
def test_dicom_series_reads_back_like_the_nifti(tmp_path: Path, orientation: str) -> None:
    ph = make_ct_phantom(4, orientation=orientation, **TINY)
    image_path, _ = write_nifti(ph, tmp_path / "nifti")
    files = write_dicom_series(ph, tmp_path / "dicom")
    assert [f.name for f in files] == sorted(f.name for f in (tmp_path / "dicom").iterdir())
    assert len(files) == TINY["shape"][2]

    array, affine = _sitk_to_ras(_read_series(tmp_path / "dicom"))
    nifti = nib.load(image_path)
    read = nib.as_closest_canonical(nib.Nifti1Image(array.astype(np.int16), affine))
    expected = nib.as_closest_canonical(nifti)
    np.testing.assert_array_equal(np.asanyarray(read.dataobj), np.asanyarray(expected.dataobj))
    assert np.allclose(read.affine, expected.affine, atol=1e-4)
    if orientation in ("RAS", "LPS"):  # right-handed layouts read back in the same slice order
        np.testing.assert_array_equal(array, ph.image)
        assert np.allclose(affine, ph.affine, atol=1e-4)

    first = pydicom.dcmread(files[0])
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert first.Modality == "CT"
    assert (first.Rows, first.Columns) == (TINY["shape"][1], TINY["shape"][0])
    assert [float(v) for v in first.PixelSpacing] == [1.2, 1.5]  # row spacing, column spacing
    assert float(first.SliceThickness) == 2.5 == float(first.SpacingBetweenSlices)
    assert float(first.RescaleIntercept) == -1024 and float(first.RescaleSlope) == 1
    np.testing.assert_array_equal(first.pixel_array.astype(int) - 1024, ph.image[:, :, 0].T.astype(int))
    uids = {
        (
            pydicom.dcmread(f).StudyInstanceUID,
            pydicom.dcmread(f).SeriesInstanceUID,
            pydicom.dcmread(f).FrameOfReferenceUID,
        )
        for f in files
    }
    assert len(uids) == 1
    assert len({pydicom.dcmread(f).SOPInstanceUID for f in files}) == len(files)


def test_dicom_mr_compressed_and_deterministic(tmp_path: Path) -> None:
    ph = make_mr_phantom(2, **TINY)
    files = write_dicom_series(ph, tmp_path / "a", compress=True, patient_id="P7", series_number=3)
    again = write_dicom_series(ph, tmp_path / "b", patient_id="P7", series_number=3)
    for k, (f, g) in enumerate(zip(files, again, strict=True)):
        ds, other = pydicom.dcmread(f), pydicom.dcmread(g)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert ds.PatientID == "P7" and ds.SeriesNumber == 3 and ds.InstanceNumber == k + 1
        np.testing.assert_array_equal(ds.pixel_array, ph.image[:, :, k].T)
        np.testing.assert_array_equal(other.pixel_array, ph.image[:, :, k].T)
        for keyword in (
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "FrameOfReferenceUID",
        ):  # UIDs follow the content: same both times
            assert ds[keyword].value == other[keyword].value
    uid = "1.2.826.0.1.3680043.8.498.12345"
    files = write_dicom_series(ph, tmp_path / "c", series_uid=uid)
    assert pydicom.dcmread(files[0]).SeriesInstanceUID == uid


def test_dicom_folder_is_replaced_atomically(tmp_path: Path) -> None:
    ph = make_ct_phantom(0, **TINY)
    target = tmp_path / "series"
    write_dicom_series(ph, target)
    with pytest.raises(FileExistsError, match="series"):
        write_dicom_series(ph, target)
    other = make_ct_phantom(1, **TINY)
    files = write_dicom_series(other, target, overwrite=True)
    np.testing.assert_array_equal(pydicom.dcmread(files[0]).pixel_array.astype(int) - 1024, other.image[:, :, 0].T)
    assert [p.name for p in tmp_path.iterdir()] == ["series"]  # no temporary folders left


def test_dicom_series_is_a_valid_source_for_highdicom_seg(tmp_path: Path) -> None:
    hd = pytest.importorskip("highdicom")
    from pydicom.sr.codedict import codes

    ph = make_ct_phantom(3, **TINY)
    files = write_dicom_series(ph, tmp_path / "dicom")
    sources = [pydicom.dcmread(f) for f in files]
    mask = np.stack([(ph.label[:, :, k] > 0).T for k in range(ph.label.shape[2])]).astype(np.uint8)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="organs",
        segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Organ,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
    )
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID


def test_dicom_rejects_oblique_and_singular_affines(tmp_path: Path) -> None:
    ph = make_ct_phantom(0, **TINY)
    sheared = ph.affine.copy()
    sheared[0, 1] = 0.5  # the j axis leans towards x: not orthogonal to i
    with pytest.raises(ValueError, match=r"phantom\.affine: axes must be orthogonal for a DICOM series"):
        write_dicom_series(Phantom(ph.image, ph.label, sheared, ph.labels, ph.modality), tmp_path / "sheared")
    singular = ph.affine.copy()
    singular[:3, 2] = 0.0
    with pytest.raises(ValueError, match=r"phantom\.affine: affine is singular"):
        write_dicom_series(Phantom(ph.image, ph.label, singular, ph.labels, ph.modality), tmp_path / "singular")
    assert list(tmp_path.iterdir()) == []


def test_dicom_rejects_multichannel_images(tmp_path: Path) -> None:
    ph = make_brain_tumor_phantom(0, shape=(32, 32, 10), channels=2)
    with pytest.raises(ValueError, match="single-channel"):
        write_dicom_series(ph, tmp_path / "x")
    assert not (tmp_path / "x").exists()
