"""Painting shapes into tissue and label maps, and turning tissue maps into noisy intensities.

:func:`paint` writes one :class:`Op` (a shape with its layers) into a :class:`Canvas`, a slab of
the tissue and label maps; :func:`blur`, :func:`correlated_noise` and :func:`rician` give the
intensities their partial-volume blur and CT or MR noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pipelines.data.phantoms.shapes import Ellipsoid, Tube
from pipelines.data.phantoms.tissues import BODY_TISSUES, TISSUES

__all__ = ["Canvas", "Op", "blur", "correlated_noise", "lookup", "paint", "rician"]


@dataclass(frozen=True)
class Op:
    """One painting step: a shape, its layers (outermost first) and where it may paint.

    layers: (level_max, tissue, structure) triples; structure names a label (None = unlabelled).
    clip: "cavity" (inside the abdominal wall), "body" (inside the skin) or None.
    only_in: tissue names that may be painted over (None = any).
    gas: (tissue, height_mm) turns that tissue into gas above the shape's centre + height (y).
    """

    shape: Ellipsoid | Tube
    layers: tuple[tuple[float, str, str | None], ...]
    warp: bool = True
    clip: str | None = "cavity"
    only_in: tuple[str, ...] | None = None
    gas: tuple[str, float] | None = None


@dataclass
class Canvas:
    """The slab being painted: views into the full tissue/label maps and its coordinates."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    tissue: np.ndarray
    label: np.ndarray
    warp: list[np.ndarray] | None
    masks: dict[str, np.ndarray]

    def block(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose centres lie in the box ``lo``..``hi`` (mm); None if empty."""
        slices = []
        for coords, a, b in zip((self.x, self.y, self.z), lo, hi, strict=True):
            start = int(np.searchsorted(coords, a, side="left"))
            stop = int(np.searchsorted(coords, b, side="right"))
            if stop <= start:
                return None
            slices.append(slice(start, stop))
        return tuple(slices)  # type: ignore[return-value]


def paint(canvas: Canvas, op: Op, label_of: Mapping[str | None, int], margin_mm: float) -> None:
    """Paint one step into the canvas, in place: tissue classes and label ids of its layers.

    Args:
        canvas: The slab; its ``tissue`` and ``label`` views are written.
        op: Shape, layers and constraints (see :class:`Op`).
        label_of: Structure name (None for unlabelled) -> label id.
        margin_mm: How far the warp may move a point (mm): widens the box searched for warped shapes.
    """
    lo, hi = op.shape.bbox()
    if op.warp:
        lo, hi = lo - margin_mm, hi + margin_mm
    sub = canvas.block(lo, hi)
    if sub is None:
        return
    si, sj, sk = sub
    x = canvas.x[si, None, None]
    y = canvas.y[None, sj, None]
    z = canvas.z[None, None, sk]
    if op.warp and canvas.warp is not None:
        x = x + canvas.warp[0][sub]
        y = y + canvas.warp[1][sub]
        z = z + canvas.warp[2][sub]
    level = op.shape.level(x, y, z)
    tissue = canvas.tissue[sub]
    label = canvas.label[sub]
    allowed = np.ones(tissue.shape, dtype=bool)
    if op.clip is not None:
        allowed &= canvas.masks[op.clip][sub]
    if op.only_in is not None:
        allowed &= np.isin(tissue, [BODY_TISSUES[name] for name in op.only_in])
    outer = np.broadcast_to(level <= op.layers[0][0], tissue.shape) & allowed
    if not outer.any():
        return
    for level_max, tissue_name, structure in op.layers:
        mask = np.broadcast_to(level <= level_max, tissue.shape) & allowed
        if op.gas is not None and tissue_name == op.gas[0]:
            center_y = op.shape.center_y(x, y, z)
            gas = np.broadcast_to((y - center_y) > np.float32(op.gas[1]), tissue.shape) & mask
            tissue[gas] = BODY_TISSUES["gas"]
            label[gas] = label_of[structure]
            mask &= ~gas
        tissue[mask] = BODY_TISSUES[tissue_name]  # a superset of TISSUES, same ids
        label[mask] = label_of[structure]


def _gaussian_weights_energy(sigma: float) -> float:
    """Sum of squared weights of scipy's normalised 1D Gaussian kernel (truncate=4)."""
    if sigma <= 0:
        return 1.0
    radius = int(4.0 * sigma + 0.5)
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    w /= w.sum()
    return float((w * w).sum())


def blur(image: np.ndarray, spacing: Sequence[float], sigma_mm: float) -> np.ndarray:
    """Gaussian partial-volume blur of ``sigma_mm`` (mm) on a grid of ``spacing`` (mm); float32 out."""
    if sigma_mm <= 0:
        return image
    sigma = [sigma_mm / s for s in spacing]
    return ndimage.gaussian_filter(image, sigma=sigma, mode="nearest", output=np.float32)


def correlated_noise(
    rng: np.random.Generator, shape: tuple[int, ...], std: float, in_plane_sigma_vox: float
) -> np.ndarray:
    """Gaussian noise with a little in-plane correlation (as reconstruction kernels give)."""
    noise = rng.standard_normal(size=shape, dtype=np.float32)
    if in_plane_sigma_vox > 0:
        ndimage.gaussian_filter(noise, sigma=(in_plane_sigma_vox, in_plane_sigma_vox, 0), output=noise, mode="wrap")
        noise *= np.float32(std / _gaussian_weights_energy(in_plane_sigma_vox))
    else:
        noise *= np.float32(std)
    return noise


def lookup(
    rng: np.random.Generator, table: Mapping[str, tuple[float, float]], names: Sequence[str] | None = None
) -> dict[str, float]:
    """One intensity per tissue of ``names`` (default: :data:`TISSUES`), drawn uniformly from its range
    in ``table``, in the order of ``names`` (0 when absent)."""
    names = TISSUES if names is None else names
    return {name: float(rng.uniform(*table[name])) if name in table else 0.0 for name in names}


def rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise (Rician statistics), float32."""
    real = rng.standard_normal(size=image.shape, dtype=np.float32)
    real *= np.float32(sigma)
    real += image
    imag = rng.standard_normal(size=image.shape, dtype=np.float32)
    imag *= np.float32(sigma)
    return np.hypot(real, imag, out=real)
