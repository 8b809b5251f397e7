"""Analytic shapes and smooth random fields in world millimetres, and the canonical grid they are drawn on.

A phantom is drawn on a *canonical* RAS grid (axis 0 towards the patient's Right, 1 Anterior,
2 Superior) centred on the world origin, then reoriented to the requested axis codes. The shapes
(:class:`Ellipsoid`, :class:`Tube`) give a normalised radial ``level`` at any world point (1 on the
surface), so nested layers follow one shape; :class:`Warp` bends them with one smooth
displacement field defined in mm, the same at every spacing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel import orientations as nio

__all__ = [
    "CanonicalGrid",
    "Ellipsoid",
    "Tube",
    "Warp",
    "canonical_grid",
    "capped",
    "reorient",
    "rotation_matrix",
    "smooth_field",
]


@dataclass(frozen=True)
class CanonicalGrid:
    """Voxel centres of the canonical RAS grid, in world mm (ascending along every axis)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @property
    def fov_mm(self) -> np.ndarray:
        """Extent (3,) in mm along R, A, S: shape times spacing."""
        return np.array(self.shape, dtype=float) * np.array(self.spacing)

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-RAS affine (mm) of the grid, centred on the world origin."""
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = -(np.array(self.shape, dtype=float) - 1) / 2 * np.array(self.spacing)
        return affine

    def axis(self, index: int) -> np.ndarray:
        """Voxel-centre coordinates (mm, float32) along RAS axis ``index``, ascending."""
        n, d = self.shape[index], self.spacing[index]
        return ((np.arange(n, dtype=np.float64) - (n - 1) / 2) * d).astype(np.float32)


def canonical_grid(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], codes: tuple[str, str, str]
) -> tuple[CanonicalGrid, np.ndarray]:
    """The RAS grid whose reorientation to ``codes`` has the requested shape and spacing."""
    target = nio.axcodes2ornt(codes)
    canon_shape = [0, 0, 0]
    canon_spacing = [0.0, 0.0, 0.0]
    for t, (ras_axis, _flip) in enumerate(target):
        canon_shape[int(ras_axis)] = shape[t]
        canon_spacing[int(ras_axis)] = spacing[t]
    transform = nio.ornt_transform(nio.axcodes2ornt(("R", "A", "S")), target)
    return CanonicalGrid(tuple(canon_shape), tuple(canon_spacing)), transform  # type: ignore[arg-type]


def reorient(grid: CanonicalGrid, transform: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Reorient canonical arrays (spatial axes last three) and return them with the new affine."""
    out = []
    for array in arrays:
        if array.ndim == 4:  # channel-first: orient each channel's spatial axes
            moved = np.moveaxis(array, 0, -1)
            out.append(np.ascontiguousarray(np.moveaxis(nio.apply_orientation(moved, transform), -1, 0)))
        else:
            out.append(np.ascontiguousarray(nio.apply_orientation(array, transform)))
    affine = grid.affine @ nio.inv_ornt_aff(transform, grid.shape)
    return (affine, *out)


def rotation_matrix(z_deg: float = 0.0, y_deg: float = 0.0, x_deg: float = 0.0) -> np.ndarray:
    """Local-to-world rotation Rz @ Ry @ Rx (degrees, right-handed about the RAS axes)."""
    a, b, c = np.radians([z_deg, y_deg, x_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


def capped(modulation: np.ndarray, total: float) -> np.ndarray:
    """Scale radius-modulation coefficients so that their absolute sum is at most ``total``."""
    return modulation * min(1.0, total / max(float(np.abs(modulation).sum()), 1e-9))


class Ellipsoid:
    """An ellipsoid whose radius is modulated by a low-order polynomial of the direction.

    ``level`` is the normalised radial coordinate: 1 on the (modulated) surface, 0 at the centre,
    so nested layers (a wall around a lumen, cortex around medulla) follow the same shape.
    """

    def __init__(
        self,
        center: np.ndarray,
        semi: np.ndarray,
        rotation: np.ndarray | None = None,
        modulation: np.ndarray | None = None,
    ) -> None:
        self.center = np.asarray(center, dtype=np.float64)
        self.semi = np.asarray(semi, dtype=np.float64)
        self.rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
        # 3 linear + 6 quadratic coefficients of the unit direction in the local frame
        self.modulation = np.zeros(9) if modulation is None else np.asarray(modulation, dtype=float)

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        half = np.sqrt(((self.rotation * self.semi[None, :]) ** 2).sum(axis=1))
        half = half * (1.0 + np.abs(self.modulation).sum()) + 1.0
        return self.center - half, self.center + half

    def level(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        dx, dy, dz = (x - np.float32(self.center[0]), y - np.float32(self.center[1]), z - np.float32(self.center[2]))
        r = self.rotation
        u = [
            (dx * np.float32(r[0, k]) + dy * np.float32(r[1, k]) + dz * np.float32(r[2, k]))
            * np.float32(1.0 / self.semi[k])
            for k in range(3)
        ]
        radius = np.sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2])
        if not np.any(self.modulation):
            return radius
        inv = np.float32(1.0) / np.maximum(radius, np.float32(1e-6))
        n = [uk * inv for uk in u]
        m = self.modulation.astype(np.float32)
        delta = m[0] * n[0] + m[1] * n[1] + m[2] * n[2]
        delta += m[3] * (n[0] * n[0] - n[1] * n[1]) + m[4] * (n[1] * n[1] - n[2] * n[2])
        delta += m[5] * n[0] * n[1] + m[6] * n[1] * n[2] + m[7] * n[0] * n[2]
        delta += m[8] * n[0] * n[1] * n[2]
        return radius / (np.float32(1.0) + delta)

    def center_y(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray | float:
        return float(self.center[1])


class Tube:
    """A tube of varying radius along a poly-line (rounded ends); level = distance / radius."""

    def __init__(self, points: np.ndarray, radii: np.ndarray) -> None:
        self.points = np.asarray(points, dtype=np.float64)
        self.radii = np.asarray(radii, dtype=np.float64)

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.radii.max() + 1.0
        return self.points.min(axis=0) - r, self.points.max(axis=0) + r

    def _nearest(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, want_y: bool):
        best = None
        best_y = None
        segments = zip(self.points[:-1], self.points[1:], self.radii[:-1], self.radii[1:], strict=True)
        for a, b, ra, rb in segments:
            ab = (b - a).astype(np.float32)
            length2 = float(ab @ ab)
            px, py, pz = x - np.float32(a[0]), y - np.float32(a[1]), z - np.float32(a[2])
            t = (px * ab[0] + py * ab[1] + pz * ab[2]) * np.float32(1.0 / max(length2, 1e-9))
            np.clip(t, 0.0, 1.0, out=t)
            ex, ey, ez = px - t * ab[0], py - t * ab[1], pz - t * ab[2]
            dist = np.sqrt(ex * ex + ey * ey + ez * ez)
            level = dist / (np.float32(ra) + t * np.float32(rb - ra))
            if best is None:
                best = level
                best_y = np.float32(a[1]) + t * ab[1] if want_y else None
            else:
                closer = level < best
                best = np.where(closer, level, best)
                if want_y:
                    best_y = np.where(closer, np.float32(a[1]) + t * ab[1], best_y)
        return best, best_y

    def level(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return self._nearest(x, y, z, want_y=False)[0]

    def center_y(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return self._nearest(x, y, z, want_y=True)[1]


class Warp:
    """Smooth random displacement field: a tensor product of low-frequency sines per axis.

    Written here rather than upsampling a coarse random grid with scipy.ndimage.zoom because it
    is defined in millimetres (the same deformation at every spacing, hence the same anatomy),
    is exact on any sub-block of any slab, and costs three small matrix products per slab.
    """

    def __init__(self, rng: np.random.Generator, extent_mm: np.ndarray, amplitude_mm: float) -> None:
        self.extent = np.maximum(np.asarray(extent_mm, dtype=float), 1.0)
        self.freq = np.array([1.0, 2.0, 3.0])
        self.phase = rng.uniform(0, 2 * np.pi, size=(3, 3))  # axis x basis
        coef = rng.normal(size=(3, 3, 3, 3)) / self.freq[None, :, None, None]
        coef /= self.freq[None, None, :, None] * self.freq[None, None, None, :]
        # bound the displacement: |d| <= sum |coef| per component
        coef *= amplitude_mm / max(np.abs(coef).sum(axis=(1, 2, 3)).max(), 1e-9)
        self.coef = coef
        self.max_mm = float(np.abs(coef).sum(axis=(1, 2, 3)).max())

    def basis(self, axis: int, coords: np.ndarray) -> np.ndarray:
        t = coords.astype(np.float64)[:, None] / self.extent[axis]
        return np.sin(np.pi * self.freq[None, :] * t + self.phase[axis][None, :])

    def field(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> list[np.ndarray]:
        """Displacement (3 arrays of shape (len(x), len(y), len(z)), float32 mm)."""
        bx, by, bz = self.basis(0, x), self.basis(1, y), self.basis(2, z)
        out = []
        for c in range(3):
            u = np.einsum("abc,kc->abk", self.coef[c], bz)
            t = np.einsum("jb,abk->ajk", by, u)
            out.append(np.tensordot(bx, t, axes=([1], [0])).astype(np.float32))
        return out


def smooth_field(
    rng: np.random.Generator,
    grid: CanonicalGrid,
    amplitude: float,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    z: np.ndarray | None = None,
) -> np.ndarray:
    """A smooth random scalar field (float32, shape of the grid or of ``x, y, z``), values within about ±amplitude.

    ``x``, ``y``, ``z`` (1D, mm) restrict the field to those coordinates; default: the grid's axes.
    """
    warp = Warp(rng, grid.fov_mm, amplitude)
    x = grid.axis(0) if x is None else x
    y = grid.axis(1) if y is None else y
    z = grid.axis(2) if z is None else z
    return warp.field(x, y, z)[0]
