"""Where bundles are found: the bundle search path, a bundle by name, the bundles of a folder.

A bundle is given as a folder path or as a name. A name is looked up in the folders of the
**bundle search path**, in this order (the first folder holding ``<name>/`` wins):

1. the folders the user names (``--bundles DIR`` on the command line, repeatable);
2. the project's ``bundles/`` folder, when the package runs from a source checkout (or an
   editable install of one): :func:`source_bundles_folder`;
3. the user's bundle folder, ``$XDG_DATA_HOME/medseg/bundles``, by default
   ``~/.local/share/medseg/bundles``: :func:`user_bundles_folder`. This is where a wheel install
   finds bundles; copy or download bundles there.

Library code reads no environment variable: functions here take the search path, or the
environment mapping to build it from (the command line passes ``os.environ``), as arguments.
This module imports nothing heavy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pipelines.bundles.layout import is_bundle

logger = logging.getLogger(__name__)

__all__ = [
    "bundles_in",
    "default_search_path",
    "find_bundle",
    "source_bundles_folder",
    "user_bundles_folder",
]


def source_bundles_folder() -> Path | None:
    """The project's ``bundles/`` folder when this package runs from a source checkout, else None.

    A source checkout is recognised by ``pyproject.toml`` and ``bundles/`` beside the ``pipelines``
    package; a wheel install has neither next to it.
    """
    project = Path(__file__).resolve().parents[2]
    folder = project / "bundles"
    return folder if folder.is_dir() and (project / "pyproject.toml").is_file() else None


def user_bundles_folder(environ: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/medseg/bundles``; ``~/.local/share/medseg/bundles`` when it is unset or relative.

    Args:
        environ: the environment to read ``XDG_DATA_HOME`` and ``HOME`` from (e.g. ``os.environ``).
            A relative ``XDG_DATA_HOME`` is ignored, as the XDG Base Directory specification says.
    """
    data_home = environ.get("XDG_DATA_HOME", "")
    if not data_home or not Path(data_home).is_absolute():
        home = environ.get("HOME", "")
        data_home = str((Path(home) if home else Path.home()) / ".local" / "share")
    return Path(data_home) / "medseg" / "bundles"


def default_search_path(extra: Iterable[str | Path] = (), *, environ: Mapping[str, str]) -> list[Path]:
    """The bundle search path: ``extra`` folders, the source checkout's ``bundles/``, the user folder.

    Args:
        extra: folders searched first, in order (``--bundles DIR``).
        environ: the environment for :func:`user_bundles_folder`.

    Returns:
        The folders in search order, each once (folders that do not exist are kept, so that a
        listing or an error message can show them).
    """
    source = source_bundles_folder()
    candidates = [*(Path(p) for p in extra), *([source] if source else []), user_bundles_folder(environ)]
    path: list[Path] = []
    seen: set[Path] = set()
    for folder in candidates:
        key = folder.expanduser().resolve()
        if key not in seen:
            seen.add(key)
            path.append(folder.expanduser())
    return path


def _is_path_like(value: str) -> bool:
    """Whether ``value`` was meant as a path rather than a bare bundle name."""
    separators = [s for s in (os.sep, os.altsep, "/") if s]
    return any(s in value for s in separators) or value.startswith((".", "~")) or Path(value).is_absolute()


def find_bundle(name_or_path: str | Path, search_path: Sequence[Path]) -> Path:
    """The bundle folder a ``--bundle`` value means.

    A folder (or a ``.zip`` file, a zipped bundle) that exists is used as is (relative to the
    working folder). Otherwise a bare name (no path separator, not starting with ``.`` or ``~``)
    is looked up as ``<folder>/<name>`` in each folder of ``search_path`` in order.

    Args:
        name_or_path: a folder path, or a bundle's folder name such as ``"ct_abdomen_unet"``.
        search_path: folders to look in (see :func:`default_search_path`).

    Returns:
        The folder or zip file; whether it holds a valid bundle is for :func:`pipelines.bundles.bundle.load_bundle`
        (and :func:`pipelines.bundles.archive.unpack_bundle` for a zip) to say.

    Raises:
        FileNotFoundError: a path that does not exist, or a name no folder of the search path
            holds; the message lists the folders searched.
        ValueError: an empty value.
    """
    value = str(name_or_path).strip()
    if not value:
        raise ValueError("bundle: expected a folder path or a bundle name, got an empty string")
    given = Path(value).expanduser()
    if given.is_dir() or (given.is_file() and given.suffix.lower() == ".zip"):
        return given  # a zipped bundle is unpacked by pipelines.bundles.archive.unpack_bundle
    if given.exists():
        raise ValueError(f"{value}: not a bundle: expected a bundle folder or a zipped bundle (.zip)")
    if isinstance(name_or_path, Path) or _is_path_like(value):
        raise FileNotFoundError(f"{value}: bundle folder does not exist")
    for folder in search_path:
        candidate = Path(folder) / value
        if candidate.is_dir():
            logger.debug("bundle %r found in %s", value, folder)
            return candidate
    searched = "; ".join(f"{f}" if Path(f).is_dir() else f"{f} (does not exist)" for f in search_path)
    raise FileNotFoundError(
        f"bundle {value!r}: no such folder here, and no bundle of that name in the bundle search path "
        f"({searched or 'empty'}); give a bundle folder, or add the folder that holds it with --bundles DIR"
    )


def bundles_in(folder: str | Path) -> list[Path]:
    """The bundles (sub-folders holding ``configs/inference.json`` or ``.yaml``) of ``folder``, by name.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: bundles folder does not exist")
    return sorted((p for p in folder.iterdir() if is_bundle(p)), key=lambda p: p.name)
