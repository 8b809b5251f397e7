"""Tests of pipelines.outputs.names: SNOMED codes, laterality modifiers, label names and colours."""

from __future__ import annotations

import pytest
from pydicom.sr.codedict import codes

from pipelines.outputs.names import LATERALITY, SNOMED, TUMOUR_ORGANS, label_colour, name_of, names_by_id


def test_snomed_codes_agree_with_pydicom_dictionary() -> None:
    known: dict[str, set[str]] = {}
    for keyword in codes.SCT.dir():
        code = getattr(codes.SCT, keyword)
        known.setdefault(code.value, set()).add(code.meaning.lower())
    # Sided kidney concepts are not in pydicom's DICOM subset of SNOMED CT.
    not_in_dictionary = {"kidney_right", "kidney_left"}
    for name, (value, meaning) in SNOMED.items():
        if name in not_in_dictionary:
            continue
        assert value in known, f"{name}: {value} unknown"
        assert meaning.lower() in known[value], f"{name}: {value} means {known[value]}, not {meaning}"
    assert SNOMED["liver"] == ("10200004", "Liver") and SNOMED["spleen"] == ("78961009", "Spleen")
    assert SNOMED["kidney_right"][0] == "9846003" and SNOMED["kidney_left"][0] == "18639004"


def test_laterality_modifiers_are_pydicoms_right_and_left() -> None:
    for name, side in (("adrenal_gland_right", codes.SCT.Right), ("adrenal_gland_left", codes.SCT.Left)):
        assert LATERALITY[name] == (side.value, side.scheme_designator, side.meaning)
        assert name in SNOMED
    assert all(organ is None or organ in SNOMED for organ in TUMOUR_ORGANS.values())


def test_names_by_id_and_name_of() -> None:
    names = names_by_id({"1": "liver", 2: "spleen"})
    assert names == {1: "liver", 2: "spleen"}
    assert (name_of(2, names), name_of(9, names)) == ("spleen", "label_9")
    with pytest.raises(TypeError, match=r"label_names: keys must be integer label ids, got \['liver'\]"):
        names_by_id({"liver": "x"})


def test_label_colours_are_fixed_distinct_and_repeat_every_54() -> None:
    table = [label_colour(label) for label in range(1, 55)]
    assert len(set(table)) == 54
    assert all(0.0 <= c <= 1.0 for rgb in table for c in rgb)
    assert label_colour(55) == label_colour(1) and label_colour(0) == label_colour(54)
