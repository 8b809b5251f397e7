"""Helpers shared by the label-map transforms: input checks, label ids and names, voxel size.

The transforms in this package work on integer label maps: one channel, values are label ids,
``0`` is background. They accept a channel-first ``(1, H, W, D)`` or a plain ``(H, W, D)`` array,
as numpy or torch (``MetaTensor`` included), and give back the same type, dtype, shape and meta.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type
from scipy import ndimage

from pipelines.geometry import spacing_from_affine

logger = logging.getLogger(__name__)

__all__ = [
    "CONNECTIVITIES",
    "apply_per_key",
    "as_label_volume",
    "check_fill_value",
    "label_boxes",
    "label_name_table",
    "like_input",
    "resolve_label",
    "resolve_labels",
    "spacing_from_affine",
    "structure_for",
    "voxel_spacing_mm",
    "voxel_volume_mm3",
]

CONNECTIVITIES: dict[int, int] = {6: 1, 18: 2, 26: 3}
"""Neighbourhood size (faces; faces + edges; faces + edges + corners) to the rank that
``scipy.ndimage.generate_binary_structure(3, rank)`` takes."""

LabelKey = int | str
"""A label given by id (``14``), by id as JSON text (``"14"``) or by name (``"liver"``)."""


def structure_for(connectivity: int, who: str) -> np.ndarray:
    """The 3x3x3 neighbourhood for a voxel connectivity.

    Args:
        connectivity: 6 (faces), 18 (faces and edges) or 26 (faces, edges and corners).
        who: name of the caller, for the error message.

    Returns:
        A boolean ``(3, 3, 3)`` structuring element.

    Raises:
        ValueError: ``connectivity`` is not 6, 18 or 26.
    """
    if isinstance(connectivity, bool) or connectivity not in CONNECTIVITIES:
        raise ValueError(
            f"{who}: connectivity must be one of {', '.join(map(str, CONNECTIVITIES))} "
            f"(voxels sharing a face; a face or edge; a face, edge or corner), got {connectivity!r}"
        )
    return ndimage.generate_binary_structure(3, CONNECTIVITIES[connectivity])


def as_label_volume(img: NdarrayOrTensor, who: str) -> np.ndarray:
    """Check an integer label map and return it as a numpy ``(H, W, D)`` array.

    Args:
        img: label map, channel-first ``(1, H, W, D)`` or ``(H, W, D)``, numpy or torch
            (``MetaTensor`` included), of an integer dtype (uint8, uint16, ...).
        who: name of the caller, for error messages.

    Returns:
        The ``(H, W, D)`` voxels as numpy; this may share memory with ``img``, so do not write to it.

    Raises:
        TypeError: ``img`` is not numpy or torch, or its dtype is not an integer type.
        ValueError: ``img`` is not ``(1, H, W, D)`` or ``(H, W, D)``.
    """
    if isinstance(img, torch.Tensor):
        tensor = img.as_tensor() if isinstance(img, MetaTensor) else img
        arr = tensor.detach().cpu().numpy()
    elif isinstance(img, np.ndarray):
        arr = img
    else:
        raise TypeError(f"{who}: expected a numpy array or torch tensor label map, got {type(img).__name__}")
    if arr.dtype.kind in "fc":
        raise TypeError(
            f"{who}: expected an integer label map (uint8, uint16), got dtype {arr.dtype}; take the argmax "
            "over the class channel and cast first (e.g. AsDiscreted(argmax=True) then "
            "CastToTyped(dtype=uint8))"
        )
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{who}: expected an integer label map (uint8, uint16), got dtype {arr.dtype}")
    if arr.ndim == 4 and arr.shape[0] == 1:
        return arr[0]
    if arr.ndim == 3:
        return arr
    raise ValueError(
        f"{who}: expected a label map of shape (1, H, W, D) or (H, W, D) with label ids as values, "
        f"got shape {tuple(arr.shape)}"
    )


def like_input(volume: np.ndarray, img: NdarrayOrTensor) -> NdarrayOrTensor:
    """Give a processed ``(H, W, D)`` volume the type, dtype, device, shape and meta of the input.

    Args:
        volume: processed label map, ``(H, W, D)``, same dtype as ``img``.
        img: the input the transform received, ``(1, H, W, D)`` or ``(H, W, D)``.

    Returns:
        ``volume`` as ``img``'s type; a ``MetaTensor`` keeps its meta, affine and applied operations
        (so ``Invertd`` still works after these transforms).
    """
    out = volume[None] if img.ndim == 4 else volume
    if isinstance(img, torch.Tensor):
        return convert_to_dst_type(out, dst=img)[0]
    return out


def voxel_volume_mm3(img: NdarrayOrTensor, spacing_mm: Sequence[float] | None, who: str) -> float:
    """Volume of one voxel in mm³: the product of :func:`voxel_spacing_mm`."""
    si, sj, sk = voxel_spacing_mm(img, spacing_mm, who)
    return si * sj * sk


def voxel_spacing_mm(img: NdarrayOrTensor, spacing_mm: Sequence[float] | None, who: str) -> tuple[float, float, float]:
    """Voxel size ``(si, sj, sk)`` in mm.

    Args:
        img: the label map; if a ``MetaTensor``, its affine gives the voxel size.
        spacing_mm: explicit voxel size ``(si, sj, sk)`` in mm; wins over the affine when given.
        who: name of the caller, for error messages.

    Returns:
        ``(si, sj, sk)`` in mm.

    Raises:
        ValueError: ``spacing_mm`` is not three positive numbers, or there is no way to tell the voxel
            size (a plain numpy / torch array and no ``spacing_mm``).
    """
    if spacing_mm is not None:
        values = list(spacing_mm) if isinstance(spacing_mm, Iterable) else [spacing_mm]
        try:
            spacing = [float(v) for v in values]
        except (TypeError, ValueError):
            spacing = []
        if len(spacing) != 3 or not all(math.isfinite(v) and v > 0 for v in spacing):
            raise ValueError(f"{who}: spacing_mm must be three positive numbers (mm), got {spacing_mm!r}")
    elif isinstance(img, MetaTensor):
        try:
            spacing = list(spacing_from_affine(img.affine))
        except ValueError as err:
            raise ValueError(f"{who}: cannot read the voxel size from the MetaTensor: {err}") from err
    else:
        raise ValueError(
            f"{who}: cannot tell the voxel size of a plain {type(img).__name__} label map; pass "
            "spacing_mm=(si, sj, sk) in mm, or a MetaTensor whose affine holds the voxel size"
        )
    return spacing[0], spacing[1], spacing[2]


def _as_label_id(value: Any) -> int | None:
    """``value`` as an int label id if it is one (``14``, ``np.uint8(14)``, ``"14"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def label_name_table(labels: Mapping[Any, Any] | None, who: str) -> dict[str, int]:
    """Turn a label mapping ``{id: name}`` or ``{name: id}`` into ``{casefolded name: id}``.

    Args:
        labels: ``{1: "liver", ...}``, ``{"1": "liver", ...}`` (as JSON gives it) or
            ``{"liver": 1, ...}``; None for no names.
        who: name of the caller, for error messages.

    Returns:
        Names (casefolded) to label ids.

    Raises:
        ValueError: an entry has no integer id on either side, or two labels share a name.
    """
    table: dict[str, int] = {}
    for key, value in (labels or {}).items():
        key_id, value_id = _as_label_id(key), _as_label_id(value)
        if key_id is not None and isinstance(value, str) and value_id is None:
            name, label_id = value, key_id
        elif value_id is not None and isinstance(key, str) and key_id is None:
            name, label_id = key, value_id
        else:
            raise ValueError(
                f"{who}: labels must map ids to names ({{1: 'liver'}}) or names to ids ({{'liver': 1}}), "
                f"got entry {key!r}: {value!r}"
            )
        folded = name.strip().casefold()
        if folded in table and table[folded] != label_id:
            raise ValueError(f"{who}: label name {name!r} is given to both {table[folded]} and {label_id}")
        table[folded] = label_id
    return table


def resolve_label(key: LabelKey, names: Mapping[str, int], who: str) -> int:
    """The label id for an id, an id written as text, or a name.

    Args:
        key: ``14``, ``"14"`` or ``"liver"``.
        names: ``{casefolded name: id}`` from :func:`label_name_table`.
        who: name of the caller and the setting, for error messages.

    Returns:
        The label id, at least 1.

    Raises:
        ValueError: unknown name, or id below 1 (0 is background).
        TypeError: ``key`` is neither an integer nor a string.
    """
    label_id = _as_label_id(key)
    if label_id is None:
        if not isinstance(key, str):
            raise TypeError(f"{who}: expected a label id or name, got {key!r} ({type(key).__name__})")
        folded = key.strip().casefold()
        if folded not in names:
            known = ", ".join(sorted(names)) if names else "none; pass labels={id: name} to use names"
            raise ValueError(f"{who}: unknown label name {key!r}; expected an integer id or one of: {known}")
        label_id = names[folded]
    if label_id < 1:
        raise ValueError(f"{who}: label ids must be 1 or more (0 is background), got {key!r}")
    return label_id


def resolve_labels(keys: LabelKey | Sequence[LabelKey], names: Mapping[str, int], who: str) -> tuple[int, ...]:
    """Label ids, in order and without repeats, for one label or a sequence of labels.

    Args:
        keys: one label (id, id as text, or name) or a sequence of them.
        names: ``{casefolded name: id}`` from :func:`label_name_table`.
        who: name of the caller and the setting, for error messages.

    Returns:
        The label ids.
    """
    items: Sequence[LabelKey] = [keys] if isinstance(keys, (int, str, np.integer)) else keys
    return tuple(dict.fromkeys(resolve_label(k, names, who) for k in items))


def check_fill_value(fill_value: int, dtype: np.dtype, who: str) -> None:
    """Raise ValueError unless ``fill_value`` is an integer that ``dtype`` can hold."""
    if isinstance(fill_value, bool) or not isinstance(fill_value, (int, np.integer)):
        raise ValueError(f"{who}: fill_value must be an integer label id, got {fill_value!r}")
    info = np.iinfo(dtype)
    if not info.min <= int(fill_value) <= info.max:
        raise ValueError(
            f"{who}: fill_value {fill_value} does not fit the label map's dtype {dtype} ({info.min}..{info.max})"
        )


def label_boxes(volume: np.ndarray, max_label: int = 0) -> dict[int, tuple[slice, ...]]:
    """Bounding box of every label present in a label map.

    Args:
        volume: integer label map ``(H, W, D)``; values of 0 and below are not labels.
        max_label: look only at labels up to this id; 0 for all.

    Returns:
        ``{label id: (slice_i, slice_j, slice_k)}`` for the labels present.
    """
    boxes = ndimage.find_objects(volume, max_label=max_label)
    return {index + 1: box for index, box in enumerate(boxes) if box is not None}


def apply_per_key(wrapper: MapTransform, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
    """Run ``wrapper.transform`` on each of the wrapper's keys in a shallow copy of ``data``.

    This is the whole body of our dictionary wrappers. Input errors are raised again, of the same
    type, with the key in front of the message.

    Args:
        wrapper: a ``MapTransform`` with a ``transform`` attribute (the array transform).
        data: the dictionary of the pipeline.

    Returns:
        A shallow copy of ``data`` with the items under the keys replaced.
    """
    d = dict(data)
    for key in wrapper.key_iterator(d):
        try:
            d[key] = wrapper.transform(d[key])  # type: ignore[attr-defined]
        except (TypeError, ValueError) as err:
            raise type(err)(f"key {key!r}: {err}") from err
    return d
