"""Connected-component clean-up of integer label maps: drop small islands, keep the largest part.

Both transforms work label by label inside each label's bounding box (``scipy.ndimage.find_objects``
in one pass over the volume), so a 512x512x200 map costs one pass plus work proportional to the
size of the structures, not one full-volume labelling per label. Components of a label all lie in
its bounding box, so this gives the same result as labelling the whole volume.

Every label is analysed on the input map, so the order of the labels never changes the result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends
from scipy import ndimage

from pipelines.transforms.labels import (
    LabelKey,
    apply_per_key,
    as_label_volume,
    check_fill_value,
    label_boxes,
    label_name_table,
    like_input,
    resolve_label,
    resolve_labels,
    structure_for,
    voxel_spacing_mm,
    voxel_volume_mm3,
)

logger = logging.getLogger(__name__)

__all__ = [
    "KeepLargestComponent",
    "KeepLargestComponentd",
    "RemoveSmallIslands",
    "RemoveSmallIslandsd",
]


def _component_sizes(mask: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of a boolean mask: the component index map and voxels per index.

    Index 0 (not in the mask) gets a size of 0.
    """
    components, count = ndimage.label(mask, structure=structure)
    # Count only the mask's voxels: a bincount over the whole box first widens every voxel's index
    # to int64, which costs more than the labelling on a large, sparsely filled box.
    sizes = np.bincount(components[mask], minlength=count + 1)
    return components, sizes


def _check_min_size(value: Any, what: str, unit: str = "a size in mm³") -> float:
    """``value`` as a finite ``unit``, at least 0, or ValueError naming ``what``."""
    if isinstance(value, bool):
        number = math.nan
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{what}: expected {unit}, a finite number of 0 or more, got {value!r}")
    return number


class RemoveSmallIslands(Transform):
    """Remove, label by label, connected components smaller than a volume in mm³.

    A component of label ``l`` is removed when its volume (voxels times voxel volume) is strictly
    below the label's threshold: ``min_size_mm3_per_label[l]`` if given, else ``min_size_mm3``.
    Removed voxels become ``fill_value``. The voxel volume comes from ``spacing_mm`` when given,
    else from the affine of a ``MetaTensor`` input (lengths of the columns of ``affine[:3, :3]``),
    so run this before the prediction is resampled back if islands should be measured on the
    network's grid, or after, on the original grid: either way the sizes are in mm³.

    Example (bundle JSON)::

        {"_target_": "pipelines.transforms.RemoveSmallIslandsd", "keys": "pred",
         "min_size_mm3": 100, "min_size_mm3_per_label": {"14": 10}, "connectivity": 26}

    Args:
        min_size_mm3: threshold in mm³ for labels without their own; 0 keeps everything.
        min_size_mm3_per_label: ``{label: mm³}`` overrides; labels as ids, ids as text (JSON keys)
            or names from ``labels``.
        connectivity: 6, 18 or 26: voxels sharing a face; a face or an edge; a face, edge or corner
            belong to the same component.
        fill_value: label id given to removed voxels (default 0, background).
        spacing_mm: voxel size ``(si, sj, sk)`` in mm; wins over the affine of a ``MetaTensor``.
        labels: optional ``{id: name}`` or ``{name: id}`` so labels can be given by name.

    Raises:
        ValueError: bad threshold, connectivity, fill value, spacing or label name.
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]  # noqa: RUF012 (a list, as in MONAI)

    def __init__(
        self,
        min_size_mm3: float = 0.0,
        min_size_mm3_per_label: Mapping[LabelKey, float] | None = None,
        connectivity: int = 26,
        fill_value: int = 0,
        spacing_mm: Sequence[float] | None = None,
        labels: Mapping[Any, Any] | None = None,
    ) -> None:
        who = type(self).__name__
        self.min_size_mm3 = _check_min_size(min_size_mm3, f"{who}: min_size_mm3")
        names = label_name_table(labels, who)
        self.min_size_mm3_per_label: dict[int, float] = {
            resolve_label(key, names, f"{who}: min_size_mm3_per_label"): _check_min_size(
                value, f"{who}: min_size_mm3_per_label[{key!r}]"
            )
            for key, value in (min_size_mm3_per_label or {}).items()
        }
        self.connectivity = connectivity
        self.structure = structure_for(connectivity, who)
        check_fill_value(fill_value, np.dtype(np.int64), who)
        self.fill_value = int(fill_value)
        self.spacing_mm = spacing_mm

    def __call__(self, img: NdarrayOrTensor, spacing_mm: Sequence[float] | None = None) -> NdarrayOrTensor:
        """Remove small islands.

        Args:
            img: integer label map, ``(1, H, W, D)`` or ``(H, W, D)``, numpy or torch / MetaTensor.
            spacing_mm: voxel size in mm for this call; wins over the constructor's and the affine.

        Returns:
            A new label map of the same type, dtype, shape and meta as ``img``.

        Raises:
            TypeError: ``img`` is not an integer label map (float input: argmax and cast first).
            ValueError: bad shape, no way to tell the voxel size, or fill value outside the dtype.
        """
        who = type(self).__name__
        volume = as_label_volume(img, who)
        check_fill_value(self.fill_value, volume.dtype, who)
        spacing = spacing_mm if spacing_mm is not None else self.spacing_mm
        voxel_mm3 = voxel_volume_mm3(img, spacing, who)
        out = volume.copy()
        for label, box in label_boxes(volume).items():
            min_mm3 = self.min_size_mm3_per_label.get(label, self.min_size_mm3)
            if min_mm3 <= 0:
                continue
            mask = volume[box] == label
            components, sizes = _component_sizes(mask, self.structure)
            small = sizes * voxel_mm3 < min_mm3
            small[0] = False  # index 0 is everything that is not this label
            if not small.any():
                continue
            out[box][small[components]] = self.fill_value
            logger.debug(
                "%s: label %d: removed %d of %d components, %d voxels (< %.4g mm³)",
                who,
                label,
                int(small.sum()),
                sizes.size - 1,
                int(sizes[small].sum()),
                min_mm3,
            )
        return like_input(out, img)


class KeepLargestComponent(Transform):
    """Keep only the largest connected component of each listed label.

    Meant for organs that are one piece (liver, spleen), not for labels that may have many parts
    (lesions, vessels), which is why the labels must be listed. Other labels are left untouched;
    voxels of the smaller components become ``fill_value``. Between components of equal size the
    first in scan order (i, then j, then k of its first voxel) is kept.

    With ``max_gap_mm``, the components that come within that distance of the largest one are kept
    too: a tube the prediction broke into pieces (the esophagus) stays whole, while an island far from
    it goes. Distances are Euclidean in mm, from voxel centre to voxel centre.

    MONAI's ``KeepLargestConnectedComponent`` does the per-label analysis too, but it needs
    scikit-image (not a dependency of ours), labels each label over the whole volume rather than
    its bounding box, always sets removed voxels to 0 and returns a tensor for a numpy input; this
    class keeps our conventions (numpy in, numpy out; connectivity as 6/18/26) with scipy only.

    Args:
        applied_labels: the label(s) to reduce to their largest component: ids, ids as text or
            names from ``labels``.
        connectivity: 6, 18 or 26 (see :class:`RemoveSmallIslands`).
        fill_value: label id for removed voxels (default 0, background).
        labels: optional ``{id: name}`` or ``{name: id}`` so labels can be given by name.
        max_gap_mm: keep, besides the largest component, those within this distance of it (mm);
            None (default) keeps the largest alone.
        spacing_mm: voxel size ``(si, sj, sk)`` in mm for ``max_gap_mm`` on a plain array; a
            ``MetaTensor``'s affine gives it otherwise.

    Raises:
        ValueError: bad connectivity, fill value, label, gap or spacing.
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]  # noqa: RUF012 (a list, as in MONAI)

    def __init__(
        self,
        applied_labels: LabelKey | Sequence[LabelKey],
        connectivity: int = 26,
        fill_value: int = 0,
        labels: Mapping[Any, Any] | None = None,
        max_gap_mm: float | None = None,
        spacing_mm: Sequence[float] | None = None,
    ) -> None:
        who = type(self).__name__
        self.applied_labels = resolve_labels(applied_labels, label_name_table(labels, who), f"{who}: applied_labels")
        self.connectivity = connectivity
        self.structure = structure_for(connectivity, who)
        check_fill_value(fill_value, np.dtype(np.int64), who)
        self.fill_value = int(fill_value)
        self.max_gap_mm = (
            None if max_gap_mm is None else _check_min_size(max_gap_mm, f"{who}: max_gap_mm", "a distance in mm")
        )
        self.spacing_mm = spacing_mm

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Keep the largest component of each listed label.

        Args:
            img: integer label map, ``(1, H, W, D)`` or ``(H, W, D)``, numpy or torch / MetaTensor.

        Returns:
            A new label map of the same type, dtype, shape and meta as ``img``.

        Raises:
            TypeError: ``img`` is not an integer label map (float input: argmax and cast first).
            ValueError: bad shape, or fill value outside the dtype.
        """
        who = type(self).__name__
        volume = as_label_volume(img, who)
        check_fill_value(self.fill_value, volume.dtype, who)
        spacing = None if self.max_gap_mm is None else voxel_spacing_mm(img, self.spacing_mm, who)
        out = volume.copy()
        boxes = label_boxes(volume, max_label=max(self.applied_labels, default=0))
        for label in self.applied_labels:
            box = boxes.get(label)
            if box is None:
                continue
            mask = volume[box] == label
            components, sizes = _component_sizes(mask, self.structure)
            if sizes.size <= 2:  # background and a single component
                continue
            sizes[0] = 0
            largest = int(np.argmax(sizes))
            drop = np.ones(sizes.size, dtype=bool)
            drop[0] = False
            drop[largest] = False
            if spacing is not None:
                # every voxel of the largest component lies in the box, so distances inside it are exact
                distance = ndimage.distance_transform_edt(components != largest, sampling=spacing)
                nearest = ndimage.minimum(distance, components, index=np.arange(1, sizes.size))
                drop[1:] &= np.asarray(nearest) > self.max_gap_mm
            out[box][drop[components]] = self.fill_value
            logger.debug(
                "%s: label %d: kept %d of %d components (%d voxels), removed %d voxels",
                who,
                label,
                int((~drop[1:]).sum()),
                sizes.size - 1,
                int(sizes[~drop].sum()),
                int(sizes[drop].sum()),
            )
        return like_input(out, img)


class RemoveSmallIslandsd(MapTransform):
    """Dictionary wrapper of :class:`RemoveSmallIslands` for the items under ``keys``.

    Args:
        keys: keys of the label maps to clean (e.g. ``"pred"``).
        min_size_mm3: see :class:`RemoveSmallIslands`.
        min_size_mm3_per_label: see :class:`RemoveSmallIslands`.
        connectivity: see :class:`RemoveSmallIslands`.
        fill_value: see :class:`RemoveSmallIslands`.
        spacing_mm: see :class:`RemoveSmallIslands`; usually left out, as items are MetaTensors.
        labels: see :class:`RemoveSmallIslands`.
        allow_missing_keys: skip keys that are not in the data instead of raising KeyError.
    """

    backend = RemoveSmallIslands.backend

    def __init__(
        self,
        keys: KeysCollection,
        min_size_mm3: float = 0.0,
        min_size_mm3_per_label: Mapping[LabelKey, float] | None = None,
        connectivity: int = 26,
        fill_value: int = 0,
        spacing_mm: Sequence[float] | None = None,
        labels: Mapping[Any, Any] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = RemoveSmallIslands(
            min_size_mm3=min_size_mm3,
            min_size_mm3_per_label=min_size_mm3_per_label,
            connectivity=connectivity,
            fill_value=fill_value,
            spacing_mm=spacing_mm,
            labels=labels,
        )

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Apply the array transform to each key; errors name the key."""
        return apply_per_key(self, data)


class KeepLargestComponentd(MapTransform):
    """Dictionary wrapper of :class:`KeepLargestComponent` for the items under ``keys``.

    Args:
        keys: keys of the label maps to clean (e.g. ``"pred"``).
        applied_labels: see :class:`KeepLargestComponent`.
        connectivity: see :class:`KeepLargestComponent`.
        fill_value: see :class:`KeepLargestComponent`.
        labels: see :class:`KeepLargestComponent`.
        max_gap_mm: see :class:`KeepLargestComponent`.
        spacing_mm: see :class:`KeepLargestComponent`.
        allow_missing_keys: skip keys that are not in the data instead of raising KeyError.
    """

    backend = KeepLargestComponent.backend

    def __init__(
        self,
        keys: KeysCollection,
        applied_labels: LabelKey | Sequence[LabelKey],
        connectivity: int = 26,
        fill_value: int = 0,
        labels: Mapping[Any, Any] | None = None,
        max_gap_mm: float | None = None,
        spacing_mm: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = KeepLargestComponent(
            applied_labels=applied_labels,
            connectivity=connectivity,
            fill_value=fill_value,
            labels=labels,
            max_gap_mm=max_gap_mm,
            spacing_mm=spacing_mm,
        )

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Apply the array transform to each key; errors name the key."""
        return apply_per_key(self, data)
