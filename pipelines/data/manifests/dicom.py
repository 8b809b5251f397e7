"""A manifest from a DICOM export: one case per study (or per matching series), chosen by rules.

The export is scanned once, from headers (:func:`pipelines.io.dicom_tree.scan_tree`). For each
study the selection rules choose the series (:func:`pipelines.io.series_rules.choose_series`);
the case's ``image`` is the smallest folder holding that series' files (for a ``.zip``, the zip)
and its ``series_uid`` says which series to read there, so ``medseg batch`` reads exactly the
series chosen here. Case ids carry no patient identifiers (:mod:`pipelines.data.identifiers`).
A study with no series that satisfies the rules is left out with a warning naming the reason per
series, and counted in the manifest's ``medseg_dicom`` record.

Each case also keeps its ``series_selection`` (the rule that chose the series, where the rules came
from, why each other series of the study was skipped), which ``medseg batch`` records in run.json;
``medseg_dicom.identifiers_kept`` says whether patient identifiers were allowed in case ids and
paths, and ``medseg batch`` refuses such a manifest unless it keeps identifiers too.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.data.identifiers import (
    DEFAULT_SERIES_TEMPLATE,
    DEFAULT_STUDY_TEMPLATE,
    case_id_for,
    identifier_in_path,
)
from pipelines.io.dicom_tree import DicomTree, SeriesSummary, scan_tree
from pipelines.io.series_rules import SeriesRules, choose_series, rule_failure

logger = logging.getLogger(__name__)

__all__ = ["create_dicom_manifest"]


def _image_path(tree: DicomTree, uid: str, start: Path) -> str:
    """Where the case's image lies, relative to the manifest folder: the zip, or the series' common folder."""
    if tree.kind == "zip":
        target = tree.path
    else:
        files = tree.series_by_uid(uid).files
        target = Path(os.path.commonpath([str(f.parent) for f in files]))
    return Path(os.path.relpath(target.absolute(), start)).as_posix()


def _matching(summaries: list[SeriesSummary], rule_name: str, rules: SeriesRules) -> list[SeriesSummary]:
    rule = next(r for r in rules.rules if r["name"] == rule_name)
    return [s for s in summaries if rule_failure(s, rule) is None]


def create_dicom_manifest(
    export: str | os.PathLike[str],
    *,
    key: bytes,
    rules: SeriesRules | None = None,
    labels: Mapping[int, str] | None = None,
    manifest_dir: str | os.PathLike[str] | None = None,
    all_matching: bool = False,
    case_id_template: str | None = None,
    keep_identifiers: bool = False,
    name: str | None = None,
    modality: str | None = None,
) -> dict[str, Any]:
    """Build a manifest (``test`` split) from a DICOM folder tree, DICOMDIR or ``.zip``.

    Args:
        export: the export.
        key: the identifier key (see :func:`pipelines.data.identifiers.load_or_create_key`).
        rules: series selection rules (None: :data:`pipelines.io.series_rules.DEFAULT_RULES`).
        labels: label id -> structure name (a bundle's); ``0: "background"`` is added.
        manifest_dir: folder the manifest is written to; paths are relative to it (default: the
            export's folder).
        all_matching: one case per series that the choosing rule accepts, instead of one per study.
        case_id_template: see :func:`pipelines.data.identifiers.case_id_for`.
        keep_identifiers: allow identifying template fields and image paths that contain the
            patient's name or ID.
        name: dataset name (default: the export's name). modality: default: the chosen series'.

    Raises:
        ValueError: no study has a series the rules accept; two cases with one case id; an image
            path that contains a patient's name or ID without ``keep_identifiers`` (not named).
    """
    export = Path(export).expanduser().absolute()
    tree = scan_tree(export)
    start = Path(manifest_dir).expanduser().absolute() if manifest_dir is not None else export.parent
    template = case_id_template or (DEFAULT_SERIES_TEMPLATE if all_matching else DEFAULT_STUDY_TEMPLATE)
    cases: list[dict[str, Any]] = []
    unmatched: list[dict[str, Any]] = []
    modalities: set[str] = set()
    for study_uid, summaries in tree.studies.items():
        study_id = case_id_for(DEFAULT_STUDY_TEMPLATE, summaries[0], key)
        try:
            selection = choose_series(summaries, rules, where=f"{export} study {study_id}")
        except ValueError as err:
            logger.warning("%s", err)
            unmatched.append({"study": study_id, "study_uid": study_uid, "reason": str(err)})
            continue
        chosen = [next(s for s in summaries if s.uid == selection.uid)]
        if all_matching:
            chosen += [s for s in _matching(summaries, selection.rule, rules or _default()) if s.uid != selection.uid]
        taken = {s.uid for s in chosen}
        # How the series was chosen, carried to run.json by medseg batch (which reads it by series_uid)
        record = {
            "rule": selection.rule,
            "rules_source": selection.source,
            "skipped": {uid: why for uid, why in selection.skipped.items() if uid not in taken},
        }
        for summary in chosen:
            case_id = case_id_for(template, summary, key, keep_identifiers=keep_identifiers)
            image = _image_path(tree, summary.uid, start)
            if not keep_identifiers and identifier_in_path(image, summary):
                raise ValueError(
                    f"{export}: case {case_id}: its image path contains the patient's name, ID or birth date (not "
                    "shown here); run.json, the ledger, logs and reports would carry it. Rename the folders, or "
                    "pass --keep-identifiers"
                )
            modalities.add(summary.modality)
            cases.append(
                {
                    "case_id": case_id,
                    "image": image,
                    "series_uid": summary.uid,
                    "series_selection": copy.deepcopy(record),
                }
            )
    if not cases:
        reasons = " | ".join(u["reason"] for u in unmatched)
        raise ValueError(f"{export}: no study has a series the selection rules accept: {reasons}")
    seen: dict[str, int] = {}
    for case in cases:
        seen[case["case_id"]] = seen.get(case["case_id"], 0) + 1
    duplicates = [c for c, n in seen.items() if n > 1]
    if duplicates:
        raise ValueError(
            f"case id template {template!r} gives the same case id to several cases ({', '.join(duplicates[:5])}); "
            "add {series_hash} or {study_hash} to it"
        )
    label_map = {int(k): str(v) for k, v in (labels or {}).items()}
    label_map.setdefault(0, "background")
    logger.info(
        "%s: %d case(s) from %d studies; %d studies without a series the rules accept",
        export, len(cases), len(tree.studies), len(unmatched),
    )  # fmt: skip
    return {
        "name": name or export.name,
        "modality": modality or "/".join(sorted(modalities)),
        "labels": {str(k): label_map[k] for k in sorted(label_map)},
        "test": cases,
        "medseg_dicom": {
            "export": Path(os.path.relpath(export, start)).as_posix(),
            "rules": (rules or _default()).source,
            "one_case_per": "matching series" if all_matching else "study",
            "case_id_template": template,
            "identifiers_kept": keep_identifiers,
            "studies": len(tree.studies),
            "unmatched_studies": [{"study": u["study"], "study_uid": u["study_uid"]} for u in unmatched],
            "skipped_files": tree.skipped,
        },
    }


def _default() -> SeriesRules:
    from pipelines.io.series_rules import DEFAULT_RULES

    return DEFAULT_RULES
