"""QC flags: each fires on a case made to trigger it and stays quiet on a clean one; the CLI shows them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.batch.flags import quality_cell
from pipelines.cli.main import main
from pipelines.data.phantoms.degrade import degrade_ct, make_head_ct_phantom
from pipelines.data.phantoms.make import make_brain_tumor_phantom, make_ct_phantom, make_mr_phantom
from pipelines.data.phantoms.write import write_nifti
from pipelines.outputs.confidence import ConfidenceMaps, PostprocessSignals
from pipelines.outputs.quality import banner, read_quality_spec, stats_and_quality
from tests.helpers import BUNDLES

SHAPE = (40, 40, 30)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 mm³ voxels
NAMES = {1: "liver", 2: "spleen"}
METADATA = {
    "network_data_format": {"inputs": {"image": {"modality": "CT"}}},
    "medseg_qc": {
        "expected_structures": ["liver", "spleen"],
        "volume_ml": {"liver": [10, 100], "spleen": [1, 50]},
        "input_range": [-3100, 4100],
        "input_background_at_most": -500,
        "min_confidence": 0.85,
        "max_high_entropy_fraction": 0.3,
        "min_tta_agreement": 0.8,
        "max_removed_fraction": 0.2,
    },
}
SPEC = read_quality_spec(METADATA)


def _clean() -> tuple[np.ndarray, np.ndarray, PostprocessSignals]:
    labels = np.zeros(SHAPE, np.uint8)
    labels[5:25, 5:25, 5:20] = 1  # 6000 voxels = 48 mL
    labels[28:35, 28:35, 10:18] = 2  # 392 voxels = 3.1 mL
    image = np.full(SHAPE, -1000, np.int16)  # air around the body
    image[3:37, 3:37, 3:27] = 40
    maps = ConfidenceMaps(np.full(SHAPE, 250, np.uint8), np.zeros(SHAPE, np.uint8), classes=3)
    signals = PostprocessSignals(maps, labels.copy(), labels.copy(), {1: 0.97, 2: 0.95}, ["identity"] * 8)
    return labels, image, signals


def _assess(labels, image, signals, modality: str = "") -> tuple[list[dict], dict]:
    return stats_and_quality(labels, image, AFFINE, NAMES, signals, SPEC, input_modality=modality, tta="flips")


def test_a_clean_case_has_no_flags() -> None:
    stats, quality = _assess(*_clean())
    assert quality["flagged"] is False and quality["flags"] == [] and quality["reasons"] == []
    assert [s["flags"] for s in stats] == [[], []]
    assert stats[0]["confidence"] == pytest.approx(250 / 255) and stats[0]["tta_agreement"] == 0.97
    assert stats[0]["removed_fraction"] == 0.0 and stats[0]["high_entropy_fraction"] == 0.0
    assert quality["tta"] == "flips" and quality["tta_passes"] == 8
    assert banner(quality) is None


def _volume_out_of_range(labels, image, signals):
    labels[labels == 2] = 0
    labels[30:31, 30:31, 10:12] = 2  # 16 mm³ = 0.016 mL
    return labels, image, signals


def _fragmented(labels, image, signals):
    before = signals.before_cleanup
    before[:, 0:4, ::2] = 1  # slabs the clean-up removed: 2400 voxels beside the 6000 kept
    return labels, image, signals


def _low_confidence(labels, image, signals):
    signals.confidence.max_probability[labels == 1] = 150
    return labels, image, signals


def _high_entropy(labels, image, signals):
    signals.confidence.entropy[labels == 1] = 200
    return labels, image, signals


def _low_agreement(labels, image, signals):
    signals.tta_agreement[1] = 0.5
    return labels, image, signals


def _missing(labels, image, signals):
    labels[labels == 2] = 0
    return labels, image, signals


def _no_air(labels, image, signals):
    return labels, np.where(image < 0, 0, image).astype(np.int16), signals  # an MR-like image


def _out_of_range(labels, image, signals):
    return labels, (image.astype(np.int32) * 10).astype(np.int32), signals  # -10000 HU: not HU


CASES = {
    "volume_range": (_volume_out_of_range, "spleen: 0.0 mL is outside the plausible 1-50 mL the bundle declares"),
    "fragmented": (_fragmented, "liver: 29% of its voxels were scattered islands removed by the clean-up"),
    "low_confidence": (_low_confidence, "liver: mean class probability 0.59 inside it, below 0.85"),
    "low_confidence_entropy": (_high_entropy, "liver: 100% of its voxels have an entropy above 0.5 nats"),
    "low_agreement": (_low_agreement, "liver: the augmented predictions agree at Dice 0.50, below 0.8"),
    "missing_structure": (_missing, "spleen: expected by the bundle, not found"),
    "input_intensity": (_no_air, "the darkest 1% of voxels are above -500 HU"),
    "input_intensity_range": (_out_of_range, "outside the -3100..4100 HU the model expects"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_flag_fires_on_a_case_made_to_trigger_it(case: str) -> None:
    make, reason = CASES[case]
    _, quality = _assess(*make(*_clean()))
    code = {"low_confidence_entropy": "low_confidence", "input_intensity_range": "input_intensity"}.get(case, case)
    assert quality["flagged"] is True
    assert {f["code"] for f in quality["flags"]} == {code}, quality["flags"]
    assert any(r.startswith(reason) or reason in r for r in quality["reasons"]), quality["reasons"]
    assert banner(quality).startswith("QC FLAGGED")


def test_fragmentation_is_the_share_removed_by_the_clean_up() -> None:
    labels, image, signals = _fragmented(*_clean())
    stats, quality = _assess(labels, image, signals)
    removed = stats[0]["removed_fraction"]
    added = int((signals.before_cleanup == 1).sum()) - 6000
    assert removed == pytest.approx(added / (6000 + added))
    assert (
        stats[0]["flags"] == ["fragmented"]
        and f"{removed:.0%} of its voxels were scattered islands" in (quality["reasons"][0])
    )


def test_input_modality_from_the_header_is_checked() -> None:
    _, quality = _assess(*_clean(), modality="MR")
    assert quality["reasons"] == ["the input is MR (its DICOM header says so); the model expects CT"]


def test_a_structure_cut_by_the_field_of_view_is_a_warning_not_a_flag() -> None:
    labels, image, signals = _clean()
    labels[5:25, 5:25, 0:5] = 1  # the liver now reaches slice 0 with its full cross-section
    signals.before_cleanup, signals.after_cleanup = labels.copy(), labels.copy()
    stats, quality = _assess(labels, image, signals)
    assert quality["flagged"] is False and stats[0]["flags"] == ["truncated"]
    assert quality["warnings"] == [
        "liver: cut by the edge of the field of view (axis k, slice 0: a cut face of 100% of its largest "
        "cross-section); its volume is unreliable"
    ]
    assert banner(quality) == "QC note (not flagged): " + quality["warnings"][0]  # amber in the preview
    assert quality_cell(quality).startswith("<span class='ok'>no flags</span><br>note: liver: cut by the edge")
    labels[5:25, 5:25, 0:5] = 0
    labels[14, 14, 0:5] = 1  # only a thin spike touches the edge: no warning
    _, quality = _assess(labels, image, signals)
    assert quality["warnings"] == []


def test_a_cut_organ_below_its_volume_range_is_a_warning_an_uncut_one_a_flag() -> None:
    labels, image, signals = _clean()
    labels[labels == 1] = 0
    labels[5:25, 5:25, 0:2] = 1  # a liver cut by slice 0: 800 voxels = 6.4 mL, under the 10 mL minimum
    signals.before_cleanup, signals.after_cleanup = labels.copy(), labels.copy()
    stats, quality = _assess(labels, image, signals)
    assert quality["flagged"] is False and stats[0]["flags"] == ["volume_range", "truncated"]
    assert quality["warnings"][0] == (
        "liver: 6.4 mL is outside the plausible 10-100 mL the bundle declares (it is cut by the field of view)"
    )
    assert [f["severity"] for f in quality["flags"]] == ["warn", "warn"]
    labels[5:25, 5:25, 0:2] = 0
    labels[5:25, 5:25, 4:6] = 1  # the same slab inside the field of view: a real flag
    _, quality = _assess(labels, image, signals)
    assert quality["flagged"] is True and quality["reasons"][0].startswith("liver: 6.4 mL is outside the plausible")


def test_per_structure_thresholds_override_the_case_wide_ones() -> None:
    qc = dict(METADATA["medseg_qc"], structures={"liver": {"min_confidence": 0.5, "max_high_entropy_fraction": 0.9}})
    spec = read_quality_spec({**METADATA, "medseg_qc": qc})
    assert spec.threshold("liver", "min_confidence") == 0.5 and spec.threshold("spleen", "min_confidence") == 0.85
    labels, image, signals = _clean()
    signals.confidence.max_probability[labels > 0] = 150  # 0.59 in both structures
    stats, quality = stats_and_quality(labels, image, AFFINE, NAMES, signals, spec, tta="flips")
    assert stats[0]["flags"] == [] and stats[1]["flags"] == ["low_confidence"]  # liver's bar is 0.5, spleen's 0.85
    assert quality["reasons"] == ["spleen: mean class probability 0.59 inside it, below 0.85"]
    assert quality["thresholds"]["structures"] == {"liver": {"min_confidence": 0.5, "max_high_entropy_fraction": 0.9}}
    signals.confidence.max_probability[labels == 1] = 100  # 0.39: under the liver's own bar as well
    _, quality = stats_and_quality(labels, image, AFFINE, NAMES, signals, spec)
    assert "liver: mean class probability 0.39 inside it, below 0.5" in quality["reasons"]


def test_without_signals_confidence_columns_are_empty() -> None:
    labels, image, _ = _clean()
    stats, quality = _assess(labels, image, None)
    assert stats[0]["confidence"] is None and stats[0]["removed_fraction"] is None and not quality["flagged"]


@pytest.mark.parametrize(
    ("qc", "message"),
    [
        ([], "medseg_qc must be an object"),
        ({"expected_structures": "liver"}, "medseg_qc.expected_structures must be a list"),
        ({"volume_ml": {"liver": [100]}}, r"medseg_qc.volume_ml.liver: expected \[min_ml, max_ml\]"),
        ({"volume_ml": {"liver": [100, 10]}}, r"medseg_qc.volume_ml.liver: expected 0 <= min <= max, got \[100, 10\]"),
        ({"min_confidence": "high"}, "medseg_qc.min_confidence: expected a finite number, got 'high'"),
        ({"input_range": [0]}, r"medseg_qc.input_range: expected \[low, high\]"),
        ({"structures": []}, "medseg_qc.structures must be an object"),
        ({"structures": {"liver": 0.5}}, "medseg_qc.structures.liver must be an object of thresholds"),
        ({"structures": {"liver": {"min_volume": 1}}}, "medseg_qc.structures.liver: unknown threshold.s. min_volume"),
        ({"structures": {"liver": {"min_confidence": None}}}, "medseg_qc.structures.liver.min_confidence: expected a"),
        ({"min_depth_mm": 8}, r"medseg_qc.min_depth_mm: expected \{structure: mm\}, got 8"),
        ({"min_depth_mm": {"tumor": "deep"}}, "medseg_qc.min_depth_mm.tumor: expected a finite number"),
        ({"min_depth_mm": {"tumor": -1}}, "medseg_qc.min_depth_mm: expected depths >= 0 mm"),
    ],
)
def test_bad_declarations_are_refused_with_the_key(qc: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"b/metadata.json: {message}"):
        read_quality_spec({"medseg_qc": qc}, "b/metadata.json")


def test_shipped_bundles_declare_plausible_ranges() -> None:
    for name in ("ct_abdomen_unet", "ct_multiorgan_unetr", "mri_brain_tumor"):
        metadata = json.loads((BUNDLES / name / "configs" / "metadata.json").read_text())
        spec = read_quality_spec(metadata)
        assert spec.modality in ("CT", "MR") and metadata["medseg_tta_default"] == "none"
    ct = read_quality_spec(json.loads((BUNDLES / "ct_abdomen_unet" / "configs" / "metadata.json").read_text()))
    assert ct.expected_structures == ("spleen", "kidney_right", "kidney_left", "liver")
    assert ct.volume_ml["liver"][0] <= 1000 <= ct.volume_ml["liver"][1]
    assert ct.threshold("liver_tumor", "min_confidence") < ct.min_confidence  # calibrated: lesions are mostly boundary


def test_degradations_are_graded_and_checked() -> None:
    phantom = make_ct_phantom(3, shape=(48, 40, 32), spacing_mm=(6.0, 6.0, 8.0), noise_hu=0.0)
    assert np.array_equal(degrade_ct(phantom, "noise", 0.0).image, phantom.image)
    shifted = degrade_ct(phantom, "shift", 0.5)
    assert np.median(shifted.image.astype(int) - phantom.image) == 200
    cut = degrade_ct(phantom, "truncation", 1.0)
    assert cut.image.shape[2] == round(32 * 0.35) and cut.label.shape == cut.image.shape
    with pytest.raises(ValueError, match="degradation 'rain': expected one of noise, blur"):
        degrade_ct(phantom, "rain", 0.5)
    with pytest.raises(ValueError, match="level 2"):
        degrade_ct(phantom, "noise", 2)


def _segment(path: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str, code: int = 0) -> str:
    argv = ["segment", str(path), "--bundle", str(BUNDLES / "ct_abdomen_unet"), "-o", str(out), "--device", "cpu"]
    assert main([*argv, *extra]) == code
    return capsys.readouterr().out


@pytest.mark.slow
def test_segment_prints_a_flagged_summary_for_a_head_ct_and_an_mr_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped CT bundle on a head-only CT and on an abdominal MR image: results written, flagged."""
    labels = {0: "background", 1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "liver", 5: "liver_tumor"}
    head = make_head_ct_phantom(2, labels, shape=(96, 96, 48), spacing_mm=(2.0, 2.0, 3.0))
    head_path, _ = write_nifti(head, tmp_path / "head")
    printed = _segment(head_path, tmp_path / "out", capsys, "--fail-on-flags", code=1)  # results written, exit 1
    assert "QC: FLAGGED - do not trust this result without review:" in printed
    assert "expected by the bundle, not found" in printed
    run = json.loads((tmp_path / "out" / "image" / "run.json").read_text())
    assert run["quality"]["flagged"] is True and run["quality"]["reasons"]
    assert (tmp_path / "out" / "image" / "labels.nii.gz").is_file() and (
        tmp_path / "out" / "image" / "stats.csv"
    ).is_file()

    mr = make_mr_phantom(2, shape=(112, 96, 40), spacing_mm=(2.5, 2.5, 4.0))
    mr_path, _ = write_nifti(mr, tmp_path / "mr")
    printed = _segment(mr_path, tmp_path / "out_mr", capsys)
    assert "QC: FLAGGED" in printed
    assert "no air (about -1000 HU) around or inside the body: an MR image, or a CT window that is not HU?" in printed
    stats = json.loads((tmp_path / "out_mr" / "image" / "stats.json").read_text())
    assert all("flags" in s and "confidence" in s for s in stats)


@pytest.mark.parametrize("varied", [False, True])
def test_a_tumour_in_the_scalp_is_flagged_whatever_the_confidence(varied: bool) -> None:
    """min_depth_mm: a brain tumour lies under the scalp and the skull. On a head phantom (1 x 1 x 4 mm voxels,
    the body found from the image alone) the true tumour passes and the scalp called tumour is flagged
    too_superficial, although the network would be sure of it (confidence 0.98)."""
    phantom = make_brain_tumor_phantom(10001, varied=varied)
    spec = read_quality_spec({"medseg_qc": {"min_depth_mm": {"tumor": 8}}})
    tissue = {name: index for index, name in phantom.tissue_names.items()}
    scalp = (phantom.tissue == tissue["scalp"]).astype(np.uint8)
    for labels, flagged in ((phantom.label, False), (scalp, True)):
        maps = ConfidenceMaps(np.full(labels.shape, 250, np.uint8), np.zeros(labels.shape, np.uint8), classes=2)
        signals = PostprocessSignals(maps, labels.copy(), labels.copy(), {}, [])
        stats, quality = stats_and_quality(labels, phantom.image, phantom.affine, {1: "tumor"}, signals, spec)
        assert quality["flagged"] is flagged
        assert stats[0]["flags"] == (["too_superficial"] if flagged else [])
        if flagged:
            assert "tumor: its voxels lie a median" in quality["reasons"][0] and "8 mm" in quality["reasons"][0]
    assert quality["thresholds"]["min_depth_mm"] == {"tumor": 8.0}
    flat = np.full(phantom.image.shape, 7.0, np.float32)  # no background to find a body in: said, as a warning
    stats, quality = stats_and_quality(phantom.label, flat, phantom.affine, {1: "tumor"}, None, spec)
    assert not quality["flagged"] and stats[0]["flags"] == ["depth_unchecked"]
    assert quality["warnings"] == ["tumor: not checked for depth under the body's surface: no body could be told "
                                   "from the background"]  # fmt: skip


def test_depth_is_measured_in_mm_and_a_cut_face_is_not_a_surface() -> None:
    """A box of tissue in air: depth is the distance in mm to the air, along the coarse axis too; where the box
    runs out of the field of view (the k faces) nothing is superficial for that."""
    from pipelines.outputs.depth import body_depth_mm

    image = np.zeros((40, 40, 10), np.float32)
    image[5:35, 5:35, :] = 100.0  # the body fills k entirely: cut by the field of view there
    depth = body_depth_mm(image, (1.0, 1.0, 6.0))
    assert depth is not None and depth[0, 0, 0] == 0
    assert depth[20, 5, 0] == pytest.approx(1.0) and depth[20, 20, 0] == pytest.approx(15.0)
    assert depth[20, 20, :].min() == pytest.approx(15.0)  # the k faces are not skin
    image[18:22, 18:22, 4:6] = 0.0  # a dark cavity inside the body (skull, CSF) is not a surface either
    assert body_depth_mm(image, (1.0, 1.0, 6.0))[20, 20, 5] == pytest.approx(depth[20, 20, 5])
    assert body_depth_mm(np.ones((8, 8, 8)), (1.0, 1.0, 1.0)) is None  # no background: nothing to measure


def test_the_qc_measures_depth_on_a_grid_of_about_one_and_a_half_mm() -> None:
    """Fine grids are taken every few voxels (the fill and the distance transform cost seconds on 512 x 512 x 200);
    the depth found there is the fine grid's within a coarse voxel."""
    from pipelines.outputs.depth import body_depth_mm, qc_step

    assert qc_step((0.5, 0.78, 1.0)) == (3, 1, 1) and qc_step((0.4, 0.4, 6.5)) == (3, 3, 1)
    image = np.zeros((120, 120, 12), np.float32)
    image[10:110, 10:110, :] = 100.0
    fine = body_depth_mm(image, (0.5, 0.5, 5.0))
    coarse = body_depth_mm(image, (0.5, 0.5, 5.0), qc_step((0.5, 0.5, 5.0)))
    assert fine is not None and coarse is not None and coarse.shape == (40, 40, 12)
    inside = np.argwhere(fine[:, :, :1] > 0)
    looked_up = coarse[inside[:, 0] // 3, inside[:, 1] // 3, 0]
    assert np.abs(looked_up - fine[inside[:, 0], inside[:, 1], 0]).max() <= 1.5
