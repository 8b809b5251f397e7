"""Which DICOM series a model reads, chosen by rules a person can read and change (JSON).

A rule set is an ordered list of rules (schema: ``series_rules.schema.json`` beside this module).
Each rule lists criteria on what the headers say (:class:`~pipelines.io.dicom_tree.SeriesSummary`):
modality, ImageType words required or refused, regular expressions on the series description,
protocol and kernel, ranges of slice count and thickness, orientation, gantry tilt, contrast and
contrast phase. The first rule that at least one series satisfies chooses; among the series it
accepts, its ``prefer`` list breaks ties, then the most slices, then the lowest series number.
Every other series gets a reason (the first criterion it fails, or that another was preferred),
which the log and run.json record.

Where rules come from, the first that applies: ``--series-uid`` (no rules); ``--series-rules
FILE``; the bundle's ``metadata.json`` key :data:`METADATA_KEY`; :data:`DEFAULT_RULES`.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from pipelines.io.dicom_tree import SeriesSummary

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RULES",
    "METADATA_KEY",
    "SCHEMA_PATH",
    "Selection",
    "SeriesRules",
    "SeveralPatientsError",
    "choose_series",
    "load_series_rules",
    "recorded_selection",
    "rule_failure",
    "rules_from_bundle",
    "rules_from_document",
]

SCHEMA_PATH = Path(__file__).with_name("series_rules.schema.json")
"""JSON Schema (draft 2020-12) of a rule file, shipped inside the package."""

METADATA_KEY = "medseg_series_rules"
"""Key of a bundle's ``configs/metadata.json`` that holds its default rules (a rule-file document)."""

_VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class SeriesRules:
    """An ordered rule set and where it came from (``default``, a file, a bundle's metadata)."""

    rules: tuple[dict[str, Any], ...]
    source: str

    @property
    def names(self) -> list[str]:
        return [str(r["name"]) for r in self.rules]


_NOT_ORIGINAL = ["LOCALIZER", "DERIVED", "SECONDARY"]

DEFAULT_RULES = SeriesRules(
    rules=(
        {"name": "original CT series with the most slices", "modality": ["CT"], "image_type_none": _NOT_ORIGINAL},
        {"name": "original series with the most slices", "image_type_none": _NOT_ORIGINAL},
        {
            "name": "derived or secondary CT series with the most slices (no original series)",
            "modality": ["CT"],
            "image_type_none": ["LOCALIZER"],
        },
        {
            "name": "derived or secondary series with the most slices (no original series)",
            "image_type_none": ["LOCALIZER"],
        },
    ),
    source="medseg default rules",
)
"""Used when neither a rule file nor the bundle gives rules. Localizers are never chosen, and a
DERIVED or SECONDARY series (a MIP, a reformat, a screen capture) never over an original one of
any modality: the original CT series with the most slices, else the original series of another
modality with the most slices; only a study without any original series (synthetic phantoms,
which are labelled DERIVED) falls back to its derived CT series, then any derived series. A series
without ImageType counts as original."""


def rules_from_document(document: Any, source: str) -> SeriesRules:
    """Check a rule document against the schema (and its regular expressions) and return it.

    Raises:
        ValueError: naming ``source``, the JSON location, what was seen and what was expected.
    """
    errors = sorted(_VALIDATOR.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        first = errors[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.absolute_path) or "document"
        raise ValueError(
            f"{source}: series rules{where}: {first.message} (schema: {SCHEMA_PATH.name}; {len(errors)} problem(s))"
        )
    for index, rule in enumerate(document["rules"]):
        keys = ("description", "description_not", "protocol", "kernel", "phase")
        patterns = [(k, rule[k]) for k in keys if k in rule]
        patterns += [(k, v) for p in rule.get("prefer", []) if isinstance(p, dict) for k, v in p.items()]
        for key, pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(
                    f"{source}: series rules.rules[{index}].{key}: {pattern!r} is not a regular expression ({err})"
                ) from err
    return SeriesRules(tuple(copy.deepcopy(document["rules"])), source)


def load_series_rules(path: str | Path) -> SeriesRules:
    """Read a rule file (JSON).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or not following the schema.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: series rules file not found (expected a JSON file, see {SCHEMA_PATH.name})")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: series rules are not valid JSON ({err})") from err
    return rules_from_document(document, str(path))


def rules_from_bundle(metadata: Mapping[str, Any], where: str) -> SeriesRules | None:
    """The rules a bundle declares under :data:`METADATA_KEY` of its metadata, or None."""
    if METADATA_KEY not in metadata:
        return None
    return rules_from_document(metadata[METADATA_KEY], f"{where} ({METADATA_KEY})")


# -- evaluation ------------------------------------------------------------------------------


def _range_failure(value: float | None, bounds: Mapping[str, float], what: str, unit: str) -> str | None:
    if value is None:
        return f"{what} unknown"
    if "min" in bounds and value < bounds["min"]:
        return f"{what} {value:g}{unit} < {bounds['min']:g}{unit}"
    if "max" in bounds and value > bounds["max"]:
        return f"{what} {value:g}{unit} > {bounds['max']:g}{unit}"
    return None


def _regex_failure(value: str, pattern: str, what: str, negate: bool = False) -> str | None:
    found = re.search(pattern, value, re.IGNORECASE) is not None
    if found != negate:
        return None
    return f"{what} {value!r} {'matches' if negate else 'does not match'} /{pattern}/"


def rule_failure(summary: SeriesSummary, rule: Mapping[str, Any]) -> str | None:
    """The first criterion of ``rule`` that ``summary`` fails, in words; None when it satisfies them all."""
    if "modality" in rule and summary.modality not in {m.upper() for m in rule["modality"]}:
        return f"modality {summary.modality or '?'} not in {'/'.join(rule['modality'])}"
    missing = [w for w in rule.get("image_type_all", []) if w.upper() not in summary.image_type]
    if missing:
        return f"image type {summary.image_kind} lacks {'/'.join(missing)}"
    refused = [w for w in rule.get("image_type_none", []) if w.upper() in summary.image_type]
    if refused:
        return f"image type {'/'.join(summary.image_type)} is {'/'.join(refused)}"
    checks = [
        ("description", summary.description, "description", False),
        ("description_not", summary.description, "description", True),
        ("protocol", summary.protocol, "protocol", False),
        ("kernel", summary.kernel, "kernel", False),
    ]
    for key, value, what, negate in checks:
        if key in rule:
            failure = _regex_failure(value, rule[key], what, negate)
            if failure:
                return failure
    if "slices" in rule:
        failure = _range_failure(summary.slices, rule["slices"], "slices", "")
        if failure:
            return failure
    if "thickness_mm" in rule:
        failure = _range_failure(summary.thickness_mm, rule["thickness_mm"], "thickness", " mm")
        if failure:
            return failure
    if "orientation" in rule and summary.orientation not in rule["orientation"]:
        return f"orientation {summary.orientation} not {'/'.join(rule['orientation'])}"
    if "max_tilt_deg" in rule and summary.tilt_deg > rule["max_tilt_deg"]:
        return f"gantry tilt {summary.tilt_deg:g} deg > {rule['max_tilt_deg']:g} deg"
    if "contrast" in rule and summary.contrast != rule["contrast"]:
        return "no contrast agent in the headers" if rule["contrast"] else "contrast agent given"
    if "phase" in rule:
        if not summary.phase:
            return "no ContrastBolusAgentPhase"
        failure = _regex_failure(summary.phase, rule["phase"], "contrast phase")
        if failure:
            return failure
    return None


def _date(summary: SeriesSummary) -> int:
    return int(summary.date) if summary.date.isdigit() else 0


def _preference_key(summary: SeriesSummary, prefer: Sequence[Any]) -> tuple[float, ...]:
    """Sort key: smaller is preferred. The rule's ``prefer`` items, then most slices, lowest number."""
    key: list[float] = []
    thickness = summary.thickness_mm if summary.thickness_mm is not None else float("inf")
    for item in prefer:
        if item == "thinnest":
            key.append(thickness)
        elif item == "thickest":
            key.append(-thickness)
        elif item == "most_slices":
            key.append(-summary.slices)
        elif item == "fewest_slices":
            key.append(summary.slices)
        elif item == "earliest":
            key.append(_date(summary))
        elif item == "latest":
            key.append(-_date(summary))
        elif isinstance(item, Mapping):
            (what, pattern), = item.items()  # fmt: skip
            value = {"description": summary.description, "kernel": summary.kernel, "protocol": summary.protocol}[what]
            key.append(0 if re.search(pattern, value, re.IGNORECASE) else 1)
    return (*key, -summary.slices, summary.series_number or 0)


def _prefer_text(prefer: Sequence[Any]) -> str:
    words = [p if isinstance(p, str) else " ".join(f"{k} /{v}/" for k, v in p.items()) for p in prefer]
    return ", ".join([*words, "most slices"])


def _label(summary: SeriesSummary) -> str:
    return f"{summary.uid} (#{summary.series_number}, {summary.modality}, {summary.description or 'no description'})"


class SeveralPatientsError(ValueError):
    """An input that holds several patients, refused when no series was named (choosing one would
    segment an arbitrary patient).

    The message lists the patients and their studies' series counts without any identifier: by
    number, or (:meth:`describe` with namers, as the command line does with the identifier key) by
    the keyed pseudonyms ``patient-<h>`` / ``study-<h>`` that ``medseg dicom ls`` shows. It says
    how to choose: ``medseg dicom ls``, ``--series-uid``, or a manifest with one case per study.

    Attributes:
        where: the input, as messages name it.
        summaries: every series of the input.
    """

    def __init__(self, where: str, summaries: Sequence[SeriesSummary]) -> None:
        self.where = where
        self.summaries = tuple(summaries)
        super().__init__(self.describe())

    def patients(self) -> list[list[list[SeriesSummary]]]:
        """Patients -> studies -> their series; studies by UID, patients by their first study (as ``dicom ls``)."""
        grouped: dict[tuple[str, str, str], dict[str, list[SeriesSummary]]] = {}
        for s in sorted(self.summaries, key=lambda s: s.study_uid):
            grouped.setdefault((s.patient_id, s.patient_name, s.birth_date), {}).setdefault(s.study_uid, []).append(s)
        return [[series for _, series in sorted(studies.items())] for studies in grouped.values()]

    def describe(
        self,
        patient_name: Callable[[SeriesSummary], str] | None = None,
        study_name: Callable[[str], str] | None = None,
        *,
        shown: int = 4,
    ) -> str:
        """The message, one line; patients named by ``patient_name`` (default ``patient N``), studies by
        ``study_name`` of the study UID (default ``study N``); at most ``shown`` patients listed."""
        patients = self.patients()
        texts = []
        for p, studies in enumerate(patients[:shown], start=1):
            name = patient_name(studies[0][0]) if patient_name else f"patient {p}"
            listed = [
                f"{study_name(series[0].study_uid) if study_name else f'study {n}'} ({len(series)} series)"
                for n, series in enumerate(studies, start=1)
            ]
            texts.append(f"{name}: {', '.join(listed)}")
        more = f"; and {len(patients) - shown} more patient(s)" if len(patients) > shown else ""
        count = sum(len(studies) for studies in patients)
        return (
            f"{self.where}: holds {len(patients)} patients in {count} studies; one run segments one patient's "
            f"study. Patients: {'; '.join(texts)}{more}. To choose, list the series with 'medseg dicom ls "
            f"{self.where}' and give one study's folder or --series-uid UID; to segment every study, "
            f"'medseg manifest create --dicom {self.where}' then 'medseg batch' on that manifest"
        )


@dataclass(frozen=True)
class Selection:
    """The series chosen and why; :meth:`record` is what run.json keeps.

    Attributes:
        uid: the chosen SeriesInstanceUID.
        rule: the name of the rule that chose it (``--series-uid`` when given explicitly).
        source: where the rules came from.
        skipped: every other series UID -> why it was not chosen.
    """

    uid: str
    rule: str
    source: str
    skipped: dict[str, str] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"series_uid": self.uid, "rule": self.rule, "rules_source": self.source, "skipped": dict(self.skipped)}


def choose_series(
    summaries: Sequence[SeriesSummary],
    rules: SeriesRules | None = None,
    *,
    series_uid: str | None = None,
    where: str = "input",
    one_patient: bool = True,
    log: bool = True,
) -> Selection:
    """Choose one series by ``series_uid`` or by the rules (:data:`DEFAULT_RULES` when None).

    Args:
        summaries: the series of one input.
        rules: the rule set.
        series_uid: this series, whatever the rules say.
        where: the input, for messages.
        one_patient: without ``series_uid``, refuse an input that holds several patients (choosing
            one silently would segment an arbitrary patient); several studies of one patient are
            chosen among, with a warning.
        log: log the choice and the reasons (INFO).

    Raises:
        SeveralPatientsError: (a ``ValueError``) several patients and no ``series_uid``.
        ValueError: ``series_uid`` not found; no series satisfies any rule (the message gives each
            series' reason under each rule).
    """
    if series_uid is not None:
        if not any(s.uid == series_uid for s in summaries):
            available = "; ".join(f"{s.uid} ({s.modality}, {s.slices} slices)" for s in summaries)
            raise ValueError(f"{where}: no series with SeriesInstanceUID {series_uid}; the folder holds: {available}")
        return Selection(series_uid, "--series-uid", "--series-uid", {s.uid: "not the --series-uid" for s in summaries
                                                                      if s.uid != series_uid})  # fmt: skip
    patients = {(s.patient_id, s.patient_name, s.birth_date) for s in summaries}
    studies = sorted({s.study_uid for s in summaries})
    if one_patient and len(patients) > 1:
        raise SeveralPatientsError(where, summaries)
    if len(studies) > 1:
        logger.warning("%s: holds %d studies of one patient; choosing among all their series", where, len(studies))
    rules = rules or DEFAULT_RULES
    for rule in rules.rules:
        failures = {s.uid: rule_failure(s, rule) for s in summaries}
        accepted = [s for s in summaries if failures[s.uid] is None]
        if not accepted:
            continue
        prefer = rule.get("prefer", [])
        chosen = min(accepted, key=lambda s: _preference_key(s, prefer))
        skipped = {
            s.uid: f"rule '{rule['name']}': {failures[s.uid]}"
            if failures[s.uid]
            else f"rule '{rule['name']}' accepts it, series {chosen.series_number} preferred ({_prefer_text(prefer)})"
            for s in summaries
            if s.uid != chosen.uid
        }
        selection = Selection(chosen.uid, str(rule["name"]), rules.source, skipped)
        if log and len(summaries) > 1:
            logger.info(
                "%s holds %d series; rule '%s' (%s) chose series %s; skipped: %s",
                where, len(summaries), rule["name"], rules.source, _label(chosen),
                "; ".join(f"{_label(s)}: {skipped[s.uid]}" for s in summaries if s.uid != chosen.uid),
            )  # fmt: skip
        return selection
    reasons = " | ".join(
        f"{_label(s)}: " + "; ".join(f"rule '{r['name']}': {rule_failure(s, r)}" for r in rules.rules)
        for s in summaries
    )
    raise ValueError(f"{where}: no series satisfies the selection rules ({rules.source}): {reasons}")


def recorded_selection(read: Mapping[str, Any], chosen: Mapping[str, Any]) -> dict[str, Any]:
    """run.json's ``series_selection`` of a series a manifest pinned by UID.

    The read itself only says ``--series-uid`` (the manifest named the series); the rule that chose
    it ran when the manifest was made (``manifest create --dicom``), which kept the rule, its
    source and the reasons every other series of the study was skipped. This record carries those,
    with the read's series UID, study UID and skipped files, and ``chosen_at: "manifest"``.

    Args:
        read: :meth:`Selection.record` of the read (plus ``study_uid``, ``skipped_files``).
        chosen: the manifest case's ``series_selection`` (``rule``, ``rules_source``, ``skipped``).
    """
    return {
        **read,
        "rule": str(chosen["rule"]),
        "rules_source": str(chosen.get("rules_source", "")),
        "skipped": dict(chosen.get("skipped", {})),
        "chosen_at": "manifest",
    }
