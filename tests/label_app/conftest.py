"""The label tests run in the MONAI Label environment (.venv-label); elsewhere they are skipped.

``.ci/run`` runs them there with ``MEDSEG_LABEL_TESTS=required``: a MONAI Label that cannot be
imported is then an error, so CI never passes by skipping them.
"""

from __future__ import annotations

import os
import sys

import pytest

try:
    import monailabel  # noqa: F401

    HAVE_MONAILABEL = True
except ImportError:
    HAVE_MONAILABEL = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_MONAILABEL:
        return
    if os.environ.get("MEDSEG_LABEL_TESTS") == "required":
        raise pytest.UsageError(f"MEDSEG_LABEL_TESTS=required, but {sys.executable} cannot import monailabel")
    skip = pytest.mark.skip(reason="MONAI Label is not installed here: bash scripts/setup_label.sh, run in .venv-label")
    for item in items:
        if "label" in item.keywords:
            item.add_marker(skip)
