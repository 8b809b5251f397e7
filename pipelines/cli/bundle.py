"""``medseg bundle check | list | info``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipelines.bundles.conformance import (
    CHECKS,
    QUICK_CHECKS,
    bundle_info,
    default_bundles_folder,
    list_bundles,
    run_checks,
)


def add_bundle_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bundle`` (with ``check``, ``list``, ``info``) to the ``medseg`` subcommands.

    Each leaf sets ``func(args) -> int`` (the exit code), as the other ``medseg`` commands do.
    """
    parser = subparsers.add_parser("bundle", help="check, list and describe bundles")
    sub = parser.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")

    p = sub.add_parser("check", help="check bundles against the MONAI Model Zoo conventions; exit 1 on problems")
    p.add_argument("bundles", nargs="+", type=Path, metavar="DIR", help="bundle folder(s)")
    p.add_argument("--quick", action="store_true", help=f"only the file checks ({', '.join(QUICK_CHECKS)})")
    p.add_argument("--device", default="cpu", help="torch device for the network checks (default: cpu)")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("list", help="list the bundles in a folder")
    p.add_argument("folder", nargs="?", type=Path, help="default: the bundles folder of this checkout, else cwd")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="describe one bundle")
    p.add_argument("bundle", type=Path, metavar="DIR")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)
    return parser


def _cmd_check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.bundles:
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


def _cmd_list(args: argparse.Namespace) -> int:
    folder = args.folder if args.folder is not None else default_bundles_folder()
    infos = list_bundles(folder)
    if not infos:
        print(f"no bundles in {folder}")
        return 0
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
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    info = bundle_info(args.bundle)
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
