"""Test-time augmentation: the network run on mirrored (and rotated) copies, probabilities averaged.

``flips`` mirrors the preprocessed image along every combination of its three axes, the 8 passes
nnU-Net's mirroring uses (identity, 3 single axes, 3 pairs, all three); ``full`` adds the same 8
on the image turned by 90 degrees in the plane of its first two axes (16 passes), which needs an
isotropic first two axes (refused otherwise: a turn would change the voxel shape the network sees).
Each pass's class probabilities (softmax over channel 0) are put back in place and averaged; the
result is returned as ``log(mean probability)``, so any postprocessing that expects logits (a
softmax, an argmax) gives the averaged probabilities and their argmax. The agreement between the
passes is measured per label as the mean pairwise Dice of their argmax label maps on the network's
grid, the spread a confidence signal needs.

This module knows nothing of bundles or devices: it wraps any ``predict(image) -> logits`` callable.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "TTA_AXES_KEY",
    "TTA_DEFAULT_KEY",
    "TTA_MODES",
    "TTAResult",
    "augmentations",
    "check_tta",
    "mirror_axes",
    "resolve_tta",
    "tta_predict",
]

TTA_MODES = ("none", "flips", "full")
"""``--tta`` values: no augmentation, the 8 mirrorings, mirrorings x (0, 90 degrees) in-plane turns."""

TTA_DEFAULT_KEY = "medseg_tta_default"
"""The ``metadata.json`` key where a bundle declares its default TTA mode."""

TTA_AXES_KEY = "medseg_tta_axes"
"""The ``metadata.json`` key listing the axes of the network's grid (0, 1, 2) the model may be mirrored
along (those it was trained to be invariant to, as nnU-Net's ``allowed_mirroring_axes``); all three
when absent. A model with left/right classes trained without mirroring declares ``[]``."""

_LOG_FLOOR = 1e-8  # log(0) would give -inf, which linear interpolation of scores turns into NaN
_ISOTROPY_TOLERANCE = 0.01


@dataclass(frozen=True)
class Augmentation:
    """One pass: mirror ``flips`` (image axes, 0-based spatial), then turn ``turns`` x 90 degrees in axes 0-1."""

    flips: tuple[int, ...] = ()
    turns: int = 0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Apply to a batch ``(B, C, H, W, D)``."""
        out = torch.flip(image, [2 + a for a in self.flips]) if self.flips else image
        return torch.rot90(out, self.turns, (2, 3)) if self.turns else out

    def inverse(self, scores: torch.Tensor) -> torch.Tensor:
        """Undo on network output ``(B, K, H', W', D)``: turn back, then mirror back."""
        out = torch.rot90(scores, -self.turns, (2, 3)) if self.turns else scores
        return torch.flip(out, [2 + a for a in self.flips]) if self.flips else out

    def describe(self) -> str:
        parts = [f"flip {''.join('ijk'[a] for a in self.flips)}" if self.flips else "identity"]
        return parts[0] + (f" + rot90 x{self.turns}" if self.turns else "")


@dataclass
class TTAResult:
    """What :func:`tta_predict` returns.

    Attributes:
        scores: ``(B, K, H, W, D)`` float32: ``log`` of the mean class probability over the passes
            (for ``none``: the network's own logits, untouched).
        agreement: label id -> mean pairwise Dice between the passes' argmax maps (labels present in
            at least one pass; label 0 left out); empty for ``none``.
        passes: the augmentations run, in order, described in words.
    """

    scores: torch.Tensor
    agreement: dict[int, float] = field(default_factory=dict)
    passes: list[str] = field(default_factory=list)


def check_tta(mode: str, what: str = "tta") -> str:
    """``mode`` if it is one of :data:`TTA_MODES`, else ValueError naming ``what``."""
    if mode not in TTA_MODES:
        raise ValueError(f"{what} {mode!r}: expected one of {', '.join(TTA_MODES)}")
    return mode


def resolve_tta(mode: str | None, metadata: Mapping[str, Any], where: str = "metadata.json") -> str:
    """The TTA mode of a run: ``mode`` when given, else the bundle's ``medseg_tta_default``, else ``none``.

    Raises:
        ValueError: an unknown mode, or a mirroring mode for a bundle whose ``medseg_tta_axes`` is empty.
    """
    if mode is None:
        mode = check_tta(str(metadata.get(TTA_DEFAULT_KEY, "none")), f"{where}: {TTA_DEFAULT_KEY}")
    check_tta(mode)
    if mode != "none":
        augmentations(mode, None, mirror_axes(metadata, where))  # refuse a mode the bundle cannot take, now
    return mode


def mirror_axes(metadata: Mapping[str, Any], where: str = "metadata.json") -> tuple[int, ...]:
    """The bundle's :data:`TTA_AXES_KEY` (default ``(0, 1, 2)``), checked."""
    axes = metadata.get(TTA_AXES_KEY, [0, 1, 2])
    if not isinstance(axes, list) or not all(a in (0, 1, 2) and not isinstance(a, bool) for a in axes):
        raise ValueError(f"{where}: {TTA_AXES_KEY} must be a list of axes 0, 1, 2, got {axes!r}")
    return tuple(sorted(set(axes)))


def augmentations(
    mode: str, spacing_mm: Sequence[float] | None = None, axes: Sequence[int] = (0, 1, 2)
) -> list[Augmentation]:
    """The passes of a mode; the identity comes first.

    Args:
        mode: one of :data:`TTA_MODES`.
        spacing_mm: voxel size of the image the network sees; ``full`` needs its first two equal.
        axes: the axes that may be mirrored (see :data:`TTA_AXES_KEY`).

    Raises:
        ValueError: unknown mode, ``full`` on an image whose first two axes differ in spacing, or a
            TTA mode for a bundle that allows no mirroring.
    """
    check_tta(mode)
    if mode == "none":
        return [Augmentation()]
    if not axes:
        raise ValueError(
            f"tta {mode!r}: the bundle allows no mirroring ({TTA_AXES_KEY}: []): its network was not trained on "
            "mirrored images, and mirroring would swap left and right organs. Use --tta none"
        )
    mirrors = [Augmentation(c) for n in range(len(axes) + 1) for c in itertools.combinations(sorted(axes), n)]
    if mode == "flips":
        return mirrors
    if spacing_mm is not None and not math.isclose(
        float(spacing_mm[0]), float(spacing_mm[1]), rel_tol=_ISOTROPY_TOLERANCE
    ):
        raise ValueError(
            f"tta 'full': the network's grid has spacing {[round(float(s), 4) for s in spacing_mm]} mm; the 90 degree "
            "turns need equal spacing along its first two axes. Use --tta flips"
        )
    return mirrors + [Augmentation(m.flips, 1) for m in mirrors]


def tta_predict(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    mode: str,
    spacing_mm: Sequence[float] | None = None,
    axes: Sequence[int] = (0, 1, 2),
) -> TTAResult:
    """Run ``predict`` once per augmentation of ``image`` and average the class probabilities.

    Args:
        predict: ``(B, C, H, W, D) -> (B, K, H, W, D)`` logits (e.g. a :class:`~pipelines.inference.Predictor`).
        image: the preprocessed batch ``(B, C, H, W, D)``.
        mode: one of :data:`TTA_MODES`.
        spacing_mm: the image's voxel size (checked for ``full``).
        axes: the axes that may be mirrored.

    Returns:
        A :class:`TTAResult`. Memory: one running sum of probabilities (the size of the logits) and
        one uint8 label map per pass, all on the network's grid.
    """
    passes = augmentations(mode, spacing_mm, axes)
    if mode == "none":
        return TTAResult(predict(image))
    total: torch.Tensor | None = None
    labels: list[torch.Tensor] = []
    for augmentation in passes:
        logits = augmentation.inverse(predict(augmentation.forward(image)))
        probabilities = torch.softmax(logits.float(), dim=1)
        labels.append(probabilities.argmax(dim=1).to(torch.uint8).cpu())
        total = probabilities if total is None else total.add_(probabilities)
        del logits
    assert total is not None  # passes is never empty
    mean = total.div_(len(passes))
    scores = mean.clamp_(min=_LOG_FLOOR).log_()
    agreement = pairwise_dice(labels)
    logger.info("TTA %s: %d passes; agreement %s", mode, len(passes), {k: round(v, 3) for k, v in agreement.items()})
    return TTAResult(scores, agreement, [a.describe() for a in passes])


def pairwise_dice(labels: Sequence[torch.Tensor]) -> dict[int, float]:
    """Mean Dice over all pairs of label maps, per label id > 0 present in any map.

    A pair where the label is absent from both maps is left out of that label's mean.
    """
    found = sorted({int(v) for m in labels for v in torch.unique(m).tolist()} - {0})
    agreement: dict[int, float] = {}
    for label in found:
        masks = [m == label for m in labels]
        sizes = [int(m.sum()) for m in masks]
        values = []
        for a, b in itertools.combinations(range(len(masks)), 2):
            if sizes[a] + sizes[b] == 0:
                continue
            overlap = int((masks[a] & masks[b]).sum())
            values.append(2.0 * overlap / (sizes[a] + sizes[b]))
        if values:
            agreement[label] = float(sum(values) / len(values))
    return agreement
