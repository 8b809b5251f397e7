"""Case ids without patient identifiers: keyed hashes of DICOM UIDs, and templates that may use more.

By default a study's case id is ``study-<h>``, where ``<h>`` is the first 12 hex digits of
HMAC-SHA256(key, StudyInstanceUID) (a series' ``<h>`` the same of its SeriesInstanceUID). The hash
is keyed because UIDs are not secret (they travel in every file of the study, and many embed the
scanner's root and a date): an unkeyed hash could be recomputed by anyone holding the images, a
keyed one only by whoever holds the key. The same key gives the same case id for the same study in
every manifest, so runs can be joined; run.json records the UIDs to link results back.

The key is a file of random bytes (:func:`load_or_create_key`); the command line uses ``--id-key
FILE``, by default ``$XDG_CONFIG_HOME/medseg/id-key`` (``~/.config/medseg/id-key``), created with
mode 0600 on first use. Keep it as you would a re-identification list.

A ``--case-id-template`` may use other fields explicitly; those that identify a patient (name, ID,
birth date, study date: :data:`IDENTIFYING_FIELDS`) only with ``keep_identifiers``.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.io.dicom_tree import SeriesSummary
from pipelines.io.writers import write_bytes

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SERIES_TEMPLATE",
    "DEFAULT_STUDY_TEMPLATE",
    "IDENTIFYING_FIELDS",
    "TEMPLATE_FIELDS",
    "case_id_for",
    "identifier_in_path",
    "keyed_hash",
    "load_or_create_key",
    "patient_pseudonym",
    "study_pseudonym",
]

KEY_BYTES = 32
DEFAULT_STUDY_TEMPLATE = "study-{study_hash}"
"""Case id of one case per study."""
DEFAULT_SERIES_TEMPLATE = "study-{study_hash}-series-{series_hash}"
"""Case id of one case per series (``--all-matching``)."""

IDENTIFYING_FIELDS: tuple[str, ...] = ("patient_name", "patient_id", "birth_date", "study_date")
"""Template fields that identify a patient; a template may use them only with ``keep_identifiers``."""

TEMPLATE_FIELDS: tuple[str, ...] = (
    "study_hash",
    "series_hash",
    "patient_hash",
    "modality",
    "series_number",
    "study_uid",
    "series_uid",
    *IDENTIFYING_FIELDS,
)
"""Every field a case id template may use."""


def load_or_create_key(path: str | Path) -> bytes:
    """The key in ``path``; a new random key (mode 0600) when the file does not exist.

    Raises:
        ValueError: the file holds fewer than 16 bytes.
        PermissionError: it cannot be read or created.
    """
    path = Path(path).expanduser()
    if path.is_file():
        key = path.read_bytes()
        if len(key) < 16:
            raise ValueError(f"{path}: identifier key holds {len(key)} bytes; expected at least 16 random bytes")
        return key
    key = secrets.token_bytes(KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)  # the key file is private from its first byte
    try:
        write_bytes(key, path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    logger.info("created a new identifier key %s (keep it private; the same key gives the same case ids)", path)
    return key


def keyed_hash(key: bytes, value: str, digits: int = 12) -> str:
    """The first ``digits`` hex digits of HMAC-SHA256(key, value)."""
    return hmac.new(key, value.encode("utf-8"), "sha256").hexdigest()[:digits]


def patient_pseudonym(key: bytes, summary: SeriesSummary) -> str:
    """``patient-<8 hex digits>``: a keyed hash of the patient's ID, name and birth date (``dicom ls``, messages)."""
    return f"patient-{keyed_hash(key, _patient_key(summary))[:8]}"


def study_pseudonym(key: bytes, study_uid: str) -> str:
    """``study-<12 hex digits>``: a keyed hash of the Study Instance UID, the default case id of a study."""
    return f"study-{keyed_hash(key, study_uid)}"


def _patient_key(summary: SeriesSummary) -> str:
    return f"{summary.patient_id}\0{summary.patient_name}\0{summary.birth_date}"


def _fields(summary: SeriesSummary, key: bytes) -> dict[str, Any]:
    return {
        "study_hash": keyed_hash(key, summary.study_uid),
        "series_hash": keyed_hash(key, summary.uid),
        "patient_hash": keyed_hash(key, _patient_key(summary)),
        "modality": summary.modality,
        "series_number": summary.series_number if summary.series_number is not None else "",
        "study_uid": summary.study_uid,
        "series_uid": summary.uid,
        "patient_name": summary.patient_name,
        "patient_id": summary.patient_id,
        "birth_date": summary.birth_date,
        "study_date": summary.date,
    }


def case_id_for(template: str, summary: SeriesSummary, key: bytes, *, keep_identifiers: bool = False) -> str:
    """Fill a case id template (``str.format`` fields of :data:`TEMPLATE_FIELDS`) for one series.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` (a case id names a folder).

    Raises:
        ValueError: an unknown field, an identifying field without ``keep_identifiers``, or an
            empty result.
    """
    try:
        used = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ValueError(f"case id template {template!r}: {err}") from err
    unknown = [n for n in used if n not in TEMPLATE_FIELDS]
    if unknown:
        raise ValueError(
            f"case id template {template!r}: unknown field(s) {', '.join(unknown)}; "
            f"expected {', '.join(TEMPLATE_FIELDS)}"
        )
    identifying = [n for n in used if n in IDENTIFYING_FIELDS]
    if identifying and not keep_identifiers:
        raise ValueError(
            f"case id template {template!r} uses {', '.join(identifying)}, which identify the patient; "
            "pass --keep-identifiers to put them in case ids (and so in folder names, reports and logs)"
        )
    text = template.format(**_fields(summary, key))
    case_id = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    if not case_id:
        raise ValueError(f"case id template {template!r} gives an empty case id for series {summary.uid}")
    return case_id


def _variants(value: str) -> set[str]:
    value = value.strip().lower()
    if len(value) < 3:
        return set()
    words = [w for w in re.split(r"[\^\s,]+", value) if w]
    found = {value, value.replace("^", " "), value.replace("^", "_"), value.replace("^", ""), "_".join(words)}
    found |= {w for w in words if len(w) >= 4}  # a family name alone
    return {v for v in found if len(v) >= 3}


def identifier_in_path(path: str, summary: SeriesSummary | Mapping[str, str]) -> bool:
    """True when a folder or file name of ``path`` contains the patient's name, ID or birth date."""
    if isinstance(summary, SeriesSummary):
        values = [summary.patient_name, summary.patient_id, summary.birth_date]
    else:
        values = [summary.get("patient_name", ""), summary.get("patient_id", ""), summary.get("birth_date", "")]
    variants = set().union(*(_variants(v) for v in values))
    parts = [p.lower() for p in Path(path).parts]
    return any(v in part for part in parts for v in variants)
