"""Start and stop the real servers of the label tests: ``medseg serve`` (MONAI Label) and Orthanc.

Every process started here is stopped by its PID whatever happens; one definition for
``test_server.py`` (local datastore) and ``test_dicomweb.py`` (a PACS).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CT_ORGANS = ("spleen", "kidney_right", "kidney_left", "liver")
START_TIMEOUT_S = 180


@dataclass
class Served:
    """A running ``medseg serve``: its address, port, process and log file."""

    url: str
    port: int
    process: subprocess.Popen
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of a GET (an HTTP error status is returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def stop(process: subprocess.Popen) -> None:
    """Stop a server by its PID: SIGTERM, then SIGKILL if it has not exited after 30 s."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def wait_until_up(url: str, process: subprocess.Popen, log: Path, what: str) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if the process exits or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}: {log.read_text(errors='replace')[-3000:]}")
        try:
            if http_get(url)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not up after {START_TIMEOUT_S} s: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


@contextmanager
def medseg_serve(root: Path, studies: str, bundles: Path, extra: Sequence[str] = ()) -> Iterator[Served]:
    """``medseg serve`` on a free loopback port (trust store, cache and app folder under ``root``), up.

    The server is stopped by its PID when the block ends, whatever happens.
    """
    port = free_port()
    log = root / "server.log"
    env = {**os.environ, "MEDSEG_TRUST_FILE": str(root / "trusted.json"), "XDG_CACHE_HOME": str(root / "cache")}
    command = [
        str(Path(sys.executable).with_name("medseg")),
        "serve",
        "--studies", studies,
        "--bundles", str(bundles),
        "--port", str(port),
        "--device", "cpu",
        "--trust-bundle",
        "--app-dir", str(root / "app"),
        *extra,
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/info/", process, log, "MONAI Label")
        yield Served(url, port, process, log)
    finally:
        stop(process)
    assert process.poll() is not None


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))
