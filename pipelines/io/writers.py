"""Writers that never leave a half-written file behind.

Every output goes to a temporary name in the destination folder and is renamed into place only
once it is complete, so a crash or a kill leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from isal import igzip

logger = logging.getLogger(__name__)

__all__ = ["Written", "atomic_path", "current_umask", "json_bytes", "write_bytes", "write_json", "write_labels"]


@dataclass(frozen=True)
class Written:
    """A file a writer produced, with the sha256 of the bytes it wrote (no re-read needed)."""

    path: Path
    sha256: str


def write_bytes(data: bytes, path: str | os.PathLike[str]) -> Written:
    """Write ``data`` to ``path`` atomically and return its checksum, computed from ``data`` itself.

    Every output file goes through here (or :func:`atomic_path`), so an output is hashed by the
    writer that wrote it and a batch ledger never reads an output back.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
    return Written(Path(path), hashlib.sha256(data).hexdigest())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.png``...) so that libraries
    choosing a format by extension write the right one. On error the temporary file is removed.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name.split('.')[0]}-", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates the file private (0600); give the output the permissions of a normal file.
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_bytes(data: Any) -> bytes:
    """``data`` as the indented UTF-8 JSON every medseg JSON file uses."""
    return (json.dumps(data, indent=2, default=_json_default) + "\n").encode("utf-8")


def write_json(data: Any, path: str | os.PathLike[str]) -> Written:
    """Write ``data`` as indented JSON, atomically; returns the file and its sha256."""
    return write_bytes(json_bytes(data), path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_labels(
    labels: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike[str],
    *,
    header: nib.Nifti1Header | None = None,
) -> Written:
    """Write an integer label map as NIfTI, atomically; returns the file and its sha256.

    Args:
        labels: integer array ``(i, j, k)``; stored as uint8 when values fit, else uint16.
        affine: 4x4 voxel-to-RAS (mm) matrix.
        path: destination, usually ``.../labels.nii.gz``.
        header: the input's NIfTI header, when the input was NIfTI. Reusing it keeps the
            sform/qform codes and stored affine bit for bit the same as the input's.
    """
    if labels.ndim != 3:
        raise ValueError(f"{path}: expected a 3D label map, got shape {labels.shape}")
    if np.issubdtype(labels.dtype, np.floating):
        raise TypeError(f"{path}: label map must be integer, got {labels.dtype}")
    high = int(labels.max()) if labels.size else 0
    dtype = np.uint8 if high <= np.iinfo(np.uint8).max else np.uint16
    data = np.asarray(labels, dtype=dtype)
    if header is not None:
        hdr = header.copy()
        hdr.set_data_dtype(dtype)
        hdr.set_slope_inter(1.0, 0.0)
        image = nib.Nifti1Image(data, header.get_best_affine(), header=hdr)
    else:
        image = nib.Nifti1Image(data, affine)
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    raw = image.to_bytes()
    # ISA-L's deflate at level 1: standard gzip, ~7x faster than zlib's level 1 and smaller for label maps
    # (512x512x200 phantom labels: 0.05 s and 0.24 MB against 0.38 s and 0.43 MB)
    return write_bytes(igzip.compress(raw, compresslevel=1, mtime=0) if str(path).endswith(".gz") else raw, path)
