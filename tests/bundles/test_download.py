"""``medseg bundle download`` through ``monai.bundle.download`` from a loopback HTTP server (no internet)."""

from __future__ import annotations

import functools
import http.server
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.bundles.archive import file_sha256
from pipelines.bundles.download import download_bundle
from pipelines.bundles.trust import read_trust_store, require_trusted
from pipelines.cli.main import main
from tests.bundles.test_archive import zip_bundle
from tests.helpers import edit_json, write_threshold_bundle


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1, and its base URL."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _served_bundle(tmp_path: Path, folder: Path, **kwargs: object) -> Path:
    bundle = write_threshold_bundle(tmp_path / "src" / "zoo_threshold")
    edit_json(bundle / "configs" / "metadata.json", lambda m: m.update(version="0.1.0"))  # not trusted yet
    return zip_bundle(bundle, folder / "zoo_threshold_v0.1.0.zip", **kwargs)  # type: ignore[arg-type]


def test_download_installs_checks_and_trusts(tmp_path: Path, served: tuple[Path, str]) -> None:
    folder, base = served
    archive = _served_bundle(tmp_path, folder)
    dest, store = tmp_path / "bundles", tmp_path / "store.json"
    done = download_bundle("zoo_threshold", dest, store, url=f"{base}/{archive.name}", sha256=file_sha256(archive))
    assert done.path == dest / "zoo_threshold" and (done.path / "configs" / "inference.json").is_file()
    assert done.archive_sha256 == file_sha256(archive)
    assert sorted(p.name for p in dest.iterdir()) == ["zoo_threshold"]  # no zip, no staging left
    (record,) = read_trust_store(store)
    assert record.source == "download" and record.origin.endswith(archive.name)
    assert record.archive_sha256 == file_sha256(archive)
    assert require_trusted(done.path, store).startswith("recorded")
    with pytest.raises(ValueError, match=r"zoo_threshold: a bundle of that name is installed already"):
        download_bundle("zoo_threshold", dest, store, url=f"{base}/{archive.name}")


def test_corrupt_zip_installs_nothing(tmp_path: Path, served: tuple[Path, str]) -> None:
    folder, base = served
    good = _served_bundle(tmp_path, folder)
    (folder / "bad.zip").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    dest, store = tmp_path / "bundles", tmp_path / "store.json"
    with pytest.raises(ValueError, match=r"bad.zip: the downloaded archive is corrupt .* nothing was installed"):
        download_bundle("zoo_threshold", dest, store, url=f"{base}/bad.zip")
    assert not any(dest.iterdir()) and not store.exists()


def test_zip_with_parent_entries_installs_nothing(tmp_path: Path, served: tuple[Path, str]) -> None:
    folder, base = served
    archive = _served_bundle(tmp_path, folder, extra={"../escaped.txt": b"x", "zoo_threshold/../../up.txt": b"x"})
    dest, store = tmp_path / "area" / "bundles", tmp_path / "store.json"
    with pytest.raises(ValueError, match=r"refused \(.*[Uu]nsafe path.*\); nothing was installed"):
        download_bundle("zoo_threshold", dest, store, url=f"{base}/{archive.name}")
    assert not list(tmp_path.rglob("escaped.txt")) and not list(tmp_path.rglob("up.txt"))
    assert not any(dest.iterdir()) and not store.exists()


def test_checksum_mismatch_and_bad_arguments(tmp_path: Path, served: tuple[Path, str]) -> None:
    folder, base = served
    archive = _served_bundle(tmp_path, folder)
    dest, store = tmp_path / "bundles", tmp_path / "store.json"
    with pytest.raises(ValueError, match=r"sha256 of the download is [0-9a-f]{64}, expected 0{64}; nothing"):
        download_bundle("zoo_threshold", dest, store, url=f"{base}/{archive.name}", sha256="0" * 64)
    assert not any(dest.iterdir())
    with pytest.raises(ValueError, match=r"bundle name '\.\./x': expected a plain folder name"):
        download_bundle("../x", dest, store, url=f"{base}/{archive.name}")
    with pytest.raises(ValueError, match=r"bundle source 'ngc': expected one of github, monaihosting"):
        download_bundle("zoo_threshold", dest, store, source="ngc")
    with pytest.raises(ValueError, match=r"missing.zip: download failed"):
        download_bundle("zoo_threshold", dest, store, url=f"{base}/missing.zip")


def test_cli_download_then_list_and_segment(
    tmp_path: Path, served: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, base = served
    archive = _served_bundle(tmp_path, folder, top="")  # configs at the zip's top level
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert main(["bundle", "download", "zoo_threshold", "--url", f"{base}/{archive.name}"]) == 0
    out = capsys.readouterr().out
    installed = tmp_path / "data" / "medseg" / "bundles" / "zoo_threshold"
    assert f"installed {installed}" in out and "trusted: sha256" in out
    assert zipfile.is_zipfile(archive) and (installed / "models" / "model.pt").is_file()
    assert main(["bundle", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"{installed.parent}: 1 bundle(s)" in listing and "zoo_threshold" in listing
    # downloaded bundles are trusted: `--bundle NAME` opens it without --trust-bundle
    from pipelines.cli.bundle import open_bundle

    assert open_bundle("zoo_threshold") == installed
