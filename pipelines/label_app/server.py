"""Start MONAI Label's own server (``monailabel start_server``) with the medseg app.

MONAI Label loads an app from a folder holding ``main.py``. :func:`write_app_dir` writes a two-line
``main.py`` that imports :class:`pipelines.label_app.app.MedsegLabelApp`, so the app's logic stays
in this package. Nothing here imports MONAI Label: the server runs as a child process of the
label environment's ``monailabel`` command.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.io.writers import write_bytes
from pipelines.label_app.catalog import served_bundles

logger = logging.getLogger(__name__)

__all__ = [
    "LabelEnvironmentMissing",
    "ServeOptions",
    "check_options",
    "check_overrides",
    "monailabel_executable",
    "prepare_server",
    "server_command",
    "write_app_dir",
]

SETUP_HINT = "create it with `bash scripts/setup_label.sh` and run `.venv-label/bin/medseg serve`"

APP_MAIN = '''"""MONAI Label app folder written by medseg serve: the app is pipelines.label_app.app."""

from pipelines.label_app.app import MedsegLabelApp  # noqa: F401  (MONAI Label looks up this class)
'''


class LabelEnvironmentMissing(FileNotFoundError):
    """MONAI Label is not installed beside the running Python."""


@dataclass(frozen=True)
class ServeOptions:
    """What ``medseg serve`` decides.

    Attributes:
        studies: the datastore: a folder of images (created when missing), or a DICOMweb root
            (``http(s)://host:port/dicom-web``).
        bundles: the folder of bundles to serve (each with ``models/model.pt``).
        app_dir: the MONAI Label app folder (``main.py``, logs, train work files).
        host: address to bind; loopback by default, so nothing outside this machine reaches it.
        port: TCP port.
        device / precision: as for ``medseg segment``.
        max_epochs: epochs of a train request that does not say.
        limit_concurrency: connections served at once; more are answered 503 at once (uvicorn).
        overrides: ``--override`` config ids and values, applied to every served bundle's inference
            config as ``medseg segment --override`` does (checked against each bundle before the start).
    """

    studies: str
    bundles: Path
    app_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    precision: str = "auto"
    max_epochs: int = 1
    limit_concurrency: int = 8
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port}: expected 1-65535")
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs {self.max_epochs}: expected at least 1")
        if self.limit_concurrency < 2:
            raise ValueError(f"limit_concurrency {self.limit_concurrency}: expected at least 2")

    @property
    def dicomweb(self) -> bool:
        return self.studies.startswith(("http://", "https://"))


def monailabel_executable(python: str | Path = sys.executable) -> Path:
    """The ``monailabel`` command beside ``python``.

    Raises:
        LabelEnvironmentMissing: this environment has no MONAI Label.
    """
    exe = Path(python).with_name("monailabel")
    if not exe.is_file():
        raise LabelEnvironmentMissing(
            f"{exe}: MONAI Label is not installed in this environment ({Path(python).parent.parent}); "
            f"it needs its own (monailabel 0.8.5 with monai 1.5.2, numpy<2, pydicom<3): {SETUP_HINT}"
        )
    return exe


def write_app_dir(app_dir: str | Path) -> Path:
    """Write the app folder's ``main.py`` (and the folders MONAI Label expects); returns the folder."""
    app_dir = Path(app_dir).resolve()
    app_dir.mkdir(parents=True, exist_ok=True)
    write_bytes(APP_MAIN.encode("utf-8"), app_dir / "main.py")
    (app_dir / "tmp").mkdir(exist_ok=True)
    return app_dir


def check_options(options: ServeOptions) -> None:
    """Cheap checks before the server starts: the bundles load, the studies folder is a folder.

    Raises:
        FileNotFoundError: no bundles folder, or no bundle with weights in it.
        NotADirectoryError: ``studies`` is a file.
    """
    served_bundles(options.bundles)
    if not options.dicomweb:
        studies = Path(options.studies)
        if studies.exists() and not studies.is_dir():
            raise NotADirectoryError(f"{studies}: --studies must be a folder of images or a DICOMweb address")


def check_overrides(bundle_root: str | Path, overrides: Mapping[str, Any]) -> None:
    """Refuse ``--override`` ids the bundle's inference config does not hold (nothing when there are none).

    Call it only on a trusted bundle: parsing the config is what the trust check guards.

    Raises:
        ValueError: an unknown id (the message names the bundle, the id and close matches).
    """
    if not overrides:
        return
    from pipelines.bundles.bundle import load_bundle, parse_config

    parse_config(load_bundle(bundle_root), "inference", user_overrides=overrides)


def server_command(options: ServeOptions, executable: Path) -> tuple[list[str], dict[str, str]]:
    """The ``monailabel start_server`` command line and the environment additions for it."""
    app_dir = Path(options.app_dir).resolve()
    studies = options.studies if options.dicomweb else str(Path(options.studies).resolve())
    conf = {
        "bundles": str(Path(options.bundles).resolve()),
        "device": options.device,
        "precision": options.precision,
        "max_epochs": str(options.max_epochs),
        "upload_dir": str(app_dir / "tmp"),
    }
    if options.overrides:
        conf["overrides"] = json.dumps(dict(options.overrides), sort_keys=True)
    command = [
        str(executable),
        "start_server",
        "--app",
        str(app_dir),
        "--studies",
        studies,
        "--host",
        options.host,
        "--port",
        str(options.port),
        "--limit_concurrency",
        str(options.limit_concurrency),
    ]
    for key, value in conf.items():
        command += ["--conf", key, value]
    env = {
        "TMPDIR": str(app_dir / "tmp"),  # uploads land here, the only paths an infer request may name
        "MLFLOW_ALLOW_FILE_STORE": "true",
        "MONAI_LABEL_SESSIONS": "false",
        "MONAI_LABEL_TASKS_SCORING": "false",
        "MONAI_LABEL_TASKS_BATCH_INFER": "false",
        "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
        "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(app_dir / "dicomweb_cache"),
    }
    return command, env


def prepare_server(
    options: ServeOptions, *, environ: Mapping[str, str], python: str | Path = sys.executable
) -> tuple[list[str], dict[str, str]]:
    """Check the options, write the app folder; returns the server's command line and environment.

    Args:
        options: what to serve and where.
        environ: the environment the server inherits (the caller's ``os.environ``).
        python: the interpreter whose environment must hold MONAI Label.

    Raises:
        LabelEnvironmentMissing: no MONAI Label here (the message says how to create its environment).
        FileNotFoundError / ValueError: a bundles folder without servable bundles.
    """
    executable = monailabel_executable(python)
    check_options(options)
    write_app_dir(options.app_dir)
    command, extra = server_command(options, executable)
    env = {**environ, **extra}
    env["PATH"] = f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}"
    logger.info("starting MONAI Label on http://%s:%d: %s", options.host, options.port, " ".join(command))
    return command, env
