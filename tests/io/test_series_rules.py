"""Series selection rules: schema, evaluation with reasons, bundle defaults, --series-uid first."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipelines.bundles.bundle import load_bundle
from pipelines.io.dicom_tree import SeriesSummary
from pipelines.io.series_rules import (
    DEFAULT_RULES,
    SeveralPatientsError,
    choose_series,
    load_series_rules,
    recorded_selection,
    rules_from_bundle,
    rules_from_document,
)
from tests.helpers import BUNDLES

BASE = SeriesSummary(
    uid="1.1", study_uid="9.9", patient_id="P", patient_name="N", birth_date="", modality="CT", date="20230101",
    description="", protocol="", study_description="", kernel="B30f", image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
    series_number=1, slices=64, pixel_spacing_mm=(0.7, 0.7), thickness_mm=2.5, spacing_mm=2.5,
    orientation="axial", tilt_deg=0.0, gaps=0, duplicates=0, contrast=False, phase="",
)  # fmt: skip


def _series(uid: str, number: int, **changes: object) -> SeriesSummary:
    return dataclasses.replace(BASE, uid=uid, series_number=number, **changes)


STUDY = [
    _series("1.1", 1, description="Topogram", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), slices=2),
    _series("1.2", 2, description="Abdomen 5.0", thickness_mm=5.0, slices=60),
    _series("1.3", 3, description="Abdomen 1.0 B70f", thickness_mm=1.0, slices=300, kernel="B70f"),
    _series("1.4", 4, description="Abdomen 2.0 B30f", thickness_mm=2.0, slices=150, contrast=True),
    _series("1.5", 5, description="Cor MPR", orientation="coronal", slices=200),
    _series("1.6", 6, description="MIP", image_type=("DERIVED", "SECONDARY", "AXIAL"), slices=400),
    _series("1.7", 7, description="Tilted 3mm", thickness_mm=3.0, slices=80, tilt_deg=12.0),
]


def test_ct_bundle_rules_pick_the_thinnest_soft_tissue_axial_series() -> None:
    bundle = load_bundle(BUNDLES / "ct_abdomen_unet")
    rules = rules_from_bundle(bundle.metadata, "ct bundle")
    assert rules is not None and rules.source == "ct bundle (medseg_series_rules)"
    selection = choose_series(STUDY, rules)
    assert selection.uid == "1.4"  # 1.0 mm B70f (bone kernel) is thinner, the soft-tissue kernel wins
    rule = rules.names[0]
    assert selection.rule == rule
    assert selection.skipped == {
        "1.1": f"rule '{rule}': image type ORIGINAL/PRIMARY/LOCALIZER is LOCALIZER",
        "1.2": f"rule '{rule}' accepts it, series 4 preferred (kernel /^(B[1-4][0-9]|Br[1-4][0-9]|I[1-4][0-9]|"
        "STANDARD|SOFT|FC0[0-9])/, thinnest, most slices)",
        "1.3": f"rule '{rule}' accepts it, series 4 preferred (kernel /^(B[1-4][0-9]|Br[1-4][0-9]|I[1-4][0-9]|"
        "STANDARD|SOFT|FC0[0-9])/, thinnest, most slices)",
        "1.5": f"rule '{rule}': orientation coronal not axial",
        "1.6": f"rule '{rule}': image type DERIVED/SECONDARY lacks ORIGINAL/PRIMARY",
        "1.7": f"rule '{rule}' accepts it, series 4 preferred (kernel /^(B[1-4][0-9]|Br[1-4][0-9]|I[1-4][0-9]|"
        "STANDARD|SOFT|FC0[0-9])/, thinnest, most slices)",
    }
    assert selection.record()["rules_source"] == "ct bundle (medseg_series_rules)"


@pytest.mark.parametrize("bundle", ["ct_abdomen_unet", "mri_brain_tumor"])
def test_bundle_rules_take_a_derived_series_only_when_no_original_one_qualifies(bundle: str) -> None:
    rules = rules_from_bundle(load_bundle(BUNDLES / bundle).metadata, bundle)
    modality = "CT" if bundle.startswith("ct") else "MR"
    phantom = _series("2.1", 1, modality=modality, image_type=("DERIVED", "PRIMARY", "AXIAL"), slices=64)
    original = _series("2.2", 2, modality=modality, slices=40, thickness_mm=3.0)

    alone = choose_series([phantom], rules)
    assert alone.uid == "2.1" and alone.rule == rules.names[1] and "derived" in alone.rule
    mixed = choose_series([phantom, original], rules)
    assert mixed.uid == "2.2" and mixed.rule == rules.names[0]  # the original wins although it has fewer slices
    assert "2.1" in mixed.skipped


def test_mr_bundle_rules_refuse_a_ct_study_with_every_reason() -> None:
    rules = rules_from_bundle(load_bundle(BUNDLES / "mri_brain_tumor").metadata, "mr bundle")
    with pytest.raises(ValueError, match=r"scan: no series satisfies the selection rules \(mr bundle") as err:
        choose_series(STUDY, rules, where="scan")
    assert "1.4 (#4, CT, Abdomen 2.0 B30f): rule 'MR volume, >= 20 slices': modality CT not in MR" in str(err.value)


@pytest.mark.parametrize(
    ("rule", "chosen", "reason_of"),
    [
        ({"thickness_mm": {"min": 4}}, "1.2", ("1.4", "thickness 2 mm < 4 mm")),
        ({"slices": {"max": 100}, "prefer": ["thickest"]}, "1.2", ("1.3", "slices 300 > 100")),
        ({"description": "b70f"}, "1.3", ("1.2", "description 'Abdomen 5.0' does not match /b70f/")),
        ({"description_not": "abdomen"}, "1.6", ("1.2", "description 'Abdomen 5.0' matches /abdomen/")),
        ({"contrast": True}, "1.4", ("1.2", "no contrast agent in the headers")),
        ({"max_tilt_deg": 5, "thickness_mm": {"min": 2.9}}, "1.2", ("1.7", "gantry tilt 12 deg > 5 deg")),
        ({"phase": "arterial"}, None, ("1.2", "no ContrastBolusAgentPhase")),
        ({"prefer": ["fewest_slices"], "image_type_none": ["LOCALIZER"]}, "1.2", ("1.3", "series 2 preferred")),
    ],
)
def test_each_criterion_and_its_reason(rule: dict, chosen: str | None, reason_of: tuple[str, str]) -> None:
    rules = rules_from_document({"rules": [{"name": "r", **rule}]}, "test")
    if chosen is None:
        with pytest.raises(ValueError, match=reason_of[1]):
            choose_series(STUDY, rules)
        return
    selection = choose_series(STUDY, rules)
    assert selection.uid == chosen
    assert reason_of[1] in selection.skipped[reason_of[0]]


def test_later_rules_apply_when_earlier_ones_match_nothing() -> None:
    rules = rules_from_document(
        {"rules": [{"name": "MR", "modality": ["MR"]}, {"name": "thin", "thickness_mm": {"max": 1.5}}]}, "test"
    )
    selection = choose_series(STUDY, rules)
    assert (selection.uid, selection.rule) == ("1.3", "thin")


def test_series_uid_wins_over_rules_and_defaults_apply_without_rules() -> None:
    selection = choose_series(STUDY, DEFAULT_RULES, series_uid="1.5")
    assert selection.rule == "--series-uid" and selection.skipped["1.1"] == "not the --series-uid"
    with pytest.raises(ValueError, match=r"no series with SeriesInstanceUID 7\.7"):
        choose_series(STUDY, None, series_uid="7.7")
    assert choose_series(STUDY, None).uid == "1.3"  # the defaults: the original CT series with the most slices


def test_default_rules_never_prefer_a_derived_or_secondary_series() -> None:
    """The 400-slice MIP (DERIVED/SECONDARY) loses to the 300-slice original; so does a derived CT to an
    original MR; a study of derived images only (the phantom writer's) still has its series chosen."""
    selection = choose_series(STUDY, None)
    assert (selection.uid, selection.rule) == ("1.3", "original CT series with the most slices")
    assert selection.skipped["1.6"] == (
        "rule 'original CT series with the most slices': image type DERIVED/SECONDARY/AXIAL is DERIVED/SECONDARY"
    )
    secondary = _series("1.8", 8, image_type=("ORIGINAL", "SECONDARY"), slices=999)
    assert choose_series([*STUDY, secondary], None).uid == "1.3"
    mixed = [_series("3.1", 1, modality="MR", slices=20), _series("3.2", 2, image_type=("DERIVED", "PRIMARY"))]
    assert choose_series(mixed, None).rule == "original series with the most slices"
    assert choose_series(mixed, None).uid == "3.1"
    phantom = [_series("4.1", 1, image_type=("DERIVED", "PRIMARY", "AXIAL")), STUDY[0]]
    selection = choose_series(phantom, None)
    assert selection.uid == "4.1" and selection.rule.startswith("derived or secondary CT series")
    untyped = [_series("5.1", 1, image_type=(), slices=10), _series("5.2", 2, image_type=("DERIVED",), slices=90)]
    assert choose_series(untyped, None).uid == "5.1"  # no ImageType counts as original


def test_several_patients_are_refused_one_patient_with_two_studies_is_chosen_among() -> None:
    other = _series("2.1", 1, study_uid="8.8", patient_id="Q")
    with pytest.raises(SeveralPatientsError, match="holds 2 patients in 2 studies") as err:
        choose_series([*STUDY, other], None)
    # no identifier in the message; patients and studies by number (the CLI names them by keyed pseudonym)
    assert "Patients: patient 1: study 1 (1 series); patient 2: study 1 (7 series). To choose" in str(err.value)
    named = err.value.describe(lambda s: f"patient-{s.patient_id.lower()}", lambda uid: f"study-{uid}", shown=1)
    assert "Patients: patient-q: study-8.8 (1 series); and 1 more patient(s). To choose, list the series with " in named
    assert "'medseg dicom ls input' and give one study's folder or --series-uid UID" in named
    assert "'medseg manifest create --dicom input' then 'medseg batch'" in named
    same_patient = dataclasses.replace(other, patient_id="P", slices=999)
    assert choose_series([*STUDY, same_patient], None).uid == "2.1"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"rules": []}, r"series rules.rules: \[\] should be non-empty"),
        ({"rules": [{"name": "x", "colour": "red"}]}, r"rules\[0\]: Additional properties are not allowed"),
        ({"rules": [{"name": "x", "description": "("}]}, r"rules\[0\].description: '\(' is not a regular expression"),
        ({"rules": [{"name": "x", "orientation": ["diagonal"]}]}, r"rules\[0\].orientation\[0\]: 'diagonal' is not"),
        ({"rules": [{"name": "x", "prefer": ["newest"]}]}, r"rules\[0\].prefer\[0\]"),
    ],
)
def test_bad_rule_documents_are_refused_with_the_location(document: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules_from_document(document, "rules.json")


def test_rule_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="series rules file not found"):
        load_series_rules(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match=r"bad\.json: series rules are not valid JSON"):
        load_series_rules(tmp_path / "bad.json")
    (tmp_path / "ok.json").write_text(json.dumps({"rules": [{"name": "any"}]}))
    assert load_series_rules(tmp_path / "ok.json").names == ["any"]


def test_recorded_selection_keeps_the_read_and_takes_the_manifest_rule() -> None:
    read = {**choose_series(STUDY, None, series_uid="1.4").record(), "study_uid": "9.9", "skipped_files": {}}
    record = recorded_selection(read, {"rule": "thin", "rules_source": "bundle", "skipped": {"1.2": "thick"}})
    assert record == {"series_uid": "1.4", "rule": "thin", "rules_source": "bundle", "skipped": {"1.2": "thick"},
                      "study_uid": "9.9", "skipped_files": {}, "chosen_at": "manifest"}  # fmt: skip
