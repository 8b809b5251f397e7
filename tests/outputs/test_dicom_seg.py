"""Tests for pipelines.outputs: statistics, preview PNG and DICOM-SEG."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from matplotlib.image import imread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pipelines.io.readers import read_volume
from pipelines.outputs import (
    PREVIEW_SIZE_PX,
    SNOMED,
    STATS_CSV_COLUMNS,
    compute_stats,
    label_colour,
    write_dicom_seg,
    write_preview,
    write_stats,
)

# --------------------------------------------------------------------------------------------
# helpers


def reorient(array: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same physical volume stored in another orientation (array and affine)."""
    current = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(tuple(axcodes)))
    moved = nib.orientations.apply_orientation(array, transform)
    return np.ascontiguousarray(moved), affine @ nib.orientations.inv_ornt_aff(transform, array.shape)


def read_labels_json(path: Path) -> dict[int, str]:
    return {int(k): v for k, v in json.loads(path.read_text()).items()}


def write_ct_series(folder: Path, array: np.ndarray, spacing: tuple[float, float, float]) -> Path:
    """Write ``array`` (i, j, k) as an axial CT series, LPS, i along columns; files named in reverse k order."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    ni, nj, nk = array.shape
    for k in range(nk):
        uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "CT", "P1", "Test^P", "", ""
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "", "", ""
        ds.SeriesNumber, ds.InstanceNumber = 3, k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-20.0, -10.0, 100.0 + k * spacing[2]]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (j), column spacing (i)
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = nj, ni
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(array[:, :, k].T.astype(np.int16)).tobytes()
        ds.save_as(folder / f"im{nk - k:03d}.dcm", enforce_file_format=True)
    return folder


def series_label_map(shared_data: Path):
    """The shared DICOM series and its LAS label map brought onto the series grid by exact index mapping."""
    volume = read_volume(shared_data / "ct_dicom_series" / "dicom")
    label_img = nib.load(shared_data / "ct_dicom_series" / "label.nii.gz")
    mapping = np.linalg.inv(label_img.affine) @ volume.affine
    integral = np.rint(mapping)
    assert np.allclose(mapping, integral, atol=1e-4), f"grids differ by more than a flip: {mapping}"
    index = np.indices(volume.shape).reshape(3, -1)
    source = (integral[:3, :3] @ index + integral[:3, 3:4]).astype(int)
    assert all((source[a] >= 0).all() and (source[a] < label_img.shape[a]).all() for a in range(3))
    labels = np.asarray(label_img.dataobj)[source[0], source[1], source[2]].reshape(volume.shape)
    return volume, labels, read_labels_json(shared_data / "ct_dicom_series" / "labels.json")


def seg_to_label_map(seg: hd.seg.Segmentation, instance_uids: list[str]) -> np.ndarray:
    """Read a SEG back onto the (i, j, k) grid of its source instances, with the original label ids."""
    frames = seg.get_pixels_by_source_instance(instance_uids, combine_segments=True, relabel=False)
    to_label = np.zeros(max(seg.segment_numbers) + 1, dtype=np.int64)
    for item in seg.SegmentSequence:
        to_label[item.SegmentNumber] = int(item.SegmentDescription.split()[1].rstrip(":"))
    return to_label[frames].transpose(2, 1, 0)


def instance_uids(files) -> list[str]:
    return [pydicom.dcmread(f, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID for f in files]


# --------------------------------------------------------------------------------------------
# statistics


def test_stats_synthetic_values_and_components() -> None:
    labels = np.zeros((12, 10, 8), dtype=np.uint8)
    labels[1:4, 1:3, 1:2] = 1  # 6 voxels
    labels[6, 6, 6] = 2
    labels[7, 7, 7] = 2  # touches the first at a corner: one component with 26-connectivity
    labels[10, 0, 0] = 2  # a second component
    labels[11, 9, 7] = 9  # id without a name
    rng = np.random.default_rng(0)
    image = rng.integers(-100, 100, size=labels.shape).astype(np.int16)
    affine = np.diag([-2.0, -1.5, 3.0, 1.0])  # LPS-like flips, 9 mm³ voxels
    affine[:3, 3] = [10.0, 20.0, -5.0]

    stats = compute_stats(labels, image, affine, {1: "liver", 2: "spleen", 3: "absent"})

    assert [s["label"] for s in stats] == [1, 2, 9]
    assert [s["name"] for s in stats] == ["liver", "spleen", "label_9"]
    liver, spleen, unnamed = stats
    values = image[labels == 1].astype(float)
    assert liver["voxels"] == 6 and liver["volume_ml"] == pytest.approx(6 * 9.0 / 1000)
    assert liver["mean"] == pytest.approx(values.mean())
    assert liver["median"] == pytest.approx(np.median(values))
    assert liver["std"] == pytest.approx(values.std())
    assert liver["bbox_voxels"] == [[1, 3], [1, 2], [1, 1]]
    assert liver["components"] == 1 and spleen["components"] == 2 and unnamed["components"] == 1
    # World box: voxel faces at i0 - 0.5 .. i1 + 0.5 through the flipped affine.
    expected = [[10 - 2 * 3.5, 10 - 2 * 0.5], [20 - 1.5 * 2.5, 20 - 1.5 * 0.5], [-5 + 3 * 0.5, -5 + 3 * 1.5]]
    np.testing.assert_allclose(liver["bbox_mm"], expected)


@pytest.mark.parametrize(
    ("labels", "image", "affine", "error", "match"),
    [
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4)), np.eye(4), ValueError, r"expected a 3D label map"),
        (np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4)), np.eye(4), TypeError, r"integer dtype, got float32"),
        (np.full((4, 4, 4), -1, np.int16), np.zeros((4, 4, 4)), np.eye(4), ValueError, r"negative values \(min -1\)"),
        (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5)), np.eye(4), ValueError, r"shape \(4, 4, 5\) differs"),
        (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4)), np.eye(3), ValueError, r"expected a 4x4 affine"),
        (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4)), np.zeros((4, 4)), ValueError, r"singular"),
    ],
)
def test_stats_bad_inputs(labels, image, affine, error, match) -> None:
    with pytest.raises(error, match=match):
        compute_stats(labels, image, affine, {})


def test_stats_label_names_with_bad_keys() -> None:
    with pytest.raises(TypeError, match=r"keys must be integer label ids"):
        compute_stats(np.ones((2, 2, 2), np.uint8), np.zeros((2, 2, 2)), np.eye(4), {"liver": "x"})


@pytest.mark.shared_data
def test_stats_real_ct_liver_and_files_agree(shared_data: Path, tmp_path: Path) -> None:
    case = shared_data / "ct_abdomen_3mm"
    label_img, image_img = nib.load(case / "label.nii.gz"), nib.load(case / "image.nii.gz")
    labels, image = np.asarray(label_img.dataobj), np.asarray(image_img.dataobj)
    names = read_labels_json(case / "labels.json")

    stats = compute_stats(labels, image, label_img.affine, names)

    assert [s["label"] for s in stats] == sorted(int(v) for v in np.unique(labels) if v)
    liver = next(s for s in stats if s["label"] == 5)
    assert liver["name"] == "liver"
    assert liver["voxels"] == int(np.count_nonzero(labels == 5))
    assert liver["volume_ml"] == pytest.approx(liver["voxels"] * 27.0 / 1000.0)
    assert 0.0 < liver["mean"] < 200.0 and 0.0 < liver["median"] < 200.0
    assert liver["components"] >= 1
    nonzero = np.nonzero(labels == 5)
    assert liver["bbox_voxels"] == [[int(ax.min()), int(ax.max())] for ax in nonzero]
    corners = np.array(liver["bbox_voxels"], dtype=float) + np.array([-0.5, 0.5])
    expected_mm = label_img.affine[:3, :3] @ corners + label_img.affine[:3, 3:4]  # RAS, diagonal affine
    np.testing.assert_allclose(liver["bbox_mm"], np.sort(expected_mm, axis=1))

    json_path, csv_path = write_stats(stats, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.csv", "stats.json"]  # no temporaries left
    assert json.loads(json_path.read_text()) == stats
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == STATS_CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == len(stats)
    for row, entry in zip(rows, stats, strict=True):
        assert int(row["label"]) == entry["label"] and row["name"] == entry["name"]
        assert int(row["voxels"]) == entry["voxels"] and int(row["components"]) == entry["components"]
        for key in ("volume_ml", "mean", "median", "std"):
            assert float(row[key]) == entry[key]
        box = [int(row[f"bbox_{a}{e}"]) for a in "ijk" for e in "01"]
        assert box == [v for pair in entry["bbox_voxels"] for v in pair]
        box_mm = [float(row[f"bbox_{a}{e}_mm"]) for a in "xyz" for e in "01"]
        assert box_mm == [v for pair in entry["bbox_mm"] for v in pair]


# --------------------------------------------------------------------------------------------
# preview

# Panel columns in the PNG (axes at 0.005 + n * 0.222 of the width, 0.215 wide), and the panels'
# vertical centre (axes from 0.03 to 0.88 of the height, measured from the bottom).
_W, _H = PREVIEW_SIZE_PX
_PANEL_COLUMNS = [(round((0.005 + n * 0.222) * _W), round((0.005 + n * 0.222 + 0.215) * _W)) for n in range(3)]
_PANEL_MIDDLE_ROW = round(_H * (1 - (0.03 + 0.88) / 2))


def marker_volume() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
    """A RAS volume: a large central body (1) and three thin bars at known sides.

    2: along z at the patient's right and anterior (axial panel: left, top).
    3: along y at the right and superior (coronal panel: left, top).
    4: along x at anterior and superior (sagittal panel: left, top).
    """
    shape = (40, 32, 24)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[8:32, 6:26, 5:19] = 1
    labels[34:37, 27:30, :] = 2
    labels[34:37, :, 20:23] = 3
    labels[:, 27:30, 20:23] = 4
    image = np.full(shape, 40, dtype=np.int16)  # uniform: mid grey in the W400/L40 window
    image[:2] = -1000  # a little structure in the picture
    affine = np.diag([1.5, 1.0, 2.5, 1.0])
    affine[:3, 3] = [-30.0, -16.0, 50.0]
    return image, labels, affine, {1: "body", 2: "marker_axial", 3: "marker_coronal", 4: "marker_sagittal"}


def overlay_pixels(png: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels showing ``label``'s colour blended at alpha 0.4 over mid grey."""
    expected = 0.6 * 0.5 + 0.4 * np.asarray(label_colour(label))
    close = np.all(np.abs(png[..., :3] - expected) < 3.5 / 255, axis=-1)
    return np.nonzero(close)


def test_preview_size_content_and_radiological_orientation(tmp_path: Path) -> None:
    image, labels, affine, names = marker_volume()
    path = write_preview(image, labels, affine, names, tmp_path / "preview.png", title="synthetic")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.png"]

    png = imread(path)
    assert png.shape[:2] == (PREVIEW_SIZE_PX[1], PREVIEW_SIZE_PX[0])
    assert float(png[..., :3].std()) > 0.05
    for label in names:
        rows, cols = overlay_pixels(png, label)
        assert rows.size > 50, f"colour of label {label} not found"
    # Each marker sits at the left and top of its own panel (patient's right / anterior / superior).
    for panel, label in enumerate((2, 3, 4)):
        rows, cols = overlay_pixels(png, label)
        left, right = _PANEL_COLUMNS[panel]
        inside = (cols >= left) & (cols < right)
        assert inside.sum() > 10, f"label {label} not visible in panel {panel}"
        assert cols[inside].mean() < (left + right) / 2
        assert rows[inside].mean() < _PANEL_MIDDLE_ROW


@pytest.mark.parametrize("axcodes", ["LPS", "LAS", "SRA", "PIL"])
def test_preview_is_the_same_in_any_stored_orientation(tmp_path: Path, axcodes: str) -> None:
    image, labels, affine, names = marker_volume()
    reference = imread(write_preview(image, labels, affine, names, tmp_path / "ras.png"))
    moved_image, moved_affine = reorient(image, affine, axcodes)
    moved_labels, _ = reorient(labels, affine, axcodes)
    assert nib.aff2axcodes(moved_affine) == tuple(axcodes)
    other = imread(write_preview(moved_image, moved_labels, moved_affine, names, tmp_path / f"{axcodes}.png"))
    np.testing.assert_array_equal(other, reference)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_preview_without_structures(tmp_path: Path, modality: str) -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(100, 50, size=(20, 18, 10)).astype(np.float32)
    path = write_preview(image, np.zeros(image.shape, np.uint8), np.eye(4), {}, tmp_path / "p.png", modality=modality)
    png = imread(path)
    assert png.shape[:2] == (PREVIEW_SIZE_PX[1], PREVIEW_SIZE_PX[0])
    assert float(png[..., :3].std()) > 0.02


def test_preview_rejects_mismatched_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"image: shape \(4, 4, 3\) differs from the label map's \(4, 4, 4\)"):
        write_preview(np.zeros((4, 4, 3)), np.zeros((4, 4, 4), np.uint8), np.eye(4), {}, tmp_path / "p.png")
    assert not list(tmp_path.iterdir())


@pytest.mark.shared_data
def test_preview_real_mr(shared_data: Path, tmp_path: Path) -> None:
    volume = read_volume(shared_data / "mr_abdomen_3mm" / "image.nii.gz")
    labels = np.asarray(nib.load(shared_data / "mr_abdomen_3mm" / "label.nii.gz").dataobj)
    names = read_labels_json(shared_data / "mr_abdomen_3mm" / "labels.json")
    png = imread(write_preview(volume.array, labels, volume.affine, names, tmp_path / "mr.png", modality="MR"))
    assert png.shape[:2] == (PREVIEW_SIZE_PX[1], PREVIEW_SIZE_PX[0])
    colours = np.unique(np.round(png[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 100


# --------------------------------------------------------------------------------------------
# DICOM-SEG


def test_snomed_codes_agree_with_pydicom_dictionary() -> None:
    known: dict[str, set[str]] = {}
    for keyword in codes.SCT.dir():
        code = getattr(codes.SCT, keyword)
        known.setdefault(code.value, set()).add(code.meaning.lower())
    # Sided kidney concepts are not in pydicom's DICOM subset of SNOMED CT.
    not_in_dictionary = {"kidney_right", "kidney_left"}
    for name, (value, meaning) in SNOMED.items():
        if name in not_in_dictionary:
            continue
        assert value in known, f"{name}: {value} unknown"
        assert meaning.lower() in known[value], f"{name}: {value} means {known[value]}, not {meaning}"
    assert SNOMED["liver"] == ("10200004", "Liver") and SNOMED["spleen"] == ("78961009", "Spleen")
    assert SNOMED["kidney_right"][0] == "9846003" and SNOMED["kidney_left"][0] == "18639004"


def test_dicom_seg_synthetic_series_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(-200, 200, size=(12, 9, 5)).astype(np.int16)
    folder = write_ct_series(tmp_path / "series", image, spacing=(0.8, 0.7, 2.0))
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, image)  # the writer's (i, j, k) convention holds
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[1:4, 2:8, 1:3] = 5  # liver: asymmetric in i and j, so a transposition would show
    labels[9:11, 0:2, 3] = 2  # kidney_right
    labels[6, 7, 4] = 200  # id without a name
    names = {5: "liver", 2: "kidney_right", 8: "adrenal_gland_left"}

    path = write_dicom_seg(
        labels, volume, names, tmp_path / "out" / "seg.dcm", algorithm_name="ct_abdomen_unet", algorithm_version="1.2"
    )
    assert sorted(p.name for p in path.parent.iterdir()) == ["seg.dcm"]

    seg = hd.seg.segread(path)
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in volume.dicom_files]
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    np.testing.assert_array_equal(seg_to_label_map(seg, [s.SOPInstanceUID for s in sources]), labels)
    segments = {item.SegmentLabel: item for item in seg.SegmentSequence}
    assert list(segments) == ["kidney_right", "liver", "label_200"]  # numbered 1..3 by label id
    assert [item.SegmentNumber for item in seg.SegmentSequence] == [1, 2, 3]
    assert segments["kidney_right"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "9846003"
    assert segments["label_200"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"  # Tissue


def test_dicom_seg_tumour_coding(tmp_path: Path) -> None:
    image = np.zeros((6, 5, 3), dtype=np.int16)
    volume = read_volume(write_ct_series(tmp_path / "series", image, spacing=(1.0, 1.0, 1.0)))
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[1:3, 1:3, 1] = 1
    labels[4, 4, 2] = 2
    path = write_dicom_seg(
        labels, volume, {1: "liver", 2: "liver_tumor"}, tmp_path / "seg.dcm", algorithm_name="a", algorithm_version="1"
    )
    tumour = pydicom.dcmread(path).SegmentSequence[1]
    assert tumour.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert tumour.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert tumour.AnatomicRegionSequence[0].CodeValue == "10200004"


@pytest.mark.shared_data
def test_dicom_seg_real_series_round_trip(shared_data: Path, tmp_path: Path, caplog) -> None:
    volume, labels, names = series_label_map(shared_data)
    assert len(np.unique(labels)) > 20

    with caplog.at_level(logging.WARNING, logger="pipelines.outputs"):
        path = write_dicom_seg(
            labels, volume, names, tmp_path / "seg.dcm", algorithm_name="ct_abdomen_unet", algorithm_version="0.3.1"
        )
    if not pydicom.dcmread(volume.dicom_files[0], stop_before_pixels=True).get("StudyInstanceUID"):
        assert "has no StudyInstanceUID" in caplog.text  # anonymised series: UIDs blanked, we say so

    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(path))
    uids = instance_uids(volume.dicom_files)
    assert {uid for _, _, uid in seg.get_source_image_uids()} == set(uids)
    np.testing.assert_array_equal(seg_to_label_map(seg, uids), labels)

    present = sorted(int(v) for v in np.unique(labels) if v)
    items = list(seg.SegmentSequence)
    assert [item.SegmentLabel for item in items] == [names[v] for v in present]
    by_name = {item.SegmentLabel: item for item in items}
    for name in ("liver", "spleen"):
        coded = by_name[name].SegmentedPropertyTypeCodeSequence[0]
        assert (coded.CodeValue, coded.CodingSchemeDesignator) == (SNOMED[name][0], "SCT")
        assert by_name[name].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    side = by_name["adrenal_gland_right"].SegmentedPropertyTypeCodeSequence[0]
    assert side.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "24028007"  # Right
    algorithm = items[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("ct_abdomen_unet", "0.3.1")
    assert items[0].SegmentAlgorithmType == "AUTOMATIC"
    assert seg.Manufacturer == "medseg" and seg.SeriesDescription == "medseg segmentation"


def test_dicom_seg_needs_a_dicom_input(tmp_path: Path) -> None:
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.eye(4)), path)
    volume = read_volume(path)
    with pytest.raises(
        ValueError, match=r"scan\.nii\.gz: DICOM-SEG needs a DICOM series as input; this input is nifti"
    ):
        write_dicom_seg(
            np.ones((4, 4, 3), np.uint8),
            volume,
            {1: "liver"},
            tmp_path / "s.dcm",
            algorithm_name="a",
            algorithm_version="1",
        )
    assert not (tmp_path / "s.dcm").exists()


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.zeros((6, 5, 3), np.uint8), r"holds no structures"),
        (np.ones((6, 5, 4), np.uint8), r"label map shape \(6, 5, 4\) differs from the series' \(6, 5, 3\)"),
        (np.ones((6, 5, 3), np.float32), r"integer dtype"),
    ],
)
def test_dicom_seg_bad_label_maps(tmp_path: Path, labels: np.ndarray, match: str) -> None:
    volume = read_volume(write_ct_series(tmp_path / "series", np.zeros((6, 5, 3), np.int16), (1.0, 1.0, 1.0)))
    with pytest.raises((ValueError, TypeError), match=match):
        write_dicom_seg(labels, volume, {1: "liver"}, tmp_path / "s.dcm", algorithm_name="a", algorithm_version="1")
    assert not (tmp_path / "s.dcm").exists()
