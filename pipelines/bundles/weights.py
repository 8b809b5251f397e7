"""A bundle's trained weights: find ``models/model.pt``, read it once, hash it, load it into a network.

The file's bytes are read once; the sha256 recorded in ``run.json`` is computed from those bytes
and ``torch.load`` reads the same bytes from memory, so the weights that ran are the weights that
were hashed. A weights file is a plain ``state_dict`` (the Model Zoo's format) or an ignite/MONAI
checkpoint holding one under ``"model"`` or ``"network"`` (:data:`CHECKPOINT_KEYS`).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipelines.bundles.bundle import Bundle

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_KEYS",
    "LoadedWeights",
    "MissingWeightsError",
    "checkpoint_key",
    "load_weights",
    "read_weights",
    "require_weights",
]

CHECKPOINT_KEYS: tuple[str, ...] = ("model", "network")
"""Keys under which an ignite/MONAI checkpoint dict holds the network's ``state_dict``, in the order tried."""


class MissingWeightsError(FileNotFoundError):
    """The bundle has no trained weights at ``models/model.pt``."""


@dataclass(frozen=True)
class LoadedWeights:
    """A weights file as read.

    Attributes:
        path: the file.
        sha256: hex sha256 of the bytes that were loaded.
        key: the checkpoint key the ``state_dict`` was under (``""`` for a plain ``state_dict``);
            what :func:`monai.bundle.ckpt_export` calls ``key_in_ckpt``.
    """

    path: Path
    sha256: str
    key: str = ""


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


def checkpoint_key(state: Any) -> str:
    """The key under which a checkpoint dict holds the weights (``""`` for a plain ``state_dict``)."""
    if isinstance(state, dict):
        for key in CHECKPOINT_KEYS:
            if isinstance(state.get(key), dict):
                return key
    return ""


def read_weights(path: Path, device: torch.device | str = "cpu") -> tuple[dict[str, Any], LoadedWeights]:
    """Read a weights file once: its ``state_dict`` and what was read.

    Args:
        path: a ``.pt`` file (plain ``state_dict`` or a checkpoint dict holding one).
        device: where the tensors go (``map_location``).

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
    key = checkpoint_key(state)
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
