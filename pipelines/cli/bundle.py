"""``medseg bundle check | list | info``, and the ``--bundle`` / ``--bundles`` options of the other commands.

``--bundle`` takes a bundle folder or a bundle name; a name is looked up on the bundle search
path (see :mod:`pipelines.bundles.find`): the ``--bundles DIR`` folders in the order given, the
project's ``bundles/`` folder when running from a source checkout, then
``$XDG_DATA_HOME/medseg/bundles`` (default ``~/.local/share/medseg/bundles``). The command line
reads the environment for that last folder; the library is handed the resulting list.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.bundles.conformance import CHECKS, QUICK_CHECKS, run_checks
from pipelines.bundles.find import default_search_path, find_bundle
from pipelines.bundles.info import bundle_info, list_bundles

__all__ = ["add_bundle_option", "add_bundle_parser", "bundle_search_path", "resolve_bundle_args"]

_SEARCH_HELP = (
    "a folder to look for bundles in, before the project's bundles/ and ~/.local/share/medseg/bundles "
    "($XDG_DATA_HOME/medseg/bundles); repeatable"
)


def bundle_search_path(extra: Sequence[Path] | None = None) -> list[Path]:
    """This process's bundle search path: ``extra`` (``--bundles``), the checkout's ``bundles/``, the user folder."""
    return default_search_path(extra or (), environ=os.environ)


def _add_search_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundles", action="append", type=Path, default=None, metavar="DIR", help=_SEARCH_HELP)


def add_bundle_option(
    p: argparse.ArgumentParser, *, required: bool = False, default: str | None = None, help: str | None = None
) -> None:
    """Add ``--bundle NAME|DIR`` and ``--bundles DIR`` (repeatable) to a subcommand.

    ``args.bundle`` stays the string given until :func:`resolve_bundle_args` turns it into a folder.
    """
    text = help or "bundle folder, or the name of a bundle on the search path"
    if default is not None:
        text += f" (default: {default})"
    p.add_argument("--bundle", required=required, default=default, metavar="NAME|DIR", help=text)
    _add_search_option(p)


def resolve_bundle_args(args: argparse.Namespace) -> argparse.Namespace:
    """Turn ``args.bundle`` (a name or a folder, from :func:`add_bundle_option`) into the bundle folder.

    Commands without those options pass through unchanged.

    Raises:
        FileNotFoundError: no such folder, and no bundle of that name on the search path (the
            message lists the folders searched).
    """
    if isinstance(getattr(args, "bundle", None), str) and hasattr(args, "bundles"):
        args.bundle = find_bundle(args.bundle, bundle_search_path(args.bundles))
    return args


def add_bundle_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bundle`` (with ``check``, ``list``, ``info``) to the ``medseg`` subcommands.

    Each leaf sets ``func(args) -> int`` (the exit code), as the other ``medseg`` commands do.
    """
    parser = subparsers.add_parser("bundle", help="check, list and describe bundles")
    sub = parser.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")

    p = sub.add_parser("check", help="check bundles against the MONAI Model Zoo conventions; exit 1 on problems")
    p.add_argument("targets", nargs="+", metavar="NAME|DIR", help="bundle folder(s) or name(s)")
    p.add_argument("--quick", action="store_true", help=f"only the file checks ({', '.join(QUICK_CHECKS)})")
    p.add_argument("--device", default="cpu", help="torch device for the network checks (default: cpu)")
    _add_search_option(p)
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("list", help="list the bundles on the search path, or in one folder")
    p.add_argument("folder", nargs="?", type=Path, help="list only this folder (default: every folder searched)")
    _add_search_option(p)
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="describe one bundle")
    p.add_argument("target", metavar="NAME|DIR", help="bundle folder or name")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_search_option(p)
    p.set_defaults(func=_cmd_info)
    return parser


def _cmd_check(args: argparse.Namespace) -> int:
    failed = 0
    search = bundle_search_path(args.bundles)
    for target in args.targets:
        path = find_bundle(target, search)
        result = run_checks(path, checks=QUICK_CHECKS if args.quick else CHECKS, device=args.device)
        for problem in result.problems:
            print(problem)
        for note in result.notes:
            print(f"{path}: note: {note}")
        took = sum(result.seconds.values())
        if result.ok:
            print(f"{path}: OK ({', '.join(result.seconds)}; {took:.1f} s)")
        else:
            failed += 1
            print(f"{path}: {len(result.problems)} problem(s)")
    return 1 if failed else 0


def _format_labels(labels: dict[int, str], limit: int = 60) -> str:
    text = ", ".join(f"{k} {v}" for k, v in labels.items() if k != 0)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _print_table(infos: list[dict[str, Any]], indent: str = "") -> None:
    rows = [("folder", "name", "version", "modality", "labels", "network", "weights")]
    for info in infos:
        folder_name = Path(info["path"]).name
        if "error" in info:
            rows.append((folder_name, f"(unreadable: {info['error']})", "", "", "", "", ""))
            continue
        rows.append(
            (
                folder_name,
                info["name"],
                info["version"],
                info["modality"] or "?",
                str(len([k for k in info["labels"] if k != 0])),
                info["network"] or "?",
                "yes" if info["weights"] else "no",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(indent + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _cmd_list(args: argparse.Namespace) -> int:
    if args.folder is not None:
        infos = list_bundles(args.folder)
        if infos:
            _print_table(infos)
        else:
            print(f"no bundles in {args.folder}")
        return 0
    for folder in bundle_search_path(args.bundles):
        if not folder.is_dir():
            print(f"{folder}: (does not exist)")
            continue
        infos = list_bundles(folder)
        print(f"{folder}: {len(infos)} bundle(s)")
        if infos:
            _print_table(infos, indent="  ")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    info = bundle_info(find_bundle(args.target, bundle_search_path(args.bundles)))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['name']} {info['version']}  ({info['path']})")
    rows = [
        ("task", info["task"]),
        ("modality", info["modality"]),
        ("network", info["network"]),
        ("input", f"{info['num_channels']} channel(s), patch {info['spatial_shape']}"),
        ("spacing", f"{info['pixdim']} mm" if info["pixdim"] else None),
        ("sliding window", info["roi_size"]),
        ("weights", "models/model.pt" if info["weights"] else "none (train or copy models/model.pt)"),
        ("configs", ", ".join(info["configs"])),
        ("labels", _format_labels(info["labels"], limit=10_000)),
    ]
    for key, value in rows:
        print(f"  {key:<15} {value if value is not None else '?'}")
    return 0
