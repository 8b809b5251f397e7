"""Helpers the tests share: repository paths, bundles with random weights, small NIfTI files, affines."""

from __future__ import annotations

import shutil
from pathlib import Path

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
    return target


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
    import json

    return {int(k): v for k, v in json.loads(path.read_text()).items()}
