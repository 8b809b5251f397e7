"""``medseg bundle download``: fetch a bundle with ``monai.bundle.download``, check it, install it, trust it.

The download goes into a private staging folder beside the destination; MONAI fetches the zip
(from the Model Zoo's GitHub release, MONAI hosting, the Hugging Face Hub, or a URL) and unpacks
it, refusing members that would land outside the folder (its ``safe_extract_member``, which this
module requires). Then medseg checks the result before anything is installed:

- a ``sha256`` given by the caller must match the downloaded zip (MONAI's sources publish no
  checksum for bundle zips; the Hugging Face Hub checks its own files' hashes while downloading);
- the staging folder must hold one bundle (``configs/inference.json`` or ``.yaml``), no symbolic
  link, nothing but the bundle;

and only then is the bundle folder renamed into the destination (the user's bundle folder, on
the bundle search path, so ``medseg bundle list`` shows it) and recorded as trusted with its
digest, the zip's sha256 and where it came from. A failed download leaves nothing behind.
Nothing of the bundle is parsed here.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.bundles.archive import file_sha256
from pipelines.bundles.layout import is_bundle
from pipelines.bundles.trust import TrustRecord, bundle_digest, trust_bundle

logger = logging.getLogger(__name__)

__all__ = ["SOURCES", "Downloaded", "download_bundle"]

SOURCES: tuple[str, ...] = ("github", "monaihosting", "huggingface_hub")
"""Where ``monai.bundle.download`` can fetch a bundle from by name (``--url`` takes any URL)."""


@dataclass(frozen=True)
class Downloaded:
    """A bundle installed by :func:`download_bundle`.

    Attributes:
        path: the installed bundle folder.
        origin: where it came from (the URL, or ``source:name@version``).
        archive_sha256: sha256 of the downloaded zip (``""`` for a Hub snapshot, which has none).
        trust: the trust record written.
    """

    path: Path
    origin: str
    archive_sha256: str
    trust: TrustRecord


def _safe_name(name: str) -> str:
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or name.startswith("."):
        raise ValueError(f"bundle name {name!r}: expected a plain folder name such as spleen_ct_segmentation")
    return name


def download_bundle(
    name: str,
    dest: Path,
    store: Path,
    *,
    version: str | None = None,
    source: str = "github",
    url: str | None = None,
    sha256: str | None = None,
    replace: bool = False,
    progress: bool = False,
) -> Downloaded:
    """Download bundle ``name`` into ``dest/<name>`` and record it as trusted in ``store``.

    Args:
        name: the bundle's name (the Zoo's, e.g. ``spleen_ct_segmentation``); the folder it is installed as.
        dest: the folder to install into (the user's bundle folder).
        store: the trust store file.
        version: the version to fetch (None: the latest the source has).
        source: one of :data:`SOURCES`; ignored with ``url``.
        url: fetch this zip instead.
        sha256: the zip's expected sha256 (hex); refused on a mismatch.
        replace: replace an installed bundle of that name (otherwise refused).
        progress: MONAI's progress bar.

    Raises:
        ValueError: a bad name/source, an existing bundle without ``replace``, a download that
            fails, an archive that is corrupt or unsafe, a checksum mismatch, or no bundle inside.
    """
    _safe_name(name)
    if url is None and source not in SOURCES:
        raise ValueError(f"bundle source {source!r}: expected one of {', '.join(SOURCES)} (or --url URL)")
    if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower())):
        raise ValueError(f"sha256 {sha256!r}: expected 64 hexadecimal digits")
    target = Path(dest) / name
    if target.exists() and not replace:
        raise ValueError(f"{target}: a bundle of that name is installed already; remove it or pass --replace")
    try:  # MONAI's member check on unpacking; without it a zip could write outside the staging folder
        from monai.apps.utils import safe_extract_member  # noqa: F401
    except ImportError as err:
        raise ValueError("medseg bundle download needs MONAI >= 1.5 (safe unpacking of bundle archives)") from err
    from monai.bundle import download

    origin = url or f"{source}:{name}" + (f"@{version}" if version else "")
    Path(dest).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", suffix=".download", dir=dest))
    try:
        try:
            download(
                name=name,
                version=version,
                bundle_dir=str(staging),
                source=source,
                url=url,
                repo=f"MONAI/{name}" if source == "huggingface_hub" else None,
                progress=progress,
            )
        except (zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"{origin}: the downloaded archive is corrupt ({err}); nothing was installed") from err
        except ValueError as err:
            raise ValueError(f"{origin}: refused ({err}); nothing was installed") from err
        except (OSError, RuntimeError) as err:  # urllib's errors are OSErrors; MONAI raises RuntimeError too
            raise ValueError(f"{origin}: download failed ({err}); nothing was installed") from err
        archive_sha256 = _check_archive(staging, origin, sha256)
        folder = _bundle_folder(staging, name, origin)
        digest = bundle_digest(folder)
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    record = trust_bundle(target, store, source="download", origin=origin, archive_sha256=archive_sha256, digest=digest)
    logger.info("%s: installed from %s and trusted (sha256 %s)", target, origin, digest[:12])
    return Downloaded(target, origin, archive_sha256, record)


def _check_archive(staging: Path, origin: str, sha256: str | None) -> str:
    """The sha256 of the zip MONAI downloaded into ``staging`` (checked against ``sha256``), ``""`` if none."""
    zips = sorted(staging.glob("*.zip"))
    if not zips:
        if sha256 is not None:
            raise ValueError(f"{origin}: no archive was downloaded, so the given sha256 cannot be checked")
        return ""
    actual = file_sha256(zips[0])
    if sha256 is not None and actual != sha256.lower():
        raise ValueError(
            f"{origin}: sha256 of the download is {actual}, expected {sha256.lower()}; nothing was installed"
        )
    for archive in zips:
        archive.unlink()
    return actual


def _bundle_folder(staging: Path, name: str, origin: str) -> Path:
    """The one bundle folder MONAI unpacked into ``staging``; refuses links and anything unexpected."""
    for path in staging.rglob("*"):
        if path.is_symlink():
            raise ValueError(f"{origin}: the bundle holds a symbolic link ({path.relative_to(staging)}); refused")
    if is_bundle(staging):  # an archive with its configs at the top level
        inner = staging / f".{name}.bundle"
        inner.mkdir()
        for child in list(staging.iterdir()):
            if child != inner:
                child.rename(inner / child.name)
        return inner
    folders = [c for c in staging.iterdir() if c.is_dir() and not c.name.startswith(("__MACOSX", "."))]
    bundles = [c for c in folders if is_bundle(c)]
    if len(bundles) != 1:
        found = ", ".join(sorted(c.name for c in staging.iterdir())) or "nothing"
        raise ValueError(
            f"{origin}: expected one bundle (a folder with configs/inference.json or .yaml) in the archive, "
            f"found {found}; nothing was installed"
        )
    return bundles[0]
