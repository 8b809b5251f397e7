"""Stage 2 of the weights recipes: the bundles' ``configs/train_randomised.json`` laid over ``train.json``.

The layer swaps the manifest's training cases for synthesised, domain-randomised phantoms
(:class:`~pipelines.data.synthetic.SyntheticPhantomDataset`), validates on synthesised phantoms of
the validation seed range, and starts from ``init_weights``. These tests run it for real on small
grids (the shipped layer draws realistic acquisitions, seconds per sample).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from pipelines.data.datasets import make_brain_dataset
from pipelines.train import TrainOptions, train
from tests.helpers import BUNDLES, REPO, trust_test_bundle
from tests.test_train import tiny_dataset

LAYER = "train_randomised"


def small_grids(datasets: int, shape: list[int], spacing: list[float]) -> dict[str, object]:
    """Overrides that give every synthetic dataset of the layer a small fixed grid and one sample each."""
    overrides: dict[str, object] = {"randomised_samples": 1, "classic_samples": 1, "validation_samples": 1}
    for index in range(datasets):
        overrides[f"train#dataset#datasets#{index}#shape"] = shape
        overrides[f"train#dataset#datasets#{index}#spacing_mm"] = spacing
    overrides["validate#dataset#data#shape"] = shape
    overrides["validate#dataset#data#spacing_mm"] = spacing
    return overrides


def tiny_brain_dataset(folder: Path) -> Path:
    """One training and one validation head phantom at a quarter of the field of view, and their manifest."""
    return make_brain_dataset(
        folder, BUNDLES / "mri_brain_tumor", counts={"training": 1, "validation": 1}, fov_scale=0.25
    )


CASES = {
    "ct_abdomen_unet": (tiny_dataset, [48, 48, 32], [8.0, 8.0, 8.0], {"cache_workers": 1}),
    "mri_brain_tumor": (
        tiny_brain_dataset,
        [48, 48, 24],
        [5.0, 5.0, 8.0],
        {"cache_workers": 1, "patch_size": [32, 32, 16]},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_randomised_layer_starts_from_init_weights_and_trains(tmp_path: Path, name: str) -> None:
    """With a zero learning rate the saved weights are the initial ones (the layer loads them);
    with a real one training moves them; both runs use only synthesised phantoms for training."""
    make_manifest, shape, spacing, fast = CASES[name]
    bundle = tmp_path / name
    shutil.copytree(BUNDLES / name, bundle, ignore=shutil.ignore_patterns("*.pt", "eval"))
    trust_test_bundle(bundle)
    manifest = make_manifest(tmp_path / "data")
    init = tmp_path / "init.pt"
    shutil.copyfile(BUNDLES / name / "models" / "model.pt", init)
    initial = torch.load(init, weights_only=True)
    overrides = {**fast, **small_grids(2, shape, spacing), "samples_per_case": 1, "init_weights": str(init)}

    frozen = train(
        bundle,
        manifest,
        TrainOptions(
            max_epochs=1, val_interval=1, device="cpu", layers=(LAYER,), overrides={**overrides, "learning_rate": 0.0}
        ),
    )
    assert frozen.epochs == 1 and frozen.weights.is_file()
    saved = torch.load(frozen.weights, weights_only=True)
    weights = [k for k, v in initial.items() if v.is_floating_point() and "running" not in k and v.dim() > 1]
    assert weights and all(torch.equal(saved[k], initial[k]) for k in weights), "init_weights were not loaded"

    for path in (bundle / "models").glob("*.pt"):
        path.unlink()
    moved = train(
        bundle,
        manifest,
        TrainOptions(
            max_epochs=1, val_interval=1, device="cpu", layers=(LAYER,), overrides={**overrides, "learning_rate": 1e-3}
        ),
    )
    changed = torch.load(moved.weights, weights_only=True)
    assert any(not torch.equal(changed[k], initial[k]) for k in weights), "training did not change the weights"


@pytest.mark.parametrize(
    ("layer", "error", "message"),
    [("../../etc/passwd", ValueError, "not a path"), ("train_nowhere", FileNotFoundError, "train_nowhere")],
)
def test_a_bad_layer_is_refused_before_training(tmp_path: Path, layer: str, error: type, message: str) -> None:
    bundle = tmp_path / "ct_abdomen_unet"
    shutil.copytree(BUNDLES / "ct_abdomen_unet", bundle, ignore=shutil.ignore_patterns("*.pt", "eval"))
    manifest = tiny_dataset(tmp_path / "data", splits=("training", "validation"))
    with pytest.raises(error, match=message):
        train(trust_test_bundle(bundle), manifest, TrainOptions(max_epochs=1, layers=(layer,)))
    assert not list((bundle / "models").glob("*.pt"))


def test_a_layer_with_distributed_training_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "ct_abdomen_unet"
    shutil.copytree(BUNDLES / "ct_abdomen_unet", bundle, ignore=shutil.ignore_patterns("*.pt", "eval"))
    manifest = tiny_dataset(tmp_path / "data", splits=("training", "validation"))
    with pytest.raises(ValueError, match="cannot be combined with distributed training"):
        train(trust_test_bundle(bundle), manifest, TrainOptions(max_epochs=1, distributed=True, layers=(LAYER,)))
    assert not list((bundle / "models").glob("*.pt"))


@pytest.mark.parametrize("script", ["train_ct_unet.py", "train_mri_tumor.py", "train_unetr.py"])
def test_recipe_finetune_without_stage1_weights_stops_before_any_data(
    tmp_path: Path, script: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import runpy

    data = tmp_path / "data"
    monkeypatch.setattr(sys, "argv", [script, "--data-dir", str(data), "--stage", "finetune"])
    with pytest.raises(SystemExit, match=r"stage1_model\.pt: no stage-1 weights"):
        runpy.run_path(str(REPO / "scripts" / script), run_name="__main__")
    assert not data.exists(), "no phantoms may be generated before the check"

    monkeypatch.setattr(sys, "argv", [script, "--data-dir", str(data), "--init-weights", str(tmp_path / "w.pt")])
    with pytest.raises(SystemExit, match="only with --stage finetune"):
        runpy.run_path(str(REPO / "scripts" / script), run_name="__main__")
    assert not data.exists()
