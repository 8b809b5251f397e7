"""Randomised CT artefacts for synthetic training: streaks, rings and metal.

MONAI has no CT artefact transforms, so these are written here. They are image-domain
approximations (cheap enough to run per training sample), not a projection-domain simulation:

- :class:`RandStreaks`: bright and dark lines through a point, across a slab of slices (photon
  starvation and beam hardening between dense structures);
- :class:`RandRings`: concentric rings around the isocentre on every slice (a miscalibrated
  detector element);
- :class:`RandMetal`: a small insert of metal attenuation (2500-3071 HU) inside the body, with
  dark and bright streaks radiating from it in its slices, fading with distance.

Each works in HU on a channel-first ``(C, H, W, D)`` image (numpy, torch or ``MetaTensor``; type,
dtype and meta kept) and has a ``d`` dictionary wrapper. The slice axis is ``axis`` or, for a
``MetaTensor``, the axis its affine runs superior-inferior along. Labels are never touched (a clip
in the liver is still liver). Seeded like every MONAI transform: ``set_random_state(seed)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor

from pipelines.transforms.randomise_common import (
    RandDictBase,
    RandImageTransform,
    as_volume,
    check_range,
    slice_axis,
    voxel_spacing,
)

logger = logging.getLogger(__name__)

__all__ = ["RandMetal", "RandMetald", "RandRings", "RandRingsd", "RandStreaks", "RandStreaksd"]


def _plane(shape: Sequence[int], axis: int) -> tuple[int, int]:
    """The two in-plane spatial axes of slices along ``axis``."""
    p, q = (a for a in range(3) if a != axis)
    return p, q


def _lines(
    plane_shape: tuple[int, int], centre: Sequence[float], angles: np.ndarray, amplitudes: np.ndarray, width: float
) -> np.ndarray:
    """Sum of Gaussian-profile lines through ``centre`` (voxels) at ``angles`` (radians), float32 (P, Q)."""
    u = np.arange(plane_shape[0], dtype=np.float32)[:, None] - np.float32(centre[0])
    v = np.arange(plane_shape[1], dtype=np.float32)[None, :] - np.float32(centre[1])
    out = np.zeros(plane_shape, dtype=np.float32)
    for angle, amplitude in zip(angles, amplitudes, strict=True):
        distance = u * np.float32(np.sin(angle)) - v * np.float32(np.cos(angle))
        out += np.float32(amplitude) * np.exp(-0.5 * (distance / np.float32(width)) ** 2)
    return out


def _add_in_plane(volume: np.ndarray, pattern: np.ndarray, axis: int, slices: slice) -> None:
    """Add a (P, Q) in-plane pattern to the slices ``slices`` along spatial ``axis`` of (C, H, W, D), in place."""
    index: list[Any] = [slice(None)] * 4
    index[axis + 1] = slices
    volume[tuple(index)] += np.expand_dims(pattern, axis)[None]


def _signed(rng: np.random.RandomState, low: float, high: float, count: int, dark_fraction: float) -> np.ndarray:
    magnitude = rng.uniform(low, high, size=count)
    return np.where(rng.uniform(size=count) < dark_fraction, -magnitude, magnitude)


class _RandInPlane(RandImageTransform):
    """Shared body of :class:`RandStreaks` and :class:`RandRings`: ``count`` features of ``amplitude_hu``
    and ``width_vox`` in the slices along ``axis``."""

    def __init__(
        self,
        count: Sequence[int],
        amplitude_hu: Sequence[float],
        width_vox: Sequence[float],
        axis: int | None,
        prob: float,
    ) -> None:
        super().__init__(prob, axis)
        who = type(self).__name__
        self.count = tuple(int(c) for c in check_range(count, "count", who, minimum=1))
        self.amplitude_hu = check_range(amplitude_hu, "amplitude_hu", who, minimum=0.0)
        self.width_vox = check_range(width_vox, "width_vox", who, minimum=1e-3)

    def _draw_layout(self, data: NdarrayOrTensor) -> tuple[int, Sequence[int], int, int, int]:
        """Slice axis, spatial shape, in-plane axes and the drawn number of features."""
        axis = slice_axis(data, self.axis_arg, type(self).__name__)
        shape = data.shape[1:]
        p, q = _plane(shape, axis)
        return axis, shape, p, q, int(self.R.randint(self.count[0], self.count[1] + 1))


class RandStreaks(_RandInPlane):
    """Straight bright/dark streaks (HU) through one point, across a slab of slices.

    Args:
        count: (low, high) number of streaks.
        amplitude_hu: (low, high) magnitude of a streak; about half are dark.
        width_vox: (low, high) Gaussian half-width of a streak (voxels).
        slab_fraction: (low, high) share of the slices the streaks cover.
        axis: Slice axis (0..2); None: from the MetaTensor's affine.
        prob: Probability of applying.
    """

    def __init__(
        self,
        count: Sequence[int] = (3, 12),
        amplitude_hu: Sequence[float] = (20.0, 150.0),
        width_vox: Sequence[float] = (0.6, 2.0),
        slab_fraction: Sequence[float] = (0.1, 0.5),
        axis: int | None = None,
        prob: float = 0.1,
    ) -> None:
        super().__init__(count, amplitude_hu, width_vox, axis, prob)
        self.slab_fraction = check_range(slab_fraction, "slab_fraction", type(self).__name__, minimum=0.0)

    def _draw(self, data: NdarrayOrTensor) -> dict[str, Any]:
        axis, shape, p, q, n = self._draw_layout(data)
        length = max(1, round(shape[axis] * self.R.uniform(*self.slab_fraction)))
        start = int(self.R.randint(0, shape[axis] - length + 1))
        return {
            "axis": axis,
            "centre": (self.R.uniform(0.25, 0.75) * (shape[p] - 1), self.R.uniform(0.25, 0.75) * (shape[q] - 1)),
            "angles": self.R.uniform(0.0, np.pi, size=n),
            "amplitudes": _signed(self.R, *self.amplitude_hu, n, 0.5),
            "width": float(self.R.uniform(*self.width_vox)),
            "slab": slice(start, start + length),
        }

    def _apply(self, volume: np.ndarray) -> np.ndarray:
        """Add the streaks (HU) to ``volume``."""
        axis = self.params["axis"]
        p, q = _plane(volume.shape[1:], axis)
        pattern = _lines(
            (volume.shape[p + 1], volume.shape[q + 1]),
            self.params["centre"],
            self.params["angles"],
            self.params["amplitudes"],
            self.params["width"],
        )
        _add_in_plane(volume, pattern, axis, self.params["slab"])
        return volume


class RandStreaksd(RandDictBase):
    """Dictionary wrapper of :class:`RandStreaks` (image keys only, never a label)."""

    def __init__(
        self,
        keys: KeysCollection,
        count: Sequence[int] = (3, 12),
        amplitude_hu: Sequence[float] = (20.0, 150.0),
        width_vox: Sequence[float] = (0.6, 2.0),
        slab_fraction: Sequence[float] = (0.1, 0.5),
        axis: int | None = None,
        prob: float = 0.1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.transform = RandStreaks(count, amplitude_hu, width_vox, slab_fraction, axis, prob=1.0)


class RandRings(_RandInPlane):
    """Concentric bright/dark rings (HU) around the in-plane centre (the isocentre), on every slice.

    Args:
        count: (low, high) number of rings.
        amplitude_hu: (low, high) magnitude of a ring; about half are dark.
        width_vox: (low, high) Gaussian half-width of a ring (voxels).
        axis: Slice axis (0..2); None: from the MetaTensor's affine.
        prob: Probability of applying.
    """

    def __init__(
        self,
        count: Sequence[int] = (1, 5),
        amplitude_hu: Sequence[float] = (10.0, 60.0),
        width_vox: Sequence[float] = (0.5, 1.5),
        axis: int | None = None,
        prob: float = 0.1,
    ) -> None:
        super().__init__(count, amplitude_hu, width_vox, axis, prob)

    def _draw(self, data: NdarrayOrTensor) -> dict[str, Any]:
        axis, shape, p, q, n = self._draw_layout(data)
        max_radius = max(2.5, 0.48 * min(shape[p], shape[q]))
        return {
            "axis": axis,
            "radii": self.R.uniform(2.0, max_radius, size=n),
            "amplitudes": _signed(self.R, *self.amplitude_hu, n, 0.5),
            "width": float(self.R.uniform(*self.width_vox)),
        }

    def _apply(self, volume: np.ndarray) -> np.ndarray:
        """Add the rings (HU) to ``volume``."""
        axis = self.params["axis"]
        p, q = _plane(volume.shape[1:], axis)
        u = np.arange(volume.shape[p + 1], dtype=np.float32)[:, None] - np.float32((volume.shape[p + 1] - 1) / 2)
        v = np.arange(volume.shape[q + 1], dtype=np.float32)[None, :] - np.float32((volume.shape[q + 1] - 1) / 2)
        rho = np.hypot(u, v)
        pattern = np.zeros(rho.shape, dtype=np.float32)
        for radius, amplitude in zip(self.params["radii"], self.params["amplitudes"], strict=True):
            pattern += np.float32(amplitude) * np.exp(-0.5 * ((rho - np.float32(radius)) / self.params["width"]) ** 2)
        _add_in_plane(volume, pattern, axis, slice(None))
        return volume


class RandRingsd(RandDictBase):
    """Dictionary wrapper of :class:`RandRings` (image keys only, never a label)."""

    def __init__(
        self,
        keys: KeysCollection,
        count: Sequence[int] = (1, 5),
        amplitude_hu: Sequence[float] = (10.0, 60.0),
        width_vox: Sequence[float] = (0.5, 1.5),
        axis: int | None = None,
        prob: float = 0.1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.transform = RandRings(count, amplitude_hu, width_vox, axis, prob=1.0)


class RandMetal(RandImageTransform):
    """A small metal insert inside the body with streaks radiating from it in its slices.

    The insert is a sphere (radius in mm) set to a metal attenuation, centred on a random voxel
    whose first-channel value is above ``body_threshold_hu`` (an image with no such voxel is left
    unchanged). Its streaks (mostly dark, as photon starvation gives) fade as ``1 / (1 + r / 20 mm)``
    and cover the slices the insert spans plus a margin of one radius.

    Args:
        radius_mm: (low, high) insert radius (mm).
        intensity_hu: (low, high) insert attenuation (HU).
        streak_count: (low, high) number of streaks.
        streak_amplitude_hu: (low, high) streak magnitude next to the insert (HU).
        body_threshold_hu: Where the insert may go (HU above which a voxel is in the body).
        spacing_mm: Voxel size (mm); default: the image's affine (MetaTensor).
        axis: Slice axis (0..2); None: from the MetaTensor's affine.
        prob: Probability of applying.
    """

    def __init__(
        self,
        radius_mm: Sequence[float] = (1.5, 6.0),
        intensity_hu: Sequence[float] = (2500.0, 3071.0),
        streak_count: Sequence[int] = (6, 16),
        streak_amplitude_hu: Sequence[float] = (100.0, 600.0),
        body_threshold_hu: float = -300.0,
        spacing_mm: Sequence[float] | None = None,
        axis: int | None = None,
        prob: float = 0.1,
    ) -> None:
        super().__init__(prob, axis)
        who = type(self).__name__
        self.radius_mm = check_range(radius_mm, "radius_mm", who, minimum=0.0)
        self.intensity_hu = check_range(intensity_hu, "intensity_hu", who)
        self.streak_count = tuple(int(c) for c in check_range(streak_count, "streak_count", who, minimum=0))
        self.streak_amplitude_hu = check_range(streak_amplitude_hu, "streak_amplitude_hu", who, minimum=0.0)
        self.body_threshold_hu = float(body_threshold_hu)
        self.spacing_mm = spacing_mm

    def _draw(self, data: NdarrayOrTensor) -> dict[str, Any]:
        who = type(self).__name__
        first = as_volume(data[:1], who)[0]
        candidates = np.flatnonzero(first > self.body_threshold_hu)
        n = int(self.R.randint(self.streak_count[0], self.streak_count[1] + 1))
        return {
            "axis": slice_axis(data, self.axis_arg, who),
            "spacing": voxel_spacing(data, self.spacing_mm, who),
            "centre": None
            if candidates.size == 0
            else np.unravel_index(int(candidates[self.R.randint(candidates.size)]), first.shape),
            "radius": float(self.R.uniform(*self.radius_mm)),
            "intensity": float(self.R.uniform(*self.intensity_hu)),
            "angles": self.R.uniform(0.0, np.pi, size=n),
            "amplitudes": _signed(self.R, *self.streak_amplitude_hu, n, 0.7),
            "width": float(self.R.uniform(0.6, 1.5)),
        }

    def _apply(self, volume: np.ndarray) -> np.ndarray | None:
        """Insert the metal and its streaks into ``volume`` (HU); None when there is no body to put it in."""
        centre = self.params["centre"]
        if centre is None:
            logger.debug("%s: no voxel above %.0f HU: no metal inserted", type(self).__name__, self.body_threshold_hu)
            return None
        axis, spacing, radius = self.params["axis"], self.params["spacing"], self.params["radius"]
        shape = volume.shape[1:]
        p, q = _plane(shape, axis)
        reach = max(1, int(np.ceil(2 * radius / spacing[axis])))
        slab = slice(max(0, centre[axis] - reach), min(shape[axis], centre[axis] + reach + 1))
        pattern = _lines(
            (shape[p], shape[q]),
            (centre[p], centre[q]),
            self.params["angles"],
            self.params["amplitudes"],
            self.params["width"],
        )
        u = (np.arange(shape[p])[:, None] - centre[p]) * spacing[p]
        v = (np.arange(shape[q])[None, :] - centre[q]) * spacing[q]
        pattern /= np.float32(1.0) + np.hypot(u, v).astype(np.float32) / np.float32(20.0)
        _add_in_plane(volume, pattern, axis, slab)
        radius = max(radius, 0.5 * min(spacing))  # at least the centre voxel
        box = tuple(
            slice(max(0, c - int(radius / s) - 1), min(n, c + int(radius / s) + 2))
            for c, s, n in zip(centre, spacing, shape, strict=True)
        )
        grids = np.ogrid[box]
        distance2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True))
        volume[(slice(None), *box)][:, distance2 <= radius**2] = np.float32(self.params["intensity"])
        return volume


class RandMetald(RandDictBase):
    """Dictionary wrapper of :class:`RandMetal` (image keys only; the insert's place is drawn from the first key)."""

    def __init__(
        self,
        keys: KeysCollection,
        radius_mm: Sequence[float] = (1.5, 6.0),
        intensity_hu: Sequence[float] = (2500.0, 3071.0),
        streak_count: Sequence[int] = (6, 16),
        streak_amplitude_hu: Sequence[float] = (100.0, 600.0),
        body_threshold_hu: float = -300.0,
        spacing_mm: Sequence[float] | None = None,
        axis: int | None = None,
        prob: float = 0.1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, prob, allow_missing_keys)
        self.transform = RandMetal(
            radius_mm, intensity_hu, streak_count, streak_amplitude_hu, body_threshold_hu, spacing_mm, axis, prob=1.0
        )
