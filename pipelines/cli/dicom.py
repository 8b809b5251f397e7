"""``medseg dicom ls`` and ``medseg manifest create --dicom``: DICOM exports as hospitals hand them over.

Patients are shown as keyed pseudonyms (``patient-<hash>``) unless ``--keep-identifiers``; see
:mod:`pipelines.data.identifiers` for the key (``--id-key``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from pipelines.cli.bundle import add_bundle_option
from pipelines.cli.common import series_rules_arg

__all__ = [
    "add_dicom_parser",
    "add_id_key_option",
    "add_manifest_dicom_options",
    "cmd_manifest_create_dicom",
    "default_key_path",
    "several_patients_message",
]


def default_key_path() -> Path:
    """``$XDG_CONFIG_HOME/medseg/id-key`` (``~/.config/medseg/id-key``): the identifier key's default place."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "medseg" / "id-key"


def add_id_key_option(p: argparse.ArgumentParser) -> None:
    """``--id-key FILE``: the key of the ``patient-<h>`` / ``study-<h>`` pseudonyms (dicom ls, manifests, segment)."""
    p.add_argument(
        "--id-key",
        type=Path,
        default=None,
        metavar="FILE",
        help="key of the pseudonyms and case-id hashes (default: $XDG_CONFIG_HOME/medseg/id-key, created on first use)",
    )


def _add_identifier_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--keep-identifiers",
        action="store_true",
        help="show / allow patient name, ID and birth date (default: keyed pseudonyms only)",
    )
    add_id_key_option(p)


def several_patients_message(err: Any, id_key: Path | None) -> str:
    """The refusal of an input holding several patients, naming them by the pseudonyms ``dicom ls`` shows.

    Args:
        err: a :class:`pipelines.io.series_rules.SeveralPatientsError`.
        id_key: ``--id-key`` (None: the default key file, created on first use as ``dicom ls`` does).
    """
    from pipelines.data.identifiers import load_or_create_key, patient_pseudonym, study_pseudonym

    key = load_or_create_key(id_key or default_key_path())
    return str(err.describe(lambda s: patient_pseudonym(key, s), lambda uid: study_pseudonym(key, uid)))


def _add_rules_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--series-rules",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON series selection rules (default: the bundle's medseg_series_rules, else medseg's defaults)",
    )


def add_dicom_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``medseg dicom ls``."""
    p = subparsers.add_parser("dicom", help="look into DICOM exports (folder trees, DICOMDIR, .zip)")
    sub = p.add_subparsers(dest="dicom_command", required=True, metavar="ACTION")
    q = sub.add_parser(
        "ls",
        help="patients -> studies -> series of an export, and which series a bundle would pick and why",
    )
    q.add_argument("path", type=Path, help="a folder (searched recursively), a DICOMDIR file or a .zip")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_bundle_option(q, help="bundle whose series rules to apply (folder or name)")
    _add_rules_option(q)
    _add_identifier_options(q)
    q.set_defaults(func=_cmd_dicom_ls)
    return p


def add_manifest_dicom_options(q: argparse.ArgumentParser) -> None:
    """The ``--dicom`` options of ``medseg manifest create``."""
    q.add_argument("--dicom", type=Path, default=None, metavar="PATH", help="a DICOM export: one case per study")
    add_bundle_option(q, help="with --dicom: bundle whose series rules and labels to use")
    _add_rules_option(q)
    q.add_argument("--all-matching", action="store_true", help="with --dicom: one case per matching series")
    q.add_argument(
        "--case-id-template",
        default=None,
        help="with --dicom: case id from fields such as {study_hash}, {series_hash}, {modality}, {series_number}; "
        "{patient_id}, {patient_name}, {birth_date}, {study_date} only with --keep-identifiers "
        "(default: study-{study_hash})",
    )
    _add_identifier_options(q)


def _rules(args: argparse.Namespace) -> Any:
    from pipelines.bundles.bundle import load_bundle
    from pipelines.io.series_rules import DEFAULT_RULES, rules_from_bundle

    rules = series_rules_arg(args.series_rules)
    if rules is None and args.bundle is not None:
        bundle = load_bundle(args.bundle)
        rules = rules_from_bundle(bundle.metadata, str(bundle.root / "configs" / "metadata.json"))
    return rules or DEFAULT_RULES


def dicom_listing(path: Path, rules: Any, key: bytes, keep_identifiers: bool) -> dict[str, Any]:
    """The ``dicom ls --json`` document: patients -> studies -> series, with the pick per study."""
    from pipelines.data.identifiers import patient_pseudonym, study_pseudonym
    from pipelines.io.dicom_tree import scan_tree
    from pipelines.io.series_rules import choose_series

    tree = scan_tree(path)
    patients: dict[str, dict[str, Any]] = {}
    for study_uid, summaries in tree.studies.items():
        first = summaries[0]
        pid = f"{first.patient_id}\0{first.patient_name}\0{first.birth_date}"
        patient = patients.setdefault(pid, {"patient": patient_pseudonym(key, first), "studies": []})
        if keep_identifiers:
            patient.update(patient_id=first.patient_id, patient_name=first.patient_name, birth_date=first.birth_date)
        study: dict[str, Any] = {
            "study": study_pseudonym(key, study_uid),
            "study_uid": study_uid,
            "description": first.study_description,
            "selected": None,
            "rule": None,
            "error": None,
        }
        try:
            selection = choose_series(summaries, rules, where=study["study"], log=False)
            study.update(selected=selection.uid, rule=selection.rule)
            reasons = selection.skipped
        except ValueError as err:
            study["error"] = str(err)
            reasons = {}
        study["series"] = [
            {
                **s.as_dict(keep_identifiers),
                "selected": s.uid == study["selected"],
                "reason": reasons.get(s.uid),
            }
            for s in summaries
        ]
        patient["studies"].append(study)
    return {
        "input": str(path),
        "kind": tree.kind,
        "rules": rules.source,
        "skipped_files": tree.skipped,
        "patients": list(patients.values()),
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if digits else str(value)


def _print_listing(listing: dict[str, Any]) -> None:
    skipped = ", ".join(f"{n} {k}" for k, n in sorted(listing["skipped_files"].items())) or "none"
    print(f"{listing['input']} ({listing['kind']}); rules: {listing['rules']}; files skipped: {skipped}")
    for patient in listing["patients"]:
        ids = ""
        if "patient_id" in patient:
            ids = f" (ID {patient['patient_id']}, {patient['patient_name']}, born {patient['birth_date'] or '?'})"
        print(f"{patient['patient']}{ids}")
        for study in patient["studies"]:
            print(f"  {study['study']}  {study['study_uid']}  {study['description']}")
            print(
                f"    {'':2}{'#':>4}  {'series UID':<44}  {'mod':<3}  {'date':<8}  {'description':<22}  "
                f"{'image type':<22}  {'slices':>6}  {'pixel mm':>9}  {'thick':>5}  {'step':>5}  {'plane':<8}  "
                f"{'tilt':>4}  {'gaps/dup':>8}"
            )
            for s in study["series"]:
                mark = "->" if s["selected"] else ""
                kind = "/".join(s["image_type"][:2]) + (" LOCALIZER" if "LOCALIZER" in s["image_type"] else "")
                pixel = "x".join(f"{v:.3g}" for v in s["pixel_spacing_mm"]) if s["pixel_spacing_mm"] else "-"
                print(
                    f"    {mark:<2}{s['series_number'] if s['series_number'] is not None else '-':>4}  "
                    f"{s['series_uid']:<44}  {s['modality']:<3}  {s['date']:<8}  {s['description'][:22]:<22}  "
                    f"{kind[:22]:<22}  {s['slices']:>6}  {pixel:>9}  {_fmt(s['thickness_mm'], 3):>5}  "
                    f"{_fmt(s['spacing_mm'], 3):>5}  {s['orientation']:<8}  {s['tilt_deg']:>4.1f}  "
                    f"{s['gaps']:>4}/{s['duplicates']:<3}"
                )
            if study["selected"]:
                print(f"    picked by rule '{study['rule']}'; the others:")
                for s in study["series"]:
                    if not s["selected"]:
                        print(f"      #{s['series_number']}: {s['reason']}")
            else:
                print(f"    no series picked: {study['error']}")


def _cmd_dicom_ls(args: argparse.Namespace) -> int:
    from pipelines.data.identifiers import load_or_create_key

    key = load_or_create_key(args.id_key or default_key_path())
    listing = dicom_listing(args.path, _rules(args), key, args.keep_identifiers)
    if args.json:
        print(json.dumps(listing, indent=2))
    else:
        _print_listing(listing)
    return 0


def cmd_manifest_create_dicom(args: argparse.Namespace) -> int:
    """``medseg manifest create --dicom PATH``: write the manifest, print where and how many cases."""
    from pipelines.bundles.bundle import load_bundle
    from pipelines.data.identifiers import load_or_create_key
    from pipelines.data.manifests.dicom import create_dicom_manifest
    from pipelines.data.manifests.model import write_manifest

    if args.folder is not None:
        raise ValueError(f"{args.folder}: give either a data folder or --dicom PATH, not both")
    export = args.dicom
    target = args.output or (export.parent if export.is_file() else export) / "dataset.json"
    labels = load_bundle(args.bundle).labels if args.bundle is not None else None
    manifest = create_dicom_manifest(
        export,
        key=load_or_create_key(args.id_key or default_key_path()),
        rules=_rules(args),
        labels=labels,
        manifest_dir=target.parent,
        all_matching=args.all_matching,
        case_id_template=args.case_id_template,
        keep_identifiers=args.keep_identifiers,
        name=args.name,
    )
    path = write_manifest(manifest, target)
    info = manifest["medseg_dicom"]
    left_out = len(info["unmatched_studies"])
    print(
        f"wrote {path} ({len(manifest['test'])} test cases from {info['studies']} studies"
        + (f"; {left_out} without a matching series left out" if left_out else "")
        + ")"
    )
    return 0
