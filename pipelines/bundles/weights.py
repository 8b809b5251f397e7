"""A bundle's trained weights: the checkpoint its config names, read once, hashed, loaded into a network.

Which file: the one the bundle's inference config names (after ``--override``), as
``python -m monai.bundle run`` would load it (:func:`resolve_checkpoint`):

1. the value of the ``checkpoint`` id, when the config has one;
2. else the ``load_path`` of its ``CheckpointLoader`` handler (its ``load_dict`` key, e.g.
   ``"model"``, says where the weights are inside the checkpoint);
3. else ``models/model.pt``, and for a TorchScript-only bundle ``models/model.ts``.

A file the config names that does not exist is refused (never another file in its place), with one
exception stated in the log and in run.json: a config naming the default ``models/model.pt`` in a
bundle that ships only ``models/model.ts`` (the TorchScript export of the same network) runs that.

The file's bytes are read once; the sha256 recorded in ``run.json`` is computed from those bytes
and ``torch.load`` (or ``torch.jit.load``) reads the same bytes from memory, so the weights that
ran are the weights that were hashed. A weights file is a plain ``state_dict`` (the Model Zoo's
format), an ignite/MONAI checkpoint holding one under ``"model"`` or ``"network"``
(:data:`CHECKPOINT_KEYS`) or the config's ``load_dict`` key, or a TorchScript module (``.ts``).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipelines.bundles.bundle import Bundle, target_name
from pipelines.bundles.layout import TORCHSCRIPT, WEIGHTS

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_KEYS",
    "Checkpoint",
    "LoadedWeights",
    "MissingWeightsError",
    "checkpoint_key",
    "load_network",
    "load_weights",
    "read_weights",
    "require_weights",
    "resolve_checkpoint",
    "torchscript_precision",
]

CHECKPOINT_KEYS: tuple[str, ...] = ("model", "network")
"""Keys under which an ignite/MONAI checkpoint dict holds the network's ``state_dict``, in the order tried."""


class MissingWeightsError(FileNotFoundError):
    """The bundle has no trained weights (at ``models/model.pt``, or where its config says)."""


@dataclass(frozen=True)
class Checkpoint:
    """The weights file a bundle's config names.

    Attributes:
        path: the file (it exists).
        key: the ``load_dict`` key of the config's ``CheckpointLoader`` (``""`` when none is named).
        named_by: the config id that named the file (``"checkpoint"``, ``"handlers#0#load_path"``),
            ``""`` when the config names none and the Zoo default was taken.
        torchscript: a TorchScript module (``.ts``) rather than a ``state_dict``.
        note: why a file other than the one named runs (the ``.ts`` fallback), else ``""``.
    """

    path: Path
    key: str = ""
    named_by: str = ""
    torchscript: bool = False
    note: str = ""


@dataclass(frozen=True)
class LoadedWeights:
    """A weights file as read.

    Attributes:
        path: the file.
        sha256: hex sha256 of the bytes that were loaded.
        key: the checkpoint key the ``state_dict`` was under (``""`` for a plain ``state_dict``);
            what :func:`monai.bundle.ckpt_export` calls ``key_in_ckpt``.
        format: ``"state_dict"`` or ``"torchscript"``.
        named_by: the config id that named the file (``""``: the Zoo default path).
        note: why a file other than the one named ran, else ``""``.
    """

    path: Path
    sha256: str
    key: str = ""
    format: str = "state_dict"
    named_by: str = ""
    note: str = ""

    def record(self, root: Path | None = None) -> dict[str, str]:
        """What run.json keeps: file (relative to the bundle ``root`` when inside it), sha256, key, format."""
        path = self.path.resolve()
        shown = path.relative_to(root).as_posix() if root is not None and path.is_relative_to(root) else str(path)
        return {
            "file": shown,
            "sha256": self.sha256,
            "key": self.key,
            "format": self.format,
            "named_by": self.named_by,
            "note": self.note,
        }


def require_weights(bundle: Bundle) -> Path:
    """Return the bundle's weights file or stop with an error that says how to get one.

    Raises:
        MissingWeightsError: (a ``FileNotFoundError``) there is no ``models/model.pt``.
    """
    if not bundle.weights.is_file():
        raise MissingWeightsError(
            f"{bundle.weights}: bundle {bundle.name} has no trained weights. Weights go in "
            f"{bundle.root.name}/models/model.pt; train them with "
            f"`medseg train --bundle {bundle.root} --manifest MANIFEST` (see the bundle's docs/README.md)"
        )
    return bundle.weights


def checkpoint_key(state: Any, preferred: str = "") -> str:
    """The key under which a checkpoint dict holds the weights (``""`` for a plain ``state_dict``).

    Args:
        state: what ``torch.load`` returned.
        preferred: the config's ``load_dict`` key, tried first (as MONAI's ``CheckpointLoader`` does).
    """
    if isinstance(state, dict):
        for key in (preferred, *CHECKPOINT_KEYS) if preferred else CHECKPOINT_KEYS:
            if isinstance(state.get(key), dict):
                return key
    return ""


def read_weights(
    path: Path, device: torch.device | str = "cpu", preferred_key: str = ""
) -> tuple[dict[str, Any], LoadedWeights]:
    """Read a weights file once: its ``state_dict`` and what was read.

    Args:
        path: a ``.pt`` file (plain ``state_dict`` or a checkpoint dict holding one).
        device: where the tensors go (``map_location``).
        preferred_key: the checkpoint key the bundle's config names (its ``load_dict`` key).

    Returns:
        ``(state_dict, LoadedWeights(path, sha256, key))``; the sha256 is of the bytes loaded.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable PyTorch checkpoint (``torch.load(weights_only=True)`` refuses it).
    """
    path = Path(path)
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt or foreign file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    key = checkpoint_key(state, preferred_key)
    logger.debug("%s: sha256 %s%s", path, sha256, f", weights under {key!r}" if key else "")
    return (state[key] if key else state), LoadedWeights(path=path, sha256=sha256, key=key)


def load_weights(network: torch.nn.Module, bundle: Bundle, device: torch.device | str = "cpu") -> LoadedWeights:
    """Load ``models/model.pt`` into ``network``, reading the file once.

    Returns:
        The file's path, the sha256 of its bytes and the checkpoint key used.

    Raises:
        MissingWeightsError: the bundle has no weights file.
        ValueError: the file is not a readable checkpoint, or its weights do not fit ``network``.
    """
    path = require_weights(bundle)
    state, loaded = read_weights(path, device)
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{path}: weights do not fit the network of {bundle.name} ({first})") from err
    return loaded


# -- the checkpoint the bundle's config names ------------------------------------------------------

_LOADERS = ("CheckpointLoader",)
_HANDLER_LISTS = ("handlers", "evaluator#val_handlers", "validate#handlers", "val_handlers")


def _loader_ids(config: Any, prefix: str = "") -> Iterator[str]:
    """Ids of every ``CheckpointLoader`` item in a raw config, handler lists first."""
    if isinstance(config, dict):
        if target_name(config) in _LOADERS:
            yield prefix
        items: Any = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return
    for key, value in items:
        yield from _loader_ids(value, f"{prefix}#{key}" if prefix else str(key))


def _named_path(parser: Any, id_: str, root: Path) -> Path:
    value = parser.get_parsed_content(id_)
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError(f"{root}: config id {id_!r} should name a weights file, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def resolve_checkpoint(parser: Any, bundle: Bundle) -> Checkpoint:
    """The weights file the bundle's (parsed, overridden) inference config names; see the module doc.

    Only the id naming the file is evaluated (``checkpoint`` or a ``CheckpointLoader``'s
    ``load_path``); a relative path is taken relative to the bundle folder.

    Raises:
        MissingWeightsError: (a ``FileNotFoundError``) the named file (or, with none named, both
            ``models/model.pt`` and ``models/model.ts``) does not exist; names the config id.
        ValueError: the id's value is not a path.
    """
    root = bundle.root
    named: tuple[Path, str, str] | None = None
    if "checkpoint" in parser:
        named = (_named_path(parser, "checkpoint", root), "checkpoint", "")
    else:
        config = parser.get("", {})
        ids = sorted(_loader_ids(config), key=lambda i: not i.startswith(_HANDLER_LISTS))
        for id_ in ids:
            item = parser.get(id_)
            if "load_path" in item:
                load_dict = item.get("load_dict")
                keys = list(load_dict) if isinstance(load_dict, dict) else []
                key = keys[0] if len(keys) == 1 else next((k for k in keys if k in CHECKPOINT_KEYS), "")
                named = (_named_path(parser, f"{id_}#load_path", root), f"{id_}#load_path", key)
                break
    default_pt, default_ts = root / WEIGHTS, root / TORCHSCRIPT
    if named is None:
        for path in (default_pt, default_ts):
            if path.is_file():
                return Checkpoint(path, torchscript=path.suffix == ".ts")
        require_weights(bundle)  # raises, saying how to get weights
    path, id_, key = named  # type: ignore[misc]
    if path.is_file():
        return Checkpoint(path, key=key, named_by=id_, torchscript=path.suffix.lower() == ".ts")
    is_default = path.resolve() == default_pt.resolve()
    if is_default and default_ts.is_file():
        note = f"configs: {id_} names {WEIGHTS}, which is absent; ran its TorchScript export {TORCHSCRIPT}"
        logger.warning("%s: %s", root, note)
        return Checkpoint(default_ts, named_by=id_, torchscript=True, note=note)
    if is_default:
        require_weights(bundle)  # raises, saying how to get weights
    shown = path.relative_to(root).as_posix() if path.resolve().is_relative_to(root) else str(path)
    raise MissingWeightsError(
        f"{path}: bundle {bundle.name}'s inference config names the weights file {shown} (config id {id_!r}), "
        "which does not exist; put the file there, or name an existing one with --override "
        f"{id_}=PATH (medseg never runs other weights in its place)"
    )


def load_network(
    parser: Any, bundle: Bundle, device: torch.device | str = "cpu", checkpoint: Checkpoint | None = None
) -> tuple[torch.nn.Module, LoadedWeights]:
    """The bundle's network holding the weights its config names, and what was read.

    A state_dict checkpoint is loaded into ``network_def`` (built from the config); a TorchScript
    file (``.ts``) is the network itself, and ``network_def`` is not built.

    Args:
        parser: the bundle's parsed inference config (overrides applied).
        bundle: the bundle.
        device: where the weights go (``map_location``).
        checkpoint: :func:`resolve_checkpoint`'s answer when the caller has it already.

    Raises:
        MissingWeightsError: see :func:`resolve_checkpoint`.
        ValueError: an unreadable file, or weights that do not fit ``network_def``.
    """
    checkpoint = checkpoint or resolve_checkpoint(parser, bundle)
    if checkpoint.torchscript:
        data = checkpoint.path.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            network = torch.jit.load(io.BytesIO(data), map_location=device)
        except Exception as err:  # torch raises several types for a corrupt or foreign file
            raise ValueError(f"{checkpoint.path}: not a readable TorchScript module ({err})") from err
        loaded = LoadedWeights(checkpoint.path, sha256, "", "torchscript", checkpoint.named_by, checkpoint.note)
        return network.eval(), loaded
    network = parser.get_parsed_content("network_def")
    state, loaded = read_weights(checkpoint.path, device, checkpoint.key)
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{checkpoint.path}: weights do not fit the network of {bundle.name} ({first})") from err
    return network, LoadedWeights(loaded.path, loaded.sha256, loaded.key, "state_dict", checkpoint.named_by)


def torchscript_precision(requested: str, resolved: str, path: Path) -> str:
    """The precision a TorchScript network runs in: fp32 (medseg's bf16/fp16 layer policy needs the eager network).

    Args:
        requested: ``--precision`` as given (``auto``, ``fp32``, ``bf16``, ``fp16``).
        resolved: what ``auto`` became on this device.
        path: the ``.ts`` file, for messages.

    Raises:
        ValueError: bf16 or fp16 asked for explicitly.
    """
    if resolved == "fp32":
        return resolved
    if requested != "auto":
        raise ValueError(
            f"{path}: a TorchScript network runs in fp32 only in medseg (its reduced-precision policy keeps the "
            f"input layers in fp32, which needs the eager network); use --precision fp32 or auto, not {requested}"
        )
    logger.info("%s: TorchScript network: fp32 instead of %s", path, resolved)
    return "fp32"
