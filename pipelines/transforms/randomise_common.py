"""Helpers shared by the randomised-appearance transforms (:mod:`pipelines.transforms.randomise`,
:mod:`pipelines.transforms.randomise_artefacts`): array conversion, spacing and slice axis from the
affine, range checks, the body of the array transforms that change a copy of the image, and the body of
their ``d`` dictionary wrappers.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends, convert_to_dst_type

from pipelines.geometry import spacing_from_affine

__all__ = [
    "RandDictBase",
    "RandImageTransform",
    "Range",
    "as_volume",
    "check_range",
    "like_input",
    "slice_axis",
    "voxel_spacing",
]

Range = tuple[float, float]
"""(low, high) of a uniform draw."""


# --------------------------------------------------------------------------------------------


def as_volume(img: NdarrayOrTensor, who: str) -> np.ndarray:
    """A float32 numpy copy of a channel-first ``(C, H, W, D)`` array; ValueError on another shape."""
    array = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if array.ndim != 4:
        raise ValueError(f"{who}: expected a channel-first (C, H, W, D) array, got shape {tuple(array.shape)}")
    return array.astype(np.float32, copy=True)


def like_input(out: np.ndarray, img: NdarrayOrTensor) -> NdarrayOrTensor:
    """``out`` as the type, dtype and meta of ``img`` (integers rounded and clipped to the dtype)."""
    dtype = img.dtype
    is_int = not (torch.is_floating_point(img) if isinstance(img, torch.Tensor) else np.issubdtype(dtype, np.floating))
    if is_int:
        info = torch.iinfo(dtype) if isinstance(img, torch.Tensor) else np.iinfo(dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    result, *_ = convert_to_dst_type(out, dst=img, dtype=dtype)
    return result


def voxel_spacing(img: NdarrayOrTensor, spacing_mm: Sequence[float] | None, who: str) -> tuple[float, ...]:
    """Voxel size (mm) per spatial axis: ``spacing_mm`` or the ``MetaTensor``'s affine."""
    if spacing_mm is not None:
        values = tuple(float(s) for s in spacing_mm)
        if len(values) != 3 or min(values) <= 0:
            raise ValueError(f"{who}: spacing_mm: expected 3 positive numbers (mm), got {spacing_mm!r}")
        return values
    if isinstance(img, MetaTensor):
        return spacing_from_affine(img.affine)
    raise ValueError(f"{who}: needs the voxel size: pass spacing_mm or a MetaTensor with its affine")


def slice_axis(img: NdarrayOrTensor, axis: int | None, who: str) -> int:
    """Spatial axis (0..2) of the slices: ``axis`` or the one a ``MetaTensor``'s affine runs S-I along."""
    if axis is not None:
        if axis not in (0, 1, 2):
            raise ValueError(f"{who}: axis: expected a spatial axis 0, 1 or 2, got {axis!r}")
        return int(axis)
    if isinstance(img, MetaTensor):
        rotation = np.asarray(img.affine.detach().cpu().numpy(), dtype=np.float64)[:3, :3]
        return int(np.argmax(np.abs(rotation[2])))
    raise ValueError(f"{who}: needs the slice axis: pass axis or a MetaTensor with its affine")


def check_range(value: Sequence[float], name: str, who: str, minimum: float | None = None) -> Range:
    """``(low, high)`` as floats, low <= high (and >= minimum); ValueError otherwise."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: {name}: expected (low, high), got {value!r}") from None
    if not low <= high or (minimum is not None and low < minimum):
        floor = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{who}: {name}: expected low <= high{floor}, got {value!r}")
    return low, high


class RandImageTransform(RandomizableTransform):
    """Shared body of the array transforms that draw their parameters from the image and change a copy of it.

    ``__call__`` takes a channel-first ``(C, H, W, D)`` image (numpy, torch or ``MetaTensor``), draws
    (unless ``randomize=False``: the ``d`` wrappers draw once for all keys), and returns the image
    unchanged when not applied, else :meth:`_apply`'s float32 volume as the input's type, dtype and meta.
    Subclasses implement :meth:`_draw` and :meth:`_apply`.

    Args:
        prob: Probability of applying.
        axis: Slice axis (0..2) for the subclasses that need one; None: from the MetaTensor's affine.
    """

    backend = [TransformBackends.NUMPY]  # noqa: RUF012 (a list, as in MONAI)

    def __init__(self, prob: float, axis: int | None = None) -> None:
        RandomizableTransform.__init__(self, prob)
        self.axis_arg = axis
        self.params: dict[str, Any] = {}

    def randomize(self, data: NdarrayOrTensor | None = None) -> None:
        super().randomize(None)
        if not self._do_transform or data is None:
            return
        self.params = self._draw(data)

    def _draw(self, data: NdarrayOrTensor) -> dict[str, Any]:
        """The random parameters for ``data`` (drawn from ``self.R``), kept in ``self.params``."""
        raise NotImplementedError

    def _apply(self, volume: np.ndarray) -> np.ndarray | None:
        """``volume`` (a float32 ``(C, H, W, D)`` copy of the input) changed by ``self.params``, or
        None to return the input unchanged."""
        raise NotImplementedError

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        volume = as_volume(img, type(self).__name__)
        if randomize:
            self.randomize(img)
        if not self._do_transform:
            return img
        out = self._apply(volume)
        return img if out is None else like_input(out, img)


class RandDictBase(MapTransform, RandomizableTransform):
    """Shared body of the ``d`` wrappers: one draw per call (from the first key), applied to every key.

    Subclasses set ``self.transform`` (the array transform with ``prob=1``); seeding the wrapper
    seeds it too, so wrapper and array transform draw the same numbers from the same seed.
    """

    transform: RandomizableTransform

    def __init__(self, keys: KeysCollection, prob: float, allow_missing_keys: bool) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandDictBase:
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        self.randomize(None)
        first = self.first_key(d)
        if not self._do_transform or first == ():
            return d
        self.transform.randomize(d[first])
        for key in self.key_iterator(d):
            d[key] = self.apply(d, key)
        return d

    def apply(self, d: dict[Hashable, Any], key: Hashable) -> NdarrayOrTensor:
        return self.transform(d[key], randomize=False)
