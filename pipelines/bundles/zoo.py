"""What the MONAI Model Zoo requires of a bundle: the file checks of ``medseg bundle check``'s ``zoo`` part.

The Zoo's CI (``ci/verify_bundle.py`` in Project-MONAI/model-zoo) fails a bundle, in this order, on:

1. a missing ``LICENSE`` or ``configs/metadata.json`` (necessary files), a missing
   ``configs/inference.{json,yaml,yml}`` or ``models/model.pt`` (preferred files; the weights may
   instead be listed for download in ``large_files.{yml,yaml,json}``);
2. ``version`` or ``changelog`` missing, or no changelog entry for the current version;
3. ``metadata.json`` not valid against the JSON schema its ``schema`` key names;
4. ``verify_net_in_out`` and a TorchScript export (``ckpt_export``) failing (see
   :mod:`pipelines.bundles.network_checks`).

Step 3 is checked here against the keys and types those schemas require, written out in
:data:`SCHEMA_REQUIREMENTS`: MONAI's own ``verify_metadata`` downloads the schema from its URL,
which a machine without internet (and every test run) cannot do. Nothing medseg-specific is
required here; that is the ``medseg`` part (:mod:`pipelines.bundles.checks`). This module reads
files only and imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.bundles.checks import BundleFiles
from pipelines.bundles.layout import CONFIG_SUFFIXES, CONFIGS, METADATA, WEIGHTS

__all__ = [
    "DEFAULT_SCHEMA",
    "LICENSE",
    "SCHEMA_REQUIREMENTS",
    "SchemaRequirements",
    "check_zoo_files",
    "check_zoo_metadata",
]

LICENSE = "LICENSE"
LARGE_FILES = "large_files"
"""Stem of the Zoo's list of files to download (``large_files.yml``, ``.yaml`` or ``.json``)."""

_STRING, _OBJECT, _INTEGER, _ARRAY, _BOOLEAN = "string", "object", "integer", "array", "boolean"


@dataclass(frozen=True)
class SchemaRequirements:
    """What one Zoo metadata schema requires.

    Attributes:
        required: top-level keys that must be present.
        types: JSON type of each top-level key the schema types (checked when present).
        tensor_required: keys every ``network_data_format`` input and output tensor must have.
        tensor_types: JSON type of each tensor key (checked when present).
    """

    required: tuple[str, ...]
    types: Mapping[str, str]
    tensor_required: tuple[str, ...]
    tensor_types: Mapping[str, str]


_TOP_TYPES: dict[str, str] = {
    "schema": _STRING,
    "version": _STRING,
    "changelog": _OBJECT,
    "monai_version": _STRING,
    "pytorch_version": _STRING,
    "numpy_version": _STRING,
    "required_packages_version": _OBJECT,
    "optional_packages_version": _OBJECT,
    "task": _STRING,
    "description": _STRING,
    "authors": _STRING,
    "copyright": _STRING,
    "data_source": _STRING,
    "data_type": _STRING,
    "image_classes": _STRING,
    "label_classes": _STRING,
    "pred_classes": _STRING,
    "eval_metrics": _OBJECT,
    "intended_use": _STRING,
    "references": _ARRAY,
    "supported_apps": _OBJECT,
    "network_data_format": _OBJECT,
}
_TENSOR_REQUIRED = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range")
_TENSOR_TYPES: dict[str, str] = {
    "type": _STRING,
    "format": _STRING,
    "num_channels": _INTEGER,
    "spatial_shape": _ARRAY,
    "dtype": _STRING,
    "value_range": _ARRAY,
    "is_patch_data": _BOOLEAN,
    "channel_def": _OBJECT,
}
_COMMON = ("schema", "version", "monai_version", "pytorch_version", "numpy_version")
_DESCRIBED = ("task", "description", "authors", "copyright", "network_data_format")

SCHEMA_REQUIREMENTS: dict[str, SchemaRequirements] = {
    # meta_schema_20220729.json still names the package list optional_packages_version ...
    "meta_schema_20220729.json": SchemaRequirements(
        (*_COMMON, "optional_packages_version", *_DESCRIBED), _TOP_TYPES, _TENSOR_REQUIRED, _TENSOR_TYPES
    ),
    # ... meta_schema_20240725.json requires required_packages_version (MONAI 1.6 reads the old
    # name as a deprecated alias of the new one).
    "meta_schema_20240725.json": SchemaRequirements(
        (*_COMMON, "required_packages_version", *_DESCRIBED), _TOP_TYPES, _TENSOR_REQUIRED, _TENSOR_TYPES
    ),
}
"""Required keys and types of the Zoo's metadata schemas, by file name (the end of the ``schema`` URL)."""

DEFAULT_SCHEMA = "meta_schema_20240725.json"
"""The schema a bundle is checked against when its ``schema`` names none this module knows."""

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    _STRING: (str,),
    _OBJECT: (dict,),
    _INTEGER: (int,),
    _ARRAY: (list,),
    _BOOLEAN: (bool,),
}


def _is_type(value: Any, json_type: str) -> bool:
    if json_type == _INTEGER and isinstance(value, bool):
        return False
    return isinstance(value, _JSON_TYPES[json_type])


def _config_exists(files: BundleFiles, stem: str, folder: str = CONFIGS) -> bool:
    base = files.root / folder if folder else files.root
    return any((base / f"{stem}{suffix}").is_file() for suffix in CONFIG_SUFFIXES)


def check_zoo_files(files: BundleFiles, label: str) -> list[str]:
    """The files the Zoo's CI requires (``LICENSE``, metadata) and prefers (inference config, weights)."""
    root = files.root
    problems = [
        f"{label}: {rel}: missing file (the Model Zoo requires it)"
        for rel in (LICENSE, METADATA)
        if not (root / rel).is_file()
    ]
    if not _config_exists(files, "inference"):
        problems.append(
            f"{label}: {CONFIGS}/inference.json: missing file (the Model Zoo requires an inference config, "
            f"{' / '.join(s.lstrip('.') for s in CONFIG_SUFFIXES)})"
        )
    if not (root / WEIGHTS).is_file() and not _config_exists(files, LARGE_FILES, folder=""):
        problems.append(
            f"{label}: {WEIGHTS}: missing file (the Model Zoo requires the weights in the bundle, or their "
            f"download address in {LARGE_FILES}.yml); see the bundle's docs/README.md for how to produce them"
        )
    return problems


def _schema_name(meta: Mapping[str, Any]) -> str:
    schema = meta.get("schema")
    return str(schema).rstrip("/").rsplit("/", 1)[-1] if isinstance(schema, str) else ""


def check_zoo_metadata(files: BundleFiles, label: str, notes: list[str] | None = None) -> list[str]:
    """``version`` with its changelog entry, and the keys and types the named metadata schema requires.

    Args:
        files: the bundle's files.
        label: the bundle as the user gave it, for messages.
        notes: receives a line when the ``schema`` names a schema this module does not know (the
            bundle is then checked against :data:`DEFAULT_SCHEMA`).
    """
    if not (files.root / METADATA).is_file():
        return []  # reported by check_zoo_files
    where = f"{label}: {METADATA}"
    try:
        meta = files.json(METADATA)
    except ValueError as err:
        return [f"{where}: {getattr(err, 'detail', err)}"]
    if not isinstance(meta, dict):
        return [f"{where}: expected a JSON object, got {type(meta).__name__}"]
    problems: list[str] = []
    # verify_version_changes: version and changelog, with an entry for the current version
    for key in ("version", "changelog"):
        if key not in meta:
            problems.append(f"{where}: missing key {key!r} (the Model Zoo's CI requires it)")
    version, changelog = meta.get("version"), meta.get("changelog")
    if isinstance(version, str) and isinstance(changelog, dict) and version not in changelog:
        problems.append(
            f"{where}: key 'changelog': no entry for the current version {version!r} "
            f"(entries: {', '.join(map(repr, changelog)) or 'none'})"
        )
    # verify_metadata against the schema the metadata names
    name = _schema_name(meta)
    if name not in SCHEMA_REQUIREMENTS:
        if notes is not None:
            notes.append(
                f"{METADATA}: schema {meta.get('schema')!r} is not one medseg knows "
                f"({', '.join(SCHEMA_REQUIREMENTS)}); checked against {DEFAULT_SCHEMA}"
            )
        name = DEFAULT_SCHEMA
    spec = SCHEMA_REQUIREMENTS[name]
    problems += [f"{where}: missing key {key!r} (required by {name})" for key in spec.required if key not in meta]
    problems += [
        f"{where}: key {key!r}: expected a JSON {json_type}, got {meta[key]!r} ({name})"
        for key, json_type in spec.types.items()
        if key in meta and not _is_type(meta[key], json_type)
    ]
    problems += _check_data_format(meta.get("network_data_format"), spec, where, name)
    return problems


def _check_data_format(data_format: Any, spec: SchemaRequirements, where: str, name: str) -> list[str]:
    """Every input and output tensor of ``network_data_format`` has the keys and types the schema requires."""
    if not isinstance(data_format, dict):
        return []  # missing or mistyped: reported above
    problems = [
        f"{where}: missing key 'network_data_format#{section}' (required by {name})"
        for section in ("inputs", "outputs")
        if section not in data_format
    ]
    for section in ("inputs", "outputs"):
        entries = data_format.get(section)
        if not isinstance(entries, dict):
            continue
        for entry, tensor in entries.items():
            key = f"network_data_format#{section}#{entry}"
            if not isinstance(tensor, dict):
                if not isinstance(tensor, int | float | str | bool):
                    problems.append(f"{where}: key {key!r}: expected a tensor description (an object), got {tensor!r}")
                continue
            problems += [
                f"{where}: missing key '{key}#{field}' (required by {name})"
                for field in spec.tensor_required
                if field not in tensor
            ]
            problems += [
                f"{where}: key '{key}#{field}': expected a JSON {json_type}, got {tensor[field]!r} ({name})"
                for field, json_type in spec.tensor_types.items()
                if field in tensor and not _is_type(tensor[field], json_type)
            ]
    return problems
