"""The trust boundary for bundle code: which bundle folders medseg may parse.

A bundle's configs are programs: every ``$`` expression is evaluated with Python's ``eval`` and
every ``_target_`` names a class or function that is imported and called (MONAI warns about this,
advisory GHSA-873f-pvrv-4x83); a config may also import the bundle's ``scripts/``. So medseg
parses a bundle's configs only when the bundle is **trusted**:

1. it lies under a trusted folder: the project's ``bundles/`` in a source checkout (the caller
   passes the folders, see :func:`pipelines.bundles.find.source_bundles_folder`);
2. or its content digest (:func:`bundle_digest`) is recorded in the **trust store**, a JSON file
   written by ``medseg bundle download`` (source ``download``) and by ``--trust-bundle`` (source
   ``user``). A bundle changed after it was trusted has another digest and is refused again.

The trust store is ``$MEDSEG_TRUST_FILE`` when set, else ``$XDG_CONFIG_HOME/medseg/trusted_bundles.json``
(``~/.config/medseg/trusted_bundles.json``): :func:`trust_store_path`. Library code reads no
environment variable; the command line passes ``os.environ``. Writes to the store hold an exclusive
``fcntl.flock`` on ``<store>.lock`` beside it for the whole read-change-write, so two commands
trusting bundles at once (two ``--trust-bundle`` runs, a download) cannot lose each other's record.

The digest covers every file of the bundle folder (paths and bytes) except weights files that are
only ever read as data (``*.pt``, ``*.pth``, ``*.safetensors``: loaded with
``torch.load(weights_only=True)``, which runs no code), so retrained weights need no new trust,
while TorchScript (``*.ts``, a program), configs, ``scripts/`` and docs do. Checking trust reads
files as bytes and parses nothing. This module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipelines.bundles.layout import config_path

logger = logging.getLogger(__name__)

__all__ = [
    "DATA_SUFFIXES",
    "TRUST_FILE_ENV",
    "TrustRecord",
    "UntrustedBundleError",
    "bundle_digest",
    "read_trust_store",
    "require_trusted",
    "trust_bundle",
    "trust_reason",
    "trust_status",
    "trust_store_path",
    "trusted_bundle_folder",
]

TRUST_FILE_ENV = "MEDSEG_TRUST_FILE"
"""Environment variable naming the trust store file (tests point it into a temporary folder)."""

DATA_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".safetensors")
"""Weights files left out of :func:`bundle_digest`: read as data only (``weights_only=True``)."""

# Compiled Python (``__pycache__/*.pyc``) is hashed like any code: Python may run a ``.pyc`` instead of the
# hashed source (an unchecked hash-based one always, a timestamp one whose header matches the source's), so a
# planted one must void trust. A bundle run with plain ``monai.bundle run`` after trusting it needs trusting again.
_SKIPPED_DIRS = (".git",)
_STORE_VERSION = 1


class UntrustedBundleError(ValueError):
    """A bundle folder medseg will not parse: its code was not trusted (or changed since)."""


@dataclass(frozen=True)
class TrustRecord:
    """One entry of the trust store.

    Attributes:
        sha256: the bundle's :func:`bundle_digest`.
        path: the folder it was trusted at (absolute; for people reading the store).
        source: ``"user"`` (``--trust-bundle``) or ``"download"`` (``medseg bundle download``).
        trusted: when (ISO 8601, UTC).
        origin: where a download came from (URL or source and name), ``""`` otherwise.
        archive_sha256: sha256 of the downloaded zip when there was one, ``""`` otherwise.
    """

    sha256: str
    path: str
    source: str
    trusted: str
    origin: str = ""
    archive_sha256: str = ""


def trust_store_path(environ: Mapping[str, str]) -> Path:
    """``$MEDSEG_TRUST_FILE``, else ``$XDG_CONFIG_HOME/medseg/trusted_bundles.json`` (``~/.config/...``).

    Args:
        environ: the environment (e.g. ``os.environ``). A relative ``XDG_CONFIG_HOME`` is ignored,
            as the XDG Base Directory specification says.
    """
    explicit = environ.get(TRUST_FILE_ENV, "")
    if explicit:
        return Path(explicit).expanduser()
    config_home = environ.get("XDG_CONFIG_HOME", "")
    if not config_home or not Path(config_home).is_absolute():
        home = environ.get("HOME", "")
        config_home = str((Path(home) if home else Path.home()) / ".config")
    return Path(config_home) / "medseg" / "trusted_bundles.json"


def _bundle_files(root: Path) -> Iterable[tuple[str, Path | None, str]]:
    """``(relative path, file or None, link target)`` of everything in ``root``, sorted, links not followed."""
    entries: list[tuple[str, Path | None, str]] = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS]
        base = Path(folder)
        for name in list(dirs):
            if (base / name).is_symlink():  # a linked folder: record where it points, do not walk it
                entries.append(((base / name).relative_to(root).as_posix(), None, os.readlink(base / name)))
        for name in files:
            path = base / name
            rel = path.relative_to(root).as_posix()
            if path.suffix.lower() in DATA_SUFFIXES:
                continue
            entries.append((rel, path, os.readlink(path) if path.is_symlink() else ""))
    return sorted(entries)


def bundle_digest(root: str | Path) -> str:
    """sha256 over the bundle's files (relative paths and bytes), weights data files excluded.

    Nothing is parsed. A symbolic link is recorded with its target, and a linked file's bytes are
    hashed too, so re-pointing a link changes the digest.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: bundle folder does not exist")
    digest = hashlib.sha256()
    for rel, path, link in _bundle_files(root):
        digest.update(f"{rel}\0{link}\0".encode())
        if path is not None and path.is_file():
            with open(path, "rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def read_trust_store(store: Path) -> list[TrustRecord]:
    """The records of a trust store file (none when it does not exist).

    Raises:
        ValueError: the file is not a trust store medseg wrote (names the file and what to do).
    """
    store = Path(store)
    if not store.is_file():
        return []
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
        records = [TrustRecord(**entry) for entry in data["bundles"]]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{store}: not a medseg trust store ({type(err).__name__}: {err}); fix or delete it "
            f"(trusted bundles are then refused until trusted again), or point {TRUST_FILE_ENV} elsewhere"
        ) from err
    return records


@contextlib.contextmanager
def _store_lock(store: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<store>.lock`` (created beside the store; never removed).

    The lock file is separate from the store because the store is replaced by a rename on each
    write (:func:`pipelines.io.writers.write_json`), which a lock on the store itself would not survive.
    """
    store = Path(store)
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store.with_name(store.name + ".lock"), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def trust_status(root: str | Path, store: Path, trusted_folders: Iterable[Path] = ()) -> str:
    """How a bundle folder is trusted, in one word, for ``medseg bundle list``.

    Returns:
        ``"shipped"`` (under one of ``trusted_folders``, the project's ``bundles/``), ``"downloaded"``
        (recorded by ``medseg bundle download``), ``"trusted"`` (recorded by ``--trust-bundle``) or
        ``"untrusted"`` (neither, or changed since it was recorded). Reads bytes, parses nothing.

    Raises:
        ValueError: the trust store is not one medseg wrote.
    """
    resolved = Path(root).resolve()
    if any(resolved.is_relative_to(Path(folder).resolve()) for folder in trusted_folders):
        return "shipped"
    digest = bundle_digest(resolved)
    sources = [record.source for record in read_trust_store(store) if record.sha256 == digest]
    if not sources:
        return "untrusted"
    return "downloaded" if "download" in sources else "trusted"


def trust_reason(
    root: str | Path, store: Path, trusted_folders: Iterable[Path] = (), *, digest: str | None = None
) -> str | None:
    """Why ``root`` is trusted (``"under <folder>"`` / ``"recorded <when> (<source>)"``), or None.

    Args:
        root: the bundle folder.
        store: the trust store file.
        trusted_folders: folders whose bundles are trusted as they are (the project's ``bundles/``).
        digest: the bundle's :func:`bundle_digest` when the caller has it already.
    """
    resolved = Path(root).resolve()
    for folder in trusted_folders:
        if resolved.is_relative_to(Path(folder).resolve()):
            return f"under {folder}"
    digest = digest or bundle_digest(resolved)
    for record in read_trust_store(store):
        if record.sha256 == digest:
            return f"recorded {record.trusted} ({record.source})"
    return None


def require_trusted(root: str | Path, store: Path, trusted_folders: Iterable[Path] = (), *, how: str = "") -> str:
    """Refuse a bundle that is not trusted, before anything of it is parsed.

    Args:
        root: the bundle folder.
        store: the trust store file (:func:`trust_store_path`).
        trusted_folders: folders trusted as they are.
        how: how the user trusts a bundle, for the message (the command line passes
            ``"add --trust-bundle to the command"``).

    Returns:
        Why it is trusted (see :func:`trust_reason`).

    Raises:
        UntrustedBundleError: (a ``ValueError``) not trusted, or changed since it was; the message
            says that ``$`` expressions and ``_target_`` run code and how to trust the bundle.
    """
    root = Path(root)
    folders = list(trusted_folders)
    digest = bundle_digest(root)
    reason = trust_reason(root, store, folders, digest=digest)
    if reason is not None:
        logger.debug("%s: trusted, %s", root, reason)
        return reason
    resolved = str(root.resolve())
    earlier = [r for r in read_trust_store(store) if r.path == resolved]
    state = "it is not trusted"
    if earlier:
        last = earlier[-1]
        state = f"it changed since it was trusted on {last.trusted} (sha256 {last.sha256[:12]}, now {digest[:12]})"
    where = ", ".join(str(f) for f in folders)
    raise UntrustedBundleError(
        f"{root}: refusing to parse this bundle: {state}. A bundle's configs run code: every `$` expression "
        "is evaluated as Python and every `_target_` is imported and called, with your permissions. "
        f"Read its configs (and scripts/), then {how or 'trust it'} to record its sha256 in {store}; "
        f"bundles {'under ' + where + ' and ' if where else ''}fetched with `medseg bundle download` are trusted"
    )


def trust_bundle(
    root: str | Path,
    store: Path,
    *,
    source: str = "user",
    origin: str = "",
    archive_sha256: str = "",
    digest: str | None = None,
) -> TrustRecord:
    """Record the bundle's current content as trusted in ``store`` (written atomically).

    Returns:
        The record written (an earlier record of the same digest is replaced).
    """
    from pipelines.io.writers import write_json  # writers imports nibabel: not at module import

    root = Path(root).resolve()
    record = TrustRecord(
        sha256=digest or bundle_digest(root),
        path=str(root),
        source=source,
        trusted=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        origin=origin,
        archive_sha256=archive_sha256,
    )
    with _store_lock(store):  # read, change, write as one step: a concurrent writer waits
        records = [r for r in read_trust_store(store) if r.sha256 != record.sha256]
        records.append(record)
        data: dict[str, Any] = {"version": _STORE_VERSION, "bundles": [vars(r) for r in records]}
        write_json(data, store)
    logger.info("%s: trusted (sha256 %s), recorded in %s", root, record.sha256[:12], store)
    return record


def trusted_bundle_folder(
    path: str | Path,
    *,
    store: Path,
    cache: Path,
    trusted_folders: Iterable[Path] = (),
    trust: bool = False,
    how: str = "",
) -> Path:
    """The bundle folder to parse for a folder or ``.zip`` a person named, once it is known to be trusted.

    A zip is unpacked first (:func:`pipelines.bundles.archive.unpack_bundle`; unpacking parses
    nothing), so a zip and its unpacked folder are trusted alike, by the folder's digest.

    Args:
        path: a bundle folder or a zipped bundle.
        store: the trust store file.
        cache: where zips are unpacked.
        trusted_folders: folders whose bundles are trusted as they are.
        trust: record the bundle as trusted first (``--trust-bundle``).
        how: how to trust a bundle, for the refusal message.

    Raises:
        UntrustedBundleError: (a ``ValueError``) not trusted; nothing of it was parsed.
        FileNotFoundError, ValueError: no such folder or file, a zip that cannot be unpacked safely.
    """
    from pipelines.bundles.archive import is_bundle_archive, unpack_bundle

    folder = unpack_bundle(path, cache) if is_bundle_archive(path) else Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: bundle folder does not exist")
    inference = config_path(folder, "inference")
    if not inference.is_file():  # not a bundle at all: say so before speaking of trust
        raise FileNotFoundError(
            f"{inference}: bundle has no inference config (expected the MONAI Model Zoo layout: "
            "configs/inference.json or configs/inference.yaml, configs/metadata.json, models/model.pt)"
        )
    if trust:
        trust_bundle(folder, store, source="user")
    require_trusted(folder, store, trusted_folders, how=how)
    return folder
