"""Stage 2 of the UNETR recipe: ``configs/train_small_structures.json`` laid over ``train.json``.

The layer continues training from ``init_weights`` on the stage-1 phantoms, with patch centres and
loss weights tilted towards the smallest structures (esophagus, adrenal glands), and trains and
validates on volumes cropped to the body as inference sees them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from pipelines.bundles.bundle import config_parser, load_bundle
from pipelines.data.datasets import make_phantom_dataset
from pipelines.data.phantoms.make import make_ct_phantom
from pipelines.data.phantoms.tissues import CT_STRUCTURES
from pipelines.train import TrainOptions, train
from tests.helpers import BUNDLES, trust_test_bundle

LAYER = "train_small_structures"
UNETR = BUNDLES / "ct_multiorgan_unetr"
IDS = {n: i for n, i in CT_STRUCTURES.items() if n != "liver_tumor"}


def tiny_unetr_dataset(folder: Path) -> Path:
    """One training and one validation CT phantom with the 13 organs, at a third of the field of view."""
    return make_phantom_dataset(folder, UNETR, counts={"training": 1, "validation": 1}, fov_scale=0.3)


def train_config(*layers: str) -> ConfigParser:
    """The UNETR's train.json with ``layers`` laid over it, as ``medseg train`` reads them (no manifest)."""
    configs = [UNETR / "configs" / f"{name}.json" for name in ("train", *layers)]
    return config_parser(UNETR, configs, overrides={"manifest": "unused"})


def test_layer_tilts_patches_and_loss_towards_the_smallest_structures() -> None:
    parser = train_config(LAYER)
    names = load_bundle(UNETR).labels
    ratios = parser.get_parsed_content("train#augmentation#1").cropper.ratios
    weights = parser.get_parsed_content("loss").cross_entropy.weight
    assert len(ratios) == len(weights) == parser["num_classes"] == len(names) == 14
    small = [i for i, n in names.items() if n in ("esophagus", "adrenal_gland_right", "adrenal_gland_left")]
    large = [i for i, n in names.items() if n in ("spleen", "liver", "stomach")]
    assert len(small) == 3 and len(large) == 3
    assert min(ratios[i] for i in small) > max(ratios[i] for i in large)
    assert min(float(weights[i]) for i in small) > max(float(weights[i]) for i in large)
    assert torch.equal(parser.get_parsed_content("loss").dice.class_weight, weights)  # Dice and cross-entropy alike


def test_layer_validates_on_the_body_crop_and_keeps_every_label(tmp_path: Path) -> None:
    """A phantom in a wide field of view (40 voxels of air added on each side in-plane): validation
    volumes are cropped to the body (the air beyond an 8-voxel margin goes) and lose no labelled
    voxel; the training patches keep their 64³ shape."""
    phantom = make_ct_phantom(3, shape=(96, 80, 48), spacing_mm=(3.0, 3.0, 4.0), label_ids=IDS)
    pad = ((40, 40), (40, 40), (0, 0))
    affine = phantom.affine.copy()
    affine[:3, 3] -= affine[:3, :3] @ np.array([40, 40, 0])
    case = {"image": str(tmp_path / "image.nii.gz"), "label": str(tmp_path / "label.nii.gz")}
    nib.save(nib.Nifti1Image(np.pad(phantom.image, pad, constant_values=-1000), affine), case["image"])
    nib.save(nib.Nifti1Image(np.pad(phantom.label, pad), affine), case["label"])
    parser = train_config(LAYER)
    whole = train_config().get_parsed_content("validate#preprocessing")(dict(case))
    cropped = parser.get_parsed_content("validate#preprocessing")(dict(case))
    assert cropped["image"].shape[1] < whole["image"].shape[1] - 40  # most of the added air is gone
    counts = [torch.bincount(v["label"].flatten(), minlength=14) for v in (cropped, whole)]
    assert counts[0][1:].sum() > 0 and torch.equal(counts[0][1:], counts[1][1:])  # every organ voxel kept
    body = cropped["image"][0] > 0
    for axis in range(2):
        profile = body.any(dim=tuple(a for a in range(3) if a != axis))
        inside = torch.nonzero(profile).flatten()
        assert int(inside[0]) == 8 and int(inside[-1]) == profile.numel() - 9  # the margin, no more
    patches = parser.get_parsed_content("train#preprocessing")(dict(case))
    assert all(tuple(p["image"].shape) == (1, 64, 64, 64) for p in patches)


@pytest.mark.slow
def test_layer_starts_from_init_weights(tmp_path: Path) -> None:
    """With a zero learning rate the saved weights are the initial ones: the layer loads them."""
    bundle = tmp_path / "ct_multiorgan_unetr"
    shutil.copytree(UNETR, bundle, ignore=shutil.ignore_patterns("*.pt", "eval"))
    trust_test_bundle(bundle)
    manifest = tiny_unetr_dataset(tmp_path / "data")
    init = tmp_path / "init.pt"
    shutil.copyfile(UNETR / "models" / "model.pt", init)
    initial = torch.load(init, weights_only=True)
    overrides = {"cache_workers": 1, "samples_per_case": 1, "init_weights": str(init), "learning_rate": 0.0}
    result = train(
        bundle,
        manifest,
        TrainOptions(max_epochs=1, val_interval=1, device="cpu", layers=(LAYER,), overrides=overrides),
    )
    saved = torch.load(result.weights, weights_only=True)
    weights = [k for k, v in initial.items() if v.is_floating_point() and v.dim() > 1]
    assert weights and all(torch.equal(saved[k], initial[k]) for k in weights), "init_weights were not loaded"
