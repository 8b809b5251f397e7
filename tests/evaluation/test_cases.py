"""pipelines.evaluation.cases: where the real scans are, which are present, and how names are matched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.data.phantoms.tissues import CT_STRUCTURES
from pipelines.evaluation.cases import (
    REAL_CASES,
    SHARED_DATA_ENV,
    StructureMatch,
    available_cases,
    match_structures,
    reference_labels,
    shared_data_dir,
)

TOTALSEGMENTATOR = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 8: "adrenal_gland_right",
                    9: "adrenal_gland_left", 52: "aorta", 63: "inferior_vena_cava", 64: "portal_vein_and_splenic_vein",
                    6: "stomach", 7: "pancreas"}  # fmt: skip


def test_the_data_folder_is_beside_the_project_unless_the_environment_says_otherwise(tmp_path: Path) -> None:
    assert shared_data_dir({}, tmp_path / "main") == tmp_path / "shared" / "data"
    assert shared_data_dir({SHARED_DATA_ENV: str(tmp_path / "x")}, tmp_path / "main") == tmp_path / "x"
    assert SHARED_DATA_ENV == "MEDSEG_SHARED_DATA"  # the tests' shared_data fixture reads the same variable


def test_an_absent_data_folder_skips_every_case_with_the_reason(tmp_path: Path) -> None:
    present, skipped = available_cases(tmp_path / "nowhere")
    assert present == []
    assert list(skipped) == [case.name for case in REAL_CASES]
    assert all(f"data folder {tmp_path / 'nowhere'} not found" in r and SHARED_DATA_ENV in r for r in skipped.values())


def test_a_case_with_a_missing_file_is_skipped_and_the_others_kept(tmp_path: Path) -> None:
    for name, files in {"ct_abdomen_3mm": ("image.nii.gz", "label.nii.gz", "labels.json"),
                        "mri_brain_tumor": ("image.nrrd",)}.items():  # fmt: skip
        (tmp_path / name).mkdir()
        for file in files:
            (tmp_path / name / file).write_bytes(b"")
    present, skipped = available_cases(tmp_path, ["ct_abdomen_3mm", "mri_brain_tumor"])
    assert [case.name for case in present] == ["ct_abdomen_3mm"]
    assert skipped == {"mri_brain_tumor": f"missing {tmp_path / 'mri_brain_tumor' / 'label.nrrd'}"}
    with pytest.raises(ValueError, match=r"real scan case\(s\) ct_chest: expected some of ct_abdomen_3mm"):
        available_cases(tmp_path, ["ct_chest"])


def test_reference_labels_from_labels_json_and_for_the_binary_tumour_mask(tmp_path: Path) -> None:
    ct, brain = REAL_CASES[0], REAL_CASES[3]
    (tmp_path / ct.name).mkdir()
    (tmp_path / ct.name / "labels.json").write_text(json.dumps({"0": "background", "1": "spleen", "5": "liver"}))
    assert reference_labels(ct, tmp_path) == {1: "spleen", 5: "liver"}
    assert reference_labels(brain, tmp_path) == {1: "tumor"}
    (tmp_path / ct.name / "labels.json").write_text(json.dumps({"x": "liver"}))
    with pytest.raises(ValueError, match=r"labels\.json: entry 'x': 'liver': expected a non-negative integer key"):
        reference_labels(ct, tmp_path)
    (tmp_path / ct.name / "labels.json").write_text("{")
    with pytest.raises(ValueError, match=r"labels\.json: not valid JSON"):
        reference_labels(ct, tmp_path)


def test_our_ct_structure_names_map_onto_totalsegmentator_names() -> None:
    """Every phantom CT structure (BTCV-like names) finds its TotalSegmentator structure, but the tumour."""
    ours = {value: name for name, value in CT_STRUCTURES.items()}
    matches = {m.name: m for m in match_structures({0: "background", **ours}, TOTALSEGMENTATOR)}
    assert matches["portal_vein"] == StructureMatch("portal_vein", CT_STRUCTURES["portal_vein"],
                                                    "portal_vein_and_splenic_vein", 64)  # fmt: skip
    assert matches["liver"] == StructureMatch("liver", CT_STRUCTURES["liver"], "liver", 5)
    assert matches["kidney_right"].reference_value == 2 and matches["adrenal_gland_left"].reference_value == 9
    organs = ("spleen", "kidney_left", "stomach", "aorta", "inferior_vena_cava", "pancreas", "adrenal_gland_right")
    assert all(matches[name].reference_name == name for name in organs)
    assert not matches["liver_tumor"].in_reference and not matches["esophagus"].in_reference  # not in TOTALSEGMENTATOR
    assert "background" not in matches


def test_the_tumour_name_matches_either_spelling_and_two_names_for_one_structure_are_refused() -> None:
    assert match_structures({1: "tumour"}, {1: "tumor"}) == [StructureMatch("tumour", 1, "tumor", 1)]
    assert match_structures({1: "tumor"}, {1: "tumor"})[0].in_reference
    with pytest.raises(ValueError, match="'portal_vein' and 'portal_vein_and_splenic_vein' both map to"):
        match_structures({1: "portal_vein", 2: "portal_vein_and_splenic_vein"}, {64: "portal_vein_and_splenic_vein"})
