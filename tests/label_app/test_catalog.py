"""Which bundles the MONAI Label app serves (no server needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.label_app.catalog import served_bundles
from tests.helpers import BUNDLES


def test_bundles_with_weights_are_served_with_their_labels(tmp_path: Path) -> None:
    for name in ("ct_abdomen_unet", "mri_brain_tumor"):
        shutil.copytree(BUNDLES / name, tmp_path / name, ignore=shutil.ignore_patterns("last_checkpoint_*"))
    shutil.copytree(BUNDLES / "ct_abdomen_unet", tmp_path / "no_weights", ignore=shutil.ignore_patterns("*.pt"))
    served = {s.model: s for s in served_bundles(tmp_path)}
    assert set(served) == {"ct_abdomen_unet", "mri_brain_tumor"}
    assert served["ct_abdomen_unet"].labels == {
        "spleen": 1,
        "kidney_right": 2,
        "kidney_left": 3,
        "liver": 4,
        "liver_tumor": 5,
    }
    assert served["mri_brain_tumor"].labels == {"tumor": 1}
    assert "U-Net" in served["ct_abdomen_unet"].description


def test_a_folder_without_servable_bundles_is_refused(tmp_path: Path) -> None:
    shutil.copytree(BUNDLES / "ct_abdomen_unet", tmp_path / "ct", ignore=shutil.ignore_patterns("*.pt"))
    with pytest.raises(FileNotFoundError, match=r"no bundle with trained weights .*without weights: ct"):
        served_bundles(tmp_path)
    with pytest.raises(FileNotFoundError, match="bundles folder does not exist"):
        served_bundles(tmp_path / "missing")
