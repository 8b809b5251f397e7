"""An exclusive lock on a batch output folder: one ``medseg batch`` run writes into a folder at a time.

The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``OUTDIR/.medseg-batch.lock``, a file holding JSON
that names its holder: ``{"host", "pid", "started" (ISO 8601 UTC), "run_id" (torchrun's run id or
null), "world_size"}``. A second run on the same folder, with or without ``--resume``, fails at once
with :class:`OutputFolderLocked`, naming the holder's host and PID. The ranks of one torchrun run
share the lock: rank 0 takes it before anything else and the other ranks wait for it (see
:func:`pipelines.batch.run.run_batch`). The holder removes the file when it releases the lock.

What holds where:

* Local filesystems (ext4, XFS, btrfs, tmpfs...): the lock excludes every process of the machine.
  The kernel releases it when the holding process ends, however it ends (``kill -9``, a crash), so a
  lock is never stale; a lock file left by a killed run holds no lock and is taken over.
* NFS, Linux clients since 2.6.12: ``flock`` is carried out as a whole-file POSIX lock on the
  server (NLM for NFSv3, NFSv4's own locking), so it also excludes runs on other machines that
  mount the same export. It does not when the export is mounted with ``nolock`` or
  ``local_lock=flock|all`` (the lock is then local to each machine), and it needs the lock service
  (``rpc.statd``/``lockd``) for NFSv3. When a client machine dies, the server keeps its lock until
  the client's lease or grace period ends (about 90 s for NFSv4), and refuses a new run until then.
* Lustre: shared by all nodes when mounted with ``-o flock``, one node only with ``-o localflock``;
  without either (and on other filesystems that refuse locks: ``ENOLCK``, ``ENOSYS``,
  ``EOPNOTSUPP``) ``flock`` fails: the run goes on without the lock and says so in a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["LOCK_FILE", "FolderLock", "LockHolder", "OutputFolderLocked", "lock_output_folder"]

LOCK_FILE = ".medseg-batch.lock"
"""The lock file inside the output folder."""

_NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
"""``flock`` errors that mean the filesystem does not lock (Lustre without ``-o flock``, some FUSE)."""
_ATTEMPTS = 5


class OutputFolderLocked(BlockingIOError):
    """Another run holds the output folder's lock; the message names its host and PID."""


@dataclass(frozen=True)
class LockHolder:
    """The run that holds an output folder's lock, as its lock file records it.

    Attributes:
        host: the machine's host name.
        pid: the process id of the holder (rank 0 of a torchrun run).
        started: when the lock was taken (ISO 8601 UTC).
        run_id: torchrun's run id (``TORCHELASTIC_RUN_ID``), or None outside torchrun.
        world_size: ranks of the holding run.
    """

    host: str
    pid: int
    started: str
    run_id: str | None = None
    world_size: int = 1

    def describe(self) -> str:
        """``host H, PID P, started T`` (and the torchrun run id and ranks when there are several)."""
        text = f"host {self.host}, PID {self.pid}, started {self.started}"
        if self.run_id or self.world_size > 1:
            text += f", torchrun run {self.run_id or '?'} of {self.world_size} ranks"
        return text

    @classmethod
    def from_json(cls, text: str) -> LockHolder | None:
        """The holder recorded in a lock file, or None when it is empty or unreadable (being written)."""
        try:
            data: Any = json.loads(text)
            return cls(
                host=str(data["host"]),
                pid=int(data["pid"]),
                started=str(data["started"]),
                run_id=None if data.get("run_id") is None else str(data["run_id"]),
                world_size=int(data.get("world_size", 1)),
            )
        except (ValueError, TypeError, KeyError):
            return None


class FolderLock:
    """A held output-folder lock; :meth:`release` (or leaving a ``with`` block) gives it back.

    Attributes:
        path: the lock file.
        holder: this run, as recorded in the lock file.
        locked: False when the filesystem refused locks and the run goes on without one.
        created_folder: True when taking the lock created the output folder.
    """

    def __init__(self, path: Path, holder: LockHolder, fd: int | None, created_folder: bool) -> None:
        self.path = path
        self.holder = holder
        self.locked = fd is not None
        self.created_folder = created_folder
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and unlock; an output folder that taking the lock created and that is
        still empty is removed too. Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                # Removed while still locked: a run that opened the old file notices it is gone.
                self.path.unlink()
        except OSError as err:
            logger.warning("%s: could not remove the lock file (%s)", self.path, err)
        finally:
            os.close(fd)  # closing the last descriptor releases the lock
        if self.created_folder:
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # only succeeds when nothing was written

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


def lock_output_folder(output: str | Path, *, run_id: str | None = None, world_size: int = 1) -> FolderLock:
    """Take the exclusive lock on a batch output folder, creating the folder when missing.

    Does not wait: when another run holds the lock, it raises at once.

    Args:
        output: the output folder.
        run_id: torchrun's run id, recorded for the message another run would show.
        world_size: ranks of this run (recorded likewise).

    Returns:
        The held lock; release it when the run ends (also on error), e.g. in a ``with`` block.

    Raises:
        OutputFolderLocked: another run holds the lock; the message names its host, PID and start.
        NotADirectoryError: ``output`` (or a folder above it) is a file.
        PermissionError: the lock file cannot be created (a read-only folder).
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"{output}: output exists and is not a folder")
    created_folder = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    path = output / LOCK_FILE
    holder = LockHolder(
        host=socket.gethostname(),
        pid=os.getpid(),
        started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        run_id=run_id,
        world_size=world_size,
    )
    for _ in range(_ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = LockHolder.from_json(_read(fd))
            os.close(fd)
            raise OutputFolderLocked(_locked_message(output, path, other)) from None
        except OSError as err:
            os.close(fd)
            if err.errno not in _NO_LOCKS:
                raise
            logger.warning(
                "%s: this filesystem does not support file locks (%s); running WITHOUT the output-folder lock: "
                "make sure no other medseg batch writes into %s",
                path, err.strerror or err, output,
            )  # fmt: skip
            return FolderLock(path, holder, None, created_folder=False)
        if not _same_file(fd, path):
            # The holder released (and removed) the file between our open and our flock: try again.
            os.close(fd)
            continue
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(asdict(holder)) + "\n").encode("utf-8"), 0)
            os.fsync(fd)
        except OSError:
            os.close(fd)
            raise
        logger.debug("%s: locked (%s)", path, holder.describe())
        return FolderLock(path, holder, fd, created_folder)
    raise OutputFolderLocked(f"{output}: could not lock {path}: other runs keep taking and releasing it; try again")


def _locked_message(output: Path, path: Path, holder: LockHolder | None) -> str:
    who = holder.describe() if holder is not None else "holder not recorded yet"
    return (
        f"{output}: in use by another medseg batch run ({who}; lock file {path.name}); "
        "wait for that run to end or write into another output folder"
    )


def _read(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 64 * 1024, 0).decode("utf-8", errors="replace")
    return ""


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not removed or replaced meanwhile)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)
