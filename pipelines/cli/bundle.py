"""``medseg bundle check | list | info | download``, and the bundle options of the other commands.

``--bundle`` takes a bundle folder, a zipped bundle (``.zip``, unpacked once into
``$XDG_CACHE_HOME/medseg/bundles/<sha256>``) or a bundle name; a name is looked up on the bundle
search path (see :mod:`pipelines.bundles.find`): the ``--bundles DIR`` folders in the order given,
the project's ``bundles/`` folder when running from a source checkout, then
``$XDG_DATA_HOME/medseg/bundles`` (default ``~/.local/share/medseg/bundles``). The command line
reads the environment for those folders; the library is handed the resulting paths.

Trust (:mod:`pipelines.bundles.trust`): a bundle is parsed only when it is under the project's
``bundles/``, was fetched by ``medseg bundle download``, or was trusted with ``--trust-bundle``
(recorded by sha256 in ``$MEDSEG_TRUST_FILE``, default ``~/.config/medseg/trusted_bundles.json``).
``bundle info`` and ``bundle list`` read configs as data and need no trust; ``bundle list`` shows
how each bundle is trusted (``shipped``, ``downloaded``, ``trusted``, ``untrusted``).

``--override KEY=VALUE`` (:func:`add_override_option`, :func:`overrides_from_args`) sets a config
id before the bundle is parsed, as ``python -m monai.bundle run --KEY VALUE`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.bundles.archive import bundle_cache_folder, is_bundle_archive, unpack_bundle
from pipelines.bundles.conformance import CHECKS, QUICK_CHECKS, run_checks
from pipelines.bundles.download import SOURCES
from pipelines.bundles.find import default_search_path, find_bundle, source_bundles_folder, user_bundles_folder
from pipelines.bundles.info import bundle_info, list_bundles
from pipelines.bundles.overrides import parse_overrides
from pipelines.bundles.trust import trust_status, trust_store_path, trusted_bundle_folder

__all__ = [
    "add_bundle_option",
    "add_bundle_parser",
    "add_override_option",
    "add_trust_option",
    "bundle_search_path",
    "open_bundle",
    "overrides_from_args",
    "resolve_bundle_args",
]

_TRUST_HELP = (
    "trust this bundle's code (its `$` expressions and `_target_`s run as Python) and record its sha256 in the "
    "trust store ($MEDSEG_TRUST_FILE, default ~/.config/medseg/trusted_bundles.json); needed once for a bundle "
    "outside the project's bundles/ not fetched with `medseg bundle download`, and again after it changes"
)

_SEARCH_HELP = (
    "a folder to look for bundles in, before the project's bundles/ and ~/.local/share/medseg/bundles "
    "($XDG_DATA_HOME/medseg/bundles); repeatable"
)


def bundle_search_path(extra: Sequence[Path] | None = None) -> list[Path]:
    """This process's bundle search path: ``extra`` (``--bundles``), the checkout's ``bundles/``, the user folder."""
    return default_search_path(extra or (), environ=os.environ)


def _add_search_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundles", action="append", type=Path, default=None, metavar="DIR", help=_SEARCH_HELP)


def add_trust_option(p: argparse.ArgumentParser) -> None:
    """``--trust-bundle``: record the named bundle as trusted before it is opened."""
    p.add_argument("--trust-bundle", action="store_true", help=_TRUST_HELP)


def add_override_option(p: argparse.ArgumentParser) -> None:
    """``--override KEY=VALUE`` (repeatable): a config id of the bundle and its value (JSON, else a string).

    Read the values with :func:`overrides_from_args`.
    """
    p.add_argument(
        "--override",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="set a config id of the bundle before it is parsed, as `python -m monai.bundle run --KEY VALUE` "
        "does: KEY in MONAI's '#' syntax (inferer#overlap), VALUE parsed as JSON (0.5, [1.5,1.5,2], true) or "
        "else taken as a string; only ids the config holds; repeatable",
    )


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """``{id: value}`` of the ``--override`` options (empty when the command has none).

    Raises:
        ValueError: a malformed ``KEY=VALUE`` or a reserved id (see :func:`pipelines.bundles.overrides.parse_override`).
    """
    return parse_overrides(getattr(args, "override", None))


def add_bundle_option(
    p: argparse.ArgumentParser, *, required: bool = False, default: str | None = None, help: str | None = None
) -> None:
    """Add ``--bundle NAME|DIR|ZIP``, ``--bundles DIR`` (repeatable) and ``--trust-bundle`` to a subcommand.

    ``args.bundle`` stays the string given until :func:`resolve_bundle_args` turns it into a
    trusted bundle folder.
    """
    text = help or "bundle folder, zipped bundle (.zip), or the name of a bundle on the search path"
    if default is not None:
        text += f" (default: {default})"
    p.add_argument("--bundle", required=required, default=default, metavar="NAME|DIR", help=text)
    _add_search_option(p)
    add_trust_option(p)


def open_bundle(value: str | Path, search: Sequence[Path] | None = None, *, trust: bool = False) -> Path:
    """The trusted bundle folder a ``--bundle`` value names: found, unpacked when a zip, trust checked.

    Nothing of the bundle is parsed before the trust check passes. ``medseg serve`` and any other
    command taking a bundle from a person goes through here.

    Args:
        value: a bundle folder, a ``.zip`` or a name on the search path.
        search: the ``--bundles`` folders.
        trust: ``--trust-bundle``: record the bundle as trusted first.

    Raises:
        FileNotFoundError: no such bundle (the message lists the folders searched).
        ValueError: an unsafe or corrupt zip; :class:`~pipelines.bundles.trust.UntrustedBundleError`
            for a bundle that is not trusted (the message says why and how to trust it).
    """
    path = find_bundle(value, bundle_search_path(search))
    source = source_bundles_folder()
    return trusted_bundle_folder(
        path,
        store=trust_store_path(os.environ),
        cache=bundle_cache_folder(os.environ),
        trusted_folders=[source] if source else [],
        trust=trust,
        how="add --trust-bundle to the command",
    )


def resolve_bundle_args(args: argparse.Namespace) -> argparse.Namespace:
    """Turn ``args.bundle`` (from :func:`add_bundle_option`) into a trusted bundle folder (:func:`open_bundle`).

    Commands without those options pass through unchanged.

    Raises:
        FileNotFoundError: no such folder, and no bundle of that name on the search path (the
            message lists the folders searched).
        ValueError: an untrusted bundle, or a zip that cannot be unpacked safely.
    """
    if isinstance(getattr(args, "bundle", None), str) and hasattr(args, "bundles"):
        args.bundle = open_bundle(args.bundle, args.bundles, trust=getattr(args, "trust_bundle", False))
    return args


def _readable_folder(value: str, search: Sequence[Path] | None) -> Path:
    """A bundle folder for ``info``: found, a zip unpacked; no trust needed, as nothing is evaluated."""
    path = find_bundle(value, bundle_search_path(search))
    return unpack_bundle(path, bundle_cache_folder(os.environ)) if is_bundle_archive(path) else path


def add_bundle_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bundle`` (with ``check``, ``list``, ``info``, ``download``) to the ``medseg`` subcommands.

    Each leaf sets ``func(args) -> int`` (the exit code), as the other ``medseg`` commands do.
    """
    parser = subparsers.add_parser("bundle", help="check, list and describe bundles")
    sub = parser.add_subparsers(dest="bundle_command", required=True, metavar="ACTION")

    p = sub.add_parser("check", help="check bundles against the MONAI Model Zoo conventions; exit 1 on problems")
    p.add_argument("targets", nargs="+", metavar="NAME|DIR", help="bundle folder(s) or name(s)")
    p.add_argument("--quick", action="store_true", help=f"only the file checks ({', '.join(QUICK_CHECKS)})")
    p.add_argument("--device", default="cpu", help="torch device for the network checks (default: cpu)")
    p.add_argument(
        "--part",
        choices=("zoo", "medseg", "all"),
        default="all",
        help="zoo: what the MONAI Model Zoo requires; medseg: what medseg segment/batch/train/evaluate "
        "additionally need (default: all)",
    )
    _add_search_option(p)
    add_trust_option(p)
    add_override_option(p)
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

    p = sub.add_parser(
        "download",
        help="fetch a bundle (MONAI Model Zoo by default) into the user bundle folder, and trust it",
        description="Download a bundle with monai.bundle.download into $XDG_DATA_HOME/medseg/bundles/NAME "
        "(~/.local/share/medseg/bundles/NAME), unpacked safely, checked, and recorded as trusted with its sha256.",
    )
    p.add_argument("name", help="bundle name, e.g. spleen_ct_segmentation (the folder it is installed as)")
    p.add_argument("--version", default=None, help="bundle version (default: the latest)")
    p.add_argument("--source", default="github", choices=SOURCES, help="where to fetch it from (default: github)")
    p.add_argument("--url", default=None, help="fetch this zip instead of the NAME from --source")
    p.add_argument("--sha256", default=None, help="the zip's expected sha256; refused on a mismatch")
    p.add_argument("--replace", action="store_true", help="replace an installed bundle of the same name")
    p.set_defaults(func=_cmd_download)
    return parser


def _cmd_check(args: argparse.Namespace) -> int:
    failed = 0
    overrides = overrides_from_args(args)
    for target in args.targets:
        path = open_bundle(target, args.bundles, trust=args.trust_bundle)  # a check parses the configs
        parts = None if args.part == "all" else [args.part]
        checks = QUICK_CHECKS if args.quick else CHECKS
        result = run_checks(path, checks=checks, parts=parts, device=args.device, overrides=overrides)
        for part, problem in result.labelled_problems():
            print(f"[{part}] {problem}")
        for note in result.notes:
            print(f"{path}: note: {note}")
        took = sum(result.seconds.values())
        if result.ok:
            print(f"{path}: OK ({', '.join(result.seconds)}; {took:.1f} s)")
        else:
            failed += 1
            print(f"{path}: {result.summary()}")
    return 1 if failed else 0


def _format_labels(labels: dict[int, str], limit: int = 60) -> str:
    text = ", ".join(f"{k} {v}" for k, v in labels.items())  # structures only; channel 0 when it is one
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _trusted(path: str) -> str:
    """``shipped``, ``downloaded``, ``trusted`` or ``untrusted`` (``?`` when the trust store is unreadable)."""
    source = source_bundles_folder()
    try:
        return trust_status(path, trust_store_path(os.environ), [source] if source else [])
    except ValueError:
        return "?"


def _print_table(infos: list[dict[str, Any]], indent: str = "") -> None:
    rows = [("folder", "name", "version", "modality", "labels", "network", "weights", "trusted")]
    for info in infos:
        folder_name = Path(info["path"]).name
        if "error" in info:
            rows.append((folder_name, f"(unreadable: {info['error']})", "", "", "", "", "", _trusted(info["path"])))
            continue
        rows.append(
            (
                folder_name,
                info["name"],
                info["version"],
                info["modality"] or "?",
                str(len(info["structures"])),
                info["network"] or "?",
                "yes" if info["weights"] else "no",
                _trusted(info["path"]),
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


def _weights_file(folder: Path) -> str:
    return "models/model.pt" if (folder / "models" / "model.pt").is_file() else "models/model.ts (TorchScript)"


def _cmd_info(args: argparse.Namespace) -> int:
    info = bundle_info(_readable_folder(args.target, args.bundles))
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
        ("weights", _weights_file(Path(info["path"])) if info["weights"] else "none (train or copy models/model.pt)"),
        ("configs", ", ".join(info["configs"])),
        ("labels", _format_labels(info["structures"], limit=10_000)),
    ]
    for key, value in rows:
        print(f"  {key:<15} {value if value is not None else '?'}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from pipelines.bundles.download import download_bundle  # imports MONAI

    done = download_bundle(
        args.name,
        user_bundles_folder(os.environ),
        trust_store_path(os.environ),
        version=args.version,
        source=args.source,
        url=args.url,
        sha256=args.sha256,
        replace=args.replace,
        progress=sys.stderr.isatty(),
    )
    checksum = f"; archive sha256 {done.archive_sha256}" if done.archive_sha256 else ""
    print(f"installed {done.path} from {done.origin}{checksum}")
    print(f"trusted: sha256 {done.trust.sha256} recorded in {trust_store_path(os.environ)}")
    print(f"run it: medseg segment SCAN --bundle {args.name} --output OUT")
    return 0
