"""Stop ``python -m monai.bundle run`` with one line when a package this bundle's configs use is missing.

The post-processing in ``configs/inference.json`` uses transforms of the ``medseg`` package
(import name ``pipelines``) through ``_target_``. Without that package MONAI would fail deep in
config parsing with a traceback that names a class, not a package. So the ``run`` list of
``configs/inference.json`` starts with :func:`require_packages` (and so do those of
``configs/train.json``, ``configs/evaluate.json`` and ``configs/multi_gpu_train.json``): it reads
``required_packages_version`` from ``configs/metadata.json`` and exits with one line naming each
missing package and the version to install. Standard library only, so it works before anything
else does. This is the MONAI Model Zoo's convention for bundle code: a ``scripts/`` package that
MONAI puts on ``sys.path`` when it runs the bundle.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

IMPORT_NAMES: dict[str, str] = {"medseg": "pipelines", "pytorch-ignite": "ignite"}
"""Distribution name -> import name, where they differ (otherwise ``-`` becomes ``_``)."""

KEYS: tuple[str, ...] = ("required_packages_version", "optional_packages_version")
"""Metadata keys listing packages (``optional_packages_version`` is the older schema's name)."""


def missing_packages(bundle_root: Path) -> list[tuple[str, str, str]]:
    """``(distribution, version, import name)`` of each listed package that cannot be imported."""
    metadata = json.loads((bundle_root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    missing = []
    for key in KEYS:
        for distribution, version in dict(metadata.get(key) or {}).items():
            module = IMPORT_NAMES.get(distribution, distribution.replace("-", "_"))
            try:
                importlib.import_module(module)
            except ImportError:
                missing.append((distribution, str(version), module))
    return missing


def require_packages(config: str = "configs/inference.json") -> None:
    """Exit (status 1, one line on stderr) unless every package the metadata lists can be imported.

    Args:
        config: the config whose ``run`` (or ``initialize``) calls this, as the message names it.
    """
    bundle_root = Path(__file__).resolve().parents[1]
    missing = missing_packages(bundle_root)
    if missing:
        names = ", ".join(f"{d} {v} (import name {m})" for d, v, m in missing)
        pins = " ".join(f"'{d}=={v}'" for d, v, _ in missing)
        sys.exit(
            f"{bundle_root.name}: {config} needs {names}, listed in configs/metadata.json "
            f"required_packages_version and not installed; install it: pip install {pins}"
        )
