"""Shared fixtures: the real scans beside the project, bundles with test weights, small volumes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, copy_bundle_with_random_weights, write_threshold_bundle


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


@pytest.fixture()
def unet_bundle(tmp_path: Path) -> Path:
    """The CT U-Net bundle with random weights, in a temporary folder."""
    return copy_bundle_with_random_weights("ct_abdomen_unet", tmp_path)


@pytest.fixture()
def zoo_bundle(tmp_path: Path) -> Path:
    """A two-class Zoo-shaped bundle (1x1x1 convolution): foreground where the raw value exceeds 500."""
    return write_threshold_bundle(tmp_path / "zoo_threshold")


@pytest.fixture(scope="session", autouse=True)
def _session_trust_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point medseg's bundle trust store at a temporary file for the whole run (subprocesses inherit it).

    Bundles under bundles/ are trusted by location; the helpers that write bundles elsewhere
    (tests.helpers.copy_bundle_with_random_weights, write_zoo_bundle) trust them in this store; a
    test that changes a bundle's configs afterwards and opens it through the command line trusts it
    again (tests.helpers.trust_test_bundle), as a user would with --trust-bundle.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSEG_TRUST_FILE", str(tmp_path_factory.mktemp("trust") / "trusted_bundles.json"))
        yield


@pytest.fixture(scope="session")
def dicom_export(tmp_path_factory: pytest.TempPathFactory) -> object:
    """tests.dicom_export's export (2 patients x 2 studies, a DICOMDIR, a zip), written once per session.

    Tests leave export/ and study.zip as they are; manifests may be written beside them (their parent)."""
    from tests.dicom_export import write_export

    return write_export(tmp_path_factory.mktemp("dicom_export"))
