"""The quick conformance checks: the bundle's files, its metadata and the ids its configs define.

Each check takes the bundle's :class:`BundleFiles` and a ``label`` (the bundle as the user gave
it) and returns one line per problem, naming the bundle, the file and the key, e.g.
``bundles/x: configs/metadata.json: missing key 'numpy_version'``. They read files only (well
under a second per bundle). MONAI is imported inside :func:`check_configs`, which needs its
property tables; the module itself imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

from pipelines.bundles.bundle import config_parser, target_name, transform_list
from pipelines.bundles.layout import (
    CONFIGS,
    EVALUATE,
    INFERENCE,
    LOGGING,
    METADATA,
    README,
    TRAIN,
    InvalidJSONError,
    read_json,
)
from pipelines.bundles.metadata import INPUT_FIELDS, META_KEYS, OUTPUT_FIELDS, meta_get

__all__ = ["BundleFiles", "check_configs", "check_layout", "check_metadata", "first_line"]

# Ids that medseg's own workflows use beyond MONAI's required properties, with the reason.
_INFERENCE_EXTRA: dict[str, str] = {
    "preprocessing": "medseg segment runs it (minus LoadImaged) on the input",
    "postprocessing": "medseg segment runs it (minus SaveImaged) on the prediction",
    "run": "the default run id of `python -m monai.bundle run`",
}
_TRAIN_EXTRA: dict[str, str] = {
    "network_def": "the network trained and saved to models/model.pt",
    "network": "the network on the device, referred to by trainer, evaluator and optimizer",
    "train#preprocessing": "MONAI TrainProperties: preprocessing for the training input data",
    "train#postprocessing": "MONAI TrainProperties: postprocessing for the training model output data",
    "train#handlers": "MONAI TrainProperties: event-handlers for the training logic",
    "validate#evaluator": "MONAI TrainProperties: validation workflow engine; medseg train reads its best metric",
    "validate#dataset": "MONAI TrainProperties: dataset for the validation logic",
    "validate#inferer": "MONAI TrainProperties: inferer for the validation",
    "validate#postprocessing": "MONAI TrainProperties: postprocessing of the validation output",
    "validate#key_metric": "MONAI TrainProperties: key metric; selects the checkpoint saved as models/model.pt",
    "val_interval": "MONAI TrainProperties: validation interval; medseg train --val-interval overrides it",
    "max_epochs": "medseg train --max-epochs overrides it",
    "seed": "medseg train --seed overrides it",
    "manifest": "medseg train points it at the data manifest",
    "optimizer": "medseg train --resume restores it",
    "lr_scheduler": "medseg train --resume restores it",
    "run": "the default run id of `python -m monai.bundle run`",
}
_EVALUATE_IDS: dict[str, str] = {
    "validate#evaluator": "the engine medseg evaluate runs",
    "validate#dataset": "the evaluation cases",
    "validate#preprocessing": "preprocessing that Invertd inverts",
    "validate#postprocessing": "writes each prediction on its image's grid",
    "validate#handlers": "loads models/model.pt",
    "output_dir": "medseg evaluate sets where predictions go",
    "eval_split": "medseg evaluate sets the manifest split",
    "run": "the default run id of `python -m monai.bundle run`",
}
_GRID_RESTORERS: tuple[str, ...] = ("Invertd", "ResampleLabelsToOriginald", "ResampleScoresToOriginald")
"""Postprocessing transforms that return the prediction to the input's grid (MONAI's, ours)."""


class BundleFiles:
    """The JSON files of one bundle folder, each read and parsed at most once per check run.

    Args:
        root: the bundle folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._parsed: dict[str, Any] = {}
        self._errors: dict[str, ValueError] = {}

    def json(self, rel: str) -> Any:
        """The parsed file ``rel`` (e.g. :data:`~pipelines.bundles.layout.METADATA`), a copy the caller may change.

        Raises:
            FileNotFoundError: no such file.
            InvalidJSONError: (a ``ValueError``) not valid JSON.
        """
        if rel in self._errors:
            raise self._errors[rel]
        if rel not in self._parsed:
            try:
                self._parsed[rel] = read_json(self.root / rel)
            except InvalidJSONError as err:
                self._errors[rel] = err
                raise
        return copy.deepcopy(self._parsed[rel])

    def valid_json(self, rel: str) -> bool:
        """Whether ``rel`` exists and is valid JSON."""
        try:
            self.json(rel)
        except (FileNotFoundError, ValueError):
            return False
        return True


def first_line(err: BaseException, limit: int = 400) -> str:
    """``"TypeName: first line of the message"``, shortened to ``limit`` characters."""
    text = str(err).strip().splitlines()
    message = text[0] if text else ""
    message = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _display_id(id_: str) -> str:
    """A config id with ``#`` separators, as our bundles and the MONAI docs write them."""
    return id_.replace("::", "#")


def _required_ids(properties: dict[str, dict[str, Any]], what: str) -> dict[str, str]:
    """The required ids of a MONAI properties table, with their description as the reason."""
    from monai.utils import BundleProperty, BundlePropertyConfig

    return {
        _display_id(spec[BundlePropertyConfig.ID]): f"MONAI {what}: {spec[BundleProperty.DESC]}"
        for spec in properties.values()
        if spec[BundleProperty.REQUIRED]
    }


def _missing_ids(parser: Any, ids: dict[str, str], where: str) -> list[str]:
    return [f"{where}: missing key {id_!r} ({reason})" for id_, reason in ids.items() if id_ not in parser]


# -- layout --------------------------------------------------------------------------------------


def check_layout(files: BundleFiles, label: str) -> list[str]:
    """The Model Zoo files exist and every ``configs/*.json`` is valid JSON."""
    root = files.root
    problems = [
        f"{label}: {rel}: missing file (Model Zoo layout)"
        for rel in (METADATA, INFERENCE, LOGGING, README)
        if not (root / rel).is_file()
    ]
    if (root / EVALUATE).is_file() and not (root / TRAIN).is_file():
        problems.append(f"{label}: {EVALUATE}: is layered over configs/train.json, which is missing")
    for path in sorted((root / CONFIGS).glob("*.json")) if (root / CONFIGS).is_dir() else []:
        try:
            files.json(f"{CONFIGS}/{path.name}")
        except InvalidJSONError as err:
            problems.append(f"{label}: {CONFIGS}/{path.name}: {err.detail}")
    return problems


# -- metadata ------------------------------------------------------------------------------------


def check_metadata(files: BundleFiles, label: str) -> list[str]:
    """The Model Zoo fields of ``metadata.json`` and its ``network_data_format``."""
    if not files.valid_json(METADATA):
        return []  # missing or invalid: reported by the layout check
    meta = files.json(METADATA)
    where = f"{label}: {METADATA}"
    if not isinstance(meta, dict):
        return [f"{where}: expected a JSON object, got {type(meta).__name__}"]
    problems = [f"{where}: missing key {key!r}" for key in META_KEYS if key not in meta]
    for key in ("version", "monai_version", "pytorch_version", "numpy_version", "name", "task"):
        if key in meta and not (isinstance(meta[key], str) and meta[key].strip()):
            problems.append(f"{where}: key {key!r}: expected a non-empty string, got {meta[key]!r}")
    if "changelog" in meta:
        changelog = meta["changelog"]
        if not isinstance(changelog, dict):
            problems.append(f"{where}: key 'changelog': expected an object version -> text, got {changelog!r}")
        elif isinstance(meta.get("version"), str) and meta["version"] not in changelog:
            problems.append(
                f"{where}: key 'changelog': no entry for the current version {meta['version']!r} "
                f"(entries: {', '.join(map(repr, changelog)) or 'none'})"
            )
    if "network_data_format" in meta:
        for section, name, fields in (("inputs", "image", INPUT_FIELDS), ("outputs", "pred", OUTPUT_FIELDS)):
            found, spec = meta_get(meta, ("network_data_format", section, name))
            key = f"network_data_format#{section}#{name}"
            if not found:
                problems.append(f"{where}: missing key {key!r}")
                continue
            if not isinstance(spec, dict):
                problems.append(f"{where}: key {key!r}: expected an object, got {spec!r}")
                continue
            problems += [f"{where}: missing key '{key}#{f}'" for f in fields if f not in spec]
            problems += _check_io_spec(spec, f"{where}: key '{key}")
    return problems


def _check_io_spec(spec: dict[str, Any], where: str) -> list[str]:
    """Types and agreement of one ``network_data_format`` entry; ``where`` ends with an open quote."""
    problems = []
    channels = spec.get("num_channels")
    if "num_channels" in spec and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
        problems.append(f"{where}#num_channels': expected an int of 1 or more, got {channels!r}")
        channels = None
    shape = spec.get("spatial_shape")
    if "spatial_shape" in spec and not (
        isinstance(shape, list) and len(shape) in (2, 3) and all(isinstance(s, int | str) for s in shape)
    ):
        problems.append(f"{where}#spatial_shape': expected 2 or 3 sizes (ints or 'n'/'p' expressions), got {shape!r}")
    value_range = spec.get("value_range")
    if "value_range" in spec and not (isinstance(value_range, list) and len(value_range) in (0, 2)):
        problems.append(f"{where}#value_range': expected [low, high], got {value_range!r}")
    channel_def = spec.get("channel_def")
    if "channel_def" in spec:
        if not isinstance(channel_def, dict) or not all(str(k).isdigit() for k in channel_def):
            problems.append(f"{where}#channel_def': expected an object channel index -> name, got {channel_def!r}")
        elif isinstance(channels, int) and len(channel_def) != channels:
            problems.append(f"{where}#channel_def': names {len(channel_def)} channel(s), num_channels is {channels}")
    return problems


# -- config ids ----------------------------------------------------------------------------------


def check_configs(files: BundleFiles, label: str) -> list[str]:
    """Each config holds the ids its workflow needs (MONAI's required properties plus medseg's)."""
    from monai.bundle.properties import InferProperties, TrainProperties

    root = files.root
    problems: list[str] = []
    parsers: dict[str, Any] = {}
    for rel in (INFERENCE, TRAIN):
        if files.valid_json(rel):
            with contextlib.suppress(ValueError):
                parsers[rel] = config_parser(root, [root / rel])
    if INFERENCE in parsers:
        problems += _check_inference_ids(parsers[INFERENCE], f"{label}: {INFERENCE}", InferProperties)
    if TRAIN in parsers:
        parser = parsers[TRAIN]
        where = f"{label}: {TRAIN}"
        problems += _missing_ids(parser, {**_required_ids(TrainProperties, "TrainProperties"), **_TRAIN_EXTRA}, where)
        if "train#trainer#max_epochs" in parser and "max_epochs" in parser:
            value = parser["train#trainer#max_epochs"]
            if value != "@max_epochs":
                problems.append(
                    f"{where}: key 'train#trainer#max_epochs': expected '@max_epochs' so that medseg train "
                    f"--max-epochs takes effect, got {value!r}"
                )
    if TRAIN in parsers and files.valid_json(EVALUATE):
        merged = config_parser(root, [root / TRAIN, root / EVALUATE])
        where = f"{label}: {EVALUATE}"
        problems += [
            f"{p} (evaluate.json is layered over train.json)" for p in _missing_ids(merged, _EVALUATE_IDS, where)
        ]
    return problems


def _check_inference_ids(parser: Any, where: str, properties: dict[str, dict[str, Any]]) -> list[str]:
    problems = _missing_ids(parser, {**_required_ids(properties, "InferProperties"), **_INFERENCE_EXTRA}, where)
    pre = transform_list(parser, "preprocessing")
    if pre is not None and (not pre or target_name(pre[0]) not in ("LoadImaged", "LoadImage")):
        problems.append(
            f"{where}: key 'preprocessing#transforms#0': expected LoadImaged first (medseg segment reads the "
            f"input itself and replaces it), got {target_name(pre[0]) if pre else 'an empty list'!r}"
        )
    post = transform_list(parser, "postprocessing")
    if post is not None:
        names = [target_name(t) for t in post]
        if not any(n in _GRID_RESTORERS for n in names):
            problems.append(
                f"{where}: key 'postprocessing': no Invertd (or {', '.join(_GRID_RESTORERS[1:])}); "
                "the label map must go back to the input's grid"
            )
        if "SaveImaged" not in names:
            problems.append(
                f"{where}: key 'postprocessing': no SaveImaged; `python -m monai.bundle run` would write nothing"
            )
    return problems
