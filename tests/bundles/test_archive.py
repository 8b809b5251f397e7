"""Zipped bundles: unpacked once into a cache keyed by sha256, unsafe members refused before anything is written."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from pipelines.bundles.archive import bundle_cache_folder, file_sha256, unpack_bundle
from pipelines.cli.main import main
from tests.helpers import cube_scan, edit_json, write_nifti, write_threshold_bundle


def zip_bundle(bundle: Path, archive: Path, *, top: str | None = None, extra: dict[str, bytes] | None = None) -> Path:
    """Zip a bundle folder as ``<top>/...`` (the Zoo's form; ``top=""`` puts configs at the top level)."""
    top = bundle.name if top is None else top
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                handle.write(path, f"{top}/{path.relative_to(bundle).as_posix()}".lstrip("/"))
        for name, data in (extra or {}).items():
            handle.writestr(name, data)
    return archive


def test_cache_folder_follows_xdg_cache_home() -> None:
    assert bundle_cache_folder({"XDG_CACHE_HOME": "/c"}) == Path("/c/medseg/bundles")
    assert bundle_cache_folder({"HOME": "/h"}) == Path("/h/.cache/medseg/bundles")


@pytest.mark.parametrize("top", ["zoo_threshold", ""])
def test_unpacked_once_keyed_by_sha256(tmp_path: Path, top: str) -> None:
    archive = zip_bundle(write_threshold_bundle(tmp_path / "zoo_threshold"), tmp_path / "b.zip", top=top)
    cache = tmp_path / "cache"
    folder = unpack_bundle(archive, cache)
    assert (folder / "configs" / "inference.json").is_file() and (folder / "models" / "model.pt").is_file()
    assert folder.is_relative_to(cache / file_sha256(archive))
    marker = folder / "configs" / "seen"
    marker.write_text("")
    assert unpack_bundle(archive, cache) == folder and marker.exists()  # not unpacked again
    assert not [p for p in cache.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize(
    ("member", "message"),
    [
        ("../evil.txt", r"member '../evil.txt' would be written outside the bundle folder \(zip-slip\)"),
        ("b/../../evil.txt", r"would be written outside the bundle folder"),
        ("/tmp/evil.txt", r"would be written outside the bundle folder"),
    ],
)
def test_zip_slip_refused_before_writing(tmp_path: Path, member: str, message: str) -> None:
    archive = zip_bundle(write_threshold_bundle(tmp_path / "b"), tmp_path / "b.zip", extra={member: b"x"})
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(ValueError, match=message):
        unpack_bundle(archive, cache)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()
    assert not cache.exists() or not any(cache.iterdir())


def test_symlink_member_refused(tmp_path: Path) -> None:
    archive = zip_bundle(write_threshold_bundle(tmp_path / "b"), tmp_path / "b.zip")
    with zipfile.ZipFile(archive, "a") as handle:
        info = zipfile.ZipInfo("b/configs/link")
        info.external_attr = (0o120777 << 16) | 0
        handle.writestr(info, "/etc/passwd")
    with pytest.raises(ValueError, match=r"member 'b/configs/link' is a symbolic link"):
        unpack_bundle(archive, tmp_path / "cache")


def test_corrupt_and_empty_archives_refused(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(ValueError, match=r"corrupt.zip: not a readable zip archive"):
        unpack_bundle(corrupt, tmp_path / "cache")
    empty = tmp_path / "other.zip"
    with zipfile.ZipFile(empty, "w") as handle:
        handle.writestr("notes/readme.txt", "no bundle")
    with pytest.raises(ValueError, match=r"other.zip: no bundle in this archive; expected configs/inference.json"):
        unpack_bundle(empty, tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match=r"missing.zip: bundle archive does not exist"):
        unpack_bundle(tmp_path / "missing.zip", tmp_path / "cache")


def test_segment_runs_a_zipped_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    bundle = write_threshold_bundle(tmp_path / "zoo_threshold")
    edit_json(bundle / "configs" / "metadata.json", lambda m: m.update(version="0.0.2"))  # content nobody trusted
    archive = zip_bundle(bundle, tmp_path / "zoo_threshold.zip")
    image, affine, _ = cube_scan("RAS")
    scan = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    out = tmp_path / "out"
    args = ["segment", str(scan), "--bundle", str(archive), "-o", str(out), "--device", "cpu", "--outputs", "labels"]
    assert main(args) == 1  # a zip from elsewhere is not trusted either
    assert main([*args, "--trust-bundle"]) == 0
    assert (out / "scan" / "labels.nii.gz").is_file()
    assert (tmp_path / "xdg_cache" / "medseg" / "bundles" / file_sha256(archive)).is_dir()
