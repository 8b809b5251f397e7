"""Bundle conformance: does a bundle follow the MONAI Model Zoo conventions medseg relies on?

:func:`check_bundle` answers with a list of problems, each naming the bundle, the file and the key,
e.g. ``bundles/x: configs/metadata.json: missing key 'numpy_version'``. It checks, in order:

``layout``
    ``configs/metadata.json``, ``configs/inference.json``, ``configs/logging.conf`` and
    ``docs/README.md`` exist and every ``configs/*.json`` is valid JSON.
``metadata``
    the Model Zoo fields of ``metadata.json`` (versions, a changelog entry for the current version,
    name, task, description, authors, copyright) and ``network_data_format`` (``inputs.image`` and
    ``outputs.pred`` with type, format, modality, channels, spatial shape, dtype, value range and
    channel definitions that agree with the channel count).
``configs``
    each config holds the ids its workflow needs: MONAI's required
    :data:`~monai.bundle.properties.InferProperties` / :data:`~monai.bundle.properties.TrainProperties`
    plus the ids ``medseg segment``, ``medseg train`` and ``medseg evaluate`` use.
``net_in_out``
    :func:`monai.bundle.verify_net_in_out` passes with the metadata's input and output spec.
``export``
    :func:`monai.bundle.ckpt_export` writes a TorchScript model giving the checkpoint's output
    (``torch.allclose``, ``atol=1e-4``) on a random input.
``run``
    ``python -m monai.bundle run --config_file configs/inference.json ...`` in a subprocess segments
    a tiny generated volume and writes a label map on that volume's grid.

Without ``models/model.pt`` the ``export`` and ``run`` checks use a randomly initialised network
saved to a temporary checkpoint, and say so in :attr:`CheckResult.notes`. The bundle folder itself is
never written to. :func:`bundle_info` and :func:`list_bundles` describe bundles for ``medseg bundle
info`` / ``list``; :func:`add_bundle_parser` adds those subcommands to the ``medseg`` command line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKS",
    "QUICK_CHECKS",
    "CheckResult",
    "add_bundle_parser",
    "bundle_info",
    "check_bundle",
    "default_bundles_folder",
    "list_bundles",
    "run_checks",
]

CHECKS: tuple[str, ...] = ("layout", "metadata", "configs", "net_in_out", "export", "run")
"""Every check, in the order they run."""

QUICK_CHECKS: tuple[str, ...] = ("layout", "metadata", "configs")
"""The checks that only read files (well under a second per bundle)."""

METADATA = "configs/metadata.json"
INFERENCE = "configs/inference.json"
TRAIN = "configs/train.json"
EVALUATE = "configs/evaluate.json"
LOGGING = "configs/logging.conf"
README = "docs/README.md"
WEIGHTS = "models/model.pt"

META_KEYS: tuple[str, ...] = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "name",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)
"""Top-level ``metadata.json`` keys of a Model Zoo bundle (``MetaProperties`` plus the Zoo's)."""

INPUT_FIELDS: tuple[str, ...] = (
    "type",
    "format",
    "modality",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "channel_def",
)
OUTPUT_FIELDS: tuple[str, ...] = (
    "type",
    "format",
    "num_channels",
    "spatial_shape",
    "dtype",
    "value_range",
    "channel_def",
)

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
_GRID_RESTORERS: tuple[str, ...] = ("Invertd", "ResampleLabelsToOriginald", "ResampleScoresToOriginald")
"""Postprocessing transforms that return the prediction to the input's grid (MONAI's, ours)."""

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


@dataclass
class CheckResult:
    """The outcome of :func:`run_checks` on one bundle.

    Attributes:
        bundle: the bundle folder, as given.
        problems: one line per problem (empty when the bundle conforms).
        notes: what the checks could not use as shipped (e.g. random weights without ``models/model.pt``).
        seconds: wall time per check that ran.
    """

    bundle: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON: line {err.lineno} column {err.colno}: {err.msg}") from err


def _parser(root: Path, configs: Sequence[str], meta: bool = True) -> Any:
    """A ConfigParser over ``configs`` (relative to ``root``, later ones layered over earlier ones)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(root / c) for c in configs])
    if meta and (root / METADATA).is_file():
        parser.read_meta(str(root / METADATA))
    parser["bundle_root"] = str(root)
    return parser


def _first_line(err: BaseException, limit: int = 400) -> str:
    text = str(err).strip().splitlines()
    message = text[0] if text else ""
    message = f"{type(err).__name__}: {message}" if message else type(err).__name__
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _target_name(item: Any) -> str:
    """The class name a config item builds (``"pipelines.transforms.X"`` -> ``"X"``), or ``""``."""
    target = item.get("_target_", "") if isinstance(item, dict) else ""
    return str(target).rsplit(".", 1)[-1]


def _transform_list(parser: Any, id_: str) -> list[Any] | None:
    """The raw ``transforms`` list of a Compose at ``id_`` (None when it is built by an expression)."""
    if id_ not in parser:
        return None
    value = parser[id_]
    transforms = value.get("transforms") if isinstance(value, dict) else None
    return transforms if isinstance(transforms, list) else None


def _meta_get(meta: dict[str, Any], path: Sequence[str]) -> tuple[bool, Any]:
    node: Any = meta
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def default_bundles_folder() -> Path:
    """The ``bundles`` folder beside the package when it exists (a source checkout), else the cwd."""
    candidate = Path(__file__).resolve().parents[1] / "bundles"
    return candidate if candidate.is_dir() else Path.cwd()


# --------------------------------------------------------------------------------------------
# Quick checks: files, metadata, config ids
# --------------------------------------------------------------------------------------------


def _check_layout(root: Path, label: str) -> list[str]:
    problems = []
    for rel in (METADATA, INFERENCE, LOGGING, README):
        if not (root / rel).is_file():
            problems.append(f"{label}: {rel}: missing file (Model Zoo layout)")
    if (root / EVALUATE).is_file() and not (root / TRAIN).is_file():
        problems.append(f"{label}: {EVALUATE}: is layered over configs/train.json, which is missing")
    for path in sorted((root / "configs").glob("*.json")) if (root / "configs").is_dir() else []:
        try:
            _read_json(path)
        except ValueError as err:
            problems.append(f"{label}: configs/{path.name}: {err}")
    return problems


def _check_metadata(root: Path, label: str) -> list[str]:
    path = root / METADATA
    if not path.is_file():
        return []  # reported by the layout check
    where = f"{label}: {METADATA}"
    try:
        meta = _read_json(path)
    except ValueError:
        return []  # reported by the layout check
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
            found, spec = _meta_get(meta, ("network_data_format", section, name))
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


def _missing_ids(parser: Any, ids: dict[str, str], where: str) -> list[str]:
    return [f"{where}: missing key {id_!r} ({reason})" for id_, reason in ids.items() if id_ not in parser]


def _check_configs(root: Path, label: str) -> list[str]:
    from monai.bundle.properties import InferProperties, TrainProperties

    problems: list[str] = []
    parsers: dict[str, Any] = {}
    for rel in (INFERENCE, TRAIN):
        if (root / rel).is_file():
            with contextlib.suppress(ValueError):  # invalid JSON: reported by the layout check
                parsers[rel] = _parser(root, [rel], meta=False)
    if INFERENCE in parsers:
        parser = parsers[INFERENCE]
        where = f"{label}: {INFERENCE}"
        required = {**_required_ids(InferProperties, "InferProperties"), **_INFERENCE_EXTRA}
        problems += _missing_ids(parser, required, where)
        pre = _transform_list(parser, "preprocessing")
        if pre is not None and (not pre or _target_name(pre[0]) not in ("LoadImaged", "LoadImage")):
            problems.append(
                f"{where}: key 'preprocessing#transforms#0': expected LoadImaged first (medseg segment reads the "
                f"input itself and replaces it), got {_target_name(pre[0]) if pre else 'an empty list'!r}"
            )
        post = _transform_list(parser, "postprocessing")
        if post is not None:
            names = [_target_name(t) for t in post]
            if not any(n in _GRID_RESTORERS for n in names):
                problems.append(
                    f"{where}: key 'postprocessing': no Invertd (or {', '.join(_GRID_RESTORERS[1:])}); "
                    "the label map must go back to the input's grid"
                )
            if "SaveImaged" not in names:
                problems.append(
                    f"{where}: key 'postprocessing': no SaveImaged; `python -m monai.bundle run` would write nothing"
                )
    if TRAIN in parsers:
        parser = parsers[TRAIN]
        where = f"{label}: {TRAIN}"
        required = {**_required_ids(TrainProperties, "TrainProperties"), **_TRAIN_EXTRA}
        problems += _missing_ids(parser, required, where)
        if "train#trainer#max_epochs" in parser and "max_epochs" in parser:
            value = parser["train#trainer#max_epochs"]
            if value != "@max_epochs":
                problems.append(
                    f"{where}: key 'train#trainer#max_epochs': expected '@max_epochs' so that medseg train "
                    f"--max-epochs takes effect, got {value!r}"
                )
    if TRAIN in parsers and (root / EVALUATE).is_file():
        try:
            merged = _parser(root, [TRAIN, EVALUATE], meta=False)
        except ValueError:
            merged = None
        if merged is not None:
            where = f"{label}: {EVALUATE}"
            problems += [
                f"{p} (evaluate.json is layered over train.json)" for p in _missing_ids(merged, _EVALUATE_IDS, where)
            ]
    return problems


# --------------------------------------------------------------------------------------------
# Slow checks: network in/out, TorchScript export, plain monai.bundle run
# --------------------------------------------------------------------------------------------


def _input_spec(root: Path) -> tuple[int, tuple[int, ...], str]:
    """(channels, spatial shape, modality) of the network input from the metadata (n = p = 1)."""
    from monai.bundle.scripts import _get_fake_spatial_shape  # the shape verify_net_in_out uses

    meta = _read_json(root / METADATA)
    spec = meta["network_data_format"]["inputs"]["image"]
    shape = tuple(int(s) for s in _get_fake_spatial_shape(spec["spatial_shape"], p=1, n=1, any=1))
    return int(spec["num_channels"]), shape, str(spec.get("modality", ""))


def _check_net_in_out(root: Path, label: str, device: str) -> list[str]:
    from monai.bundle import verify_net_in_out

    try:
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(root / METADATA),
            config_file=str(root / INFERENCE),
            device=device,
            p=1,
            n=1,
            any=1,
            bundle_root=str(root),
        )
    except Exception as err:  # any failure of the network or its spec is the finding itself
        return [f"{label}: {INFERENCE}: verify_net_in_out with the metadata's input spec failed: {_first_line(err)}"]
    return []


def _checkpoint_key(state: Any) -> str:
    """The key under which a nested checkpoint holds the weights (``""`` for a plain state_dict)."""
    if isinstance(state, dict):
        for key in ("model", "network"):
            if isinstance(state.get(key), dict):
                return key
    return ""


def _random_note(seed: int) -> str:
    return f"no {WEIGHTS}: export and run checked with randomly initialised weights (seed {seed})"


def _network(root: Path, seed: int = 0) -> Any:
    """The bundle's ``network_def``, built on the CPU after seeding torch (random weights)."""
    import torch

    torch.manual_seed(seed)
    return _parser(root, [INFERENCE]).get_parsed_content("network_def")


def _checkpoint(root: Path, tmp: Path, notes: list[str], seed: int = 0) -> Path:
    """``models/model.pt``, or a randomly initialised network's weights saved in ``tmp``."""
    import torch

    if (root / WEIGHTS).is_file():
        return root / WEIGHTS
    if _random_note(seed) not in notes:
        notes.append(_random_note(seed))
    checkpoint = tmp / "random_model.pt"
    torch.save(_network(root, seed).state_dict(), checkpoint)
    return checkpoint


def _check_export(
    root: Path, label: str, device: str, notes: list[str], atol: float = 1e-4, seed: int = 0
) -> list[str]:
    import torch
    from monai.bundle import ckpt_export

    channels, shape, _ = _input_spec(root)
    network = _network(root, seed)
    with tempfile.TemporaryDirectory(prefix="medseg-export-") as tmp_name:
        tmp = Path(tmp_name)
        key = ""
        if (root / WEIGHTS).is_file():
            checkpoint, where = root / WEIGHTS, WEIGHTS
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            key = _checkpoint_key(state)
            try:
                network.load_state_dict(state[key] if key else state)
            except RuntimeError as err:
                return [f"{label}: {WEIGHTS}: weights do not fit 'network_def': {_first_line(err)}"]
            del state
        else:
            if _random_note(seed) not in notes:
                notes.append(_random_note(seed))
            checkpoint, where = tmp / "random_model.pt", INFERENCE
            torch.save(network.state_dict(), checkpoint)
        exported = tmp / "model.ts"
        try:
            ckpt_export(
                net_id="network_def",
                filepath=str(exported),
                ckpt_file=str(checkpoint),
                meta_file=str(root / METADATA),
                config_file=str(root / INFERENCE),
                key_in_ckpt=key,
                bundle_root=str(root),
            )
            scripted = torch.jit.load(str(exported), map_location=device)
        except Exception as err:  # a network TorchScript cannot compile is the finding itself
            return [f"{label}: {INFERENCE}: ckpt_export of 'network_def' to TorchScript failed: {_first_line(err)}"]
        generator = torch.Generator().manual_seed(seed)
        sample = torch.rand((1, channels, *shape), generator=generator).to(device)
        network = network.eval().to(device)
        with torch.no_grad():
            eager = network(sample)
            converted = scripted(sample)
        if eager.shape != converted.shape or not torch.allclose(eager, converted, atol=atol):
            diff = (eager - converted).abs().max().item() if eager.shape == converted.shape else float("nan")
            return [
                f"{label}: {where}: the TorchScript export differs from the eager network (output shapes "
                f"{tuple(eager.shape)} / {tuple(converted.shape)}, max abs difference {diff:.3g}, allowed {atol})"
            ]
    return []


def _pixdim(parser: Any) -> list[float] | None:
    """The ``pixdim`` of the first Spacingd in ``preprocessing`` (references resolved), or None."""
    transforms = _transform_list(parser, "preprocessing")
    for index, item in enumerate(transforms or []):
        if _target_name(item) in ("Spacingd", "Spacing") and "pixdim" in item:
            try:
                value = parser.get_parsed_content(f"preprocessing#transforms#{index}#pixdim")
            except Exception:  # an expression that needs more than the config: unknown
                return None
            return [float(v) for v in np.atleast_1d(value)]
    return None


def _tiny_volume(path: Path, channels: int, modality: str, spacing_mm: Sequence[float], seed: int = 0) -> np.ndarray:
    """Write a small NIfTI (LPS, a bright ellipsoid in a dim body) and return its affine.

    Channels go last (i, j, k, C), the NIfTI convention that ``EnsureChannelFirstd`` undoes.
    """
    import nibabel as nib

    from pipelines.io.writers import atomic_path

    shape = (40, 36, 24)
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    body = (grid**2).sum(0) < 0.8
    blob = ((grid - 0.2) ** 2 / 0.1).sum(0) < 1
    if modality.upper() == "CT":
        image = np.where(body, 40.0, -1000.0) + np.where(blob, 120.0, 0.0) + rng.normal(0, 10, shape)
    else:
        image = np.where(body, 400.0, 0.0) + np.where(blob, 500.0, 0.0) + np.abs(rng.normal(0, 20, shape)) * body
    data = np.stack([image * (1 + 0.1 * c) for c in range(channels)], -1) if channels > 1 else image
    spacing = np.asarray(spacing_mm, dtype=float) * 1.3
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [20.0, 15.0, -30.0]
    img = nib.Nifti1Image(data.astype(np.float32 if modality.upper() != "CT" else np.int16), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return affine


def _check_run(root: Path, label: str, device: str, notes: list[str], timeout_s: float) -> list[str]:
    import nibabel as nib

    channels, _, modality = _input_spec(root)
    pixdim = _pixdim(_parser(root, [INFERENCE], meta=False)) or [1.5, 1.5, 2.0]
    if len(pixdim) == 1:
        pixdim = pixdim * 3
    with tempfile.TemporaryDirectory(prefix="medseg-run-") as tmp_name:
        tmp = Path(tmp_name)
        copy = tmp / root.name
        # The copy keeps anything the configs may import from the bundle folder, without weights.
        shutil.copytree(root, copy, ignore=shutil.ignore_patterns("models", "eval", "*.ts", "__pycache__"))
        (copy / "models").mkdir()
        checkpoint = _checkpoint(root, tmp, notes)
        try:
            os.symlink(checkpoint.resolve(), copy / WEIGHTS)
        except OSError:  # no symlinks on this file system
            shutil.copy2(checkpoint, copy / WEIGHTS)
        volume = tmp / "tiny_case.nii.gz"
        affine = _tiny_volume(volume, channels, modality, pixdim[:3])
        output = tmp / "out"
        command = [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            str(copy / INFERENCE),
            "--meta_file",
            str(copy / METADATA),
            "--bundle_root",
            str(copy),
            "--datalist",
            repr([str(volume)]),
            "--output_dir",
            str(output),
            "--device",
            f"$torch.device('{device}')",
        ]
        # The child imports this package for `pipelines.*` targets in the configs, installed or not.
        env = dict(os.environ)
        package_parent = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
        shown = "python -m monai.bundle run --config_file configs/inference.json"
        try:
            done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return [f"{label}: {INFERENCE}: `{shown}` did not finish within {timeout_s:.0f} s on a 40x36x24 volume"]
        if done.returncode != 0:
            tail = " | ".join(line.strip() for line in (done.stderr or done.stdout).strip().splitlines()[-3:])
            return [f"{label}: {INFERENCE}: `{shown}` failed (exit {done.returncode}): {tail}"]
        written = sorted(p for p in output.rglob("*") if p.name.endswith((".nii.gz", ".nii")))
        if not written:
            return [
                f"{label}: {INFERENCE}: `{shown}` wrote nothing to --output_dir "
                "(postprocessing should end with SaveImaged writing to @output_dir)"
            ]
        result = nib.load(written[0])
        expected = nib.load(volume).shape[:3]
        if tuple(result.shape[:3]) != tuple(expected):
            return [
                f"{label}: {INFERENCE}: `{shown}` wrote {written[0].name} with shape {tuple(result.shape)}, the input "
                f"has {tuple(expected)}; the postprocessing must invert the preprocessing (Invertd)"
            ]
        if not np.allclose(result.affine, affine, atol=1e-3):
            return [
                f"{label}: {INFERENCE}: `{shown}` wrote {written[0].name} with an affine different from the input's; "
                "the label map must lie on the input grid"
            ]
    return []


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def run_checks(
    path: str | Path,
    *,
    checks: Iterable[str] = CHECKS,
    device: str = "cpu",
    run_timeout_s: float = 600.0,
) -> CheckResult:
    """Check a bundle folder against the Model Zoo conventions medseg relies on.

    Args:
        path: the bundle folder; messages name it as given.
        checks: which of :data:`CHECKS` to run (in their fixed order). The slow ones (``net_in_out``,
            ``export``, ``run``) are skipped when a quick check found the metadata or the inference
            config unusable.
        device: torch device for the network checks and the ``monai.bundle run`` subprocess.
        run_timeout_s: time limit of the ``monai.bundle run`` subprocess, in seconds.

    Returns:
        A :class:`CheckResult`; its ``problems`` are empty when the bundle conforms.

    Raises:
        FileNotFoundError: ``path`` is not a folder.
        ValueError: an unknown check name.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: bundle folder does not exist")
    wanted = list(checks)
    unknown = [c for c in wanted if c not in CHECKS]
    if unknown:
        raise ValueError(f"checks {unknown}: expected some of {', '.join(CHECKS)}")
    label = str(path)
    result = CheckResult(bundle=root)
    quick: dict[str, Callable[[], list[str]]] = {
        "layout": lambda: _check_layout(root, label),
        "metadata": lambda: _check_metadata(root, label),
        "configs": lambda: _check_configs(root, label),
    }
    slow: dict[str, Callable[[], list[str]]] = {
        "net_in_out": lambda: _check_net_in_out(root, label, device),
        "export": lambda: _check_export(root, label, device, result.notes),
        "run": lambda: _check_run(root, label, device, result.notes, run_timeout_s),
    }
    for name in CHECKS:
        if name not in wanted:
            continue
        if name in slow:
            blocker = _slow_check_blocker(root)
            if blocker:
                result.notes.append(f"{name} check skipped: {blocker}")
                continue
        start = time.perf_counter()
        found = (quick.get(name) or slow[name])()
        result.seconds[name] = time.perf_counter() - start
        result.problems += found
        logger.debug("%s: %s check: %d problem(s) in %.1f s", label, name, len(found), result.seconds[name])
    return result


def _slow_check_blocker(root: Path) -> str:
    """Why the network checks cannot run, or ``""``."""
    for rel in (METADATA, INFERENCE):
        if not (root / rel).is_file():
            return f"no {rel}"
        try:
            content = _read_json(root / rel)
        except ValueError:
            return f"{rel} is not valid JSON"
        if rel == INFERENCE and not (isinstance(content, dict) and "network_def" in content):
            return f"{rel} has no 'network_def'"
    try:
        _input_spec(root)
    except (KeyError, TypeError, ValueError) as err:
        return f"{METADATA} has no usable network_data_format#inputs#image ({_first_line(err)})"
    return ""


def check_bundle(
    path: str | Path,
    *,
    checks: Iterable[str] = CHECKS,
    device: str = "cpu",
    run_timeout_s: float = 600.0,
) -> list[str]:
    """The problems :func:`run_checks` finds in a bundle; an empty list means the bundle conforms.

    Each problem names the bundle (as given), the file and the key, e.g.
    ``"bundles/x: configs/metadata.json: missing key 'numpy_version'"``.
    """
    return run_checks(path, checks=checks, device=device, run_timeout_s=run_timeout_s).problems


def bundle_info(path: str | Path) -> dict[str, Any]:
    """Describe a bundle from its metadata and inference config.

    Returns:
        ``{"path", "name", "version", "task", "modality", "labels" ({id: name}), "num_channels",
        "spatial_shape" (network input patch), "pixdim" (mm, from the preprocessing's Spacingd),
        "roi_size" (sliding window), "network" (the network_def class), "weights" (bool),
        "configs" (names of configs/*.json)}``; values the bundle does not state are None.

    Raises:
        FileNotFoundError: not a bundle folder (see :func:`pipelines.bundles.load_bundle`).
        ValueError: invalid ``metadata.json``.
    """
    from pipelines.bundles.bundle import load_bundle

    bundle = load_bundle(path)
    image = bundle.metadata.get("network_data_format", {}).get("inputs", {}).get("image", {})
    info: dict[str, Any] = {
        "path": str(path),
        "name": bundle.name,
        "version": bundle.version,
        "task": bundle.metadata.get("task"),
        "modality": bundle.modality or None,
        "labels": dict(sorted(bundle.labels.items())),
        "num_channels": image.get("num_channels"),
        "spatial_shape": image.get("spatial_shape"),
        "pixdim": None,
        "roi_size": None,
        "network": None,
        "weights": bundle.weights.is_file(),
        "configs": sorted(p.stem for p in (bundle.root / "configs").glob("*.json")),
    }
    try:
        parser = _parser(bundle.root, [INFERENCE], meta=False)
    except ValueError as err:
        raise ValueError(f"{bundle.root / INFERENCE}: {err}") from err
    info["pixdim"] = _pixdim(parser)
    for id_ in ("inferer#roi_size", "inferer#inferer#roi_size"):
        if id_ in parser:
            with contextlib.suppress(Exception):  # an expression needing more than the config
                info["roi_size"] = [int(v) for v in parser.get_parsed_content(id_)]
            break
    if "network_def" in parser:
        info["network"] = _target_name(parser["network_def"]) or None
    return info


def list_bundles(folder: str | Path | None = None) -> list[dict[str, Any]]:
    """Describe every bundle (a sub-folder with ``configs/inference.json``) of ``folder``.

    Args:
        folder: default :func:`default_bundles_folder`.

    Returns:
        :func:`bundle_info` of each bundle, by folder name; a bundle that cannot be read gives
        ``{"path": ..., "error": "..."}`` instead.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    folder = Path(folder) if folder is not None else default_bundles_folder()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: bundles folder does not exist")
    found = []
    for child in sorted(p for p in folder.iterdir() if (p / INFERENCE).is_file()):
        try:
            found.append(bundle_info(child))
        except (ValueError, FileNotFoundError, KeyError, TypeError) as err:
            found.append({"path": str(child), "error": str(err)})
    return found
