"""Open a MONAI bundle in the Model Zoo layout and parse its configs.

A bundle is the single source of truth for a model. :func:`load_bundle` reads its
``configs/metadata.json`` once and the :class:`Bundle` keeps it; :func:`parse_config` reads a
config through MONAI's :class:`~monai.bundle.ConfigParser`, gives it that metadata (the file is
not read again) and only overrides what a run decides (the bundle root, the device, inputs and
output folder); everything else comes from the JSON.

MONAI is imported inside the functions that parse configs, so that the command line can import
this module before it knows whether a command needs MONAI.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.bundles.layout import (
    WEIGHTS,
    InvalidConfigError,
    InvalidJSONError,
    config_path,
    raw_item,
    read_config_file,
    read_json,
)
from pipelines.bundles.metadata import channel_labels, image_spec
from pipelines.bundles.overrides import check_override_ids

if TYPE_CHECKING:
    from monai.bundle import ConfigParser

logger = logging.getLogger(__name__)

__all__ = [
    "Bundle",
    "config_parser",
    "load_bundle",
    "parse_config",
    "preprocessing_pixdim",
    "target_name",
    "transform_list",
]


@dataclass(frozen=True)
class Bundle:
    """A bundle folder and what its metadata says about it.

    Attributes:
        root: the bundle folder (absolute).
        name: ``metadata.json`` ``name`` (the folder name when absent).
        version: ``metadata.json`` ``version`` (``"0.0.0"`` when absent).
        metadata: the whole ``metadata.json`` as read by :func:`load_bundle` (empty when the bundle
            has none). Treat it as read-only; :func:`parse_config` hands MONAI a copy.
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
        """``models/model.pt`` (it may not exist; see :func:`pipelines.bundles.weights.require_weights`)."""
        return self.root / WEIGHTS

    def config_path(self, name: str) -> Path:
        """Path of ``configs/<name>.json`` (``.yaml`` also accepted, as MONAI does)."""
        return config_path(self.root, name)

    @property
    def modality(self) -> str:
        """Input modality from the metadata (``CT``, ``MR``...), ``""`` when unknown."""
        modality = image_spec(self.metadata).get("modality", "")
        return str(modality).upper() if modality else ""


def load_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder and read its metadata (once, as data: nothing is evaluated).

    The configs may be JSON or YAML (``configs/inference.yaml``), as MONAI accepts.

    Raises:
        FileNotFoundError: the folder, or its ``configs/inference.json`` (or ``.yaml`` / ``.yml``), does not exist.
        ValueError: ``metadata.json`` is not valid JSON/YAML, not an object, or has a non-integer
            ``channel_def`` key.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: bundle folder does not exist")
    inference = config_path(root, "inference")
    if not inference.is_file():
        raise FileNotFoundError(
            f"{inference}: bundle has no inference config (expected the MONAI Model Zoo layout: "
            "configs/inference.json or configs/inference.yaml, configs/metadata.json, models/model.pt)"
        )
    metadata: dict[str, Any] = {}
    meta_path = config_path(root, "metadata")
    if meta_path.is_file():
        metadata = read_json(meta_path) if meta_path.suffix == ".json" else _read_yaml_metadata(meta_path)
        if not isinstance(metadata, dict):
            raise ValueError(f"{meta_path}: expected a JSON object, got {type(metadata).__name__}")
    else:
        logger.warning("%s: no metadata.json; name and labels unknown", root)
    return Bundle(
        root=root.resolve(),
        name=str(metadata.get("name", root.name)),
        version=str(metadata.get("version", "0.0.0")),
        metadata=metadata,
        labels=channel_labels(metadata, str(meta_path)),
    )


def _read_yaml_metadata(path: Path) -> Any:
    try:
        return read_config_file(path)
    except InvalidConfigError as err:
        raise ValueError(f"{path}: expected a mapping ({err.detail})") from err


def config_parser(
    root: Path,
    configs: Sequence[Path],
    *,
    metadata: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    user_overrides: Mapping[str, Any] | None = None,
) -> ConfigParser:
    """A ConfigParser over ``configs`` with ``bundle_root`` set to ``root``, then ``overrides``.

    Args:
        root: the bundle folder.
        configs: config files; later ones are layered over earlier ones, as MONAI does for a list.
        metadata: the parsed ``metadata.json`` to set as the parser's ``_meta_`` (copied); None
            leaves ``_meta_`` empty.
        overrides: MONAI id syntax (``"inferer#sw_batch_size"``), applied before any reference is
            resolved, exactly as ``python -m monai.bundle run --key value`` would: what a run sets.
        user_overrides: the same from a person (``--override KEY=VALUE``), applied first; only ids
            the configs hold may be overridden (a misspelt id would otherwise change nothing).

    Raises:
        InvalidJSONError: (a ``ValueError``) a config is not valid JSON; names the file, line and column.
        InvalidConfigError: (a ``ValueError``) a YAML config that is not valid YAML.
        ValueError: an override of an id the configs do not hold.
    """
    import yaml
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    try:
        parser.read_config([str(path) for path in configs])
    except json.JSONDecodeError as err:
        raise InvalidJSONError(_invalid_json_file(configs), err) from err
    except yaml.YAMLError:
        for path in configs:
            read_config_file(path)  # raises InvalidConfigError naming the file, line and column
        raise
    if metadata is not None:
        parser.read_meta(copy.deepcopy(dict(metadata)))
    parser["bundle_root"] = str(root)
    if user_overrides:
        where = ", ".join(Path(p).name for p in configs)
        check_override_ids(user_overrides, parser.__contains__, parser.get("", {}).keys(), f"{root}: {where}")
    for key, value in {**(user_overrides or {}), **(overrides or {})}.items():
        parser[key] = value
    return parser


def _invalid_json_file(configs: Sequence[Path]) -> Path:
    """Which of ``configs`` is not valid JSON (only called when one is)."""
    for path in configs:
        try:
            read_json(Path(path))
        except ValueError:
            return Path(path)
    return Path(configs[0])


def parse_config(
    bundle: Bundle,
    name: str = "inference",
    overrides: dict[str, Any] | None = None,
    user_overrides: Mapping[str, Any] | None = None,
) -> ConfigParser:
    """Read ``configs/<name>.json`` with ``bundle_root`` set to the bundle folder plus ``overrides``.

    The parser's ``_meta_`` is the metadata :func:`load_bundle` already read; ``metadata.json`` is
    not read again. Overrides use MONAI's id syntax (``"inferer#sw_batch_size"``); they are applied
    before any reference is resolved, exactly as ``python -m monai.bundle run --key value`` would.
    ``user_overrides`` (``--override``) must name ids the config holds (see :func:`config_parser`).

    Raises:
        FileNotFoundError: the bundle has no such config.
        ValueError: the config is not valid JSON / YAML, or an override names an unknown id.
    """
    path = bundle.config_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: bundle {bundle.name} has no configs/{name}.json (nor .yaml / .yml)")
    return config_parser(
        bundle.root, [path], metadata=bundle.metadata, overrides=overrides, user_overrides=user_overrides
    )


# -- reading config items without building them ------------------------------------------------


def target_name(item: Any) -> str:
    """The class name a config item builds (``"pipelines.transforms.X"`` -> ``"X"``), or ``""``."""
    target = item.get("_target_", "") if isinstance(item, dict) else ""
    return str(target).rsplit(".", 1)[-1]


def transform_list(parser: ConfigParser, id_: str) -> list[Any] | None:
    """The raw ``transforms`` list of a Compose at ``id_`` (None when absent or built by an expression)."""
    if id_ not in parser:
        return None
    value = parser[id_]
    transforms = value.get("transforms") if isinstance(value, dict) else None
    return transforms if isinstance(transforms, list) else None


def preprocessing_pixdim(parser: ConfigParser) -> list[float] | None:
    """The ``pixdim`` (mm) of the first Spacingd in ``preprocessing``, or None.

    Read as data: plain ``@id`` references are followed, nothing is evaluated, so a ``$``
    expression (which could run anything) gives None, as does any value that is not numbers.
    """
    config = parser.get("", {})
    for index, item in enumerate(transform_list(parser, "preprocessing") or []):
        if target_name(item) in ("Spacingd", "Spacing", "SeparableSpacingd") and "pixdim" in item:
            value = raw_item(config, f"preprocessing#transforms#{index}#pixdim")
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                return None
            return [float(v) for v in values]
    return None
