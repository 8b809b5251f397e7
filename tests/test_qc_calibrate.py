"""scripts/bench/qc_calibrate.py: how a threshold is chosen, and that --write touches only medseg_qc and its docs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from pipelines.outputs.quality import read_quality_spec
from tests.helpers import BUNDLES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "bench"))

import qc_calibrate


def test_the_threshold_separates_bad_from_good_within_the_false_flag_budget() -> None:
    good, bad = [0.9, 0.92, 0.95, 0.6], [0.3, 0.4, 0.65]
    # a flag below 0.62 catches 2 of 3 bad cases, but fires on the good 0.6: over a 5 % budget
    chosen = qc_calibrate.choose(good, bad, -1, max_false_rate=0.05)
    assert chosen == {"threshold": 0.5, "bad_flagged": pytest.approx(2 / 3), "good_flagged": 0.0}
    loose = qc_calibrate.choose(good, bad, -1, max_false_rate=0.3)  # one good case in four may be flagged
    assert loose["threshold"] == 0.775 and loose["bad_flagged"] == 1.0 and loose["good_flagged"] == 0.25
    above = qc_calibrate.choose([0.1, 0.2], [0.5, 0.7], +1, max_false_rate=0.05)  # entropy: flags above
    assert above["threshold"] == 0.35 and above["bad_flagged"] == 1.0
    alone = qc_calibrate.choose([0.7, 0.8], [], -1, max_false_rate=0.05)  # no bad case: just below every good one
    assert alone["threshold"] == 0.695 and alone["good_flagged"] == 0.0


def test_calibrate_uses_the_case_verdict_per_structure() -> None:
    rows = [
        {"bad": False, "structures": [{"name": "tumour", "confidence": 0.6, "high_entropy_fraction": 0.5}]},
        {"bad": False, "structures": [{"name": "tumour", "confidence": 0.7, "high_entropy_fraction": 0.4}]},
        {"bad": True, "structures": [{"name": "tumour", "confidence": 0.3, "high_entropy_fraction": 0.9}]},
    ]
    table = qc_calibrate.calibrate(rows, 0.05)
    assert table["tumour"]["min_confidence"]["threshold"] == 0.45
    assert table["tumour"]["max_high_entropy_fraction"]["threshold"] == 0.7
    assert table["tumour"]["min_confidence"]["n_good"] == 2 and table["tumour"]["min_confidence"]["n_bad"] == 1
    # against case-wide values a fitted value may relax them, never tighten them
    wide = {"min_confidence": 0.4, "max_high_entropy_fraction": 0.8}
    clamped = qc_calibrate.calibrate(rows, 0.05, wide)["tumour"]
    assert clamped["min_confidence"] == {
        "threshold": 0.4, "fitted": 0.45, "bad_flagged": 1.0, "good_flagged": 0.0, "n_good": 2, "n_bad": 1
    }  # fmt: skip
    assert (
        clamped["max_high_entropy_fraction"]["threshold"] == 0.8
        and clamped["max_high_entropy_fraction"]["fitted"] == 0.7
    )


def test_write_changes_only_the_medseg_qc_block_and_the_docs_section(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(BUNDLES / "ct_abdomen_unet" / "configs", bundle / "configs")
    shutil.copytree(BUNDLES / "ct_abdomen_unet" / "docs", bundle / "docs")
    before = (bundle / "configs" / "metadata.json").read_text().splitlines()
    qc_calibrate.write_metadata(bundle, {"liver_tumor": {"min_confidence": 0.4}})
    after_text = (bundle / "configs" / "metadata.json").read_text()
    spec = read_quality_spec(json.loads(after_text))
    assert spec.threshold("liver_tumor", "min_confidence") == 0.4
    after = after_text.splitlines()
    start = next(i for i, line in enumerate(before) if line.startswith('    "medseg_qc"'))
    assert after[:start] == before[:start]  # every line above the block, byte for byte
    rest = next(i for i in range(start, len(before)) if before[i].rstrip(",") == "    }") + 1  # after the block
    assert after[-(len(before) - rest) :] == before[rest:]  # and every line below it
    chosen = {"threshold": 0.4, "bad_flagged": 0.5, "good_flagged": 0.0, "n_good": 4, "n_bad": 2, "fitted": 0.4}
    table = {"liver_tumor": {"min_confidence": chosen}}
    for _ in range(2):  # the second write replaces the section, it does not add one
        qc_calibrate.write_docs(bundle, table, "python scripts/bench/qc_calibrate.py --seeds 1", [10000], 13)
    docs = (bundle / "docs" / "README.md").read_text()
    assert docs.count("## QC thresholds per structure (calibrated)") == 1
    assert "| liver_tumor | `min_confidence` | 0.4 | 0.4 | 50% of 2 | 0% of 4 |" in docs
    assert "python scripts/bench/qc_calibrate.py --seeds 1 --write" in docs
    assert "13 calibration phantoms of the validation seeds" in docs
    qc_calibrate.write_docs(
        bundle, table, "python scripts/bench/qc_calibrate.py --perirenal-fat", [10000], 13, perirenal_fat=True
    )
    docs = (bundle / "docs" / "README.md").read_text()
    assert (
        "13 calibration phantoms with the kidneys and adrenal glands in their perirenal fat of the validation" in docs
    )


def test_perirenal_fat_calibration_cases_draw_the_recipes_anatomy() -> None:
    """``--perirenal-fat`` calibrates on the anatomy a bundle like the UNETR was trained on, not the classic one."""
    import numpy as np
    import qc_signals

    from pipelines.data.phantoms.make import make_ct_phantom

    labels = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "liver"}
    name, fat, wrong = next(qc_signals.cases([10000], labels, perirenal_fat=True))
    assert (name, wrong) == ("10000_clean", False)
    ids = {v: k for k, v in labels.items()}
    expected = make_ct_phantom(
        10000, shape=qc_signals.SHAPE, spacing_mm=qc_signals.SPACING, label_ids=ids, perirenal_fat=True
    )
    classic = next(qc_signals.cases([10000], labels))[1]
    assert np.array_equal(fat.label, expected.label) and np.array_equal(fat.image, expected.image)
    assert not np.array_equal(fat.image, classic.image)  # the fat plane changes the image around the kidneys
