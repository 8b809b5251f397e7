"""Describe bundles: what ``medseg bundle info`` and ``medseg bundle list`` show.

Nothing of a bundle is evaluated here: configs are read as plain JSON / YAML
(:func:`~pipelines.bundles.layout.read_config_file`) and items looked up with
:func:`~pipelines.bundles.layout.raw_item`, so no ``$`` expression runs and no ``_target_`` is
built. That is why ``bundle info`` and ``bundle list`` need no trust (see
:mod:`pipelines.bundles.trust`). A setting written as a ``$`` expression is shown as its text.
This module imports nothing heavy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.bundles.bundle import load_bundle, target_name
from pipelines.bundles.find import bundles_in
from pipelines.bundles.layout import CONFIG_SUFFIXES, CONFIGS, TORCHSCRIPT, config_path, raw_item, read_config_file
from pipelines.bundles.metadata import image_spec

logger = logging.getLogger(__name__)

__all__ = ["BACKGROUND_NAMES", "bundle_info", "list_bundles", "structures"]

BACKGROUND_NAMES: frozenset[str] = frozenset({"background", "bg", "_background_", "none", "unlabeled", "unlabelled"})
"""Channel-0 names that mean "no structure" (lower case)."""


def structures(labels: dict[int, str]) -> dict[int, str]:
    """The labels that name structures: all of them but a channel 0 named as background.

    An argmax output's channel 0 is the background; a multi-label output (one sigmoid channel per
    structure, e.g. the Zoo's BraTS bundle: 0 tumour core, 1 whole tumour, 2 enhancing tumour) has
    a structure in channel 0, which must be shown too. The metadata's ``channel_def`` name tells
    them apart.
    """
    return {k: v for k, v in sorted(labels.items()) if k != 0 or v.strip().lower() not in BACKGROUND_NAMES}


def _numbers(value: Any, kind: type) -> list[Any] | str | None:
    """A setting read as data: a number or a list of numbers as ``kind``, a ``$`` expression as its text, else None."""
    if isinstance(value, str) and value.startswith("$"):
        return value  # an expression: shown, never evaluated
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return None
    return [kind(v) for v in values]


def _pixdim(config: Mapping[str, Any]) -> list[float] | str | None:
    """``pixdim`` (mm) of the first Spacingd of ``preprocessing``, read as data (references followed)."""
    transforms = raw_item(config, "preprocessing#transforms")
    for index, item in enumerate(transforms if isinstance(transforms, list) else []):
        item = raw_item(config, f"preprocessing#transforms#{index}")
        if target_name(item) in ("Spacingd", "Spacing", "SeparableSpacingd") and "pixdim" in item:
            return _numbers(raw_item(config, f"preprocessing#transforms#{index}#pixdim"), float)
    return None


def _config_names(root: Path) -> list[str]:
    """Names of the configs under ``configs/``, JSON and YAML alike (``inference`` for ``inference.yaml``)."""
    folder = root / CONFIGS
    if not folder.is_dir():
        return []
    return sorted({p.stem for p in folder.iterdir() if p.is_file() and p.suffix.lower() in CONFIG_SUFFIXES})


def bundle_info(path: str | Path) -> dict[str, Any]:
    """Describe a bundle from its metadata and inference config, evaluating nothing.

    Args:
        path: the bundle folder; ``"path"`` in the result is it as given.

    Returns:
        ``{"path", "name", "version", "task", "modality", "labels" ({id: name}), "structures" (the
        labels that are structures: see :func:`structures`), "num_channels",
        "spatial_shape" (network input patch), "pixdim" (mm, from the preprocessing's Spacingd),
        "roi_size" (sliding window), "network" (the network_def class), "weights" (bool: a
        ``models/model.pt`` or ``models/model.ts``), "configs" (names of the JSON / YAML configs)}``;
        values the bundle does not state are None; ``pixdim`` and ``roi_size`` written as ``$``
        expressions are their text (a string), not evaluated.

    Raises:
        FileNotFoundError: not a bundle folder (see :func:`pipelines.bundles.bundle.load_bundle`).
        ValueError: invalid ``metadata`` or ``inference`` config (not JSON / YAML, not a mapping).
    """
    bundle = load_bundle(path)
    image = image_spec(bundle.metadata)
    config = read_config_file(config_path(bundle.root, "inference"))
    roi_size = None
    for id_ in ("inferer#roi_size", "inferer#inferer#roi_size"):
        value = raw_item(config, id_)
        if value is not None:
            roi_size = _numbers(value, int)
            break
    network = raw_item(config, "network_def")
    return {
        "path": str(path),
        "name": bundle.name,
        "version": bundle.version,
        "task": bundle.metadata.get("task"),
        "modality": bundle.modality or None,
        "labels": dict(sorted(bundle.labels.items())),
        "structures": structures(bundle.labels),
        "num_channels": image.get("num_channels"),
        "spatial_shape": image.get("spatial_shape"),
        "pixdim": _pixdim(config),
        "roi_size": roi_size,
        "network": target_name(network) or None,
        "weights": bundle.weights.is_file() or (bundle.root / TORCHSCRIPT).is_file(),
        "configs": _config_names(bundle.root),
    }


def list_bundles(folder: str | Path) -> list[dict[str, Any]]:
    """Describe every bundle (a sub-folder with ``configs/inference.json`` or ``.yaml``) of ``folder``.

    Nothing is evaluated (see :func:`bundle_info`).

    Returns:
        :func:`bundle_info` of each bundle, by folder name; a bundle that cannot be read gives
        ``{"path": ..., "error": "..."}`` instead.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    found = []
    for child in bundles_in(folder):
        try:
            found.append(bundle_info(child))
        except (ValueError, FileNotFoundError, KeyError, TypeError) as err:
            found.append({"path": str(child), "error": str(err)})
    return found
