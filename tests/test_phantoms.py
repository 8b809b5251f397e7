"""Tests of pipelines.data.phantoms: determinism, anatomy, geometry, writers and argument checks."""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from pipelines.data import phantoms
from pipelines.data.phantoms import (
    BRAIN_TISSUES,
    CT_STRUCTURES,
    TISSUES,
    Phantom,
    make_brain_tumor_phantom,
    make_ct_phantom,
    make_mr_phantom,
    write_dicom_series,
    write_nifti,
)

# a coarse grid with the default field of view (288 x 240 x 192 mm): fast, same anatomy scale
COARSE = {"shape": (96, 80, 48), "spacing_mm": (3.0, 3.0, 4.0)}
# a tiny anisotropic, non-square grid: catches row/column and spacing-order mistakes
TINY = {"shape": (40, 32, 12), "spacing_mm": (1.5, 1.2, 2.5)}


def _voxel_ml(phantom: Phantom) -> float:
    return float(abs(np.linalg.det(phantom.affine[:3, :3]))) / 1000.0


def _world_centroid(phantom: Phantom, label_id: int) -> np.ndarray:
    ijk = np.argwhere(phantom.label == label_id).mean(axis=0)
    return (phantom.affine @ np.append(ijk, 1.0))[:3]


def _sitk_to_ras(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """(i, j, k) array and RAS affine of a SimpleITK image (which works in LPS)."""
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array(image.GetSpacing())[None, :]
    lps[:3, 3] = image.GetOrigin()
    return array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


# ---------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        lambda seed: make_ct_phantom(seed, **COARSE),
        lambda seed: make_mr_phantom(seed, **COARSE),
        lambda seed: make_brain_tumor_phantom(seed, shape=(48, 48, 16), channels=2),
    ],
    ids=["ct", "mr", "brain"],
)
def test_same_seed_same_arrays_different_seed_different(factory) -> None:
    a, b, c = factory(3), factory(3), factory(4)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.label, c.label)


def test_anatomy_is_shared_by_ct_and_mr_and_by_lesion_setting() -> None:
    ct = make_ct_phantom(7, lesions=False, **COARSE)
    mr = make_mr_phantom(7, **COARSE)
    np.testing.assert_array_equal(ct.label, mr.label)
    with_lesions = make_ct_phantom(7, **COARSE)
    liver, tumor = CT_STRUCTURES["liver"], CT_STRUCTURES["liver_tumor"]
    assert (with_lesions.label == tumor).any()
    assert not (ct.label == tumor).any()
    merged = np.where(with_lesions.label == tumor, liver, with_lesions.label)
    np.testing.assert_array_equal(merged, ct.label)


# ---------------------------------------------------------------------------------------------
# CT anatomy
# ---------------------------------------------------------------------------------------------

# (volume range mL, mean HU range) at the default field of view
PLAUSIBLE = {
    "liver": ((950, 2000), (80, 140)),
    "spleen": ((80, 380), (90, 150)),
    "kidney_right": ((80, 260), (110, 200)),
    "kidney_left": ((80, 260), (110, 200)),
    "pancreas": ((30, 130), (70, 130)),
    "gallbladder": ((8, 70), (-15, 35)),
    "aorta": ((35, 150), (130, 260)),
    "inferior_vena_cava": ((30, 140), (90, 170)),
    "stomach": ((100, 450), (-450, 90)),
    "adrenal_gland_right": ((1, 10), (20, 100)),
    "adrenal_gland_left": ((1, 10), (20, 100)),
    "portal_vein": ((5, 40), (110, 210)),
    "esophagus": ((3, 30), (15, 80)),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ct_default_volumes_and_hu_are_plausible(seed: int) -> None:
    start = time.perf_counter()
    ph = make_ct_phantom(seed)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0  # about 1 s on 2 cores; generous against a busy machine
    assert ph.image.shape == ph.label.shape == (192, 160, 96)
    assert ph.image.dtype == np.int16 and ph.label.dtype == np.uint8
    assert ph.modality == "CT"
    assert ph.labels == {0: "background", **{i: n for n, i in CT_STRUCTURES.items()}}
    voxel_ml = _voxel_ml(ph)
    assert voxel_ml == pytest.approx(1.5 * 1.5 * 2.0 / 1000)
    for name, ((v_lo, v_hi), (h_lo, h_hi)) in PLAUSIBLE.items():
        mask = ph.label == CT_STRUCTURES[name]
        volume = mask.sum() * voxel_ml
        assert v_lo <= volume <= v_hi, f"{name}: {volume:.1f} mL"
        mean_hu = float(ph.image[mask].mean())
        assert h_lo <= mean_hu <= h_hi, f"{name}: {mean_hu:.1f} HU"
    # lesions: hypodense against the liver
    tumor = ph.label == CT_STRUCTURES["liver_tumor"]
    assert tumor.any()
    liver = ph.label == CT_STRUCTURES["liver"]
    assert ph.image[liver].mean() - ph.image[tumor].mean() > 15
    # air outside, fat under the skin, bone in the spine
    assert ph.image[0, 0, :].mean() < -900
    fat = ph.tissue == TISSUES["fat"]
    assert -140 < ph.image[fat].mean() < -60
    marrow = ph.tissue == TISSUES["bone_marrow"]
    assert ph.image[marrow].mean() > 150
    lung = ph.tissue == TISSUES["lung"]
    assert lung.any() and ph.image[lung].mean() < -700


@pytest.mark.parametrize("orientation", ["RAS", "LPS"])
def test_liver_is_on_patients_right_and_spleen_on_left(orientation: str) -> None:
    ph = make_ct_phantom(11, orientation=orientation, **COARSE)
    liver = _world_centroid(ph, CT_STRUCTURES["liver"])
    spleen = _world_centroid(ph, CT_STRUCTURES["spleen"])
    aorta = _world_centroid(ph, CT_STRUCTURES["aorta"])
    ivc = _world_centroid(ph, CT_STRUCTURES["inferior_vena_cava"])
    kidney_r = _world_centroid(ph, CT_STRUCTURES["kidney_right"])
    kidney_l = _world_centroid(ph, CT_STRUCTURES["kidney_left"])
    # RAS world: +x is the patient's right, +y anterior
    assert liver[0] > 20 and spleen[0] < -20
    assert ivc[0] > aorta[0]
    assert kidney_r[0] > 0 > kidney_l[0]
    assert kidney_r[1] < liver[1]  # kidneys lie posterior
    spine = ph.tissue == TISSUES["bone_marrow"]
    spine_y = (ph.affine @ np.append(np.argwhere(spine).mean(axis=0), 1.0))[1]
    assert spine_y < aorta[1]


@pytest.mark.parametrize("orientation", ["LPS", "LAS", "PIR"])
def test_orientation_changes_layout_not_anatomy(orientation: str) -> None:
    ras = make_ct_phantom(5, **COARSE)
    shape = tuple(COARSE["shape"][("RAS".index(c) if c in "RAS" else "LPI".index(c))] for c in orientation)
    spacing = tuple(COARSE["spacing_mm"][("RAS".index(c) if c in "RAS" else "LPI".index(c))] for c in orientation)
    other = make_ct_phantom(5, shape=shape, spacing_mm=spacing, orientation=orientation)
    assert other.image.shape == shape
    assert "".join(nib.aff2axcodes(other.affine)) == orientation
    for name, label_id in CT_STRUCTURES.items():
        if (ras.label == label_id).any():
            np.testing.assert_allclose(
                _world_centroid(other, label_id),
                _world_centroid(ras, label_id),
                atol=1e-3,
                err_msg=name,
            )
    back = nib.as_closest_canonical(nib.Nifti1Image(other.image, other.affine))
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), ras.image)
    np.testing.assert_allclose(back.affine, ras.affine, atol=1e-6)
    # the volume is centred on the world origin
    centre = other.affine @ np.append((np.array(shape) - 1) / 2, 1.0)
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-6)


def test_label_ids_select_and_renumber_structures() -> None:
    ids = {"liver": 1, "spleen": 2, "kidney_right": 3, "kidney_left": 4, "liver_tumor": 5}
    full = make_ct_phantom(2, **COARSE)
    sub = make_ct_phantom(2, label_ids=ids, **COARSE)
    assert sub.labels == {
        0: "background",
        1: "liver",
        2: "spleen",
        3: "kidney_right",
        4: "kidney_left",
        5: "liver_tumor",
    }
    assert set(np.unique(sub.label)) <= {0, 1, 2, 3, 4, 5}
    np.testing.assert_array_equal(sub.image, full.image)  # unlabelled anatomy is still drawn
    for name, new_id in ids.items():
        np.testing.assert_array_equal(sub.label == new_id, full.label == CT_STRUCTURES[name])
    # without a tumour label, lesions count as liver
    liver_only = make_ct_phantom(2, label_ids={"liver": 7}, **COARSE)
    expected = np.isin(full.label, [CT_STRUCTURES["liver"], CT_STRUCTURES["liver_tumor"]])
    np.testing.assert_array_equal(liver_only.label == 7, expected)
    assert liver_only.labels == {0: "background", 7: "liver"}


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((64, 64, 16), (1.0, 1.0, 3.0)), ((24, 20, 8), (10.0, 10.0, 20.0))],
)
def test_anatomy_fits_any_field_of_view(shape, spacing) -> None:
    ph = make_ct_phantom(0, shape=shape, spacing_mm=spacing)
    present = set(np.unique(ph.label)) - {0}
    assert CT_STRUCTURES["liver"] in present
    # the body stays inside the field of view: the border of every slice is mostly air
    border = np.concatenate([ph.tissue[0].ravel(), ph.tissue[-1].ravel()])
    assert (border == TISSUES["air"]).mean() > 0.5


# ---------------------------------------------------------------------------------------------
# MR and brain
# ---------------------------------------------------------------------------------------------


def test_mr_phantom_has_t1_like_contrast() -> None:
    ph = make_mr_phantom(1, **COARSE)
    assert ph.modality == "MR" and ph.image.dtype == np.int16 and ph.image.min() >= 0
    assert "liver_tumor" not in ph.labels.values()
    tissue = ph.tissue

    def mean(name: str) -> float:
        return float(ph.image[tissue == TISSUES[name]].mean())

    assert mean("fat") > mean("liver") > mean("gallbladder")
    assert mean("liver") > mean("spleen")
    assert mean("air") < 0.2 * mean("muscle")


def test_brain_tumor_is_one_component_inside_the_brain() -> None:
    ph = make_brain_tumor_phantom(0)
    assert ph.image.shape == ph.label.shape == (128, 128, 40)
    assert ph.image.dtype == np.float32 and ph.label.dtype == np.uint8
    assert ph.labels == {0: "background", 1: "tumor"}
    tumor = ph.label == 1
    _, n_components = ndimage.label(tumor)
    assert n_components == 1
    # everything around the tumour is brain (white/grey matter, edema, CSF), never skull or air
    ring = ndimage.binary_dilation(tumor, iterations=2) & ~tumor
    brain = [BRAIN_TISSUES[n] for n in ("white_matter", "grey_matter", "edema", "csf", "ventricle")]
    assert np.isin(ph.tissue[ring], brain).all()
    # enhancing rim is brighter than white matter on the T1c-like image
    rim = ph.tissue == BRAIN_TISSUES["tumor_rim"]
    white = ph.tissue == BRAIN_TISSUES["white_matter"]
    assert ph.image[rim].mean() > ph.image[white].mean()


@pytest.mark.parametrize("channels", [2, 4])
def test_brain_multichannel_shape(channels: int) -> None:
    ph = make_brain_tumor_phantom(
        1, shape=(64, 60, 20), spacing_mm=(2.0, 2.0, 6.0), orientation="LPS", channels=channels
    )
    assert ph.image.shape == (channels, 64, 60, 20)
    assert ph.label.shape == (64, 60, 20)
    assert ph.image.dtype == np.float32
    assert not np.allclose(ph.image[0], ph.image[1])
    # the same anatomy as a single-channel phantom of the same seed
    single = make_brain_tumor_phantom(1, shape=(64, 60, 20), spacing_mm=(2.0, 2.0, 6.0), orientation="LPS")
    np.testing.assert_array_equal(single.label, ph.label)


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


def test_dicom_rejects_multichannel_images(tmp_path: Path) -> None:
    ph = make_brain_tumor_phantom(0, shape=(32, 32, 10), channels=2)
    with pytest.raises(ValueError, match="single-channel"):
        write_dicom_series(ph, tmp_path / "x")
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------
# bad arguments
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"orientation": "XYZ"}, "orientation"),
        ({"orientation": "RRS"}, "orientation"),
        ({"orientation": "RA"}, "orientation"),
        ({"spacing_mm": (1.0, 0.0, 1.0)}, "spacing_mm"),
        ({"spacing_mm": (1.0, -2.0, 1.0)}, "spacing_mm"),
        ({"spacing_mm": (1.0, 1.0)}, "spacing_mm"),
        ({"spacing_mm": (1.0, float("nan"), 1.0)}, "spacing_mm"),
        ({"shape": (7, 64, 64)}, "shape"),
        ({"shape": (64, 64)}, "shape"),
        ({"shape": (64, 64, 8.5)}, "shape"),
        ({"label_ids": {"heart": 1}}, "label_ids"),
        ({"label_ids": {"liver": 1, "spleen": 1}}, "label_ids"),
        ({"label_ids": {"liver": 0}}, "label_ids"),
        ({"label_ids": {"liver": 256}}, "label_ids"),
    ],
)
def test_ct_bad_arguments_raise_value_error_naming_them(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        make_ct_phantom(0, **kwargs)


@pytest.mark.parametrize(
    ("factory", "kwargs", "match"),
    [
        (make_mr_phantom, {"orientation": "XYZ"}, "orientation"),
        (make_mr_phantom, {"shape": (8, 8, 4)}, "shape"),
        (make_brain_tumor_phantom, {"spacing_mm": (0.0, 1.0, 1.0)}, "spacing_mm"),
        (make_brain_tumor_phantom, {"channels": 0}, "channels"),
        (make_brain_tumor_phantom, {"channels": 5}, "channels"),
    ],
)
def test_mr_and_brain_bad_arguments(factory, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        factory(0, **kwargs)


def test_bad_seed() -> None:
    with pytest.raises(ValueError, match="seed"):
        make_ct_phantom(-1, **COARSE)
    with pytest.raises(TypeError, match="seed"):
        make_ct_phantom(1.5, **COARSE)  # type: ignore[arg-type]


def test_phantom_module_has_no_import_side_effects() -> None:
    assert phantoms.logger.name == "pipelines.data.phantoms"
    assert not phantoms.logger.handlers


@pytest.mark.slow
def test_large_ct_phantom_is_fast_enough() -> None:
    start = time.perf_counter()
    ph = make_ct_phantom(0, shape=(512, 512, 200), spacing_mm=(0.8, 0.8, 2.0))
    assert time.perf_counter() - start < 30.0
    liver_ml = (ph.label == CT_STRUCTURES["liver"]).sum() * _voxel_ml(ph)
    assert 950 <= liver_ml <= 2000
