"""Shared fixtures: the real scans beside the project, bundles with test weights, small volumes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"


def _shared_data_dir() -> Path:
    override = os.environ.get("MEDSEG_SHARED_DATA")
    return Path(override) if override else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test scans (``../shared/data``, or ``$MEDSEG_SHARED_DATA``); skip when absent."""
    path = _shared_data_dir()
    if not (path / "README.md").is_file():
        pytest.skip(f"real test scans not found at {path} (set MEDSEG_SHARED_DATA to their folder)")
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


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


@pytest.fixture()
def unet_bundle(tmp_path: Path) -> Path:
    """The CT U-Net bundle with random weights, in a temporary folder."""
    return copy_bundle_with_random_weights("ct_abdomen_unet", tmp_path)


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)
    return path
