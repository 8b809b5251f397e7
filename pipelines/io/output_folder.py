"""Checks on an output folder made before any inference time is spent."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["check_output_folder", "estimated_case_bytes"]


def estimated_case_bytes(voxels: int) -> int:
    """A generous estimate of one case's outputs: the label map, DICOM-SEG, preview and statistics."""
    return 2 * int(voxels) + 16 * 2**20


def _existing_ancestor(path: Path) -> Path:
    current = path
    while not os.path.lexists(current):
        if current.parent == current:
            break
        current = current.parent
    return current


def check_output_folder(folder: str | os.PathLike[str], needed_bytes: int = 0) -> None:
    """Refuse an output folder that cannot take the results, before they are computed.

    Nothing is created: a missing folder is checked through the nearest folder above it that exists.

    Raises:
        NotADirectoryError: the output path (or a part of it) is a file.
        PermissionError: the folder, or the folder it would be created in, is not writable.
        OSError: less free space than ``needed_bytes`` (errno ENOSPC).
    """
    folder = Path(folder)
    anchor = _existing_ancestor(folder)
    if not anchor.is_dir():
        raise NotADirectoryError(f"{folder}: output folder: {anchor} is a file, expected a folder")
    try:
        # Creating a file is the only test that holds for read-only mounts and for root alike.
        fd, probe = tempfile.mkstemp(prefix=".medseg-write-test-", dir=anchor)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        verb = "is not writable" if anchor == folder else f"cannot be created (cannot write in {anchor})"
        raise PermissionError(f"{folder}: output folder {verb}: {err.strerror or err}") from err
    free = shutil.disk_usage(anchor).free
    if needed_bytes and free < needed_bytes:
        raise OSError(
            errno.ENOSPC,
            f"{folder}: output folder has {free / 2**20:,.0f} MiB free; this case needs about "
            f"{needed_bytes / 2**20:,.0f} MiB",
        )
