"""Fixtures of the batch tests: no torchrun variables, and one reference study run once for the package."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.batch.study import CASES, FAST, make_study, medseg, subprocess_env
from tests.helpers import REPO, copy_bundle_with_random_weights


@pytest.fixture()
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="package")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Six phantoms (no corrupt case), a bundle with random weights and an uninterrupted 1-rank CLI run."""
    root = tmp_path_factory.mktemp("study")
    manifest = make_study(root, CASES, with_corrupt=False)
    bundle = copy_bundle_with_random_weights("ct_abdomen_unet", root / "bundles")
    reference = root / "reference"
    done = subprocess.run(
        medseg(manifest, "--bundle", bundle, "--output", reference, "--outputs", ",".join(FAST), "--device", "cpu"),
        env=subprocess_env(), cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {"root": root, "manifest": manifest, "bundle": bundle, "reference": reference}
