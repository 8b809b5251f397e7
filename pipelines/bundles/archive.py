"""A bundle given as a ``.zip``: checked member by member, unpacked once into a cache keyed by its sha256.

MONAI accepts a zipped bundle; so does medseg. The archive is unpacked into
``<cache>/<sha256 of the zip>/<bundle folder>`` the first time it is seen and reused afterwards
(a changed zip has another sha256, so another folder). Before anything is written every member
is checked: no absolute path, no ``..``, no symbolic link, no member outside one bundle folder
(zip-slip). Unpacking goes to a temporary folder renamed into place, so a half-unpacked bundle
is never seen. Nothing is parsed here: the unpacked folder then goes through the trust check
like any other (:mod:`pipelines.bundles.trust`).

The cache folder is ``$XDG_CACHE_HOME/medseg/bundles`` (``~/.cache/medseg/bundles``):
:func:`bundle_cache_folder`. This module imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from pipelines.bundles.layout import is_bundle

logger = logging.getLogger(__name__)

__all__ = ["bundle_cache_folder", "check_members", "file_sha256", "is_bundle_archive", "unpack_bundle"]


def bundle_cache_folder(environ: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/medseg/bundles``; ``~/.cache/medseg/bundles`` when it is unset or relative."""
    cache_home = environ.get("XDG_CACHE_HOME", "")
    if not cache_home or not Path(cache_home).is_absolute():
        home = environ.get("HOME", "")
        cache_home = str((Path(home) if home else Path.home()) / ".cache")
    return Path(cache_home) / "medseg" / "bundles"


def is_bundle_archive(path: str | Path) -> bool:
    """Whether ``path`` is a file named ``*.zip`` (a bundle in MONAI's zip form, unchecked)."""
    path = Path(path)
    return path.suffix.lower() == ".zip" and path.is_file()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_members(archive: zipfile.ZipFile, where: Path) -> str:
    """Check every member is a plain file or folder inside one top folder (or none); return that folder.

    Returns:
        The top folder shared by every member (``""`` when the configs are at the top level).

    Raises:
        ValueError: an absolute path, a ``..`` part, a drive letter, a symbolic link, or members
            spread over several top folders; names the member.
    """
    tops: set[str] = set()
    for info in archive.infolist():
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise ValueError(f"{where}: member {name!r} would be written outside the bundle folder (zip-slip); refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ValueError(f"{where}: member {name!r} is a symbolic link; bundle archives may hold only files")
        if parts:
            tops.add(parts[0] if len(parts) > 1 or info.is_dir() else "")
    if not tops:
        raise ValueError(f"{where}: empty archive; expected a bundle (configs/inference.json, configs/metadata.json)")
    if len(tops) > 1:
        return ""
    return tops.pop()


def unpack_bundle(path: str | Path, cache: Path) -> Path:
    """The bundle folder of a zipped bundle, unpacked once into ``cache/<sha256>/``.

    Args:
        path: the ``.zip`` file.
        cache: the cache folder (:func:`bundle_cache_folder`).

    Returns:
        The unpacked bundle folder (the one holding ``configs/inference.*``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a zip archive, an unsafe member (see :func:`check_members`), or no bundle inside.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: bundle archive does not exist")
    sha256 = file_sha256(path)
    target = Path(cache) / sha256
    if not target.is_dir():
        _unpack(path, target)
    else:
        logger.debug("%s: already unpacked in %s", path, target)
    return _bundle_in(target, path)


def _unpack(path: Path, target: Path) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{path}: not a readable zip archive ({err}); expected a zipped MONAI bundle") from err
    with archive:
        check_members(archive, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name[:12]}-", suffix=".partial", dir=target.parent))
        try:
            archive.extractall(staging)  # safe: every member name was checked above
            bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"{path}: member {bad!r} is corrupt (CRC mismatch); refused")
            os.replace(staging, target)
        except zipfile.BadZipFile as err:
            raise ValueError(f"{path}: corrupt zip archive ({err}); refused") from err
        except OSError:
            if target.is_dir():  # another process unpacked the same archive first
                return
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("%s: unpacked into %s", path, target)


def _bundle_in(target: Path, archive: Path) -> Path:
    """The bundle folder inside an unpacked archive: the top level or its one sub-folder."""
    if is_bundle(target):
        return target
    children = [c for c in target.iterdir() if c.is_dir() and not c.name.startswith(("__MACOSX", "."))]
    if len(children) == 1 and is_bundle(children[0]):
        return children[0]
    raise ValueError(
        f"{archive}: no bundle in this archive; expected configs/inference.json (or .yaml) at its top level "
        "or inside one folder"
    )
