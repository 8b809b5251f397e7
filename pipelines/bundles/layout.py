"""The file names of the MONAI Model Zoo bundle layout, and reading its JSON files.

Every other module of :mod:`pipelines.bundles` takes these names from here::

    <bundle>/
      configs/metadata.json     name, version, network_data_format (inputs, outputs, channel_def)
      configs/inference.json    network_def, preprocessing, inferer, postprocessing
      configs/train.json        training (optional)
      configs/evaluate.json     evaluation, layered over train.json (optional)
      configs/logging.conf      logging for ``python -m monai.bundle run``
      docs/README.md            the model card
      models/model.pt           trained weights (a state_dict, or a checkpoint holding one)

Paths are relative to the bundle folder, with ``/`` separators, as messages show them.
This module imports nothing heavy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIGS",
    "CONFIG_SUFFIXES",
    "EVALUATE",
    "INFERENCE",
    "LOGGING",
    "METADATA",
    "MULTI_GPU_TRAIN",
    "README",
    "TRAIN",
    "WEIGHTS",
    "InvalidJSONError",
    "config_path",
    "is_bundle",
    "read_json",
]

CONFIGS = "configs"
METADATA = "configs/metadata.json"
INFERENCE = "configs/inference.json"
TRAIN = "configs/train.json"
EVALUATE = "configs/evaluate.json"
MULTI_GPU_TRAIN = "configs/multi_gpu_train.json"
LOGGING = "configs/logging.conf"
README = "docs/README.md"
WEIGHTS = "models/model.pt"

CONFIG_SUFFIXES: tuple[str, ...] = (".json", ".yaml", ".yml")
"""Config file suffixes MONAI's ConfigParser reads, in the order :func:`config_path` tries them."""


class InvalidJSONError(ValueError):
    """A bundle file that is not valid JSON.

    Attributes:
        path: the file.
        detail: where and what, without the path (``"not valid JSON: line 3 column 3: ..."``).
    """

    def __init__(self, path: Path, err: json.JSONDecodeError) -> None:
        self.path = path
        self.detail = f"not valid JSON: line {err.lineno} column {err.colno}: {err.msg}"
        super().__init__(f"{path}: {self.detail}")


def read_json(path: Path) -> Any:
    """Parse a JSON file.

    Raises:
        FileNotFoundError: no such file.
        InvalidJSONError: (a ``ValueError``) the file is not valid JSON; names the line and column.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InvalidJSONError(Path(path), err) from err


def config_path(root: Path, name: str) -> Path:
    """``<root>/configs/<name>.json`` (``.yaml`` / ``.yml`` when only those exist, as MONAI accepts).

    Returns the ``.json`` path when no file exists, for the caller's error message.
    """
    for suffix in CONFIG_SUFFIXES:
        candidate = root / CONFIGS / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return root / CONFIGS / f"{name}.json"


def is_bundle(folder: Path) -> bool:
    """Whether ``folder`` looks like a bundle: it holds ``configs/inference.json``."""
    return (folder / INFERENCE).is_file()
