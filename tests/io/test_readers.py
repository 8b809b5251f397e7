"""pipelines.io: readers keep geometry exactly; bad files fail with a message naming them."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.io.readers import case_id_from_path, read_volume
from pipelines.io.writers import write_labels
from pipelines.transforms.loading import to_metatensor
from tests.helpers import oriented_affine, write_nifti

# Anisotropic voxels, three orientations of the same physical grid.
ORIENTATIONS = ["RAS", "LPS", "LAS"]


@pytest.mark.parametrize("codes", ORIENTATIONS)
def test_nifti_round_trip_keeps_shape_and_affine(tmp_path: Path, codes: str) -> None:
    shape = (20, 16, 9)
    affine = oriented_affine(codes, shape)
    data = np.random.default_rng(0).integers(-1000, 1000, shape).astype(np.int16)
    path = write_nifti(tmp_path / "scan.nii.gz", data, affine)
    volume = read_volume(path)
    assert volume.shape == shape
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    assert nib.aff2axcodes(volume.affine) == tuple(codes)
    np.testing.assert_array_equal(volume.array, data)
    out = write_labels(
        (data > 0).astype(np.uint8), volume.affine, tmp_path / "labels.nii.gz", header=volume.nifti_header
    ).path
    back = nib.load(out)
    assert back.shape == shape
    np.testing.assert_array_equal(back.affine, nib.load(path).affine)  # bit for bit, via the header


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
@pytest.mark.parametrize("codes", ["LPS", "LAS"])
def test_itk_formats_give_the_nifti_geometry(tmp_path: Path, ext: str, codes: str) -> None:
    shape = (12, 10, 7)
    affine = oriented_affine(codes, shape)
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    image = sitk.GetImageFromArray(data.transpose(2, 1, 0))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    sitk.WriteImage(image, str(tmp_path / f"scan{ext}"))
    volume = read_volume(tmp_path / f"scan{ext}")
    np.testing.assert_allclose(volume.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(volume.array, data)


def test_metatensor_matches_monai_loader(tmp_path: Path) -> None:
    from monai.transforms import LoadImage

    shape = (10, 8, 6)
    affine = oriented_affine("LPS", shape)
    # distinct values everywhere: an axis swapped or flipped by either loader cannot go unnoticed
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    path = write_nifti(tmp_path / "scan.nii.gz", data, affine)
    ours = to_metatensor(read_volume(path))
    theirs = LoadImage(image_only=True)(str(path))
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_allclose(ours.affine.numpy(), theirs.affine.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("scan.nii.gz", "scan"), ("scan.nii", "scan"), ("a.b.nrrd", "a.b"), ("x.mha", "x"), ("dicom", "dicom")],
)
def test_case_id_from_path(name: str, expected: str) -> None:
    assert case_id_from_path(Path("/data") / name) == expected


# -- bad input --------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.nii\.gz: no such file or folder"):
        read_volume(tmp_path / "nope.nii.gz")


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not dicom")
    with pytest.raises(ValueError, match=r"no DICOM series found"):
        read_volume(tmp_path)


def test_file_that_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    with pytest.raises(ValueError, match=r"scan\.nii\.gz: not a readable NIfTI image"):
        read_volume(path)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match=r"scan\.png: unsupported file type \(expected a NIfTI file"):
        read_volume(path)


def test_truncated_nifti(tmp_path: Path) -> None:
    path = write_nifti(
        tmp_path / "full.nii.gz", np.random.default_rng(1).random((40, 40, 40)).astype(np.float32), np.eye(4)
    )
    blob = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"cut\.nii\.gz: truncated or corrupt image data"):
        read_volume(cut)


@pytest.mark.parametrize(("shape", "shown"), [((30, 20), r"\(30, 20\)"), ((8, 8, 8, 2), r"\(8, 8, 8, 2\)")])
def test_not_3d(tmp_path: Path, shape: tuple[int, ...], shown: str) -> None:
    path = write_nifti(tmp_path / "img.nii.gz", np.zeros(shape, np.float32), np.eye(4))
    with pytest.raises(ValueError, match=rf"img\.nii\.gz: expected a 3D image, got shape {shown}"):
        read_volume(path)


def test_trailing_singleton_axis_is_3d(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "img.nii.gz", np.zeros((8, 8, 8, 1), np.float32), np.eye(4))
    assert read_volume(path).shape == (8, 8, 8)


# -- real data --------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_shared_ct_nifti_geometry(shared_data: Path) -> None:
    volume = read_volume(shared_data / "ct_abdomen_3mm" / "image.nii.gz")
    assert volume.shape == (122, 101, 30)
    assert volume.array.dtype == np.int16
    np.testing.assert_allclose(volume.spacing_mm, (3.0, 3.0, 3.0))
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")


@pytest.mark.shared_data
def test_shared_jpeg2000_dicom_series(shared_data: Path) -> None:
    volume = read_volume(shared_data / "ct_dicom_series" / "dicom")
    assert volume.format == "dicom" and volume.modality == "CT"
    assert volume.shape == (512, 512, 20)
    np.testing.assert_allclose(volume.spacing_mm, (0.9765625, 0.9765625, 2.0))
    assert nib.aff2axcodes(volume.affine) == ("L", "P", "S")  # LPS as stored
    assert len(volume.dicom_files) == 20
    assert volume.array.min() >= -1100 and volume.array.max() < 4000  # HU after rescale


@pytest.mark.shared_data
def test_dicom_series_and_its_las_label_agree_in_physical_space(shared_data: Path) -> None:
    """The label is stored LAS; mapped through both affines onto the series grid, liver lands on soft tissue."""
    volume = read_volume(shared_data / "ct_dicom_series" / "dicom")
    label_img = nib.load(shared_data / "ct_dicom_series" / "label.nii.gz")
    assert nib.aff2axcodes(label_img.affine) == ("L", "A", "S")
    names = {
        int(k): v
        for k, v in __import__("json").loads((shared_data / "ct_dicom_series" / "labels.json").read_text()).items()
    }
    liver = next(k for k, v in names.items() if v == "liver")
    # Resample the label onto the series grid with nearest neighbour through physical space.
    from scipy.ndimage import affine_transform

    series_to_label = np.linalg.inv(label_img.affine) @ volume.affine
    label = np.asarray(label_img.dataobj)
    on_series = affine_transform(
        label, series_to_label[:3, :3], series_to_label[:3, 3], output_shape=volume.shape, order=0
    )
    liver_hu = volume.array[on_series == liver]
    assert liver_hu.size > 1000
    assert 20 < float(np.mean(liver_hu)) < 200, "liver should be soft tissue after mapping through physical space"
    # Mapping by array index instead (ignoring the flip) puts it somewhere else.
    wrong = volume.array[label == liver]
    assert abs(float(np.mean(wrong)) - float(np.mean(liver_hu))) > 20


def test_series_selection_in_folder_with_two_series(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.write import write_dicom_series

    small = make_ct_phantom(1, shape=(32, 32, 8), spacing_mm=(8.0, 8.0, 20.0))
    large = make_ct_phantom(2, shape=(32, 32, 12), spacing_mm=(8.0, 8.0, 14.0))
    folder = tmp_path / "study"
    files = write_dicom_series(small, tmp_path / "a", series_uid="1.2.826.0.1.3680043.8.498.1", series_number=1)
    files += write_dicom_series(large, tmp_path / "b", series_uid="1.2.826.0.1.3680043.8.498.2", series_number=2)
    folder.mkdir()
    for i, f in enumerate(files):
        f.rename(folder / f"{i:03d}.dcm")
    with caplog.at_level(logging.INFO, logger="pipelines"):
        chosen = read_volume(folder)
    assert chosen.series_uid == "1.2.826.0.1.3680043.8.498.2" and chosen.shape == (32, 32, 12)
    assert "holds 2 series" in caplog.text and "1.2.826.0.1.3680043.8.498.1" in caplog.text
    explicit = read_volume(folder, series_uid="1.2.826.0.1.3680043.8.498.1")
    assert explicit.shape == (32, 32, 8)
    np.testing.assert_allclose(explicit.affine, small.affine, atol=1e-4)
    with pytest.raises(ValueError, match=r"no series with SeriesInstanceUID 9\.9; the folder holds"):
        read_volume(folder, series_uid="9.9")


def test_input_sha256_of_files_and_folders(tmp_path: Path) -> None:
    import hashlib

    from pipelines.io.hashing import input_sha256

    single = tmp_path / "scan.nii.gz"
    single.write_bytes(b"voxels")
    assert input_sha256(single) == hashlib.sha256(b"voxels").hexdigest() == input_sha256([single])

    folder = tmp_path / "series"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.dcm").write_bytes(b"slice a")
    (folder / "sub" / "b.dcm").write_bytes(b"slice b")
    first = input_sha256(folder)
    assert first == input_sha256(str(folder))
    (folder / "sub" / "b.dcm").rename(folder / "b.dcm")  # same bytes, another name: another input
    renamed = input_sha256(folder)
    assert renamed != first
    (folder / "c.dcm").write_bytes(b"another series")  # the series rule may now choose differently
    assert input_sha256(folder) not in (first, renamed)

    with pytest.raises(FileNotFoundError, match=r"missing\.nii\.gz: no such file or folder"):
        input_sha256([single, tmp_path / "missing.nii.gz"])
