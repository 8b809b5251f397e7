"""Randomised appearance for synthetic training (SynthSeg-style): intensities drawn per tissue,
partial volume at tissue borders and thick-slice acquisition; artefacts are in
:mod:`pipelines.transforms.randomise_artefacts`.

Each transform is a MONAI ``RandomizableTransform`` on one channel-first array ``(C, H, W, D)``
(numpy, torch or ``MetaTensor``; the output keeps the type, dtype and meta of the input) plus a
``d`` dictionary wrapper. Everything is drawn from the transform's own ``self.R``: after
``set_random_state(seed)`` the same input gives the same output, and a wrapper seeded like its
array transform gives the same output as the array transform.

What MONAI already has is reused, not rewritten: bias field (``RandBiasField``), Gaussian and
Rician noise (``RandGaussianNoise``, ``RandRicianNoise``), gamma (``RandAdjustContrast``) and
whole-image blur (``RandGaussianSmooth``); :mod:`pipelines.data.synthetic` chains them with the
transforms here. Written here because MONAI lacks them: a tissue map -> intensity renderer, a
blur restricted to tissue borders, and a thick-slice simulation with a slice profile in mm
(MONAI's ``RandSimulateLowResolution`` zooms every axis by one factor with no slice profile).

Label maps are never touched: the network learns the fine truth from a degraded image.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Randomizable, RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type
from scipy import ndimage

from pipelines.transforms.randomise_common import (
    RandDictBase,
    Range,
    as_volume,
    check_range,
    like_input,
    voxel_spacing,
)

logger = logging.getLogger(__name__)

__all__ = [
    "RandPartialVolume",
    "RandPartialVolumed",
    "RandSliceThickness",
    "RandSliceThicknessd",
    "RandTissueIntensity",
    "RandTissueIntensityd",
]


# --------------------------------------------------------------------------------------------
# per-tissue intensities
# --------------------------------------------------------------------------------------------


def _random_topological_order(nodes: list[int], pairs: Sequence[tuple[int, int]], rng: np.random.RandomState) -> list:
    """The nodes in an order that puts each pair's first before its second, ties broken at random
    (Kahn's algorithm); ValueError on a cycle."""
    before = {n: {a for a, b in pairs if b == n} for n in nodes}
    order: list[int] = []
    while len(order) < len(nodes):
        ready = [n for n in nodes if n not in order and before[n] <= set(order)]
        if not ready:
            raise ValueError(f"orderings {list(pairs)} contain a cycle")
        order.append(ready[int(rng.randint(len(ready)))])
    return order


class RandTissueIntensity(Randomizable, Transform):
    """Render an image from a tissue map: one mean per tissue per sample, plus a little texture.

    For each call, one table is picked (uniformly, or by ``weights``), and every tissue id's mean
    is drawn uniformly from its ``(low, high)``; each of the ``channels`` output channels gets its
    own draw (several random contrasts of one anatomy). Tissues with ``low < high`` get a smooth
    Gaussian texture of standard deviation drawn in ``[0, texture_std]`` (image units); tissues with
    a fixed value (air) get none, so a zero background stays exactly zero.

    Args:
        tables: ``{tissue_id: (low, high)}``, or several such tables by name (e.g. CT phases).
        weights: Probability of each named table (default uniform).
        channels: Number of output channels, each its own draw.
        texture_std: Largest texture standard deviation (image units; 0 for none).
        texture_sigma_vox: Correlation length of the texture (Gaussian sigma, voxels).
        orderings: ``(darker_id, brighter_id)`` pairs kept in every draw: the drawn means of the
            ordered tissues are sorted along a random order consistent with the pairs. The ordered
            tissues must share one range in each table.

    Raises:
        ValueError: empty or malformed tables, bad weights, orderings with a cycle or mixed ranges.
    """

    def __init__(
        self,
        tables: Mapping[int, Sequence[float]] | Mapping[str, Mapping[int, Sequence[float]]],
        weights: Sequence[float] | None = None,
        channels: int = 1,
        texture_std: float = 0.0,
        texture_sigma_vox: float = 1.0,
        orderings: Sequence[Sequence[int]] = (),
    ) -> None:
        who = type(self).__name__
        if not tables:
            raise ValueError(f"{who}: tables: expected at least one tissue range")
        named = all(isinstance(v, Mapping) for v in tables.values())
        raw = dict(tables) if named else {"table": tables}
        self.tables: dict[str, dict[int, Range]] = {
            str(name): {int(i): check_range(r, f"tables[{name!r}][{i}]", who) for i, r in table.items()}
            for name, table in raw.items()
        }
        if weights is None:
            self.weights = np.full(len(self.tables), 1.0 / len(self.tables))
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(self.tables),) or np.any(w < 0) or w.sum() <= 0:
                raise ValueError(f"{who}: weights: expected {len(self.tables)} non-negative numbers, got {weights!r}")
            self.weights = w / w.sum()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"{who}: channels: expected a positive int, got {channels!r}")
        if texture_std < 0 or texture_sigma_vox < 0:
            raise ValueError(f"{who}: texture_std and texture_sigma_vox must be >= 0")
        self.channels, self.texture_std, self.texture_sigma_vox = channels, float(texture_std), float(texture_sigma_vox)
        self.orderings = [(int(a), int(b)) for a, b in orderings]
        self._ordered = sorted({i for pair in self.orderings for i in pair})
        for name, table in self.tables.items():
            missing = [i for i in self._ordered if i not in table]
            if missing or len({table[i] for i in self._ordered}) > 1:
                raise ValueError(
                    f"{who}: orderings: tissues {self._ordered} must all be in table {name!r} with one shared "
                    f"range, got {[table.get(i) for i in self._ordered]}"
                )
        _random_topological_order(self._ordered, self.orderings, np.random.RandomState(0))  # cycle check
        self.table_name = next(iter(self.tables))
        self.means: list[dict[int, float]] = []
        self._texture_std = 0.0
        self._texture_seed = 0

    def randomize(self, data: Any = None) -> None:
        """Draw the table, the means of every channel, the texture strength and its seed."""
        self.table_name = list(self.tables)[int(self.R.choice(len(self.tables), p=self.weights))]
        table = self.tables[self.table_name]
        self.means = []
        for _ in range(self.channels):
            means = {i: float(self.R.uniform(lo, hi)) for i, (lo, hi) in sorted(table.items())}
            if self._ordered:
                order = _random_topological_order(self._ordered, self.orderings, self.R)
                for i, value in zip(order, sorted(means[i] for i in self._ordered), strict=True):
                    means[i] = value
            self.means.append(means)
        self._texture_std = float(self.R.uniform(0.0, self.texture_std)) if self.texture_std > 0 else 0.0
        self._texture_seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, tissue: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Render ``tissue``.

        Args:
            tissue: Integer tissue map ``(1, H, W, D)`` (float maps of whole numbers, as
                ``LoadImage`` gives, are accepted).
            randomize: Draw new means (False: reuse the last draw).

        Returns:
            float32 ``(channels, H, W, D)`` of the input's type and meta (affine kept).

        Raises:
            ValueError: bad shape, non-integer values, or a tissue id with no range in the table.
        """
        who = type(self).__name__
        ids = as_volume(tissue, who)
        if ids.shape[0] != 1:
            raise ValueError(f"{who}: expected a one-channel tissue map (1, H, W, D), got shape {ids.shape}")
        if ids.size and (ids.min() < 0 or not np.array_equal(ids, np.rint(ids))):
            raise ValueError(f"{who}: expected non-negative integer tissue ids, got values like {ids.ravel()[:5]}")
        if randomize:
            self.randomize()
        if not self.means:
            raise ValueError(f"{who}: called with randomize=False before any draw")
        index = ids[0].astype(np.intp)
        table = self.tables[self.table_name]
        present = np.flatnonzero(np.bincount(index.ravel(), minlength=1))
        missing = sorted(int(i) for i in present if int(i) not in table)
        if missing:
            raise ValueError(
                f"{who}: tissue ids {missing} have no intensity range in table {self.table_name!r} "
                f"(ids with ranges: {sorted(table)})"
            )
        size = max(int(present.max(initial=0)), max(table)) + 1
        textured = np.zeros(size, dtype=bool)
        textured[[i for i, (lo, hi) in table.items() if hi > lo]] = True
        out = np.empty((self.channels, *index.shape), dtype=np.float32)
        rng = np.random.default_rng(self._texture_seed)
        for c, means in enumerate(self.means):
            lut = np.zeros(size, dtype=np.float32)
            lut[list(means)] = list(means.values())
            out[c] = lut[index]
            if self._texture_std > 0:
                field = rng.standard_normal(index.shape, dtype=np.float32)
                if self.texture_sigma_vox > 0:
                    ndimage.gaussian_filter(field, self.texture_sigma_vox, output=field, mode="wrap")
                field *= np.float32(self._texture_std / max(float(field.std()), 1e-12))
                out[c] += np.where(textured[index], field, np.float32(0))
        dtype = torch.float32 if isinstance(tissue, torch.Tensor) else np.float32
        result, *_ = convert_to_dst_type(out, dst=tissue, dtype=dtype)
        return result


class RandTissueIntensityd(MapTransform, Randomizable):
    """Dictionary wrapper of :class:`RandTissueIntensity`: renders ``d[keys]`` (the tissue map)
    into ``d[output_key]``; with ``choice_key`` the name of the table drawn (e.g. the CT phase) is
    stored there too.

    Args:
        keys: The one key of the tissue map.
        output_key: Key of the rendered image (default ``"image"``).
        choice_key: Optional key for the chosen table's name.
        Others: see :class:`RandTissueIntensity`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        tables: Mapping[int, Sequence[float]] | Mapping[str, Mapping[int, Sequence[float]]],
        output_key: str = "image",
        choice_key: str | None = None,
        weights: Sequence[float] | None = None,
        channels: int = 1,
        texture_std: float = 0.0,
        texture_sigma_vox: float = 1.0,
        orderings: Sequence[Sequence[int]] = (),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"{type(self).__name__}: expected one tissue-map key, got {list(self.keys)}")
        self.output_key, self.choice_key = output_key, choice_key
        self.transform = RandTissueIntensity(tables, weights, channels, texture_std, texture_sigma_vox, orderings)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandTissueIntensityd:
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = self.transform(d[key])
            if self.choice_key is not None:
                d[self.choice_key] = self.transform.table_name
        return d


# --------------------------------------------------------------------------------------------
# partial volume at tissue borders
# --------------------------------------------------------------------------------------------


class RandPartialVolume(RandomizableTransform):
    """Gaussian blur of sigma drawn in ``sigma_mm`` applied only within ~2 sigma of tissue borders
    (where a voxel straddles two tissues); the interior of each tissue, texture included, is kept.

    Args:
        sigma_mm: (low, high) Gaussian sigma in mm.
        spacing_mm: Voxel size (mm); default: the image's affine (MetaTensor).
        prob: Probability of applying.
    """

    backend = [TransformBackends.NUMPY]  # noqa: RUF012 (a list, as in MONAI)

    def __init__(
        self, sigma_mm: Sequence[float] = (0.3, 1.2), spacing_mm: Sequence[float] | None = None, prob: float = 1.0
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.sigma_mm = check_range(sigma_mm, "sigma_mm", type(self).__name__, minimum=0.0)
        self.spacing_mm = spacing_mm
        self.sigma = 0.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.sigma = float(self.R.uniform(*self.sigma_mm))

    def __call__(self, img: NdarrayOrTensor, tissue: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Blur ``img`` ``(C, H, W, D)`` at the borders of ``tissue`` ``(1, H, W, D)``."""
        who = type(self).__name__
        if randomize:
            self.randomize()
        if not self._do_transform or self.sigma <= 0:
            return img
        image, ids = as_volume(img, who), as_volume(tissue, who)
        if ids.shape[1:] != image.shape[1:]:
            raise ValueError(f"{who}: tissue map {ids.shape[1:]} and image {image.shape[1:]} differ in shape")
        sigma_vox = [self.sigma / s for s in voxel_spacing(img, self.spacing_mm, who)]
        border = np.zeros(ids.shape[1:], dtype=bool)
        for axis in range(3):
            step = np.diff(ids[0], axis=axis) != 0
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, -1), slice(1, None)
            border[tuple(lo)] |= step
            border[tuple(hi)] |= step
        size = [2 * int(np.ceil(2.0 * s)) + 1 for s in sigma_vox]
        zone = ndimage.maximum_filter(border, size=size, mode="nearest")
        for c in range(image.shape[0]):
            blurred = ndimage.gaussian_filter(image[c], sigma_vox, mode="nearest")
            image[c][zone] = blurred[zone]
        return like_input(image, img)


class RandPartialVolumed(RandDictBase):
    """Dictionary wrapper of :class:`RandPartialVolume`: blurs ``keys`` at the borders of ``d[tissue_key]``."""

    def __init__(
        self,
        keys: KeysCollection,
        tissue_key: str = "tissue",
        sigma_mm: Sequence[float] = (0.3, 1.2),
        spacing_mm: Sequence[float] | None = None,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.tissue_key = tissue_key
        self.transform = RandPartialVolume(sigma_mm, spacing_mm, prob=1.0)

    def apply(self, d: dict[Hashable, Any], key: Hashable) -> NdarrayOrTensor:
        if self.tissue_key not in d:
            raise KeyError(f"{type(self).__name__}: no tissue map under {self.tissue_key!r}")
        return self.transform(d[key], d[self.tissue_key], randomize=False)


# --------------------------------------------------------------------------------------------
# slice thickness
# --------------------------------------------------------------------------------------------


def _box_kernel(width_vox: float) -> np.ndarray:
    """Normalised box (rect) slice profile of ``width_vox`` voxels, fractional ends included."""
    half = width_vox / 2.0
    n = int(np.ceil(half - 0.5))
    centres = np.arange(-n, n + 1, dtype=np.float64)
    weights = np.clip(np.minimum(centres + 0.5, half) - np.maximum(centres - 0.5, -half), 0.0, 1.0)
    return weights / weights.sum()


def _interp_along(volume: np.ndarray, source: np.ndarray, target: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``volume`` (samples at increasing ``source`` positions along ``axis``)
    at the ``target`` positions; positions outside the samples take the nearest sample."""
    j = np.clip(np.searchsorted(source, target, side="right") - 1, 0, len(source) - 2)
    gap = np.maximum(source[j + 1] - source[j], 1e-12)
    w = np.clip((target - source[j]) / gap, 0.0, 1.0).astype(np.float32)
    shape = [1] * volume.ndim
    shape[axis] = len(target)
    w = w.reshape(shape)
    return np.take(volume, j, axis=axis) * (1 - w) + np.take(volume, j + 1, axis=axis) * w


class RandSliceThickness(RandomizableTransform):
    """Simulate a thick-slice acquisition along one axis, then return to the grid (partial volume).

    The volume is averaged over a slice profile of thickness drawn in ``thickness_mm`` (a box of
    that width), sampled at contiguous slices (spacing = thickness, random offset) and linearly
    interpolated back to the original positions. Nothing changes along the other axes; a drawn
    thickness not above the voxel size changes nothing.

    Args:
        thickness_mm: (low, high) slice thickness in mm (e.g. (1, 6)).
        axis: Spatial axis (0..2) of the slices, a list to draw from, or None to draw from all three.
        spacing_mm: Voxel size (mm); default: the image's affine (MetaTensor).
        prob: Probability of applying.
    """

    backend = [TransformBackends.NUMPY]  # noqa: RUF012 (a list, as in MONAI)

    def __init__(
        self,
        thickness_mm: Sequence[float] = (1.0, 6.0),
        axis: int | Sequence[int] | None = None,
        spacing_mm: Sequence[float] | None = None,
        prob: float = 1.0,
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        who = type(self).__name__
        self.thickness_mm = check_range(thickness_mm, "thickness_mm", who, minimum=0.0)
        axes = (0, 1, 2) if axis is None else ((axis,) if isinstance(axis, int) else tuple(axis))
        if not axes or any(a not in (0, 1, 2) for a in axes):
            raise ValueError(f"{who}: axis: expected spatial axes among 0, 1, 2, got {axis!r}")
        self.axes, self.spacing_mm = axes, spacing_mm
        self.axis, self.thickness, self.offset = axes[0], 0.0, 0.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.axis = int(self.axes[int(self.R.randint(len(self.axes)))])
        self.thickness = float(self.R.uniform(*self.thickness_mm))
        self.offset = float(self.R.uniform(0.0, 1.0))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> NdarrayOrTensor:
        """Thick-slice ``img`` ``(C, H, W, D)`` along the drawn axis."""
        who = type(self).__name__
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        spacing = voxel_spacing(img, self.spacing_mm, who)[self.axis]
        width = self.thickness / spacing
        if width <= 1.0:
            logger.debug("%s: thickness %.2f mm <= voxel %.2f mm: unchanged", who, self.thickness, spacing)
            return img
        volume = as_volume(img, who)
        axis = self.axis + 1
        n = volume.shape[axis]
        profile = ndimage.convolve1d(volume, _box_kernel(width), axis=axis, mode="nearest")
        grid = np.arange(n, dtype=np.float64)
        centres = np.arange(self.offset * width - width, n - 1 + width, width)
        thick = _interp_along(profile, grid, np.clip(centres, 0, n - 1), axis)
        return like_input(_interp_along(thick, centres, grid, axis).astype(np.float32), img)


class RandSliceThicknessd(RandDictBase):
    """Dictionary wrapper of :class:`RandSliceThickness` (one draw for all ``keys``; never a label)."""

    def __init__(
        self,
        keys: KeysCollection,
        thickness_mm: Sequence[float] = (1.0, 6.0),
        axis: int | Sequence[int] | None = None,
        spacing_mm: Sequence[float] | None = None,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.transform = RandSliceThickness(thickness_mm, axis, spacing_mm, prob=1.0)
