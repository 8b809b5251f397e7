"""The output-folder lock: one batch run per folder, a second one refused at once naming the holder."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import pipelines.batch.lock as lock_module
from pipelines.batch.lock import LOCK_FILE, LockHolder, OutputFolderLocked, lock_output_folder
from pipelines.batch.options import BatchOptions
from pipelines.batch.run import run_batch
from tests.batch.study import CASES, make_study, medseg, subprocess_env
from tests.helpers import REPO


def test_the_lock_file_names_its_holder_and_goes_with_the_lock(tmp_path: Path) -> None:
    output = tmp_path / "new" / "out"
    lock = lock_output_folder(output, run_id="run-7", world_size=2)
    assert lock.locked and lock.created_folder
    recorded = json.loads((output / LOCK_FILE).read_text())
    assert recorded == {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": recorded["started"],
        "run_id": "run-7",
        "world_size": 2,
    }
    assert recorded["started"].endswith("+00:00")
    lock.release()
    lock.release()  # twice is harmless
    assert not output.exists()  # the folder the lock created, still empty, goes too
    assert (tmp_path / "new").is_dir()

    (tmp_path / "kept").mkdir()
    with lock_output_folder(tmp_path / "kept") as held:
        (tmp_path / "kept" / "ledger.jsonl").write_text("")
        assert held.holder.run_id is None
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["ledger.jsonl"]


def test_a_second_lock_is_refused_at_once_naming_host_and_pid(tmp_path: Path) -> None:
    with lock_output_folder(tmp_path, run_id="abc", world_size=4):
        # flock locks belong to an open file: a second open in the same process conflicts too
        with pytest.raises(OutputFolderLocked) as refused:
            lock_output_folder(tmp_path)
        message = str(refused.value)
        assert message.startswith(f"{tmp_path}: in use by another medseg batch run (host {socket.gethostname()}, ")
        assert f"PID {os.getpid()}, started " in message and "torchrun run abc of 4 ranks" in message
        assert message.endswith("wait for that run to end or write into another output folder")
        assert isinstance(refused.value, OSError)  # the command line prints it as one line
    with lock_output_folder(tmp_path):  # free again once released
        pass


def test_a_lock_file_left_by_a_killed_run_holds_no_lock(tmp_path: Path) -> None:
    dead = {"host": "gone", "pid": 999999, "started": "2024-01-01T00:00:00+00:00", "run_id": None, "world_size": 1}
    (tmp_path / LOCK_FILE).write_text(json.dumps(dead) + "\n" + " " * 200)  # longer than a new record
    with lock_output_folder(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid() == lock.holder.pid
    assert not (tmp_path / LOCK_FILE).exists()


def test_an_unrecorded_holder_is_said_so(tmp_path: Path) -> None:
    path = tmp_path / LOCK_FILE
    path.touch()
    with path.open("r") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locked, but nothing written yet
        with pytest.raises(OutputFolderLocked, match=r"\(holder not recorded yet; lock file \.medseg-batch\.lock\)"):
            lock_output_folder(tmp_path)
    assert LockHolder.from_json('{"host": "h"}') is None and LockHolder.from_json("") is None


def test_a_file_is_not_an_output_folder(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("x")
    with pytest.raises(NotADirectoryError, match=rf"{tmp_path / 'out'}: output exists and is not a folder"):
        lock_output_folder(tmp_path / "out")


def test_a_filesystem_without_locks_runs_unlocked_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock_module.fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING, logger="pipelines.batch.lock"):
        lock = lock_output_folder(tmp_path)
    assert not lock.locked
    assert "does not support file locks (No locks available); running WITHOUT the output-folder lock" in caplog.text
    lock.release()


def test_run_batch_is_refused_before_reading_anything(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text("not even JSON")  # never read: the lock comes first
    output = tmp_path / "out"
    with lock_output_folder(output), pytest.raises(OutputFolderLocked, match=rf"PID {os.getpid()}"):
        run_batch(manifest, tmp_path / "no-bundle", output, BatchOptions(resume=True))


def test_a_second_medseg_batch_process_is_refused_with_or_without_resume(tmp_path: Path, unet_bundle: Path) -> None:
    manifest = make_study(tmp_path, CASES[:1], with_corrupt=False)
    output = tmp_path / "out"
    with lock_output_folder(output, run_id="first-run") as lock:
        held = (output / LOCK_FILE).read_bytes()
        live = output / ".case_00.a1b2c3d4.partial"  # staging of the live run: not the refused run's to remove
        live.mkdir()
        for extra in ([], ["--resume"]):
            command = medseg(manifest, "--bundle", unet_bundle, "--output", output, "--device", "cpu", *extra)
            done = subprocess.run(command, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
            assert done.returncode == 1, done.stderr
            (line,) = done.stderr.strip().splitlines()  # one line, no traceback
            assert line.startswith(f"medseg: error: {output}: in use by another medseg batch run ")
            assert f"(host {socket.gethostname()}, PID {os.getpid()}, started {lock.holder.started}" in line
            assert done.stdout == ""
        assert (output / LOCK_FILE).read_bytes() == held  # the holder's lock file untouched
        assert sorted(p.name for p in output.iterdir()) == sorted([LOCK_FILE, live.name])  # nothing else written


@pytest.mark.slow
def test_ranks_of_a_refused_torchrun_run_all_stop(tmp_path: Path, unet_bundle: Path) -> None:
    manifest = make_study(tmp_path, CASES[:2], with_corrupt=False)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "pipelines", "-q", "batch", str(manifest), "--bundle", str(unet_bundle),
               "--output", str(output), "--device", "cpu"]  # fmt: skip
    with lock_output_folder(output):
        done = subprocess.run(command, env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"in use by another medseg batch run (host {socket.gethostname()}, PID {os.getpid()}" in done.stderr
    assert "rank 0 could not start: " in done.stderr  # rank 1 waited for rank 0's lock, then stopped
    assert not output.exists()
