"""Fixtures of the bundle tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import copy_bundle_with_random_weights


@pytest.fixture()
def mri_bundle(tmp_path: Path) -> Path:
    """``tmp_path/mri_brain_tumor``: a copy of the MRI bundle without weights (checks then use random ones)."""
    bundle = copy_bundle_with_random_weights("mri_brain_tumor", tmp_path)
    (bundle / "models" / "model.pt").unlink()
    return bundle
