"""The file names of the MONAI Model Zoo bundle layout, and reading its JSON files.

Every other module of :mod:`pipelines.bundles` takes these names from here::

    <bundle>/
      configs/metadata.json     name, version, network_data_format (inputs, outputs, channel_def)
      configs/inference.json    network_def, preprocessing, inferer, postprocessing
                                (any config may be ``.yaml`` / ``.yml`` instead, as MONAI accepts)
      configs/train.json        training (optional)
      configs/evaluate.json     evaluation, layered over train.json (optional)
      configs/logging.conf      logging for ``python -m monai.bundle run``
      docs/README.md            the model card
      models/model.pt           trained weights (a state_dict, or a checkpoint holding one)
      models/model.ts           TorchScript export (some Zoo bundles ship only this)

Paths are relative to the bundle folder, with ``/`` separators, as messages show them.
:func:`read_config_file` and :func:`raw_item` read configs as plain data: nothing is evaluated
(no ``$`` expression, no ``_target_`` built), so they are safe on a bundle nobody trusted yet.
This module imports nothing heavy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
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
    "TORCHSCRIPT",
    "TRAIN",
    "WEIGHTS",
    "InvalidConfigError",
    "InvalidJSONError",
    "config_path",
    "is_bundle",
    "raw_item",
    "read_config_file",
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
TORCHSCRIPT = "models/model.ts"

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


class InvalidConfigError(ValueError):
    """A bundle config that is not valid JSON / YAML, or not a mapping at the top.

    Attributes:
        path: the file.
        detail: where and what, without the path.
    """

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {detail}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a bundle config (``.json``, ``.yaml`` or ``.yml``) as plain data; nothing is evaluated.

    YAML is read with ``yaml.safe_load`` and JSON with :mod:`json`, as MONAI's ``ConfigParser``
    reads them, but no ``$`` expression runs and no ``_target_`` is built: the result is safe to
    inspect for an untrusted bundle.

    Raises:
        FileNotFoundError: no such file.
        InvalidJSONError: (a ``ValueError``) a ``.json`` file that is not valid JSON (line, column).
        InvalidConfigError: (a ``ValueError``) invalid YAML, another suffix, or a top level that is
            not a mapping.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CONFIG_SUFFIXES:
        raise InvalidConfigError(path, f"config suffix {path.suffix!r}: expected one of {', '.join(CONFIG_SUFFIXES)}")
    if suffix == ".json":
        data = read_json(path)
    else:
        import yaml  # PyYAML: what MONAI reads YAML configs with

        text = path.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise InvalidConfigError(path, f"not valid YAML: {where}{problem}") from err
    if not isinstance(data, dict):
        raise InvalidConfigError(path, f"expected a mapping of config ids at the top, got {type(data).__name__}")
    return data


_PLAIN_REFERENCE = re.compile(r"^@[A-Za-z0-9_#]+$")


def raw_item(config: Mapping[str, Any], config_id: str, *, follow: int = 8) -> Any:
    """A config item by MONAI id (``"inferer#roi_size"``) read as data, following plain ``@id`` references.

    Nothing is evaluated: a ``$`` expression is returned as its string, a ``_target_`` dict as the
    dict. A value that is a plain reference (``"@roi"``) is replaced by the item it names (up to
    ``follow`` hops), as MONAI would resolve it, so literal settings behind a reference are found.

    Returns:
        The item, or None when the id is absent (or a reference leads nowhere).
    """
    value: Any = config
    for part in config_id.split("#") if config_id else []:
        value = _follow(config, value, follow)
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return _follow(config, value, follow)


def _follow(config: Mapping[str, Any], value: Any, hops: int) -> Any:
    while isinstance(value, str) and _PLAIN_REFERENCE.match(value) and hops > 0:
        value = raw_item(config, value[1:], follow=hops - 1)
        hops -= 1
    return value


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
    """Whether ``folder`` looks like a bundle: it holds ``configs/inference.json`` (or ``.yaml`` / ``.yml``)."""
    return config_path(Path(folder), "inference").is_file()
