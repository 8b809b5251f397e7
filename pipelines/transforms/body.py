"""Intensity normalisation over the body (:func:`pipelines.foreground.body_mask`).

:class:`NormalizeOverBody` / :class:`NormalizeOverBodyd` bring each channel to zero mean and unit
variance over the body's voxels. MONAI's ``NormalizeIntensity(nonzero=True)`` takes the statistics
over every non-zero voxel, and in MRI the noise of the air is non-zero: the levels a tissue lands on
then move with how much air the field of view holds, which differs between scanners, protocols and
phantoms. MONAI has no masked normalisation, so the statistics are ours and the arithmetic is MONAI's
(``NormalizeIntensity`` with a per-channel ``subtrahend`` and ``divisor``).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, NormalizeIntensity, Transform
from monai.utils import TransformBackends

from pipelines.foreground import SAMPLE_VOXELS, body_mask, sample_step

__all__ = ["NormalizeOverBody", "NormalizeOverBodyd", "body_statistics"]

logger = logging.getLogger(__name__)


def body_statistics(channel: np.ndarray, max_voxels: int = SAMPLE_VOXELS) -> tuple[float, float] | None:
    """Mean and standard deviation of ``channel`` ``(i, j, k)`` over its body, found on the grid taken every
    ``step`` voxels (about ``max_voxels`` of them: the statistics of a body need no finer); None without a body."""
    step = sample_step(channel.size, max_voxels)
    grid = np.asarray(channel[::step, ::step, ::step], dtype=np.float32)
    body = body_mask(grid)
    if body is None:
        return None
    values = grid[body].astype(np.float64)
    values = values[np.isfinite(values)]  # a NaN inside the body (the holes are filled) counts for nothing
    return (float(values.mean()), float(values.std())) if values.size else None


class NormalizeOverBody(Transform):
    """Each channel of a ``(C, i, j, k)`` image to zero mean and unit variance over its body (:func:`body_mask`).

    A channel without a body told apart from its background (a constant image, or a body filling the whole
    field of view) is normalised with the mean and deviation of its non-zero voxels instead (the statistics
    of MONAI's ``NormalizeIntensity(nonzero=True)``), with a warning. The output is float32, of the input's
    type (tensor or array).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]  # noqa: RUF012 (a list, as in MONAI)

    def __init__(self, max_voxels: int = SAMPLE_VOXELS) -> None:
        self.max_voxels = max_voxels

    def __call__(self, img: Any) -> Any:
        array = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        if array.ndim != 4:
            raise ValueError(f"NormalizeOverBody expects a (C, i, j, k) image, got shape {tuple(array.shape)}")
        means, stds = [], []
        for index in range(array.shape[0]):
            stats = body_statistics(array[index], self.max_voxels)
            if stats is None:
                logger.warning(
                    "channel %d: no body told apart from its background; normalised over the non-zero voxels", index
                )
                nonzero = array[index][(array[index] != 0) & np.isfinite(array[index])].astype(np.float64)
                stats = (float(nonzero.mean()), float(nonzero.std())) if nonzero.size else (0.0, 1.0)
            means.append(stats[0])
            stds.append(stats[1] if stats[1] > 0 else 1.0)
        return NormalizeIntensity(subtrahend=means, divisor=stds, channel_wise=True)(img)


class NormalizeOverBodyd(MapTransform):
    """Dictionary wrapper of :class:`NormalizeOverBody`."""

    backend = NormalizeOverBody.backend

    def __init__(self, keys: KeysCollection, max_voxels: int = SAMPLE_VOXELS, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalize = NormalizeOverBody(max_voxels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalize(d[key])
        return d
