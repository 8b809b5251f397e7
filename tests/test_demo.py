"""medseg demo: the README's main job, with the shipped CT weights, on a phantom never used in training."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipelines.bundles.bundle import load_bundle
from pipelines.cli.main import main
from pipelines.data.datasets import SEEDS, ct_case_geometry
from pipelines.data.phantoms.make import make_ct_phantom
from pipelines.demo import run_demo
from tests.helpers import BUNDLES

WEIGHTS = BUNDLES / "ct_abdomen_unet" / "models" / "model.pt"
ORGANS = ("spleen", "kidney_right", "kidney_left", "liver")


def _dice(pred: np.ndarray, truth: np.ndarray, value: int) -> float:
    """2|P ∩ T| / (|P| + |T|) of one label value; NaN when it is in neither map."""
    p, t = pred == value, truth == value
    total = int(p.sum()) + int(t.sum())
    return 2.0 * int((p & t).sum()) / total if total else math.nan


def _check_scores_come_from_the_written_files(out: Path, seed: int, bundle: Path) -> dict:
    """The demo's Dice values are those of its written segmentation against the phantom's truth."""
    metrics = json.loads((out / "metrics.json").read_text())
    written_truth = nib.load(out / "phantom" / "label.nii.gz")
    labels = nib.load(out / "phantom_seg" / "labels.nii.gz")
    image = nib.load(out / "phantom" / "image.nii.gz")
    assert labels.shape == image.shape == written_truth.shape
    assert (labels.affine == image.affine).all()
    # the written truth is the phantom of the demo seed on its seeded acquisition grid
    geometry = ct_case_geometry(seed)
    assert metrics["phantom"] == {
        "seed": seed,
        "shape": list(geometry.shape),
        "spacing_mm": list(geometry.spacing_mm),
        "orientation": geometry.orientation,
    }
    ids = {name: value for value, name in load_bundle(bundle).labels.items() if value != 0}
    phantom = make_ct_phantom(
        seed,
        shape=geometry.shape,
        spacing_mm=geometry.spacing_mm,
        orientation=geometry.orientation,
        label_ids=ids,
    )
    truth = np.asarray(written_truth.dataobj)
    np.testing.assert_array_equal(truth, phantom.label)
    assert {int(v) for v in np.unique(truth)} == {0, *ids.values()}  # every structure is there to score
    pred = np.asarray(labels.dataobj)
    expected = {name: _dice(pred, truth, value) for name, value in ids.items()}
    assert set(metrics["dice"]) == set(expected)
    for name, value in expected.items():
        assert metrics["dice"][name] == pytest.approx(value, abs=1e-6, nan_ok=True), name
    organs = [v for k, v in expected.items() if k != "liver_tumor" and not math.isnan(v)]
    assert metrics["mean_dice"] == pytest.approx(float(np.mean(organs)), abs=1e-6)
    assert metrics["mean_dice_over"] == sorted(ORGANS)
    return metrics


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
    organs = ORGANS
    assert set(organs) <= set(metrics["dice"])
    assert metrics["mean_dice"] >= 0.90, metrics["dice"]
    image, labels = nib.load(out / "phantom" / "image.nii.gz"), nib.load(out / "phantom_seg" / "labels.nii.gz")
    assert labels.shape == image.shape
    assert (labels.affine == image.affine).all()
    printed = capsys.readouterr().out
    assert "mean (organs)" in printed and "liver" in printed
    _check_scores_come_from_the_written_files(out, SEEDS["demo"][0], BUNDLES / "ct_abdomen_unet")
    for name in organs:  # the table printed is the one scored
        assert f"{metrics['dice'][name]:.3f}" in printed


def test_demo_scores_its_written_segmentation_against_the_phantom_truth(tmp_path: Path, unet_bundle: Path) -> None:
    """With random weights the Dice values are poor, but they must be the written files' Dice."""
    seed = SEEDS["demo"][1]
    result = run_demo(tmp_path / "demo", unet_bundle, seed=seed, device="cpu", outputs=("labels",))
    assert result.metrics_path == tmp_path / "demo" / "metrics.json"
    assert result.case_dir == tmp_path / "demo" / "phantom_seg"
    metrics = _check_scores_come_from_the_written_files(tmp_path / "demo", seed, unet_bundle)
    assert result.dice == pytest.approx(metrics["dice"], nan_ok=True)
    assert result.mean_dice == pytest.approx(metrics["mean_dice"], nan_ok=True)
    assert not (tmp_path / "demo" / "phantom_seg" / "preview.png").exists()  # only the outputs asked for


def test_demo_seeds_are_disjoint_from_training() -> None:
    ranges = list(SEEDS.values())
    for i, a in enumerate(ranges):
        for b in ranges[i + 1 :]:
            assert not set(a) & set(b)
    # the seed the demo runs by default is a demo seed, so it is no training, validation or test phantom
    default = inspect.signature(run_demo).parameters["seed"].default
    assert default in SEEDS["demo"]
    assert all(default not in seeds for split, seeds in SEEDS.items() if split != "demo")
