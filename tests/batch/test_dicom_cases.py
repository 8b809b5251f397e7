"""What a batch takes over from a 'manifest create --dicom' manifest: the rule per case, the identifier policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.batch.dicom_cases import check_identifier_policy, record_manifest_selection
from pipelines.data.manifests.model import Case, Manifest
from pipelines.io.readers import Volume
from pipelines.segment import Prepared

CHOSEN = {
    "rule": "thin axial",
    "rules_source": "rules.json",
    "skipped": {"1.2": "rule 'thin axial': thickness 5 mm > 3 mm"},
}


def _manifest(dicom: dict | None) -> Manifest:
    return Manifest(Path("/data/dataset.json"), "x", "CT", {0: "background"}, (), dicom=dicom)


def test_a_manifest_that_kept_identifiers_needs_a_run_that_keeps_them() -> None:
    kept = _manifest({"identifiers_kept": True, "case_id_template": "{patient_id}"})
    with pytest.raises(ValueError, match=r"dataset.json: made by 'manifest create --dicom --keep-identifiers' \(case "
                       r"id template '\{patient_id\}'\).* pass --keep-identifiers to batch"):  # fmt: skip
        check_identifier_policy(kept, keep_identifiers=False)
    check_identifier_policy(kept, keep_identifiers=True)
    for other in (None, {"identifiers_kept": False}, {}):
        check_identifier_policy(_manifest(other), keep_identifiers=False)


def _prepared(series_uid: str) -> Prepared:
    read = {"series_uid": series_uid, "rule": "--series-uid", "rules_source": "--series-uid",
            "skipped": {"1.2": "not the --series-uid"}, "study_uid": "9.9", "skipped_files": {"SR": 1}}  # fmt: skip
    volume = Volume(np.zeros((2, 2, 2), np.int16), np.eye(4), Path("s"), "dicom", series_uid=series_uid,
                    series_selection=read)  # fmt: skip
    return Prepared(volume, {}, {})


def test_the_rule_recorded_at_manifest_creation_replaces_series_uid_in_run_json() -> None:
    prepared = _prepared("1.3")
    record_manifest_selection(prepared, Case("c", Path("s"), None, "test", "1.3", CHOSEN))
    assert prepared.volume.series_selection == {
        "series_uid": "1.3", "rule": "thin axial", "rules_source": "rules.json", "skipped": CHOSEN["skipped"],
        "study_uid": "9.9", "skipped_files": {"SR": 1}, "chosen_at": "manifest",
    }  # fmt: skip
    # a case without a pinned series (the run's rules chose) or without a record keeps the read's own
    for case in (Case("c", Path("s"), None, "test", None, CHOSEN), Case("c", Path("s"), None, "test", "1.3")):
        prepared = _prepared("1.3")
        record_manifest_selection(prepared, case)
        assert prepared.volume.series_selection["rule"] == "--series-uid"
