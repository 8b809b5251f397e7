"""Tests of pipelines.outputs.dicom_seg: DICOM-SEG round trips, coding, source headers read once,
Type 2 attributes the source lacks, and a case whose SEG cannot be written keeping its other outputs."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pipelines.io.readers import Volume, read_volume
from pipelines.outputs.dicom_seg import TYPE2_FROM_SOURCE, SegWritten, write_dicom_seg
from pipelines.outputs.names import SNOMED
from tests.helpers import copy_bundle_with_random_weights, read_labels_json

# Elements of a SEG that are new on every run (fresh UIDs, creation time), left out when two SEGs are compared.
_PER_RUN = {"SOPInstanceUID", "SeriesInstanceUID", "ContentDate", "ContentTime", "SeriesDate", "SeriesTime",
            "InstanceCreationDate", "InstanceCreationTime", "DimensionOrganizationSequence",
            "DimensionIndexSequence", "ContributingEquipmentSequence"}  # fmt: skip


def write_ct_series(
    folder: Path,
    array: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    anonymised: bool = False,
    omit: Sequence[str] = (),
) -> Path:
    """Write ``array`` (i, j, k) as an axial CT series, LPS, i along columns; files named in reverse k order.

    ``anonymised``: blank the data set's SOP Instance, Study and Series UIDs, as some anonymisers do
    (the file meta keeps the instance UID). ``omit``: attributes left out of every file, as some
    scanners leave out Type 2 attributes (a GE CT without PatientBirthDate).
    """
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
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, "" if anonymised else uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = ("", "") if anonymised else (study, series)
        ds.FrameOfReferenceUID = frame
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
        for keyword in omit:
            del ds[keyword]
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


def headers_of(volume: Volume) -> list[pydicom.Dataset]:
    """The series' headers in k order, as the reader keeps them in ``Volume.dicom_headers``."""
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in volume.dicom_files]


def seg_content(path: Path) -> dict[str, object]:
    """A SEG's elements, less those that differ on every run (:data:`_PER_RUN`)."""
    ds = pydicom.dcmread(path)
    return {element.keyword or str(element.tag): element.value for element in ds if element.keyword not in _PER_RUN}


def strip_attributes(files: Iterable[Path], keywords: Sequence[str]) -> None:
    """Remove ``keywords`` from each DICOM file in place."""
    for file in files:
        ds = pydicom.dcmread(file)
        for keyword in keywords:
            del ds[keyword]
        ds.save_as(file, enforce_file_format=True)


def small_case(tmp_path: Path, *, anonymised: bool = False, omit: Sequence[str] = ()) -> tuple[Volume, np.ndarray]:
    image = np.zeros((6, 5, 4), dtype=np.int16)
    folder = write_ct_series(tmp_path / "series", image, (1.0, 1.0, 2.0), anonymised=anonymised, omit=omit)
    volume = read_volume(folder)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[1:3, 1:4, 1] = 1
    labels[4, 4, 2:4] = 2
    return volume, labels


# --------------------------------------------------------------------------------------------
# content


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

    written = write_dicom_seg(
        labels, volume, names, tmp_path / "out" / "seg.dcm", algorithm_name="ct_abdomen_unet", algorithm_version="1.2"
    )
    path = written.path
    assert path == tmp_path / "out" / "seg.dcm"
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


def test_dicom_seg_returns_the_checksum_of_the_file_on_disk(tmp_path: Path) -> None:
    volume, labels = small_case(tmp_path)
    written = write_dicom_seg(
        labels, volume, {1: "liver"}, tmp_path / "seg.dcm", algorithm_name="a", algorithm_version="1"
    )
    data = written.path.read_bytes()
    assert data[128:132] == b"DICM"  # preamble and file meta, as a file written by save_as to a path
    assert written.sha256 == hashlib.sha256(data).hexdigest()


def test_dicom_seg_tumour_coding(tmp_path: Path) -> None:
    image = np.zeros((6, 5, 3), dtype=np.int16)
    volume = read_volume(write_ct_series(tmp_path / "series", image, spacing=(1.0, 1.0, 1.0)))
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[1:3, 1:3, 1] = 1
    labels[4, 4, 2] = 2
    written = write_dicom_seg(
        labels, volume, {1: "liver", 2: "liver_tumor"}, tmp_path / "seg.dcm", algorithm_name="a", algorithm_version="1"
    )
    tumour = pydicom.dcmread(written.path).SegmentSequence[1]
    assert tumour.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert tumour.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert tumour.AnatomicRegionSequence[0].CodeValue == "10200004"


@pytest.mark.shared_data
def test_dicom_seg_real_series_round_trip(shared_data: Path, tmp_path: Path, caplog) -> None:
    volume, labels, names = series_label_map(shared_data)
    assert len(np.unique(labels)) > 20

    with caplog.at_level(logging.WARNING, logger="pipelines.outputs.dicom_seg"):
        path = write_dicom_seg(
            labels, volume, names, tmp_path / "seg.dcm", algorithm_name="ct_abdomen_unet", algorithm_version="0.3.1"
        ).path
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


# --------------------------------------------------------------------------------------------
# source headers: read once, by the reader


@pytest.mark.parametrize("anonymised", [False, True])
@pytest.mark.parametrize("headers_from", ["reader", "dcmread"])
def test_dicom_seg_with_source_headers_reads_no_file_and_gives_the_same_seg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anonymised: bool, headers_from: str
) -> None:
    volume, labels = small_case(tmp_path, anonymised=anonymised)
    names = {1: "liver", 2: "adrenal_gland_left"}
    options = {"algorithm_name": "ct_abdomen_unet", "algorithm_version": "1.2"}
    from_files = write_dicom_seg(labels, volume, names, tmp_path / "from_files.dcm", **options)
    headers = list(volume.dicom_headers) if headers_from == "reader" else headers_of(volume)
    assert len(headers) == volume.shape[2] and all("PixelData" not in h for h in headers)
    untouched = copy.deepcopy(headers)

    for file in volume.dicom_files:
        file.unlink()

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a source file was read: {args}")

    monkeypatch.setattr(pydicom, "dcmread", no_reading)
    from_headers = write_dicom_seg(
        labels, volume, names, tmp_path / "from_headers.dcm", source_headers=headers, **options
    )
    monkeypatch.undo()

    assert seg_content(from_headers.path) == seg_content(from_files.path)
    assert headers == untouched  # blanked UIDs were restored on copies, not in the caller's headers
    seg = hd.seg.segread(from_headers.path)
    uids = [h.file_meta.MediaStorageSOPInstanceUID for h in headers]
    np.testing.assert_array_equal(seg_to_label_map(seg, uids), labels)


def test_dicom_seg_refuses_headers_out_of_slice_order(tmp_path: Path) -> None:
    volume, labels = small_case(tmp_path)
    headers = headers_of(volume)
    shuffled = [headers[0], headers[2], headers[1], headers[3]]
    with pytest.raises(ValueError, match=r"source header 2 \(.*im003\.dcm\) is not after header 1 along the series"):
        write_dicom_seg(labels, volume, {1: "liver"}, tmp_path / "s.dcm", algorithm_name="a", algorithm_version="1",
                        source_headers=shuffled)  # fmt: skip
    with pytest.raises(ValueError, match=r"3 source headers for a series of 4 slices; expected one header per slice"):
        write_dicom_seg(labels, volume, {1: "liver"}, tmp_path / "s.dcm", algorithm_name="a", algorithm_version="1",
                        source_headers=headers[:3])  # fmt: skip
    assert not (tmp_path / "s.dcm").exists()


def test_dicom_seg_names_a_header_without_an_instance_uid(tmp_path: Path) -> None:
    volume, labels = small_case(tmp_path, anonymised=True)
    headers = headers_of(volume)
    del headers[1].file_meta.MediaStorageSOPInstanceUID
    with pytest.raises(ValueError, match=r"im003\.dcm: no SOPInstanceUID in the data set or its file meta"):
        write_dicom_seg(labels, volume, {1: "liver"}, tmp_path / "s.dcm", algorithm_name="a", algorithm_version="1",
                        source_headers=headers)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Type 2 attributes the source lacks (real-world series)


@pytest.mark.parametrize("headers_from", ["reader", "dcmread"])
@pytest.mark.parametrize(
    "omit",
    [
        (),
        ("PatientBirthDate",),  # a GE CT series
        ("ReferringPhysicianName", "StudyID", "AccessionNumber", "PatientSex"),
        TYPE2_FROM_SOURCE,
    ],
    ids=["complete", "no-birth-date", "several", "all"],
)
def test_dicom_seg_fills_type2_attributes_the_source_lacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, omit: tuple[str, ...], headers_from: str
) -> None:
    volume, labels = small_case(tmp_path, omit=omit)
    headers = list(volume.dicom_headers) if headers_from == "reader" else None
    untouched = copy.deepcopy(list(volume.dicom_headers))
    assert all(keyword not in h for h in untouched for keyword in omit)

    with caplog.at_level(logging.INFO, logger="pipelines.outputs.dicom_seg"):
        written = write_dicom_seg(
            labels, volume, {1: "liver", 2: "spleen"}, tmp_path / "seg.dcm", algorithm_name="a", algorithm_version="1",
            source_headers=headers,
        )  # fmt: skip

    expected = tuple(keyword for keyword in TYPE2_FROM_SOURCE if keyword in omit)  # in the table's order
    assert isinstance(written, SegWritten) and written.filled_type2 == expected
    assert written.sha256 == hashlib.sha256(written.path.read_bytes()).hexdigest()
    if expected:
        assert f"lacks the Type 2 attribute(s) {', '.join(expected)}; filled empty" in caplog.text
    else:
        assert "Type 2" not in caplog.text
    assert list(volume.dicom_headers) == untouched  # filled on copies, never in the caller's headers
    assert all(keyword not in h for h in volume.dicom_headers for keyword in omit)

    seg = hd.seg.segread(written.path)
    for keyword in TYPE2_FROM_SOURCE:
        assert keyword in seg, f"{keyword} missing from the SEG"
        if keyword in omit:
            assert seg[keyword].value in ("", None), f"{keyword}: {seg[keyword].value!r}"
    if "PatientID" not in omit:
        assert seg.PatientID == "P1"  # what the source has is copied, not blanked
    uids = instance_uids(volume.dicom_files)
    np.testing.assert_array_equal(seg_to_label_map(seg, uids), labels)


# --------------------------------------------------------------------------------------------
# through Segmenter.run: a SEG that cannot be written leaves the other outputs


@pytest.fixture(scope="module")
def ct_segmenter(tmp_path_factory: pytest.TempPathFactory):
    """The CT U-Net bundle with random weights, on the CPU in fp32, writing labels and DICOM-SEG."""
    from pipelines.segment import Segmenter, SegmentOptions

    bundle = copy_bundle_with_random_weights("ct_abdomen_unet", tmp_path_factory.mktemp("bundle"))
    return Segmenter(bundle, SegmentOptions(device="cpu", precision="fp32", outputs=("labels", "dicom-seg")))


def phantom_series(folder: Path, omit: Sequence[str] = ()) -> Path:
    """A small CT phantom DICOM series (48 x 40 x 16 voxels: the CT bundle's rules want >= 16 slices), less ``omit``."""
    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.write import write_dicom_series

    phantom = make_ct_phantom(3, shape=(48, 40, 16), spacing_mm=(2.0, 2.0, 3.0), lesions=False)
    files = write_dicom_series(phantom, folder)
    strip_attributes(files, omit)
    return folder


@pytest.mark.slow
def test_segmenter_writes_a_seg_for_a_series_without_patient_birth_date(tmp_path: Path, ct_segmenter) -> None:
    source = phantom_series(tmp_path / "ge_ct", omit=["PatientBirthDate"])
    result = ct_segmenter.run(source, tmp_path / "out")

    case = tmp_path / "out" / "ge_ct"
    assert sorted(p.name for p in case.iterdir()) == ["labels.nii.gz", "run.json", "seg.dcm"]
    assert result.dicom_seg == {"written": True, "filled_type2": ["PatientBirthDate"], "error": None}
    assert result.warnings == []
    assert result.sha256["dicom_seg"] == hashlib.sha256((case / "seg.dcm").read_bytes()).hexdigest()
    seg = hd.seg.segread(case / "seg.dcm")
    assert "PatientBirthDate" in seg and seg.PatientBirthDate in ("", None)
    assert seg.PatientID == "PHANTOM"
    labels = np.asarray(nib.load(case / "labels.nii.gz").dataobj)
    files = sorted(source.iterdir(), key=lambda f: int(pydicom.dcmread(f, stop_before_pixels=True).InstanceNumber))
    np.testing.assert_array_equal(seg_to_label_map(seg, instance_uids(files)), labels)


@pytest.mark.slow
def test_segmenter_keeps_the_other_outputs_when_the_seg_cannot_be_written(
    tmp_path: Path, ct_segmenter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError("Items of argument source_images\nare not all part of the same study and series.")

    monkeypatch.setattr(hd.seg, "Segmentation", refuse)
    source = phantom_series(tmp_path / "series")
    with caplog.at_level(logging.WARNING, logger="pipelines.segment"):
        result = ct_segmenter.run(source, tmp_path / "out")

    case = tmp_path / "out" / "series"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["series"]  # no staging folder left
    assert sorted(p.name for p in case.iterdir()) == ["labels.nii.gz", "run.json"]
    assert set(result.files) == set(result.sha256) == {"labels", "run"}
    expected = (
        f"{source}: DICOM-SEG not written (ValueError: Items of argument source_images are not all part "
        "of the same study and series.)"
    )
    assert result.warnings == [expected]  # one line, naming the source folder and the reason
    assert result.dicom_seg == {"written": False, "filled_type2": [], "error": expected}
    assert f"{expected}; the other outputs are kept" in caplog.text
    labels = nib.load(case / "labels.nii.gz")
    assert labels.shape == (48, 40, 16)
    run = json.loads((case / "run.json").read_text())
    assert run["options"]["outputs"] == ["labels", "dicom-seg"]
    assert run["input"]["format"] == "dicom"
    assert run["warnings"] == [expected]
    assert run["dicom_seg"] == {"written": False, "filled_type2": [], "error": expected}


# --------------------------------------------------------------------------------------------
# bad inputs


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
