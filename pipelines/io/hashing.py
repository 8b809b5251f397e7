"""Checksums of inputs and files, for provenance (run.json) and for resuming batch runs."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_member", "folder_members", "input_sha256", "sha256_file"]


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def folder_members(folder: Path) -> list[Path]:
    """The files under ``folder``, in the order a folder checksum takes them (sorted, recursive)."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


def add_member(digest: Any, name: str, file_digest: bytes) -> None:
    """Add one file to a folder checksum: its relative name, a NUL, then its raw sha256."""
    digest.update(name.encode() + b"\0")
    digest.update(file_digest)


def input_sha256(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> str:
    """sha256 of an input as given: one file, a DICOM folder, or several channel files.

    One file: the sha256 of its bytes. A folder, or several paths: the sha256 of the sequence of
    (relative name, file sha256) of every file, folders walked in sorted order. A DICOM folder is
    hashed whole, not only the series that was read: the series rule chooses from the folder, so
    any change to the folder can change what is segmented. ``run.json`` and the batch ledger
    record this same value.

    Raises:
        FileNotFoundError: an input path does not exist.
    """
    paths = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
    if len(paths) == 1 and paths[0].is_file():
        return sha256_file(paths[0])
    digest = hashlib.sha256()
    for path in paths:
        if path.is_dir():
            for member in folder_members(path):
                add_member(digest, member.relative_to(path).as_posix(), bytes.fromhex(sha256_file(member)))
        elif path.is_file():
            add_member(digest, path.name, bytes.fromhex(sha256_file(path)))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return digest.hexdigest()
