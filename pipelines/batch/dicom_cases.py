"""What a batch run takes over from a manifest made by ``medseg manifest create --dicom``.

Two things that the manifest decided and the run must not lose or contradict:

* the rule that chose each case's series: the manifest pins the series by ``series_uid`` (so the
  read itself only says ``--series-uid``); the case's ``series_selection`` (rule, rules source,
  why each other series of the study was skipped) goes into run.json instead
  (:func:`record_manifest_selection`);
* whether patient identifiers were allowed in its case ids and image paths
  (``medseg_dicom.identifiers_kept``): a run without ``--keep-identifiers`` would put them in
  folder names, run.json, the ledger, logs and reports, so it refuses such a manifest before any
  case is read (:func:`check_identifier_policy`).
"""

from __future__ import annotations

import dataclasses
import logging

from pipelines.data.manifests.model import Case, Manifest
from pipelines.io.series_rules import recorded_selection
from pipelines.segment import Prepared

logger = logging.getLogger(__name__)

__all__ = ["check_identifier_policy", "record_manifest_selection"]


def check_identifier_policy(manifest: Manifest, keep_identifiers: bool) -> None:
    """Refuse a manifest made with ``--keep-identifiers`` for a run that does not keep them.

    Raises:
        ValueError: naming the manifest, what it allows and the two ways out.
    """
    record = manifest.dicom or {}
    if record.get("identifiers_kept") is True and not keep_identifiers:
        template = record.get("case_id_template", "?")
        raise ValueError(
            f"{manifest.path}: made by 'manifest create --dicom --keep-identifiers' (case id template {template!r}): "
            "its case ids and image paths may carry patient names, IDs or birth dates, which this run would "
            "put in folder names, run.json, the ledger, logs and reports; pass --keep-identifiers to batch to "
            "accept that, or make the manifest again without --keep-identifiers"
        )


def record_manifest_selection(prepared: Prepared, case: Case) -> None:
    """Put the rule that chose the case's series at manifest creation into run.json's ``series_selection``.

    Only for a case whose read took the manifest's ``series_uid``; a case without one had its series
    chosen by the run's own rules, and that record stays.
    """
    if not case.series_selection or not case.series_uid:
        return
    volume = prepared.volume
    read = volume.series_selection
    if read is None or volume.series_uid != case.series_uid:
        return
    prepared.volume = dataclasses.replace(volume, series_selection=recorded_selection(read, case.series_selection))
    logger.debug("case %s: series %s chosen by rule %r when the manifest was made", case.case_id,
                 case.series_uid, case.series_selection.get("rule"))  # fmt: skip
