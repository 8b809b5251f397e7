"""Per-voxel and per-structure confidence, and what the clean-up removed: read while postprocessing runs.

Two per-voxel maps are kept on the input's grid, each one byte a voxel: the maximum class
probability and the predictive entropy (both quantised to 255 steps). They are computed on the
network's grid, slab by slab from the class scores, and carried to the input grid with the
nearest-neighbour lookup of :class:`~pipelines.transforms.grid.ResampleLabelsToGrid`, so no
full-resolution float map is ever held. (Computing them from probabilities interpolated to the input
grid would cost a float interpolation at every voxel, which the label map itself no longer needs:
:class:`~pipelines.transforms.grid.ResampleScoresToGrid` interpolates near boundaries only.)

The postprocessing is run one transform at a time (:func:`traced_postprocessing`) to keep the
label map just before the first connected-component clean-up and just after the last one: the
share of a structure's voxels removed as islands is the fragmentation QC flag's measure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, apply_transform
from monai.utils import MetaKeys
from scipy import ndimage

from pipelines import keys
from pipelines.transforms.grid import ResampleLabelsToGrid

logger = logging.getLogger(__name__)

__all__ = [
    "CLEANUP_TRANSFORMS",
    "ENTROPY_THRESHOLD_NATS",
    "ConfidenceMaps",
    "PostprocessSignals",
    "removed_fractions",
    "structure_confidence",
    "traced_postprocessing",
]

ENTROPY_THRESHOLD_NATS = 0.5
"""A voxel is uncertain when its predictive entropy exceeds 0.5 nats (natural log): e.g. two classes at
80 % / 20 % give 0.50 nats, 90 % / 10 % give 0.33 nats."""

CLEANUP_TRANSFORMS = (
    "RemoveSmallIslands",
    "RemoveSmallIslandsd",
    "KeepLargestComponent",
    "KeepLargestComponentd",
    "KeepLargestConnectedComponent",
    "KeepLargestConnectedComponentd",
    "RemoveSmallObjects",
    "RemoveSmallObjectsd",
)
"""Class names of the connected-component clean-ups whose removals count as fragmentation."""

_STEPS = 255
_SLAB_VOXELS = 2_000_000


@dataclass
class ConfidenceMaps:
    """Per-voxel maps on the input's grid, uint8 ``(i, j, k)`` each.

    Attributes:
        max_probability: the largest class probability, ``round(p * 255)``.
        entropy: predictive entropy in nats, ``round(H / log(C) * 255)`` (0 = certain, 255 = uniform).
        classes: the number of classes ``C`` (sets the entropy scale).
    """

    max_probability: np.ndarray
    entropy: np.ndarray
    classes: int

    def entropy_step(self, nats: float) -> float:
        """A threshold in nats on the quantised entropy scale."""
        return nats / math.log(max(self.classes, 2)) * _STEPS


@dataclass
class PostprocessSignals:
    """What one case's postprocessing left besides its label map.

    Attributes:
        confidence: the per-voxel maps, or None when the scores could not be read.
        before_cleanup / after_cleanup: the label map just before the first and just after the last
            clean-up transform (same grid), or None when the postprocessing has none.
        tta_agreement: label id -> mean pairwise Dice between TTA passes (empty without TTA).
        tta_passes: the TTA passes in words.
    """

    confidence: ConfidenceMaps | None = None
    before_cleanup: np.ndarray | None = None
    after_cleanup: np.ndarray | None = None
    tta_agreement: dict[int, float] = field(default_factory=dict)
    tta_passes: list[str] = field(default_factory=list)


def quantize(probabilities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C, ...)`` class probabilities -> (max probability, normalised entropy) as uint8 tensors."""
    classes = probabilities.shape[0]
    p = probabilities.float().clamp(0.0, 1.0)
    best = p.amax(dim=0)
    entropy = -(torch.special.xlogy(p, p)).sum(dim=0) / math.log(max(classes, 2))
    as_steps = (best * _STEPS).round_().to(torch.uint8), (entropy.clamp_(0.0, 1.0) * _STEPS).round_().to(torch.uint8)
    return as_steps


def _are_probabilities(scores: torch.Tensor) -> bool:
    """Whether class scores ``(C, ...)`` already are probabilities (in 0..1, summing to 1 over classes)."""
    low, high = torch.aminmax(scores)
    if not (bool(low >= 0) and bool(high <= 1)):
        return False  # logits: decided without summing
    sums = scores.sum(dim=0)
    return bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-3))


def _network_grid_maps(scores: torch.Tensor, image: Any) -> ConfidenceMaps | None:
    """Maps computed on the network's grid, slab by slab, then carried to the input grid (nearest)."""
    meta = getattr(image, "meta", None)
    if not isinstance(image, MetaTensor) or not meta or MetaKeys.ORIGINAL_AFFINE not in meta:
        return None
    values = scores.as_tensor() if isinstance(scores, MetaTensor) else scores
    values = values.detach().float().cpu()
    classes, shape = int(values.shape[0]), tuple(values.shape[1:])
    best = np.empty(shape, np.uint8)
    entropy = np.empty(shape, np.uint8)
    rows = max(1, _SLAB_VOXELS // max(1, shape[1] * shape[2]))
    with torch.inference_mode():
        probabilities = _are_probabilities(values)
        for start in range(0, shape[0], rows):
            slab = values[:, start : start + rows]
            b, h = quantize(slab if probabilities else torch.softmax(slab, dim=0))
            best[start : start + rows], entropy[start : start + rows] = b.numpy(), h.numpy()
    target_affine = np.asarray(torch.as_tensor(meta[MetaKeys.ORIGINAL_AFFINE]).cpu(), float)
    target_shape = [int(s) for s in np.asarray(torch.as_tensor(meta[MetaKeys.SPATIAL_SHAPE]).cpu()).ravel()[-3:]]
    source_affine = np.asarray(image.affine.cpu(), float)
    resample = ResampleLabelsToGrid(fill_value=0)
    maps = [np.asarray(resample(m[None], target_affine, target_shape, source_affine))[0] for m in (best, entropy)]
    return ConfidenceMaps(maps[0], maps[1], classes)


def _label_array(value: Any) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if np.issubdtype(array.dtype, np.floating):
        array = np.rint(array)
    if array.dtype in (np.uint8, np.uint16, np.int32):
        return array.copy()  # a snapshot in the label map's own dtype: later transforms may work in place
    return array.astype(np.int32)


def traced_postprocessing(
    compose: Compose, data: Mapping[Hashable, Any], key: str = keys.PRED, tta: Any = None
) -> tuple[dict[Hashable, Any], PostprocessSignals]:
    """Run ``compose`` one transform at a time and collect the :class:`PostprocessSignals`.

    Equivalent to ``compose(data)`` for the output (same transforms, same order, same item mapping).

    Args:
        compose: the bundle's postprocessing (writers already left out).
        data: the case dictionary with ``key`` holding class scores ``(C, H, W, D)`` on the network's grid.
        key: the key of the scores.
        tta: the :class:`~pipelines.tta.TTAResult` of the scores (its ``agreement`` and ``passes``), if any.

    Returns:
        ``(output dictionary, signals)``.
    """
    signals = PostprocessSignals()
    if tta is not None:
        signals.tta_agreement, signals.tta_passes = dict(tta.agreement), list(tta.passes)
    scores = data.get(key)
    cleanups = [i for i, t in enumerate(compose.transforms) if type(t).__name__ in CLEANUP_TRANSFORMS]
    out: Any = dict(data)
    for index, transform in enumerate(compose.transforms):
        if cleanups and index == cleanups[0] and isinstance(out, Mapping) and key in out:
            signals.before_cleanup = _label_array(out[key])
        out = apply_transform(transform, out, compose.map_items, compose.unpack_items)
        if cleanups and index == cleanups[-1] and isinstance(out, Mapping) and key in out:
            signals.after_cleanup = _label_array(out[key])
    if isinstance(scores, torch.Tensor) and scores.is_floating_point():
        signals.confidence = _network_grid_maps(scores, data.get(keys.IMAGE))
    if signals.confidence is None:
        logger.warning("no class scores to read confidence from; confidence is not reported")
    return out, signals


def structure_confidence(
    labels: np.ndarray, maps: ConfidenceMaps, entropy_threshold_nats: float = ENTROPY_THRESHOLD_NATS
) -> dict[int, dict[str, float]]:
    """Per present label: ``confidence`` (mean max class probability inside it, 0..1) and
    ``high_entropy_fraction`` (share of its voxels with entropy above the threshold).

    Args:
        labels: final label map ``(i, j, k)`` on the same grid as ``maps``.
        maps: the per-voxel maps.
        entropy_threshold_nats: the threshold (nats).

    Raises:
        ValueError: the maps and the label map differ in shape.
    """
    if maps.max_probability.shape != labels.shape:
        raise ValueError(f"confidence maps {maps.max_probability.shape} and labels {labels.shape} differ in shape")
    threshold = maps.entropy_step(entropy_threshold_nats)
    found: dict[int, dict[str, float]] = {}
    for index, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        mask = labels[box] == index + 1
        count = int(mask.sum())
        if not count:
            continue
        found[index + 1] = {
            "confidence": float(maps.max_probability[box][mask].mean(dtype=np.float64) / _STEPS),
            "high_entropy_fraction": float(np.count_nonzero(maps.entropy[box][mask] > threshold) / count),
        }
    return found


def removed_fractions(before: np.ndarray, after: np.ndarray) -> dict[int, float]:
    """Per label present before the clean-up: the share of its voxels the clean-up took away (0..1)."""
    if before.shape != after.shape:
        raise ValueError(f"label maps before {before.shape} and after {after.shape} the clean-up differ in shape")
    before = np.maximum(before, 0) if np.issubdtype(before.dtype, np.signedinteger) else before
    # Counts per label in one pass each (a clean-up only relabels voxels, so a voxel whose label changed
    # lost its old label); no per-structure boxes or masks over the whole map.
    flat = np.ascontiguousarray(before).reshape(-1)
    if flat.dtype not in (np.uint8, np.int16, np.int32, np.int64):
        flat = flat.astype(np.int64)
    total = torch.bincount(torch.from_numpy(flat)).numpy()  # numpy's bincount first widens every voxel to int64
    changed = before != after
    lost = np.bincount(before[changed], minlength=total.size)
    return {label: float(lost[label] / total[label]) for label in range(1, total.size) if total[label]}
