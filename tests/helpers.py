"""Helpers the tests share: repository paths, bundles with random weights, small NIfTI files, affines."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
SPACING = (0.8, 1.1, 2.5)


def copy_bundle_with_random_weights(name: str, dest: Path, seed: int = 0) -> Path:
    """Copy ``bundles/<name>`` to ``dest`` and save randomly initialised weights into its models/.

    Tests use this to run the real bundle configs end to end without trained weights.
    """
    from monai.bundle import ConfigParser

    target = dest / name
    shutil.copytree(BUNDLES / name, target, ignore=shutil.ignore_patterns("*.pt", "*.ts", "eval"))
    parser = ConfigParser()
    parser.read_config(str(target / "configs" / "inference.json"))
    parser["bundle_root"] = str(target)
    torch.manual_seed(seed)
    network = parser.get_parsed_content("network_def")
    (target / "models").mkdir(exist_ok=True)
    torch.save(network.state_dict(), target / "models" / "model.pt")
    return trust_test_bundle(target)


def trust_test_bundle(root: Path) -> Path:
    """Record a bundle a test wrote outside ``bundles/`` as trusted, as ``--trust-bundle`` would.

    The trust store is the session's temporary one (``$MEDSEG_TRUST_FILE``, set by the autouse
    fixture in tests/conftest.py), never the user's. Weights files are not part of the trusted
    digest, so saving ``models/model.pt`` afterwards needs no new trust; changing a config does.
    """
    from pipelines.bundles.trust import TRUST_FILE_ENV, trust_bundle, trust_store_path

    if not os.environ.get(TRUST_FILE_ENV):
        raise RuntimeError(f"{TRUST_FILE_ENV} is not set: tests must not write the user's trust store")
    trust_bundle(root, trust_store_path(os.environ))
    return root


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)
    return path


def oriented_affine(
    codes: str, shape: tuple[int, int, int], spacing: tuple[float, float, float] = SPACING
) -> np.ndarray:
    """An affine whose axes point along ``codes`` (e.g. LPS), centred near the world origin."""
    axis = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    affine = np.zeros((4, 4))
    for col, code in enumerate(codes):
        row, sign = axis[code]
        affine[row, col] = sign * spacing[col]
    affine[:3, 3] = -affine[:3, :3] @ (np.array(shape) / 2) + np.array([3.3, -7.1, 12.5])
    affine[3, 3] = 1
    return affine


def read_labels_json(path: Path) -> dict[int, str]:
    """A labels.json file (``{"1": "liver", ...}``) as label id -> structure name."""
    return {int(k): v for k, v in json.loads(path.read_text()).items()}


def edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the JSON object in ``path`` and write it back."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))


def zoo_inference_config(
    network_def: dict[str, Any],
    *,
    intensity_range: tuple[float, float] = (-57, 164),
    sw_batch_size: int = 4,
    overlap: float = 0.5,
) -> dict[str, Any]:
    """A Model Zoo style ``inference.json`` (the shape of spleen_ct_segmentation) with MONAI components only.

    No medseg key or transform: preprocessing is LoadImaged, EnsureChannelFirstd, Orientationd
    (RAS), Spacingd (1.5 x 1.5 x 2.0 mm), ScaleIntensityRanged (``intensity_range`` -> [0, 1]),
    EnsureTyped; a 32³ sliding window; postprocessing is softmax, Invertd, argmax, SaveImaged; and
    the Zoo's dataset, dataloader, CheckpointLoader and evaluator so `monai.bundle run` runs it.
    """
    low, high = intensity_range
    return {
        "imports": ["$import glob", "$import os", "$import torch"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data/Task09_Spleen",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
                {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "image",
                    "a_min": low,
                    "a_max": high,
                    "b_min": 0,
                    "b_max": 1,
                    "clip": True,
                },
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": [32, 32, 32],
            "sw_batch_size": sw_batch_size,
            "overlap": overlap,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "meta_key_postfix": "meta_dict",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "seg",
                    "separate_folder": False,
                    "resample": False,
                },
            ],
        },
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
            },
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": True,
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


def write_zoo_bundle(root: Path, inference: dict[str, Any], metadata: dict[str, Any]) -> Path:
    """Write ``configs/inference.json`` and ``configs/metadata.json`` into a new bundle folder ``root``
    (with an empty ``models/``); the caller saves the weights."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=1))
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=1))
    return trust_test_bundle(root)


# A Zoo-shaped bundle whose answer is known exactly: foreground where the raw value exceeds 500.
THRESHOLD_INFERENCE = zoo_inference_config(
    {"_target_": "torch.nn.Conv3d", "in_channels": 1, "out_channels": 2, "kernel_size": 1},
    intensity_range=(0, 1000),
    sw_batch_size=2,
    overlap=0.25,
)


def write_threshold_bundle(root: Path) -> Path:
    """A two-class bundle in the Model Zoo shape using only MONAI and torch components, no medseg keys.

    Its network is a 1x1x1 convolution set to call a voxel foreground when the scaled intensity
    is above 0.5 (raw value 500), so the expected label map is known exactly from the input.
    """
    write_zoo_bundle(root, THRESHOLD_INFERENCE, {"name": "zoo_threshold", "version": "0.0.1"})
    conv = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        conv.weight[:] = torch.tensor([-20.0, 20.0]).view(2, 1, 1, 1, 1)
        conv.bias[:] = torch.tensor([10.0, -10.0])
    torch.save(conv.state_dict(), root / "models" / "model.pt")
    return root


def cube_scan(codes: str, shape=(40, 36, 18)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scan with a bright box at a fixed WORLD position; returns (image, affine, truth mask)."""
    affine = oriented_affine(codes, shape, spacing=(1.2, 1.0, 2.5))
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    inside = (np.abs(world[:, 0] - 6) < 9) & (np.abs(world[:, 1] + 4) < 7) & (np.abs(world[:, 2] - 15) < 10)
    truth = inside.reshape(shape)
    return np.where(truth, 900, 100).astype(np.int16), affine, truth
