"""The bad-input corpus: every input a hospital machine really produces that medseg cannot segment
correctly ends with one line naming the file and the problem, exit code 1, and nothing in the
output folder. Odd but valid inputs succeed on the input's exact grid.

Every case is generated into tmp_path (no binary files in the repository).
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from pipelines.cli.main import main
from tests.helpers import cube_scan, oriented_affine, write_nifti

Build = Callable[[Path], tuple[Path, list[str]]]  # tmp folder -> (input path, extra arguments)


def _nifti(array: np.ndarray, affine: np.ndarray | None = None) -> Build:
    def build(tmp: Path) -> tuple[Path, list[str]]:
        return write_nifti(tmp / "scan.nii.gz", array, np.eye(4) if affine is None else affine), []

    return build


def _bytes(name: str, data: bytes) -> Build:
    def build(tmp: Path) -> tuple[Path, list[str]]:
        (tmp / name).write_bytes(data)
        return tmp / name, []

    return build


def _header(
    shape: tuple[int, ...], pixdim: tuple[float, ...] = (1.0, 1.0, 1.0), sform: np.ndarray | None = None
) -> Build:
    def build(tmp: Path) -> tuple[Path, list[str]]:
        header = nib.Nifti1Header()
        header.set_data_shape(shape)
        header.set_data_dtype(np.int16)
        header["pixdim"][1:4] = pixdim
        header["qform_code"] = 1
        if sform is not None:
            header["qform_code"] = 0
            header["sform_code"] = 1
            header["srow_x"], header["srow_y"], header["srow_z"] = sform[:3]
        (tmp / "scan.nii").write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 256)
        return tmp / "scan.nii", []

    return build


def _with_nan(count: int | str, value: float = np.nan) -> Build:
    def build(tmp: Path) -> tuple[Path, list[str]]:
        image, affine, _ = cube_scan("RAS")
        image = image.astype(np.float32)
        flat = image.reshape(-1)
        flat[: image.size if count == "all" else int(count)] = value
        return write_nifti(tmp / "scan.nii.gz", image, affine), []

    return build


def _truncated(tmp: Path) -> tuple[Path, list[str]]:
    path = write_nifti(tmp / "full.nii.gz", np.random.default_rng(1).random((40, 40, 40)).astype(np.float32), np.eye(4))
    blob = path.read_bytes()
    path.unlink()
    (tmp / "scan.nii.gz").write_bytes(blob[: len(blob) // 2])
    return tmp / "scan.nii.gz", []


def _truncated_plain(tmp: Path) -> tuple[Path, list[str]]:
    image = nib.Nifti1Image(np.zeros((30, 30, 30), np.int16), np.eye(4))
    raw = image.to_bytes()
    (tmp / "scan.nii").write_bytes(raw[: len(raw) - 5000])
    return tmp / "scan.nii", []


def _link_loop(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "a.nii.gz").symlink_to(tmp / "b.nii.gz")
    (tmp / "b.nii.gz").symlink_to(tmp / "a.nii.gz")
    return tmp / "a.nii.gz", []


def _broken_link(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "scan.nii.gz").symlink_to(tmp / "gone.nii.gz")
    return tmp / "scan.nii.gz", []


def _text_folder(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "export").mkdir()
    (tmp / "export" / "notes.txt").write_text("not dicom")
    (tmp / "export" / "IM0001").write_bytes(b"\0" * 300)
    return tmp / "export", []


def _empty_folder(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "export").mkdir()
    return tmp / "export", []


def _series(tmp: Path, slices: int = 10) -> tuple[Path, list[Path]]:
    from pipelines.data.phantoms.make import make_ct_phantom
    from pipelines.data.phantoms.write import write_dicom_series

    phantom = make_ct_phantom(3, shape=(24, 20, slices), spacing_mm=(6.0, 7.0, 4.0))
    files = write_dicom_series(phantom, tmp / "series")
    return tmp / "series", sorted(
        files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
    )


def _dicom(change: Callable[[Path, list[Path]], None], extra: list[str] | None = None) -> Build:
    def build(tmp: Path) -> tuple[Path, list[str]]:
        folder, files = _series(tmp)
        change(folder, files)
        return folder, list(extra or [])

    return build


def _corrupt_pixels(folder: Path, files: list[Path]) -> None:
    ds = pydicom.dcmread(files[3])
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(files[3])


def _duplicate(folder: Path, files: list[Path]) -> None:
    twin = folder / "twin.dcm"
    shutil.copy(files[2], twin)
    ds = pydicom.dcmread(twin)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(twin)


def _hole(folder: Path, files: list[Path]) -> None:
    for f in files[3:7]:
        f.unlink()


def _single_slice(folder: Path, files: list[Path]) -> None:
    for f in files[1:]:
        f.unlink()


def _no_geometry(folder: Path, files: list[Path]) -> None:
    ds = pydicom.dcmread(files[4])
    del ds.ImagePositionPatient
    ds.save_as(files[4])


def _mhd_without_raw(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "scan.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_SHORT\nElementDataFile = scan.raw\n"
    )
    return tmp / "scan.mhd", []


def _rgb(tmp: Path) -> tuple[Path, list[str]]:
    rgb = np.zeros((8, 8, 8), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp / "scan.nii.gz")
    return tmp / "scan.nii.gz", []


def _nrrd_2d(tmp: Path) -> tuple[Path, list[str]]:
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.int16)), str(tmp / "scan.nrrd"))
    return tmp / "scan.nrrd", []


def _nifti_as_folder(tmp: Path) -> tuple[Path, list[str]]:
    (tmp / "scan.nii.gz").mkdir()
    return tmp / "scan.nii.gz", []


def _extra(arguments: list[str]) -> Build:
    def build(tmp: Path) -> tuple[Path, list[str]]:
        image, affine, _ = cube_scan("RAS")
        return write_nifti(tmp / "scan.nii.gz", image, affine), arguments

    return build


NAN_FEW = "3 of 25,920 voxels are NaN or infinite (first at index (0, 0, 0)); expected finite values"
CORPUS: dict[str, tuple[Build, str]] = {
    "missing path": (lambda tmp: (tmp / "nope.nii.gz", []), "nope.nii.gz: no such file or folder"),
    "empty file": (_bytes("scan.nii.gz", b""), "scan.nii.gz: not a readable NIfTI image"),
    "random bytes": (_bytes("scan.nii", np.random.default_rng(0).bytes(2000)), "scan.nii: not a readable NIfTI image"),
    "gzip of junk": (_bytes("scan.nii.gz", gzip.compress(b"not a header" * 50)), "scan.nii.gz: not a readable NIfTI"),
    "truncated gzip": (_truncated, "scan.nii.gz: truncated or corrupt image data"),
    "truncated plain NIfTI": (_truncated_plain, "scan.nii: truncated: the header declares shape (30, 30, 30)"),
    "unsupported extension": (_bytes("scan.png", b"\x89PNG"), "scan.png: unsupported file type"),
    "2D image": (_nifti(np.zeros((30, 20), np.float32)), "scan.nii.gz: expected a 3D image, got shape (30, 20)"),
    "4D image": (
        _nifti(np.zeros((8, 8, 8, 2), np.float32)),
        "scan.nii.gz: expected a 3D image, got shape (8, 8, 8, 2)",
    ),
    "2D NRRD": (_nrrd_2d, "scan.nrrd: expected a 3D image"),
    "RGB voxels": (_rgb, "scan.nii.gz: RGB voxels"),
    "huge header": (_header((32767, 32767, 32767)), "GiB as float32, more than this machine's"),
    "zero spacing": (_header((4, 4, 4), (1.0, 0.0, 1.0)), "scan.nii: voxel-to-world affine: affine is singular"),
    "non-finite spacing": (
        _header((4, 4, 4), sform=np.diag([1.0, np.nan, 1.0, 1.0])),
        "scan.nii: voxel-to-world affine: affine has non-finite entries",
    ),
    "NaN voxels, few": (_with_nan(3), NAN_FEW),
    "NaN voxels, many": (_with_nan(20000), "20,000 of 25,920 voxels are NaN or infinite"),
    "NaN voxels, all": (_with_nan("all"), "every voxel is NaN or infinite"),
    "+Inf voxels": (_with_nan(3, np.inf), NAN_FEW),
    "-Inf voxels": (_with_nan(3, -np.inf), NAN_FEW),
    "symlink loop": (_link_loop, "a.nii.gz: symbolic link loop"),
    "broken symlink": (_broken_link, "scan.nii.gz: broken symbolic link"),
    "folder without DICOM": (_text_folder, "export: no DICOM series found"),
    "empty folder": (_empty_folder, "export: no DICOM series found"),
    "NIfTI name on a folder": (_nifti_as_folder, "scan.nii.gz: no DICOM series found"),
    "MHD without its raw file": (_mhd_without_raw, "scan.mhd: not a readable image"),
    "undecodable DICOM slice": (_dicom(_corrupt_pixels), "pixel data cannot be decoded"),
    "two acquisitions mixed": (_dicom(_duplicate), "lie at the same position"),
    "gap beyond the limit": (_dicom(_hole), "limit 3x): that region was not imaged. Use --allow-gaps"),
    "single DICOM slice": (_dicom(_single_slice), "expected a 3D image, series"),
    "DICOM slice without position": (_dicom(_no_geometry), "lack ImageOrientationPatient, ImagePositionPatient"),
    "DICOM-SEG of a file": (_extra(["--outputs", "labels,dicom-seg"]), "DICOM-SEG needs a DICOM series as input"),
    "case id with a path": (_extra(["--case-id", "../escape"]), "case id '../escape': must be a plain folder name"),
    "unknown precision": (_extra(["--precision", "fp8"]), "invalid choice: 'fp8'"),
    "output is a file": (_extra(["@output-file"]), "is a file, expected a folder"),
    "output below a file": (_extra(["@output-below-file"]), "is a file, expected a folder"),
}


@pytest.mark.parametrize("kind", list(CORPUS))
def test_bad_input_gives_one_line_exit_1_and_no_output(
    tmp_path: Path, zoo_bundle: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    build, message = CORPUS[kind]
    inputs = tmp_path / "in"
    inputs.mkdir()
    path, extra = build(inputs)
    out = tmp_path / "out"
    if "@output-file" in extra or "@output-below-file" in extra:
        out.write_text("a file")
        out = out if "@output-file" in extra else out / "sub"
        extra = []
    argv = ["segment", str(path), "--bundle", str(zoo_bundle), "--output", str(out), "--device", "cpu", *extra]
    if kind == "unknown precision":
        with pytest.raises(SystemExit) as exit_info:  # argparse's own one-line usage error, exit 2
            main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
        return
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert message in err, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert not out.is_dir() or not any(out.iterdir()), f"left behind: {sorted(out.iterdir())}"


ODD_BUT_VALID: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "constant image": (np.full((20, 18, 10), 700, np.int16), np.diag([1.5, 1.5, 2.0, 1.0])),
    "5 cubed": (np.full((5, 5, 5), 900, np.int16), np.diag([2.0, 2.0, 2.0, 1.0])),
    "512x512x3": (
        np.random.default_rng(0).integers(0, 1000, (512, 512, 3)).astype(np.int16),
        np.diag([0.7, 0.7, 5.0, 1.0]),
    ),
    "int8": (np.random.default_rng(1).integers(-100, 100, (16, 16, 8)).astype(np.int8), np.eye(4)),
    "uint16": (np.random.default_rng(2).integers(0, 2000, (16, 16, 8)).astype(np.uint16), np.eye(4)),
    "int32": (np.random.default_rng(3).integers(0, 2000, (16, 16, 8)).astype(np.int32), np.eye(4)),
    "float64": (np.random.default_rng(4).random((16, 16, 8)) * 1000, np.eye(4)),
    "negative axes (LPI)": (np.full((16, 14, 8), 900, np.int16), oriented_affine("LPI", (16, 14, 8))),
    "sheared affine": (
        np.full((16, 14, 8), 900, np.int16),
        np.array([[1.0, 0.2, 0, 0], [0, 1.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]]),
    ),
}


@pytest.mark.parametrize("kind", list(ODD_BUT_VALID))
def test_odd_but_valid_input_succeeds_on_its_exact_grid(tmp_path: Path, zoo_bundle: Path, kind: str) -> None:
    array, affine = ODD_BUT_VALID[kind]
    path = write_nifti(tmp_path / "scan.nii.gz", array, affine)
    out = tmp_path / "out"
    code = main(["segment", str(path), "--bundle", str(zoo_bundle), "--output", str(out), "--device", "cpu",
                 "--precision", "fp32", "--outputs", "labels"])  # fmt: skip
    assert code == 0
    labels = nib.load(out / "scan" / "labels.nii.gz")
    assert labels.shape == array.shape
    np.testing.assert_array_equal(labels.affine, nib.load(path).affine)
    assert sorted(p.name for p in out.iterdir()) == ["scan"]
