"""Find, describe and parse MONAI bundles in the Model Zoo layout.

A bundle is the single source of truth for a model. This module reads its ``configs/`` through
MONAI's :class:`~monai.bundle.ConfigParser` and only ever overrides what a run decides (the
bundle root, the device, inputs and output folder); everything else comes from the JSON.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from pipelines.io.hashing import sha256_file  # re-exported: weights are checksummed the same way

logger = logging.getLogger(__name__)

__all__ = ["Bundle", "MissingWeightsError", "load_bundle", "load_weights", "parse_config", "sha256_file"]

INFERENCE_CONFIG = "configs/inference.json"
METADATA = "configs/metadata.json"
WEIGHTS = "models/model.pt"


class MissingWeightsError(FileNotFoundError):
    """The bundle has no trained weights at ``models/model.pt``."""


@dataclass(frozen=True)
class Bundle:
    """A bundle folder and what its metadata says about it.

    Attributes:
        root: the bundle folder.
        name: ``metadata.json`` ``name`` (the folder name when absent).
        version: ``metadata.json`` ``version`` (``"0.0.0"`` when absent).
        metadata: the whole ``metadata.json`` (empty when the bundle has none).
        labels: label id -> structure name, from ``network_data_format.outputs.pred.channel_def``
            (empty when the metadata does not name them).
    """

    root: Path
    name: str
    version: str
    metadata: dict[str, Any] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)

    @property
    def weights(self) -> Path:
        return self.root / WEIGHTS

    def config_path(self, name: str) -> Path:
        """Path of ``configs/<name>.json`` (``.yaml`` also accepted, as MONAI does)."""
        for ext in (".json", ".yaml", ".yml"):
            candidate = self.root / "configs" / f"{name}{ext}"
            if candidate.is_file():
                return candidate
        return self.root / "configs" / f"{name}.json"

    @property
    def modality(self) -> str:
        """Input modality from the metadata (``CT``, ``MR``...), ``""`` when unknown."""
        image = self.metadata.get("network_data_format", {}).get("inputs", {}).get("image", {})
        modality = image.get("modality", "")
        return str(modality).upper() if modality else ""


def load_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder and read its metadata.

    Raises:
        FileNotFoundError: the folder, or its ``configs/inference.json``, does not exist.
        ValueError: ``metadata.json`` is not valid JSON.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: bundle folder does not exist")
    inference = root / INFERENCE_CONFIG
    if not inference.is_file():
        raise FileNotFoundError(
            f"{inference}: bundle has no inference config (expected the MONAI Model Zoo layout: "
            "configs/inference.json, configs/metadata.json, models/model.pt)"
        )
    metadata: dict[str, Any] = {}
    meta_path = root / METADATA
    if meta_path.is_file():
        try:
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_path}: not valid JSON: line {err.lineno} column {err.colno}: {err.msg}") from err
    else:
        logger.warning("%s: no metadata.json; name and labels unknown", root)
    channel_def = metadata.get("network_data_format", {}).get("outputs", {}).get("pred", {}).get("channel_def", {})
    labels: dict[int, str] = {}
    for key, name in channel_def.items():
        try:
            labels[int(key)] = str(name)
        except ValueError as err:
            raise ValueError(f"{meta_path}: channel_def key {key!r} is not an integer label id") from err
    return Bundle(
        root=root.resolve(),
        name=str(metadata.get("name", root.name)),
        version=str(metadata.get("version", "0.0.0")),
        metadata=metadata,
        labels=labels,
    )


def parse_config(bundle: Bundle, name: str = "inference", overrides: dict[str, Any] | None = None) -> ConfigParser:
    """Read ``configs/<name>.json`` with ``bundle_root`` set to the bundle folder plus ``overrides``.

    Overrides use MONAI's id syntax (``"inferer#sw_batch_size"``); they are applied before any
    reference is resolved, exactly as ``python -m monai.bundle run --key value`` would.
    """
    path = bundle.config_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: bundle {bundle.name} has no configs/{name}.json")
    parser = ConfigParser()
    try:
        parser.read_config(str(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: line {err.lineno} column {err.colno}: {err.msg}") from err
    if (bundle.root / METADATA).is_file():
        parser.read_meta(str(bundle.root / METADATA))
    parser["bundle_root"] = str(bundle.root)
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def require_weights(bundle: Bundle) -> Path:
    """Return the bundle's weights file or stop with an error that says how to get one."""
    if not bundle.weights.is_file():
        raise MissingWeightsError(
            f"{bundle.weights}: bundle {bundle.name} has no trained weights. Weights go in "
            f"{bundle.root.name}/models/model.pt; train them with "
            f"`medseg train --bundle {bundle.root} --manifest MANIFEST` (see the bundle's docs/README.md)"
        )
    return bundle.weights


def load_weights(network: torch.nn.Module, bundle: Bundle, device: torch.device | str = "cpu") -> Path:
    """Load ``models/model.pt`` into ``network``.

    Accepts a plain ``state_dict`` (the Zoo's format) or an ignite/MONAI checkpoint dict holding
    one under ``"model"`` or ``"network"``.
    """
    path = require_weights(bundle)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt or foreign file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    if isinstance(state, dict):
        for key in ("model", "network"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{path}: weights do not fit the network of {bundle.name} ({first})") from err
    return path
