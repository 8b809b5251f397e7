"""Appearance facts: CT HU per tissue and phase, MR contrast ranges, settings, and the logged fallback."""

from __future__ import annotations

import logging

import pytest

from pipelines.data.appearance import (
    CT_GENERIC_HU,
    CT_HU_BY_PHASE,
    CT_PHASES,
    MR_MEAN_RANGE,
    CTAppearance,
    MRAppearance,
    appearance_settings,
    ct_intensity_table,
    mr_intensity_table,
)
from pipelines.data.phantoms.tissues import BRAIN_TISSUES, TISSUES

# The tissue classes the phantoms paint today; new ones (added by the anatomy work) fall back, logged.
CORE = [
    "air", "fat", "muscle", "lung", "bone_cortical", "bone_marrow", "liver", "liver_lesion", "spleen",
    "kidney_cortex", "kidney_medulla", "gallbladder", "stomach_wall", "gas", "artery", "vein", "portal_vein",
    "pancreas", "blood", "grey_matter", "white_matter", "csf", "tumor_rim", "edema",
]  # fmt: skip


@pytest.mark.parametrize("phase", CT_PHASES)
def test_every_core_tissue_has_an_ordered_range(phase: str) -> None:
    table = CT_HU_BY_PHASE[phase]
    for name in CORE:
        low, high = table[name]
        assert -1000 <= low <= high <= 3071, (phase, name)


def test_phases_follow_the_physiology() -> None:
    nc, art, pv = (CT_HU_BY_PHASE[p] for p in ("non_contrast", "arterial", "portal_venous"))
    assert art["artery"][0] > pv["artery"][1] - 100 and art["artery"][0] > nc["artery"][1]  # arterial peak
    assert pv["liver"][0] > nc["liver"][1]  # portal-venous liver enhancement
    assert art["kidney_cortex"][0] > art["kidney_medulla"][1]  # corticomedullary differentiation
    assert nc["liver"][0] >= nc["spleen"][0] and nc["fat"][1] < -50 and nc["lung"][1] < -700
    for table in (nc, art, pv):
        assert table["liver_lesion"][1] <= table["liver"][0]  # hypodense lesions stay visible


def test_ct_table_maps_ids_and_logs_the_fallback(caplog: pytest.LogCaptureFixture) -> None:
    names = {i: n for n, i in TISSUES.items()}
    with caplog.at_level(logging.WARNING, logger="pipelines.data.appearance"):
        table = ct_intensity_table({**names, 200: "titanium_plate"}, "arterial")
    assert set(table) == set(names) | {200}
    assert table[TISSUES["liver"]] == CT_HU_BY_PHASE["arterial"]["liver"]
    assert table[200] == CT_GENERIC_HU
    assert "titanium_plate" in caplog.text and "generic" in caplog.text
    with pytest.raises(ValueError, match="CT phase 'delayed'"):
        ct_intensity_table(names, "delayed")


def test_mr_table_keeps_signal_free_tissues_dark(caplog: pytest.LogCaptureFixture) -> None:
    names = {i: n for n, i in BRAIN_TISSUES.items()}
    with caplog.at_level(logging.WARNING, logger="pipelines.data.appearance"):
        table = mr_intensity_table({**names, 50: "new_tissue"})
    assert table[BRAIN_TISSUES["air"]] == (0.0, 0.0)
    assert table[BRAIN_TISSUES["skull"]][1] < 0.1
    assert table[BRAIN_TISSUES["white_matter"]] == MR_MEAN_RANGE
    assert table[50] == MR_MEAN_RANGE and "new_tissue" in caplog.text
    assert "grey_matter" not in caplog.text  # known names are not warned about


def test_settings_take_json_overrides_and_refuse_unknown_ones() -> None:
    ct = appearance_settings("CT", {"phases": ["arterial"], "slice_thickness_mm": [2, 5]})
    assert isinstance(ct, CTAppearance) and ct.phases == ("arterial",) and ct.slice_thickness_mm == (2, 5)
    mr = appearance_settings("MR", {"orderings": [["csf", "grey_matter"]]})
    assert isinstance(mr, MRAppearance) and mr.orderings == (("csf", "grey_matter"),)
    with pytest.raises(ValueError, match=r"\['metal_prob'\] unknown for MR"):
        appearance_settings("MR", {"metal_prob": 1.0})
    with pytest.raises(ValueError, match="phases"):
        appearance_settings("CT", {"phases": ["venous"]})
    with pytest.raises(ValueError, match="'PET'"):
        appearance_settings("PET")
