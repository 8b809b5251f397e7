"""Inputs outside what the pipeline handles correctly: a clear refusal, the real reason, nothing allocated."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipelines.io.output_folder import check_output_folder
from pipelines.io.readers import Volume, read_volume
from pipelines.io.values import check_finite
from tests.helpers import REPO, oriented_affine, write_nifti


def _volume(array: np.ndarray, path: Path) -> Volume:
    return Volume(array=array, affine=np.eye(4), path=path, format="nifti")


# -- voxel values -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_refused_with_count_and_first_index(tmp_path: Path, bad: float) -> None:
    array = np.zeros((6, 5, 4), np.float32)
    array[2, 3, 1] = bad
    array[4, 0, 3] = bad
    with pytest.raises(
        ValueError, match=r"scan\.nii\.gz: 2 of 120 voxels are NaN or infinite \(first at index \(2, 3, 1\)\)"
    ):
        check_finite(_volume(array, tmp_path / "scan.nii.gz"))


def test_fill_policy_replaces_by_the_minimum_and_says_so(tmp_path: Path) -> None:
    array = np.full((6, 5, 4), 50.0, np.float32)
    array[0, 0, 0] = -300.0
    array[1:3, 1:3, 1:3] = np.nan
    volume, correction = check_finite(_volume(array, tmp_path / "scan.nii.gz"), "fill")
    assert correction == {"kind": "non_finite_filled", "voxels": 8, "fill_value": -300.0, "first_index": [1, 1, 1]}
    assert np.isfinite(volume.array).all() and (volume.array[1:3, 1:3, 1:3] == -300.0).all()
    assert np.isnan(array[1, 1, 1])  # the read volume is not changed in place


def test_all_nan_cannot_be_filled(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"every voxel is NaN or infinite"):
        check_finite(_volume(np.full((3, 3, 3), np.nan, np.float32), tmp_path / "x.nii"), "fill")


def test_integer_images_need_no_check(tmp_path: Path) -> None:
    volume = _volume(np.zeros((3, 3, 3), np.int16), tmp_path / "x.nii")
    assert check_finite(volume) == (volume, None)


# -- headers before data ----------------------------------------------------------------------


def _header_only(path: Path, shape: tuple[int, ...], zoom: tuple[float, ...] = (1.0, 1.0, 1.0)) -> Path:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header.set_zooms(zoom)
    raw = header.binaryblock + b"\0" * 4 + b"\0" * 64
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


@pytest.mark.parametrize("name", ["huge.nii.gz", "huge.nii"])
def test_huge_header_is_refused_with_the_size_it_would_need(tmp_path: Path, name: str) -> None:
    path = _header_only(tmp_path / name, (32767, 32767, 32767))
    with pytest.raises(ValueError, match=r"declares shape \(32767, 32767, 32767\) .* GiB as float32, more than"):
        read_volume(path)


def test_header_larger_than_its_data_is_truncated(tmp_path: Path) -> None:
    path = _header_only(tmp_path / "short.nii.gz", (64, 64, 64))
    with pytest.raises(
        ValueError, match=r"truncated: the header declares shape \(64, 64, 64\) of int16 \(524,288 bytes"
    ):
        read_volume(path)


@pytest.mark.parametrize(
    ("pixdim", "code"), [((0.0, 1.0, 1.0), "qform"), ((1.0, 1.0, 0.0), "qform"), ((1.0, 0.0, 1.0), "sform")]
)
def test_zero_spacing_is_a_clear_error(tmp_path: Path, pixdim: tuple[float, float, float], code: str) -> None:
    header = nib.Nifti1Header()
    header.set_data_shape((4, 4, 4))
    header.set_data_dtype(np.int16)
    header["pixdim"][1:4] = pixdim
    if code == "qform":
        header["qform_code"] = 1
    else:
        header["sform_code"] = 1
        header["srow_x"], header["srow_y"], header["srow_z"] = np.diag((*pixdim, 1.0))[:3]
    (tmp_path / "flat.nii").write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 128)
    with pytest.raises(ValueError, match=r"flat\.nii: voxel-to-world affine: affine is singular"):
        read_volume(tmp_path / "flat.nii")


def test_non_finite_affine_is_a_clear_error(tmp_path: Path) -> None:
    affine = np.eye(4)
    affine[0, 3] = np.nan
    image = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), affine)
    image.set_sform(affine, code=1)
    nib.save(image, tmp_path / "nan.nii")
    with pytest.raises(ValueError, match=r"nan\.nii: voxel-to-world affine: affine has non-finite entries"):
        read_volume(tmp_path / "nan.nii")


# -- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".mgz", ".mgh"])
def test_freesurfer_mgh_keeps_its_geometry(tmp_path: Path, ext: str) -> None:
    shape = (12, 10, 8)
    affine = oriented_affine("LIA", shape, spacing=(1.0, 1.2, 1.5))  # FreeSurfer's conformed orientation
    data = np.random.default_rng(2).integers(0, 255, shape).astype(np.uint8)
    nib.save(nib.MGHImage(data, affine), tmp_path / f"brain{ext}")
    volume = read_volume(tmp_path / f"brain{ext}")
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(volume.array, data)
    assert volume.format == "mgh" and volume.sha256 is not None


# -- paths ------------------------------------------------------------------------------------


def test_symlink_loop_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.nii.gz").symlink_to(tmp_path / "b.nii.gz")
    (tmp_path / "b.nii.gz").symlink_to(tmp_path / "a.nii.gz")
    with pytest.raises(ValueError, match=r"a\.nii\.gz: symbolic link loop"):
        read_volume(tmp_path / "a.nii.gz")


def test_broken_symlink_is_named(tmp_path: Path) -> None:
    (tmp_path / "scan.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"scan\.nii\.gz: broken symbolic link"):
        read_volume(tmp_path / "scan.nii.gz")


@pytest.fixture()
def shared_tmp() -> Iterator[Path]:
    """A folder every user can enter (pytest's tmp_path sits under a folder private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="medseg-perm-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    """Run Python code as user nobody without capabilities (root reads anything; a user does not)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user (then the check runs as that user)")
    setpriv = Path("/usr/bin/setpriv")
    if not setpriv.exists():
        pytest.skip("setpriv not available to drop privileges")
    command = [str(setpriv), "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
    return subprocess.run([*command, sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)


def test_unreadable_file_says_permission_denied(shared_tmp: Path) -> None:
    path = write_nifti(shared_tmp / "secret.nii.gz", np.zeros((4, 4, 4), np.int16), np.eye(4))
    os.chmod(path, 0o600)
    done = _as_nobody(f"from pipelines.io.readers import read_volume\nread_volume({str(path)!r})")
    assert "PermissionError" in done.stderr and "secret.nii.gz: permission denied" in done.stderr, done.stderr


def test_unlistable_dicom_folder_says_permission_denied(shared_tmp: Path) -> None:
    folder = shared_tmp / "dicom"
    folder.mkdir(mode=0o700)
    (folder / "slice.dcm").write_bytes(b"x")
    done = _as_nobody(f"from pipelines.io.readers import read_volume\nread_volume({str(folder)!r})")
    assert "dicom: permission denied" in done.stderr, done.stderr


def test_output_folder_that_is_read_only_is_refused(shared_tmp: Path) -> None:
    out = shared_tmp / "out"
    out.mkdir(mode=0o555)
    code = f"from pipelines.io.output_folder import check_output_folder\ncheck_output_folder({str(out)!r})\n"
    done = _as_nobody(code)
    assert "out: output folder is not writable" in done.stderr, done.stderr


# -- output folder ----------------------------------------------------------------------------


def test_output_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file")
    with pytest.raises(NotADirectoryError, match=r"out: output folder: .*out is a file, expected a folder"):
        check_output_folder(tmp_path / "out")
    with pytest.raises(NotADirectoryError, match=r"is a file, expected a folder"):
        check_output_folder(tmp_path / "out" / "sub")


def test_output_folder_without_space_is_refused_before_work(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r"output folder has .* MiB free; this case needs about"):
        check_output_folder(tmp_path / "new", needed_bytes=2**62)
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_nifti_with_header_extensions_reads(tmp_path: Path) -> None:
    """Extensions follow the 348-byte header; the header check must not trip over them."""
    image = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(5, 4, 3), np.diag([2.0, 2.0, 3.0, 1.0]))
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"scanner notes " * 100))
    nib.save(image, tmp_path / "ext.nii.gz")
    volume = read_volume(tmp_path / "ext.nii.gz")
    np.testing.assert_array_equal(volume.array, np.arange(60).reshape(5, 4, 3))
    assert len(volume.nifti_header.extensions) == 1
