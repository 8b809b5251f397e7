"""medseg demo: the README's main job, with the shipped CT weights, on a phantom never used in training."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import pytest

from pipelines.cli.main import main
from tests.helpers import BUNDLES

WEIGHTS = BUNDLES / "ct_abdomen_unet" / "models" / "model.pt"


@pytest.mark.slow
def test_demo_segments_a_phantom_with_the_shipped_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert WEIGHTS.is_file(), "the CT bundle ships trained weights (scripts/train_ct_unet.py)"
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out)]) == 0
    for name in (
        "phantom/image.nii.gz",
        "phantom/label.nii.gz",
        "phantom_seg/labels.nii.gz",
        "phantom_seg/stats.json",
        "phantom_seg/preview.png",
        "phantom_seg/run.json",
        "metrics.json",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    organs = ("spleen", "kidney_right", "kidney_left", "liver")
    assert set(organs) <= set(metrics["dice"])
    assert metrics["mean_dice"] >= 0.90, metrics["dice"]
    image, labels = nib.load(out / "phantom" / "image.nii.gz"), nib.load(out / "phantom_seg" / "labels.nii.gz")
    assert labels.shape == image.shape
    assert (labels.affine == image.affine).all()
    printed = capsys.readouterr().out
    assert "mean (organs)" in printed and "liver" in printed


def test_demo_seeds_are_disjoint_from_training() -> None:
    from pipelines.data.datasets import SEEDS

    ranges = list(SEEDS.values())
    for i, a in enumerate(ranges):
        for b in ranges[i + 1 :]:
            assert not set(a) & set(b)
