"""Describe bundles: what ``medseg bundle info`` and ``medseg bundle list`` show.

This module imports nothing heavy; MONAI is imported when a config is parsed.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from pipelines.bundles.bundle import config_parser, load_bundle, preprocessing_pixdim, target_name
from pipelines.bundles.find import bundles_in
from pipelines.bundles.layout import CONFIGS, INFERENCE
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


def bundle_info(path: str | Path) -> dict[str, Any]:
    """Describe a bundle from its metadata and inference config.

    Args:
        path: the bundle folder; ``"path"`` in the result is it as given.

    Returns:
        ``{"path", "name", "version", "task", "modality", "labels" ({id: name}), "structures" (the
        labels that are structures: see :func:`structures`), "num_channels",
        "spatial_shape" (network input patch), "pixdim" (mm, from the preprocessing's Spacingd),
        "roi_size" (sliding window), "network" (the network_def class), "weights" (bool),
        "configs" (names of configs/*.json)}``; values the bundle does not state are None.

    Raises:
        FileNotFoundError: not a bundle folder (see :func:`pipelines.bundles.bundle.load_bundle`).
        ValueError: invalid ``metadata.json`` or ``inference.json``.
    """
    bundle = load_bundle(path)
    image = image_spec(bundle.metadata)
    info: dict[str, Any] = {
        "path": str(path),
        "name": bundle.name,
        "version": bundle.version,
        "task": bundle.metadata.get("task"),
        "modality": bundle.modality or None,
        "labels": dict(sorted(bundle.labels.items())),
        "structures": structures(bundle.labels),
        "num_channels": image.get("num_channels"),
        "spatial_shape": image.get("spatial_shape"),
        "pixdim": None,
        "roi_size": None,
        "network": None,
        "weights": bundle.weights.is_file(),
        "configs": sorted(p.stem for p in (bundle.root / CONFIGS).glob("*.json")),
    }
    parser = config_parser(bundle.root, [bundle.root / INFERENCE])
    info["pixdim"] = preprocessing_pixdim(parser)
    for id_ in ("inferer#roi_size", "inferer#inferer#roi_size"):
        if id_ in parser:
            with contextlib.suppress(Exception):  # an expression needing more than the config
                info["roi_size"] = [int(v) for v in parser.get_parsed_content(id_)]
            break
    if "network_def" in parser:
        info["network"] = target_name(parser["network_def"]) or None
    return info


def list_bundles(folder: str | Path) -> list[dict[str, Any]]:
    """Describe every bundle (a sub-folder with ``configs/inference.json``) of ``folder``.

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
