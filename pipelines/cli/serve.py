"""``medseg serve``: MONAI Label's server with every bundle of a folder as a model.

The command checks the bundles (found, trusted, with weights) and the label environment, writes
the app folder, then replaces itself with ``monailabel start_server`` (same PID), so stopping
the process stops the server.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pipelines.bundles.find import bundles_in, source_bundles_folder
from pipelines.cli.bundle import add_override_option, open_bundle, overrides_from_args

__all__ = ["add_serve_parser"]


def _default_app_dir(port: int) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(cache) if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return root / "medseg" / f"label-app-{port}"


def add_serve_parser(sub: Any) -> None:
    """Add ``serve`` to the ``medseg`` subcommands."""
    p = sub.add_parser(
        "serve",
        help="serve every bundle of a folder through a MONAI Label server (3D Slicer, OHIF)",
        description="Start MONAI Label (monailabel start_server) with one infer and one train task per bundle. "
        "Needs the label environment: bash scripts/setup_label.sh, then .venv-label/bin/medseg serve.",
    )
    p.add_argument(
        "--studies", required=True, help="datastore: a folder of images, or a DICOMweb root (http://HOST/dicom-web)"
    )
    p.add_argument(
        "--bundles",
        type=Path,
        default=None,
        help="folder of bundles to serve (default: the project's bundles/ in a source checkout)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    p.add_argument("--max-epochs", type=int, default=1, help="epochs of a train request that names none (default 1)")
    p.add_argument(
        "--max-connections",
        type=int,
        default=8,
        help="requests handled at once; more are answered 503 at once instead of waiting (default 8)",
    )
    p.add_argument("--app-dir", type=Path, default=None, help="MONAI Label app folder (default ~/.cache/medseg/...)")
    p.add_argument(
        "--trust-bundle", action="store_true", help="trust the bundles of --bundles (their configs run code)"
    )
    add_override_option(p)
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from pipelines.label_app.server import ServeOptions, check_overrides, monailabel_executable, prepare_server

    monailabel_executable()  # the label environment first: the most likely thing to be missing
    overrides = overrides_from_args(args)
    bundles = args.bundles or source_bundles_folder()
    if bundles is None:
        raise FileNotFoundError("no bundles folder: give --bundles DIR")
    for root in bundles_in(bundles):
        trusted = open_bundle(root, trust=args.trust_bundle)  # refuse an untrusted bundle before parsing its configs
        check_overrides(trusted, overrides)  # an id a served bundle lacks is refused now, not at its first request
    options = ServeOptions(
        studies=args.studies,
        bundles=Path(bundles),
        app_dir=args.app_dir or _default_app_dir(args.port),
        host=args.host,
        port=args.port,
        device=args.device,
        precision=args.precision,
        max_epochs=args.max_epochs,
        limit_concurrency=args.max_connections,
        overrides=overrides,
    )
    command, env = prepare_server(options, environ=os.environ)
    print(f"MONAI Label on http://{options.host}:{options.port} serving {bundles} over {options.studies}", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)  # the server takes this process (and its PID) over
    return 0  # not reached
