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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.bundles.bundle import config_parser, target_name, transform_list
from pipelines.bundles.layout import (
    CONFIGS,
    EVALUATE,
    LOGGING,
    METADATA,
    README,
    TRAIN,
    InvalidConfigError,
    InvalidJSONError,
    config_path,
    read_config_file,
    read_json,
)
from pipelines.bundles.metadata import meta_get

__all__ = ["BundleFiles", "check_configs", "check_layout", "check_metadata", "first_line"]

# Ids that medseg's own workflows use beyond MONAI's required properties: which command fails without it, and why.
_SEGMENT = "medseg segment and batch would fail"
_TRAIN = "medseg train would fail"
_EVALUATE = "medseg evaluate would fail"
_PLAIN_RUN = "`python -m monai.bundle run` would fail"
_INFERENCE_EXTRA: dict[str, str] = {
    "preprocessing": f"{_SEGMENT}: they run it (minus LoadImaged) on the input",
    "postprocessing": f"{_SEGMENT}: they run it (minus SaveImaged) on the prediction",
    "run": f"{_PLAIN_RUN}: it is the default run id",
}
_TRAIN_EXTRA: dict[str, str] = {
    "network_def": f"{_TRAIN}: it trains this network and saves it to models/model.pt",
    "network": f"{_TRAIN}: trainer, evaluator and optimizer refer to the network on the device",
    "train#preprocessing": "MONAI TrainProperties: preprocessing for the training input data",
    "train#postprocessing": "MONAI TrainProperties: postprocessing for the training model output data",
    "train#handlers": "MONAI TrainProperties: event-handlers for the training logic",
    "validate#evaluator": f"MONAI TrainProperties: validation workflow engine; {_TRAIN}: it reads its best metric",
    "validate#dataset": "MONAI TrainProperties: dataset for the validation logic",
    "validate#inferer": "MONAI TrainProperties: inferer for the validation",
    "validate#postprocessing": "MONAI TrainProperties: postprocessing of the validation output",
    "validate#key_metric": "MONAI TrainProperties: key metric; selects the checkpoint saved as models/model.pt",
    "val_interval": f"MONAI TrainProperties: validation interval; {_TRAIN} with --val-interval: it overrides it",
    "max_epochs": f"{_TRAIN} with --max-epochs: it overrides this id",
    "seed": f"{_TRAIN} with --seed: it overrides this id",
    "manifest": f"{_TRAIN}: it points this id at the data manifest",
    "optimizer": f"{_TRAIN} with --resume: it restores the optimizer",
    "lr_scheduler": f"{_TRAIN} with --resume: it restores the scheduler",
    "run": f"{_PLAIN_RUN} on train.json: it is the default run id",
}
_EVALUATE_IDS: dict[str, str] = {
    "validate#evaluator": f"{_EVALUATE}: it runs this engine",
    "validate#dataset": f"{_EVALUATE}: it reads the evaluation cases from it",
    "validate#preprocessing": f"{_EVALUATE}: Invertd inverts it",
    "validate#postprocessing": f"{_EVALUATE}: it writes each prediction on its image's grid",
    "validate#handlers": f"{_EVALUATE}: they load models/model.pt",
    "output_dir": f"{_EVALUATE}: it sets where predictions go",
    "eval_split": f"{_EVALUATE}: it sets the manifest split",
    "run": f"{_PLAIN_RUN} on evaluate.json: it is the default run id",
}
_GRID_RESTORERS: tuple[str, ...] = ("Invertd", "ResampleLabelsToOriginald", "ResampleScoresToOriginald")
"""Postprocessing transforms that return the prediction to the input's grid (MONAI's, ours)."""
_LABEL_CLEANUP: tuple[str, ...] = (
    "RemoveSmallIslandsd",
    "KeepLargestComponentd",
    "FillHolesd",
    "KeepLargestConnectedComponentd",
    "RemoveSmallObjectsd",
    "LabelFilterd",
)
"""Post-processing steps that change which voxels carry a label after the argmax: ``medseg evaluate``
must score the same ones ``medseg segment`` applies, or its Dice describes labels nobody ships."""


class BundleFiles:
    """The JSON (and YAML) files of one bundle folder, each read and parsed at most once per check run.

    ``.yaml`` / ``.yml`` files are read as YAML, the rest as JSON; nothing is evaluated.

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
            InvalidConfigError: (a ``ValueError``) a YAML file that is not valid YAML or not a mapping.
        """
        if rel in self._errors:
            raise self._errors[rel]
        if rel not in self._parsed:
            try:
                self._parsed[rel] = _read(self.root / rel)
            except (InvalidJSONError, InvalidConfigError) as err:
                self._errors[rel] = err
                raise
        return copy.deepcopy(self._parsed[rel])

    @property
    def inference_rel(self) -> str:
        """The inference config, relative: ``configs/inference.json`` (``.yaml`` / ``.yml`` when only that exists)."""
        return config_path(self.root, "inference").relative_to(self.root).as_posix()

    def valid_json(self, rel: str) -> bool:
        """Whether ``rel`` exists and is valid JSON (valid YAML for a ``.yaml`` / ``.yml`` file)."""
        try:
            self.json(rel)
        except (FileNotFoundError, ValueError):
            return False
        return True


def _read(path: Path) -> Any:
    """A JSON file as any JSON value; a YAML config as a mapping (see :func:`read_config_file`)."""
    if path.suffix.lower() in (".yaml", ".yml"):
        return read_config_file(path)
    return read_json(path)


def first_line(err: BaseException, limit: int = 400) -> str:
    """``"TypeName: first line of the message"``, shortened to ``limit`` characters."""
    text = str(err).strip().splitlines()
    message = text[0] if text else ""
    message = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _display_id(id_: str) -> str:
    """A config id with ``#`` separators, as our bundles and the MONAI docs write them."""
    return id_.replace("::", "#")


def _required_ids(properties: dict[str, dict[str, Any]], what: str, consequence: str) -> dict[str, str]:
    """The required ids of a MONAI properties table, with their description and ``consequence`` as the reason."""
    from monai.utils import BundleProperty, BundlePropertyConfig

    return {
        _display_id(spec[BundlePropertyConfig.ID]): f"MONAI {what}: {spec[BundleProperty.DESC]}; {consequence}"
        for spec in properties.values()
        if spec[BundleProperty.REQUIRED]
    }


def _missing_ids(parser: Any, ids: dict[str, str], where: str) -> list[str]:
    return [f"{where}: missing key {id_!r} ({reason})" for id_, reason in ids.items() if id_ not in parser]


# -- layout --------------------------------------------------------------------------------------


def check_layout(files: BundleFiles, label: str) -> list[str]:
    """The Model Zoo files exist and every ``configs/*.json`` is valid JSON (``*.yaml`` valid YAML)."""
    root = files.root
    problems = [
        f"{label}: {rel}: missing file ({why})"
        for rel, why in (
            (METADATA, f"{_SEGMENT}: labels and input channels come from it"),
            (files.inference_rel, f"{_SEGMENT}: they run its network, preprocessing and postprocessing"),
            (LOGGING, f"{_PLAIN_RUN} without --logging_file: MONAI looks for it"),
            (README, "the model card; medseg bundle list and the Model Zoo show it"),
        )
        if not (root / rel).is_file()
    ]
    if (root / EVALUATE).is_file() and not (root / TRAIN).is_file():
        problems.append(f"{label}: {EVALUATE}: is layered over configs/train.json, which is missing")
    configs = sorted((root / CONFIGS).iterdir()) if (root / CONFIGS).is_dir() else []
    for path in (p for p in configs if p.suffix.lower() in (".json", ".yaml", ".yml")):
        try:
            files.json(f"{CONFIGS}/{path.name}")
        except (InvalidJSONError, InvalidConfigError) as err:
            problems.append(f"{label}: {CONFIGS}/{path.name}: {err.detail}")
    return problems


# -- metadata ------------------------------------------------------------------------------------


_MEDSEG_META: dict[str, str] = {
    "name": "run.json, DICOM-SEG and bundle list name the model by it",
    "network_data_format#inputs#image#modality": "medseg segment windows the preview by it (CT or MR)",
    "network_data_format#inputs#image#channel_def": f"{_SEGMENT} with several --image: the channel order is checked "
    "against its names",
    "network_data_format#outputs#pred#channel_def": f"{_SEGMENT}: stats, DICOM-SEG and preview name structures by it",
}
"""Metadata keys medseg reads beyond what the Model Zoo requires (checked by :mod:`pipelines.bundles.zoo`)."""


def check_metadata(files: BundleFiles, label: str) -> list[str]:
    """What medseg reads from ``metadata.json`` beyond the Zoo's keys: name, modality, channel definitions.

    The Zoo's own keys (version, changelog, schema keys and types) are the ``zoo`` part's
    (:func:`pipelines.bundles.zoo.check_zoo_metadata`); they are not reported twice.
    """
    if not files.valid_json(METADATA):
        return []  # missing or invalid: reported by the layout check
    meta = files.json(METADATA)
    where = f"{label}: {METADATA}"
    if not isinstance(meta, dict):
        return [f"{where}: expected a JSON object, got {type(meta).__name__}"]
    problems = []
    for key, reason in _MEDSEG_META.items():
        found, _ = meta_get(meta, key.split("#"))
        if not found and (key == "name" or "network_data_format" in meta):
            problems.append(f"{where}: missing key {key!r} ({reason})")
    if "name" in meta and not (isinstance(meta["name"], str) and meta["name"].strip()):
        problems.append(f"{where}: key 'name': expected a non-empty string, got {meta['name']!r}")
    for section, name in (("inputs", "image"), ("outputs", "pred")):
        key = f"network_data_format#{section}#{name}"
        found, spec = meta_get(meta, ("network_data_format", section, name))
        if "network_data_format" in meta and not found:
            problems.append(f"{where}: missing key {key!r} ({_SEGMENT}: medseg reads the network's {section} there)")
        elif found and isinstance(spec, dict):
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


def check_configs(files: BundleFiles, label: str, overrides: Mapping[str, Any] | None = None) -> list[str]:
    """Each config holds the ids its workflow needs (MONAI's required properties plus medseg's).

    ``overrides`` (``--override``) apply to the inference config, as ``medseg segment`` applies them.
    """
    from monai.bundle.properties import InferProperties, TrainProperties

    root = files.root
    problems: list[str] = []
    parsers: dict[str, Any] = {}
    inference = files.inference_rel
    for rel in (inference, TRAIN):
        if files.valid_json(rel):
            with contextlib.suppress(ValueError):
                parsers[rel] = config_parser(root, [root / rel], user_overrides=overrides if rel == inference else None)
    if inference in parsers:
        problems += _check_inference_ids(parsers[inference], f"{label}: {inference}", InferProperties)
    if TRAIN in parsers:
        parser = parsers[TRAIN]
        where = f"{label}: {TRAIN}"
        problems += _missing_ids(
            parser, {**_required_ids(TrainProperties, "TrainProperties", _TRAIN), **_TRAIN_EXTRA}, where
        )
        if "train#trainer#max_epochs" in parser and "max_epochs" in parser:
            value = parser["train#trainer#max_epochs"]
            if value != "@max_epochs":
                problems.append(
                    f"{where}: key 'train#trainer#max_epochs': expected '@max_epochs' so that medseg train "
                    f"--max-epochs takes effect (else it is silently ignored), got {value!r}"
                )
    if TRAIN in parsers and files.valid_json(EVALUATE):
        merged = config_parser(root, [root / TRAIN, root / EVALUATE])
        where = f"{label}: {EVALUATE}"
        problems += [
            f"{p} (evaluate.json is layered over train.json)" for p in _missing_ids(merged, _EVALUATE_IDS, where)
        ]
        if inference in parsers:
            problems += _check_same_cleanup(parsers[inference], merged, where, inference)
    return problems


def _cleanup_steps(parser: Any, id_: str) -> list[tuple[str, dict[str, Any]]] | None:
    """The label clean-up steps of the Compose at ``id_``, in order: class name and raw arguments minus
    ``keys`` (the two workflows name their prediction differently). None when not a plain list."""
    transforms = transform_list(parser, id_)
    if transforms is None:
        return None
    return [
        (target_name(t), {k: v for k, v in t.items() if k not in ("_target_", "keys")})
        for t in transforms
        if target_name(t) in _LABEL_CLEANUP
    ]


def _check_same_cleanup(inference: Any, evaluate: Any, where: str, inference_rel: str) -> list[str]:
    """evaluate.json's ``validate#postprocessing`` cleans the labels exactly as the inference config does."""
    shipped = _cleanup_steps(inference, "postprocessing")
    scored = _cleanup_steps(evaluate, "validate#postprocessing")
    if shipped is None or scored is None or shipped == scored:
        return []

    def show(steps: list[tuple[str, dict[str, Any]]]) -> str:
        return "; ".join(f"{name}({args})" for name, args in steps) or "none"

    return [
        f"{where}: key 'validate#postprocessing': label clean-up [{show(scored)}] differs from {inference_rel}'s "
        f"'postprocessing' [{show(shipped)}]; medseg evaluate would score labels medseg segment does not write"
    ]


def _check_inference_ids(parser: Any, where: str, properties: dict[str, dict[str, Any]]) -> list[str]:
    problems = _missing_ids(
        parser, {**_required_ids(properties, "InferProperties", _PLAIN_RUN), **_INFERENCE_EXTRA}, where
    )
    pre = transform_list(parser, "preprocessing")
    if pre is not None and (not pre or target_name(pre[0]) not in ("LoadImaged", "LoadImage")):
        problems.append(
            f"{where}: key 'preprocessing#transforms#0': expected LoadImaged first ({_SEGMENT}: they read the "
            f"input themselves and replace it), got {target_name(pre[0]) if pre else 'an empty list'!r}"
        )
    post = transform_list(parser, "postprocessing")
    if post is not None:
        names = [target_name(t) for t in post]
        if not any(n in _GRID_RESTORERS for n in names):
            problems.append(
                f"{where}: key 'postprocessing': no Invertd (or {', '.join(_GRID_RESTORERS[1:])}); "
                f"{_SEGMENT}: the label map must go back to the input's grid"
            )
        if "SaveImaged" not in names:
            problems.append(
                f"{where}: key 'postprocessing': no SaveImaged; `python -m monai.bundle run` would write nothing"
            )
    return problems
