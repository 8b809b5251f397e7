"""Synthetic CT and MR volumes with their truth label maps.

The phantoms serve the demo, the training of our bundles, the tests and the benchmarks: every one is
reproducible from an integer seed, looks like the real thing closely enough for a small U-Net to
learn from it, and comes with an exact label map and a correct voxel-to-world affine.

How a phantom is built:

1. The requested ``shape`` / ``spacing_mm`` / ``orientation`` is turned into a *canonical* RAS
   grid (axis 0 towards the patient's Right, 1 Anterior, 2 Superior), centred on the world origin.
2. Anatomy is drawn from the seed as analytic shapes in world millimetres: randomly deformed
   ellipsoids (low-order radius modulation) and tubes along poly-lines, bent by one smooth random
   displacement field and scaled to fit the field of view. Shapes are painted, in anatomical order,
   into a *tissue* map and a label map, one slab of slices at a time to keep memory bounded.
3. The tissue map becomes intensities through a per-case look-up table (CT Hounsfield units or
   T1-like MR signal), then partial-volume blur, bias field (MR) and noise are applied.
4. The arrays are reoriented to the requested axis codes with :mod:`nibabel.orientations`, so the
   anatomy is the same in physical space whatever the array layout.

Random streams: the seed feeds a :class:`numpy.random.SeedSequence` whose children drive, in this
order, the anatomy, the liver lesions, the intensities and the noise. For a given field of view
the anatomy of a seed is therefore the same for CT and MR, with and without lesions, at any
spacing and in every orientation.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio
from scipy import ndimage

from pipelines import __version__

logger = logging.getLogger(__name__)

__all__ = [
    "BRAIN_STRUCTURES",
    "BRAIN_TISSUES",
    "CT_STRUCTURES",
    "MR_CONTRASTS",
    "TISSUES",
    "Phantom",
    "make_brain_tumor_phantom",
    "make_ct_phantom",
    "make_mr_phantom",
    "write_dicom_series",
    "write_nifti",
]

CT_STRUCTURES: dict[str, int] = {
    "spleen": 1,
    "kidney_right": 2,
    "kidney_left": 3,
    "gallbladder": 4,
    "esophagus": 5,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "inferior_vena_cava": 9,
    "portal_vein": 10,
    "pancreas": 11,
    "adrenal_gland_right": 12,
    "adrenal_gland_left": 13,
    "liver_tumor": 14,
}
"""Every structure the abdominal phantoms can label, with BTCV-like ids (``portal_vein`` covers the
portal and splenic veins, as in BTCV)."""

BRAIN_STRUCTURES: dict[str, int] = {"tumor": 1}
"""The one structure of the brain tumour phantom: enhancing rim plus necrotic core."""

MR_CONTRASTS: tuple[str, ...] = ("T1c", "T1", "T2", "FLAIR")
"""Contrasts of the brain tumour phantom, in channel order (``channels=n`` takes the first n)."""

TISSUES: dict[str, int] = {
    name: index
    for index, name in enumerate(
        (
            "air",
            "skin",
            "fat",
            "muscle",
            "visceral_fat",
            "lung",
            "bone_cortical",
            "bone_marrow",
            "disc",
            "csf",
            "liver",
            "hepatic_vein",
            "liver_lesion",
            "spleen",
            "kidney_cortex",
            "kidney_medulla",
            "gallbladder",
            "esophagus",
            "stomach_wall",
            "stomach_content",
            "gas",
            "artery",
            "vein",
            "portal_vein",
            "pancreas",
            "adrenal",
            "bowel_wall",
            "bowel_content",
            "myocardium",
            "blood",
            "rib",
        )
    )
}
"""Tissue classes of the abdominal phantoms (the ``tissue`` map of a :class:`Phantom`)."""

BRAIN_TISSUES: dict[str, int] = {
    name: index
    for index, name in enumerate(
        (
            "air",
            "scalp",
            "skull",
            "csf",
            "grey_matter",
            "white_matter",
            "ventricle",
            "tumor_core",
            "tumor_rim",
            "edema",
        )
    )
}
"""Tissue classes of the brain tumour phantom."""

_MIN_VOXELS = 8
_SLAB_VOXELS = 4_000_000  # voxels painted per slab: bounds memory, keeps arrays cache-friendly
_CT_CLIP_HU = (-1024, 3071)  # what a CT series stores as uint16 with intercept -1024
# Reference field of view (mm, RAS axes) the abdominal anatomy is drawn for; smaller fields of
# view shrink the anatomy to fit, larger ones leave it at its natural size.
_ABDOMEN_FOV_MM = np.array([290.0, 230.0, 190.0])
_HEAD_FOV_MM = np.array([160.0, 196.0, 172.0])

# Per-case intensity ranges (uniform draws). CT in HU, contrast-enhanced portal-venous-like phase.
_CT_HU: dict[str, tuple[float, float]] = {
    "air": (-1000, -1000),
    "skin": (20, 50),
    "fat": (-115, -85),
    "muscle": (40, 60),
    "visceral_fat": (-110, -80),
    "lung": (-880, -820),
    "bone_cortical": (700, 1100),
    "bone_marrow": (180, 300),
    "disc": (70, 100),
    "csf": (5, 15),
    "liver": (90, 130),
    "hepatic_vein": (130, 180),
    "spleen": (100, 140),
    "kidney_cortex": (150, 200),
    "kidney_medulla": (90, 130),
    "gallbladder": (0, 20),
    "esophagus": (35, 60),
    "stomach_wall": (70, 100),
    "stomach_content": (0, 25),
    "gas": (-1000, -960),
    "artery": (150, 250),
    "vein": (110, 160),
    "portal_vein": (140, 200),
    "pancreas": (80, 120),
    "adrenal": (50, 80),
    "bowel_wall": (50, 90),
    "bowel_content": (0, 40),
    "myocardium": (80, 120),
    "blood": (140, 220),
    "rib": (350, 600),
}
# T1-weighted-like MR signal (arbitrary units): fat bright, fluid dark, flowing blood dark.
_MR_T1: dict[str, tuple[float, float]] = {
    "air": (0, 0),
    "skin": (320, 380),
    "fat": (850, 950),
    "muscle": (250, 320),
    "visceral_fat": (800, 900),
    "lung": (20, 40),
    "bone_cortical": (20, 40),
    "bone_marrow": (500, 650),
    "disc": (200, 280),
    "csf": (60, 100),
    "liver": (420, 520),
    "hepatic_vein": (100, 160),
    "spleen": (300, 380),
    "kidney_cortex": (380, 440),
    "kidney_medulla": (230, 300),
    "gallbladder": (60, 120),
    "esophagus": (280, 330),
    "stomach_wall": (300, 350),
    "stomach_content": (60, 120),
    "gas": (0, 5),
    "artery": (60, 150),
    "vein": (100, 180),
    "portal_vein": (100, 180),
    "pancreas": (480, 560),
    "adrenal": (300, 360),
    "bowel_wall": (300, 360),
    "bowel_content": (80, 160),
    "myocardium": (280, 330),
    "blood": (80, 150),
    "rib": (60, 120),
}
# Brain contrasts (arbitrary units): mean value per tissue, jittered per case.
_BRAIN_SIGNAL: dict[str, dict[str, float]] = {
    "T1c": {
        "air": 0,
        "scalp": 800,
        "skull": 60,
        "csf": 180,
        "grey_matter": 480,
        "white_matter": 640,
        "ventricle": 180,
        "tumor_core": 220,
        "tumor_rim": 900,
        "edema": 420,
    },
    "T1": {
        "air": 0,
        "scalp": 800,
        "skull": 60,
        "csf": 170,
        "grey_matter": 470,
        "white_matter": 630,
        "ventricle": 170,
        "tumor_core": 210,
        "tumor_rim": 430,
        "edema": 410,
    },
    "T2": {
        "air": 0,
        "scalp": 450,
        "skull": 50,
        "csf": 1000,
        "grey_matter": 560,
        "white_matter": 400,
        "ventricle": 1000,
        "tumor_core": 900,
        "tumor_rim": 620,
        "edema": 780,
    },
    "FLAIR": {
        "air": 0,
        "scalp": 400,
        "skull": 40,
        "csf": 90,
        "grey_matter": 560,
        "white_matter": 430,
        "ventricle": 90,
        "tumor_core": 450,
        "tumor_rim": 700,
        "edema": 850,
    },
}

_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic volume with its truth.

    Attributes:
        image: Intensities indexed (i, j, k): int16 HU for CT, int16 signal for abdominal MR,
            float32 for the brain phantom, which is channel-first (C, i, j, k) when it has more
            than one contrast.
        label: uint8 label map (i, j, k), same spatial shape as ``image``.
        affine: 4x4 float64 mapping (i, j, k, 1) to RAS world coordinates in mm.
        labels: Id -> name of every id of the label scheme (0 is "background"). An id may be
            absent from a given case (no lesion drawn, structure outside a small field of view).
        modality: "CT" or "MR".
        tissue: uint8 tissue-class map (i, j, k) the intensities were made from (see
            ``tissue_names``), handy for tests and benchmarks; None when not kept.
        tissue_names: Id -> name of the tissue classes of ``tissue``.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    labels: dict[int, str]
    modality: str
    tissue: np.ndarray | None = None
    tissue_names: dict[int, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Argument checks and grids
# --------------------------------------------------------------------------------------------


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed: expected a non-negative int, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed}")
    return int(seed)


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        values = tuple(shape)
    except TypeError:
        raise ValueError(f"shape: expected 3 ints, got {shape!r}") from None
    if len(values) != 3 or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
        raise ValueError(f"shape: expected 3 ints, got {shape!r}")
    if min(values) < _MIN_VOXELS:
        raise ValueError(f"shape: expected at least {_MIN_VOXELS} voxels along every axis, got {values}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def _check_spacing(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in spacing_mm)
    except (TypeError, ValueError):
        raise ValueError(f"spacing_mm: expected 3 positive numbers, got {spacing_mm!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing_mm: expected 3 positive finite numbers (mm), got {spacing_mm!r}")
    return values  # type: ignore[return-value]


def _check_orientation(orientation: str) -> tuple[str, str, str]:
    codes = tuple(orientation) if isinstance(orientation, str) else ()
    pairs = [{"L", "R"}, {"A", "P"}, {"S", "I"}]
    used = sorted(i for c in codes for i, pair in enumerate(pairs) if c in pair)
    if len(codes) != 3 or used != [0, 1, 2]:
        raise ValueError(
            f"orientation: expected a 3-letter axis code with one of R/L, A/P and S/I each "
            f"(e.g. 'RAS', 'LPS', 'LAS'), got {orientation!r}"
        )
    return codes  # type: ignore[return-value]


def _check_label_ids(label_ids: Mapping[str, int] | None, default: Mapping[str, int]) -> dict[str, int]:
    if label_ids is None:
        return dict(default)
    if not isinstance(label_ids, Mapping):
        raise TypeError(f"label_ids: expected a mapping name -> id, got {type(label_ids).__name__}")
    unknown = sorted(set(label_ids) - set(CT_STRUCTURES))
    if unknown:
        raise ValueError(f"label_ids: unknown structure(s) {unknown}; expected names from {sorted(CT_STRUCTURES)}")
    ids: dict[str, int] = {}
    for name, value in label_ids.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= value <= 255:
            raise ValueError(f"label_ids: id of {name!r} must be an int in 1..255, got {value!r}")
        ids[name] = int(value)
    if len(set(ids.values())) != len(ids):
        raise ValueError(f"label_ids: ids must be unique, got {ids}")
    return ids


@dataclass(frozen=True)
class _Grid:
    """Voxel centres of the canonical RAS grid, in world mm (ascending along every axis)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @property
    def fov_mm(self) -> np.ndarray:
        return np.array(self.shape, dtype=float) * np.array(self.spacing)

    @property
    def affine(self) -> np.ndarray:
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = -(np.array(self.shape, dtype=float) - 1) / 2 * np.array(self.spacing)
        return affine

    def axis(self, index: int) -> np.ndarray:
        n, d = self.shape[index], self.spacing[index]
        return ((np.arange(n, dtype=np.float64) - (n - 1) / 2) * d).astype(np.float32)


def _canonical_grid(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], codes: tuple[str, str, str]
) -> tuple[_Grid, np.ndarray]:
    """The RAS grid whose reorientation to ``codes`` has the requested shape and spacing."""
    target = nio.axcodes2ornt(codes)
    canon_shape = [0, 0, 0]
    canon_spacing = [0.0, 0.0, 0.0]
    for t, (ras_axis, _flip) in enumerate(target):
        canon_shape[int(ras_axis)] = shape[t]
        canon_spacing[int(ras_axis)] = spacing[t]
    transform = nio.ornt_transform(nio.axcodes2ornt(("R", "A", "S")), target)
    return _Grid(tuple(canon_shape), tuple(canon_spacing)), transform  # type: ignore[arg-type]


def _reorient(grid: _Grid, transform: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
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


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def _rotation(z_deg: float = 0.0, y_deg: float = 0.0, x_deg: float = 0.0) -> np.ndarray:
    """Local-to-world rotation Rz @ Ry @ Rx (degrees, right-handed about the RAS axes)."""
    a, b, c = np.radians([z_deg, y_deg, x_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[1, 0, 0], [0, np.cos(c), -np.sin(c)], [0, np.sin(c), np.cos(c)]])
    return rz @ ry @ rx


def _capped(modulation: np.ndarray, total: float) -> np.ndarray:
    """Scale radius-modulation coefficients so that their absolute sum is at most ``total``."""
    return modulation * min(1.0, total / max(float(np.abs(modulation).sum()), 1e-9))


class _Ellipsoid:
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


class _Tube:
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


@dataclass(frozen=True)
class _Op:
    """One painting step: a shape, its layers (outermost first) and where it may paint.

    layers: (level_max, tissue, structure) triples; structure names a label (None = unlabelled).
    clip: "cavity" (inside the abdominal wall), "body" (inside the skin) or None.
    only_in: tissue names that may be painted over (None = any).
    gas: (tissue, height_mm) turns that tissue into gas above the shape's centre + height (y).
    """

    shape: _Ellipsoid | _Tube
    layers: tuple[tuple[float, str, str | None], ...]
    warp: bool = True
    clip: str | None = "cavity"
    only_in: tuple[str, ...] | None = None
    gas: tuple[str, float] | None = None


class _Warp:
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


def _smooth_field(rng: np.random.Generator, grid: _Grid, amplitude: float, x=None, y=None, z=None) -> np.ndarray:
    """A smooth random scalar field on the grid (float32), values within about ±amplitude."""
    warp = _Warp(rng, grid.fov_mm, amplitude)
    x = grid.axis(0) if x is None else x
    y = grid.axis(1) if y is None else y
    z = grid.axis(2) if z is None else z
    return warp.field(x, y, z)[0]


# --------------------------------------------------------------------------------------------
# Abdominal anatomy
# --------------------------------------------------------------------------------------------


@dataclass
class _Abdomen:
    """Everything drawn from the anatomy stream for one case, in world mm."""

    ops: list[_Op]
    lesion_ops: list[_Op]
    warp: _Warp
    body: dict[str, float]
    spine: dict[str, float]


class _Builder:
    """Helpers that turn reference millimetres into scaled, jittered world shapes."""

    def __init__(self, rng: np.random.Generator, scale: np.ndarray, offset: np.ndarray) -> None:
        self.rng = rng
        self.scale = scale
        self.offset = offset
        self.radius_scale = float(np.cbrt(np.prod(scale)))

    def point(self, p: Sequence[float], jitter_mm: float = 0.0) -> np.ndarray:
        p = np.asarray(p, dtype=float) + self.rng.normal(0, jitter_mm, 3)
        return self.offset + p * self.scale

    def modulation(self, amount: float) -> np.ndarray:
        m = self.rng.normal(0, amount, 9)
        m[:3] *= 0.6
        return _capped(m, 0.45)

    def ellipsoid(
        self,
        center: Sequence[float],
        semi: Sequence[float],
        rot: tuple[float, float, float] = (0.0, 0.0, 0.0),
        *,
        jitter_mm: float = 4.0,
        size_range: tuple[float, float] = (0.88, 1.15),
        rot_jitter_deg: float = 6.0,
        modulation: float = 0.1,
        aspect_sd: float = 0.05,
    ) -> _Ellipsoid:
        volume_factor = self.rng.uniform(*size_range)
        aspect = self.rng.normal(0, aspect_sd, 3)
        semi_mm = np.asarray(semi, float) * np.cbrt(volume_factor) * np.exp(aspect - aspect.mean())
        angles = np.asarray(rot, float) + self.rng.normal(0, rot_jitter_deg, 3) * [1, 0.5, 0.5]
        return _Ellipsoid(
            self.point(center, jitter_mm),
            semi_mm * self.scale,
            _rotation(*angles),
            self.modulation(modulation),
        )

    def tube(
        self,
        points: Sequence[Sequence[float]],
        radii: Sequence[float] | float,
        *,
        jitter_mm: float = 3.0,
        size_range: tuple[float, float] = (0.9, 1.1),
    ) -> _Tube:
        pts = np.array([self.point(p, jitter_mm) for p in points])
        r = np.broadcast_to(np.asarray(radii, float), (len(pts),)) * self.rng.uniform(*size_range)
        return _Tube(pts, r * self.radius_scale)


def _abdomen_anatomy(rng: np.random.Generator, lesion_rng: np.random.Generator, grid: _Grid) -> _Abdomen:
    """Draw one abdomen. Reference coordinates: mm, RAS (+x = patient's right), origin at the
    centre of a 290 x 230 x 190 mm field of view from the lung bases to the iliac crests."""
    s_xy = min(1.0, *(grid.fov_mm[:2] / _ABDOMEN_FOV_MM[:2]))
    s_z = min(1.0, grid.fov_mm[2] / _ABDOMEN_FOV_MM[2])
    habitus = rng.uniform(0.93, 1.04)
    scale = np.array([s_xy * habitus, s_xy * habitus, s_z])
    offset = np.array([rng.normal(0, 3), rng.normal(0, 3), rng.normal(0, 4) * s_z])
    b = _Builder(rng, scale, offset)

    body = {
        "x0": offset[0],
        "y0": offset[1] + 4.0 * scale[1],
        "a": 136.0 * scale[0],
        "b_front": 100.0 * scale[1],
        "b_back": 92.0 * scale[1],
        "p": rng.uniform(2.1, 2.5),
        "fat": rng.uniform(8.0, 22.0) * scale[0],
        "muscle": rng.uniform(8.0, 12.0) * scale[0],
        "skin": 2.0 * min(scale[0], 1.0),
        "wobble": rng.uniform(0.0, 0.05),
        "wobble_phase": rng.uniform(0, 2 * np.pi),
        "z_period": 260.0 * scale[2],
        "rib_period": rng.uniform(26.0, 32.0) * scale[2],
        "rib_phase": rng.uniform(0, 1),
        "rib_slope": rng.uniform(0.3, 0.45),
        "rib_bottom": rng.uniform(-30.0, -10.0) * scale[2] + offset[2],
    }
    spine = {
        "x0": offset[0],
        "y0": offset[1] - 38.0 * scale[1],
        "a": 22.0 * scale[0],
        "b": 16.5 * scale[1],
        "canal_y": offset[1] - 63.0 * scale[1],
        "canal_r": 9.0 * scale[0],
        "arch_r": 15.0 * scale[0],
        "spinous_y": offset[1] - 82.0 * scale[1],
        "period": rng.uniform(32.0, 37.0) * scale[2],
        "phase": rng.uniform(0, 1),
        "disc": rng.uniform(0.18, 0.24),
    }
    warp = _Warp(rng, grid.fov_mm, rng.uniform(6.0, 12.0) * s_xy)

    ops: list[_Op] = []

    def add(shape, layers, **kwargs) -> None:
        ops.append(_Op(shape, tuple(layers), **kwargs))

    # muscles beside and behind the spine (not warped: they follow the skeleton)
    for side in (1, -1):
        add(
            b.ellipsoid(
                (side * 29, -68, 0), (21, 14, 400), modulation=0.0, jitter_mm=1.0, rot_jitter_deg=0.0, aspect_sd=0.0
            ),
            [(1.0, "muscle", None)],
            warp=False,
            clip="body",
        )
        add(
            b.tube(
                [(side * 22, -34, 30), (side * 40, -40, -60), (side * 58, -30, -170)], [4.0, 17.0, 22.0], jitter_mm=1.5
            ),
            [(1.0, "muscle", None)],
            warp=False,
        )
    # lungs: flat-bottomed columns above the diaphragm; the domes of liver and spleen carve them
    for side, x in ((1, 64), (-1, -62)):
        lung_bottom = rng.uniform(28.0, 45.0)
        add(
            b.ellipsoid(
                (x, -8, lung_bottom + 400),
                (66, 82, 400),
                (side * 5, 0, 0),
                modulation=0.0,
                size_range=(1.0, 1.0),
                aspect_sd=0.0,
                rot_jitter_deg=2.0,
            ),
            [(1.0, "lung", None)],
        )
    # heart: only its inferior part reaches the top of the field of view
    add(
        b.ellipsoid((-18, 28, 140), (58, 46, 56), (-30, 0, 0), size_range=(0.9, 1.1)),
        [(1.0, "myocardium", None), (0.72, "blood", None)],
    )
    # colon and small bowel (unlabelled), painted first so solid organs push them aside
    add(
        b.tube(
            [
                (76, 18, -150),
                (80, 5, -60),
                (80, 10, -30),
                (70, 35, -12),
                (30, 62, -32),
                (-30, 60, -26),
                (-78, 28, 0),
                (-84, -6, -40),
                (-82, -10, -110),
                (-50, 10, -170),
            ],
            [21, 20, 20, 19, 18, 18, 18, 17, 17, 16],
            jitter_mm=4.0,
        ),
        [(1.0, "bowel_wall", None), (0.84, "bowel_content", None)],
        gas=("bowel_content", rng.uniform(-6.0, 6.0) * s_xy),
    )
    for _ in range(22):
        start = np.array([rng.uniform(-70, 70), rng.uniform(5, 60), rng.uniform(-180, -15)])
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        end = start + direction * rng.uniform(25, 60)
        middle = (start + end) / 2 + rng.normal(0, 10, 3)
        add(
            b.tube([start, middle, end], rng.uniform(9, 13), jitter_mm=0.0),
            [(1.0, "bowel_wall", None), (0.7, "bowel_content", None)],
            gas=("bowel_content", rng.uniform(4.0, 20.0) * s_xy),
        )
    add(
        b.tube([(22, 50, 16), (46, 32, 10), (54, 14, -12), (46, 10, -38), (12, 10, -44), (-16, 14, -36)], 11.5),
        [(1.0, "bowel_wall", None), (0.7, "bowel_content", None)],
    )
    # liver: right lobe + left lobe, hepatic veins inside
    liver_right = b.ellipsoid((50, 2, 14), (61, 88, 80), (10, 0, 0), size_range=(0.95, 1.3))
    liver_left = b.ellipsoid((-6, 40, 44), (62, 36, 36), (-12, 0, -6), size_range=(0.85, 1.25))
    add(liver_right, [(1.0, "liver", "liver")])
    add(liver_left, [(1.0, "liver", "liver")])
    for end in ((88, -6, 30), (42, 46, 24), (-12, 42, 50)):
        add(
            b.tube([(24, -8, 76), (45, 10, 60), end], [5.5, 4.5, 2.5]),
            [(1.0, "hepatic_vein", "liver")],
            only_in=("liver",),
        )
    # stomach (fundus/body + antrum), gas anteriorly in a supine patient
    stomach_gas = ("stomach_content", rng.uniform(4.0, 20.0) * s_xy)
    add(
        b.ellipsoid((-50, 28, 52), (36, 30, 42), (-25, 0, 0), size_range=(0.8, 1.2)),
        [(1.0, "stomach_wall", "stomach"), (0.84, "stomach_content", "stomach")],
        gas=stomach_gas,
    )
    add(
        b.ellipsoid((-2, 50, 22), (36, 16, 16), (12, 0, 0), size_range=(0.8, 1.2)),
        [(1.0, "stomach_wall", "stomach"), (0.72, "stomach_content", "stomach")],
        gas=stomach_gas,
    )
    add(b.ellipsoid((-72, -34, 44), (26, 56, 42), (30, 0, 10), size_range=(0.9, 1.35)), [(1.0, "spleen", "spleen")])
    add(
        b.ellipsoid((38, 50, -14), (14, 15, 30), (20, 0, 25), size_range=(0.7, 1.3)),
        [(1.0, "gallbladder", "gallbladder")],
    )
    # kidneys: hilum turned anteromedially, upper poles medial, right one lower
    for side, name, z in ((1, "kidney_right", -30.0), (-1, "kidney_left", -16.0)):
        add(
            b.ellipsoid(
                (side * 60, -30, z), (28, 22, 56), (side * 35, side * 10, 0), size_range=(0.85, 1.25), modulation=0.06
            ),
            [(1.0, "kidney_cortex", name), (0.66, "kidney_medulla", name)],
        )
    # adrenal glands: two thin limbs each, above and medial to the upper poles
    for side, name, center, limb in (
        (1, "adrenal_gland_right", (36, -30, 38), (40, -34, 30)),
        (-1, "adrenal_gland_left", (-36, -22, 30), (-40, -27, 22)),
    ):
        add(
            b.ellipsoid(center, (3.5, 12, 15), (side * 20, 0, 0), jitter_mm=2.0, modulation=0.05),
            [(1.0, "adrenal", name)],
        )
        add(
            b.ellipsoid(limb, (3.0, 10, 11), (-side * 25, 0, 0), jitter_mm=2.0, modulation=0.05),
            [(1.0, "adrenal", name)],
        )
    # pancreas: head in the duodenal sweep, body across the spine, tail at the splenic hilum
    add(
        b.tube(
            [(32, 14, -6), (10, 20, 6), (-22, 12, 14), (-55, -8, 24), (-68, -20, 30)],
            [18, 11, 12, 10, 8.5],
            jitter_mm=3.0,
            size_range=(0.9, 1.15),
        ),
        [(1.0, "pancreas", "pancreas")],
    )
    # veins and arteries (renal vessels, iliacs and mesenterics unlabelled)
    add(b.tube([(-48, -22, -6), (-14, 10, -2), (22, -6, 0)], 5.0), [(1.0, "vein", None)])
    add(b.tube([(46, -24, -16), (22, -8, -10)], 5.0), [(1.0, "vein", None)])
    add(b.tube([(6, 4, 6), (8, 18, -45), (10, 25, -100)], [6.5, 5.0, 4.0]), [(1.0, "vein", None)])
    add(b.tube([(-8, 2, -2), (-4, 20, -45), (-2, 28, -100)], [4.5, 3.5, 3.0]), [(1.0, "artery", None)])
    add(
        b.tube([(6, 4, 6), (-30, -4, 15), (-60, -20, 26), (-72, -26, 34)], [5.5, 5.0, 4.5, 4.5]),
        [(1.0, "portal_vein", "portal_vein")],
    )
    add(b.tube([(6, 4, 6), (34, 10, 26), (50, 8, 34)], [7.5, 7.0, 6.5]), [(1.0, "portal_vein", "portal_vein")])
    for end in ((82, 4, 40), (6, 36, 42)):
        add(b.tube([(50, 8, 34), end], [5.0, 2.5]), [(1.0, "portal_vein", "liver")], only_in=("liver", "hepatic_vein"))
    bifurcation_z = rng.uniform(-90.0, -70.0)
    for side in (1, -1):
        add(b.tube([(side * 3 - 10, -4, bifurcation_z), (side * 40, -8, -190)], 7.0), [(1.0, "artery", None)])
        add(b.tube([(18, -6, bifurcation_z - 5), (side * 45 + 10, -14, -190)], 8.0), [(1.0, "vein", None)])
    add(
        b.tube(
            [(18, -6, bifurcation_z - 5), (22, -8, 0), (25, -12, 40), (24, -8, 78), (20, -4, 96)],
            [10.5, 11.0, 11.5, 12.0, 12.5],
        ),
        [(1.0, "vein", "inferior_vena_cava")],
    )
    add(
        b.tube(
            [(-10, -4, bifurcation_z), (-10, -6, 0), (-12, -10, 58), (-24, -24, 110), (-28, -28, 260)],
            [10.0, 11.5, 12.0, 12.5, 12.5],
        ),
        [(1.0, "artery", "aorta")],
    )
    add(
        b.tube([(2, -4, 260), (0, 0, 100), (-16, 14, 70), (-34, 24, 56)], [8.0, 8.0, 7.5, 7.5]),
        [(1.0, "esophagus", "esophagus")],
    )

    # liver lesions, from their own stream so that lesions=False keeps the same anatomy
    after_liver = ops[ops.index(next(op for op in ops if op.shape is liver_left)) + 1 :]
    carving = [op.shape for op in after_liver if op.only_in is None]
    wall_mm = body["skin"] + body["fat"] + body["muscle"] + warp.max_mm
    lesion_ops = []
    for _ in range(int(lesion_rng.integers(1, 4))):
        radius = lesion_rng.uniform(5.0, 15.0) * b.radius_scale
        for _attempt in range(40):  # rejection sampling: a centre well inside liver parenchyma
            lobe = liver_right if lesion_rng.uniform() < 0.8 else liver_left
            direction = lesion_rng.normal(size=3)
            local = direction / np.linalg.norm(direction) * lesion_rng.uniform(0.0, 0.75)
            center = lobe.center + lobe.rotation @ (local * lobe.semi)
            if _lesion_fits(center, radius, carving, body, wall_mm):
                break
        semi = radius * np.exp(lesion_rng.normal(0, 0.1, 3))
        modulation = _capped(lesion_rng.normal(0, 0.06, 9), 0.3)
        lesion_ops.append(
            _Op(
                _Ellipsoid(center, semi, _rotation(lesion_rng.uniform(0, 180)), modulation),
                ((1.0, "liver_lesion", "liver_tumor"),),
                only_in=("liver", "hepatic_vein"),
            )
        )
    return _Abdomen(ops, lesion_ops, warp, body, spine)


def _lesion_fits(
    center: np.ndarray,
    radius: float,
    carving: Sequence[_Ellipsoid | _Tube],
    body: Mapping[str, float],
    wall_mm: float,
) -> bool:
    """Whether a lesion at ``center`` stays clear of the abdominal wall and of every shape
    painted after the liver (judged in the reference, unwarped frame)."""
    point = [np.array([v], dtype=np.float32) for v in center]
    if not _inside_body(body, *point, inset_mm=wall_mm + radius).all():
        return False
    for shape in carving:
        lo, hi = shape.bbox()
        if np.any(center < lo - radius) or np.any(center > hi + radius):
            continue
        level = float(np.asarray(shape.level(*point)).ravel()[0])
        size = float(np.min(shape.semi)) if isinstance(shape, _Ellipsoid) else float(shape.radii.min())
        if level <= 1.0 + radius / max(size, 1e-6):
            return False
    return True


@dataclass
class _Canvas:
    """The slab being painted: views into the full tissue/label maps and its coordinates."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    tissue: np.ndarray
    label: np.ndarray
    warp: list[np.ndarray] | None
    masks: dict[str, np.ndarray]

    def block(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        slices = []
        for coords, a, b in zip((self.x, self.y, self.z), lo, hi, strict=True):
            start = int(np.searchsorted(coords, a, side="left"))
            stop = int(np.searchsorted(coords, b, side="right"))
            if stop <= start:
                return None
            slices.append(slice(start, stop))
        return tuple(slices)  # type: ignore[return-value]


def _paint(canvas: _Canvas, op: _Op, label_of: Mapping[str | None, int], margin_mm: float) -> None:
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
        allowed &= np.isin(tissue, [TISSUES[name] for name in op.only_in])
    outer = np.broadcast_to(level <= op.layers[0][0], tissue.shape) & allowed
    if not outer.any():
        return
    for level_max, tissue_name, structure in op.layers:
        mask = np.broadcast_to(level <= level_max, tissue.shape) & allowed
        if op.gas is not None and tissue_name == op.gas[0]:
            center_y = op.shape.center_y(x, y, z)
            gas = np.broadcast_to((y - center_y) > np.float32(op.gas[1]), tissue.shape) & mask
            tissue[gas] = TISSUES["gas"]
            label[gas] = label_of[structure]
            mask &= ~gas
        tissue[mask] = TISSUES[tissue_name]
        label[mask] = label_of[structure]


def _inside_body(body: Mapping[str, float], x: np.ndarray, y: np.ndarray, z: np.ndarray, inset_mm: float) -> np.ndarray:
    """Boolean (nx, ny, nz): inside the body outline shrunk by ``inset_mm`` (x, y, z: 1D mm)."""
    p = body["p"]
    wobble = 1.0 + body["wobble"] * np.sin(2 * np.pi * z / body["z_period"] + body["wobble_phase"])
    a = np.maximum(body["a"] * wobble - inset_mm, 1.0)
    dy = y - body["y0"]
    b = np.where(dy >= 0, body["b_front"] - inset_mm, body["b_back"] - inset_mm * 0.7)
    b = np.maximum(b, 1.0)
    # |x/a|^p + |y/b|^p, separable in (x) x (z) and (y) - cheap on large grids
    term_x = (np.abs(x - body["x0"]) ** p)[:, None, None] * (a**-p)[None, None, :]
    term_y = (np.abs(dy) / b) ** p
    return (term_x + term_y[None, :, None]) <= 1.0


def _superellipse(canvas: _Canvas, body: Mapping[str, float], inset_mm: float) -> np.ndarray:
    return _inside_body(body, canvas.x, canvas.y, canvas.z, inset_mm)


def _paint_body(canvas: _Canvas, anatomy: _Abdomen) -> None:
    body = anatomy.body
    tissue = canvas.tissue
    skin = _superellipse(canvas, body, 0.0)
    fat = _superellipse(canvas, body, body["skin"])
    muscle = _superellipse(canvas, body, body["skin"] + body["fat"])
    cavity = _superellipse(canvas, body, body["skin"] + body["fat"] + body["muscle"])
    tissue[skin] = TISSUES["skin"]
    tissue[fat] = TISSUES["fat"]
    tissue[muscle] = TISSUES["muscle"]
    tissue[cavity] = TISSUES["visceral_fat"]
    canvas.masks["body"] = skin
    canvas.masks["cavity"] = cavity
    canvas.masks["wall"] = muscle & ~cavity


def _paint_bones(canvas: _Canvas, anatomy: _Abdomen) -> None:
    """Vertebrae with discs, neural arch and processes, ribs in the wall (not warped)."""
    sp, body = anatomy.spine, anatomy.body
    x = canvas.x[:, None]
    y = canvas.y[None, :]
    tissue = canvas.tissue
    # position within the vertebral period: 0..disc is intervertebral disc
    phase = (canvas.z / sp["period"] + sp["phase"]) % 1.0
    disc = phase < sp["disc"]
    level = np.sqrt(((x - sp["x0"]) / sp["a"]) ** 2 + ((y - sp["y0"]) / sp["b"]) ** 2)
    vert = level <= 1.0
    cortex = vert & (level > 0.8)
    canal_d = np.sqrt((x - sp["x0"]) ** 2 + (y - sp["canal_y"]) ** 2)
    arch = (canal_d <= sp["arch_r"]) & (y < sp["y0"])
    canal = canal_d <= sp["canal_r"]
    spinous = (np.abs(x - sp["x0"]) <= 0.25 * sp["a"]) & (y < sp["canal_y"]) & (y >= sp["spinous_y"])
    transverse = (np.abs(x - sp["x0"]) <= 1.7 * sp["a"] - np.abs(y - sp["canal_y"] - 6)) & (
        np.abs(y - sp["canal_y"] - 6) <= 4
    )
    mid = (phase > sp["disc"] + 0.15) & (phase < 0.75)

    def put(mask2d: np.ndarray, zmask: np.ndarray | None, name: str) -> None:
        mask = np.broadcast_to(mask2d[:, :, None], tissue.shape)
        if zmask is not None:
            mask = mask & zmask[None, None, :]
        tissue[mask] = TISSUES[name]
        canvas.label[mask] = 0

    put(vert, None, "bone_marrow")
    put(cortex, ~disc, "bone_cortical")
    put(vert, disc, "disc")
    put(arch | spinous, mid, "bone_cortical")
    put(transverse, mid & (phase < 0.55), "bone_cortical")
    put(arch & ~spinous, ~mid, "bone_cortical")
    put(canal, None, "csf")
    # ribs: oblique bands in the muscle wall, descending anteriorly, absent in front of the midline
    shifted = canvas.z[None, None, :] + body["rib_slope"] * canvas.y[None, :, None]
    bands = ((shifted / body["rib_period"] + body["rib_phase"]) % 1.0) < 0.27
    lateral = (np.abs(canvas.x - body["x0"]) > 0.22 * body["a"])[:, None, None]
    ribs = canvas.masks["wall"] & bands & lateral & (shifted > body["rib_bottom"])
    tissue[ribs] = TISSUES["rib"]
    canvas.label[ribs] = 0


def _render_abdomen(
    anatomy: _Abdomen, grid: _Grid, label_ids: Mapping[str, int], lesions: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Paint tissue and label maps (canonical RAS grid, uint8) slab by slab."""
    label_of: dict[str | None, int] = {name: label_ids.get(name, 0) for name in CT_STRUCTURES}
    label_of[None] = 0
    if "liver_tumor" not in label_ids:  # a lesion is part of the liver when not labelled apart
        label_of["liver_tumor"] = label_ids.get("liver", 0)
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    label = np.zeros(grid.shape, dtype=np.uint8)
    x, y, z = grid.axis(0), grid.axis(1), grid.axis(2)
    ops = anatomy.ops + (anatomy.lesion_ops if lesions else [])
    step = max(1, _SLAB_VOXELS // (grid.shape[0] * grid.shape[1]))
    margin = anatomy.warp.max_mm + 1.0
    for k0 in range(0, grid.shape[2], step):
        k1 = min(grid.shape[2], k0 + step)
        zs = z[k0:k1]
        canvas = _Canvas(x, y, zs, tissue[:, :, k0:k1], label[:, :, k0:k1], anatomy.warp.field(x, y, zs), {})
        _paint_body(canvas, anatomy)
        for op in ops:
            _paint(canvas, op, label_of, margin)
        _paint_bones(canvas, anatomy)
    return tissue, label


def _gaussian_weights_energy(sigma: float) -> float:
    """Sum of squared weights of scipy's normalised 1D Gaussian kernel (truncate=4)."""
    if sigma <= 0:
        return 1.0
    radius = int(4.0 * sigma + 0.5)
    w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    w /= w.sum()
    return float((w * w).sum())


def _blur(image: np.ndarray, spacing: Sequence[float], sigma_mm: float) -> np.ndarray:
    if sigma_mm <= 0:
        return image
    sigma = [sigma_mm / s for s in spacing]
    return ndimage.gaussian_filter(image, sigma=sigma, mode="nearest", output=np.float32)


def _correlated_noise(
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


def _lookup(rng: np.random.Generator, table: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    return {name: float(rng.uniform(*table[name])) if name in table else 0.0 for name in TISSUES}


def _validated_common(seed, shape, spacing_mm, orientation):
    seed = _check_seed(seed)
    shape = _check_shape(shape)
    spacing = _check_spacing(spacing_mm)
    codes = _check_orientation(orientation)
    return seed, shape, spacing, codes


def _labels_dict(label_ids: Mapping[str, int]) -> dict[int, str]:
    return {0: "background", **{i: name for name, i in sorted(label_ids.items(), key=lambda t: t[1])}}


def make_ct_phantom(
    seed: int,
    *,
    shape: tuple[int, int, int] = (192, 160, 96),
    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 2.0),
    orientation: str = "RAS",
    label_ids: Mapping[str, int] | None = None,
    lesions: bool = True,
    blur_sigma_mm: float = 0.8,
    noise_hu: float | None = None,
) -> Phantom:
    """A contrast-enhanced abdominal CT phantom with its organ labels.

    Args:
        seed: Non-negative int; the same seed gives the same volume, bit for bit.
        shape: Array shape (i, j, k) in the requested ``orientation``; at least 8 voxels per axis.
        spacing_mm: Voxel size (mm) along i, j, k.
        orientation: nibabel axis codes of the array axes, e.g. "RAS", "LPS", "LAS", "PIR".
        label_ids: Structures to label and their ids (names from :data:`CT_STRUCTURES`);
            structures left out are still drawn but labelled 0. Default: :data:`CT_STRUCTURES`.
            Without "liver_tumor", lesions take the liver's id.
        lesions: Draw 1-3 hypodense liver lesions (10-30 mm, ~40 HU below liver).
        blur_sigma_mm: Gaussian partial-volume blur (mm, 0 for none).
        noise_hu: Noise standard deviation (HU); None draws 10-20 HU per case.

    Returns:
        A :class:`Phantom` with an int16 HU image in [-1024, 3071], uint8 labels, its RAS affine
        (volume centred on the world origin) and the tissue map.

    Raises:
        ValueError: On a bad shape, spacing, orientation, seed or label_ids.
    """
    seed, shape, spacing, codes = _validated_common(seed, shape, spacing_mm, orientation)
    ids = _check_label_ids(label_ids, CT_STRUCTURES)
    tissue, label, grid, transform, streams = _abdomen_maps(seed, shape, spacing, codes, ids, lesions)
    intensity_rng, noise_rng = streams
    hu = _lookup(intensity_rng, _CT_HU)
    hu["liver_lesion"] = hu["liver"] - intensity_rng.uniform(30.0, 50.0)
    hu["kidney_medulla"] = hu["kidney_cortex"] - intensity_rng.uniform(40.0, 80.0)
    hu["hepatic_vein"] = hu["vein"] + intensity_rng.uniform(-10.0, 20.0)
    lut = np.array([hu[name] for name in TISSUES], dtype=np.float32)
    sigma = float(noise_rng.uniform(10.0, 20.0)) if noise_hu is None else float(noise_hu)
    if sigma < 0:
        raise ValueError(f"noise_hu: expected a non-negative number, got {noise_hu}")
    image = _blur(lut[tissue], grid.spacing, blur_sigma_mm)
    image += _correlated_noise(noise_rng, grid.shape, sigma, 0.6)
    np.rint(image, out=image)
    np.clip(image, *_CT_CLIP_HU, out=image)
    affine, image, label, tissue = _reorient(grid, transform, image.astype(np.int16), label, tissue)
    logger.debug("CT phantom seed=%d shape=%s spacing=%s orientation=%s", seed, shape, spacing, "".join(codes))
    return Phantom(image, label, affine, _labels_dict(ids), "CT", tissue, {i: n for n, i in TISSUES.items()})


def _abdomen_maps(seed, shape, spacing, codes, ids, lesions):
    grid, transform = _canonical_grid(shape, spacing, codes)
    anatomy_ss, lesion_ss, intensity_ss, noise_ss = np.random.SeedSequence(seed).spawn(4)
    anatomy = _abdomen_anatomy(np.random.default_rng(anatomy_ss), np.random.default_rng(lesion_ss), grid)
    tissue, label = _render_abdomen(anatomy, grid, ids, lesions)
    streams = (np.random.default_rng(intensity_ss), np.random.default_rng(noise_ss))
    return tissue, label, grid, transform, streams


def make_mr_phantom(
    seed: int,
    *,
    shape: tuple[int, int, int] = (192, 160, 64),
    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 3.0),
    orientation: str = "RAS",
    label_ids: Mapping[str, int] | None = None,
    lesions: bool = False,
    blur_sigma_mm: float = 1.0,
) -> Phantom:
    """A T1-weighted-like abdominal MR phantom: the anatomy of :func:`make_ct_phantom` for the
    same seed, with MR signal (fat bright, fluid and flowing blood dark), a smooth multiplicative
    bias field and Rician noise.

    Args:
        seed: Non-negative int.
        shape: Array shape (i, j, k) in the requested ``orientation``; at least 8 per axis.
        spacing_mm: Voxel size (mm) along i, j, k.
        orientation: nibabel axis codes of the array axes.
        label_ids: As for :func:`make_ct_phantom`; default :data:`CT_STRUCTURES` without
            "liver_tumor" unless ``lesions``.
        lesions: Draw T1-hypointense liver lesions.
        blur_sigma_mm: Gaussian partial-volume blur (mm).

    Returns:
        A :class:`Phantom` with an int16 image (signal >= 0), uint8 labels and its RAS affine.

    Raises:
        ValueError: On a bad shape, spacing, orientation, seed or label_ids.
    """
    seed, shape, spacing, codes = _validated_common(seed, shape, spacing_mm, orientation)
    default = dict(CT_STRUCTURES)
    if not lesions:
        default.pop("liver_tumor")
    ids = _check_label_ids(label_ids, default)
    tissue, label, grid, transform, streams = _abdomen_maps(seed, shape, spacing, codes, ids, lesions)
    intensity_rng, noise_rng = streams
    signal = _lookup(intensity_rng, _MR_T1)
    signal["liver_lesion"] = signal["liver"] * intensity_rng.uniform(0.55, 0.7)
    lut = np.array([signal[name] for name in TISSUES], dtype=np.float32)
    image = _blur(lut[tissue], grid.spacing, blur_sigma_mm)
    bias = _smooth_field(intensity_rng, grid, intensity_rng.uniform(0.15, 0.3))
    image *= np.exp(bias)
    del bias
    sigma = np.float32(noise_rng.uniform(10.0, 20.0))
    image = _rician(noise_rng, image, sigma)
    np.rint(image, out=image)
    np.clip(image, 0, np.iinfo(np.int16).max, out=image)
    affine, image, label, tissue = _reorient(grid, transform, image.astype(np.int16), label, tissue)
    return Phantom(image, label, affine, _labels_dict(ids), "MR", tissue, {i: n for n, i in TISSUES.items()})


def _rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise (Rician statistics), float32."""
    real = rng.standard_normal(size=image.shape, dtype=np.float32)
    real *= np.float32(sigma)
    real += image
    imag = rng.standard_normal(size=image.shape, dtype=np.float32)
    imag *= np.float32(sigma)
    return np.hypot(real, imag, out=real)


# --------------------------------------------------------------------------------------------
# Brain tumour
# --------------------------------------------------------------------------------------------


def make_brain_tumor_phantom(
    seed: int,
    *,
    shape: tuple[int, int, int] = (128, 128, 40),
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 4.0),
    orientation: str = "RAS",
    channels: int = 1,
    blur_sigma_mm: float = 0.8,
) -> Phantom:
    """A head MR phantom with one glioma-like tumour (enhancing rim, necrotic core, edema).

    The label is binary: 1 = tumour (rim + core); the surrounding edema is visible on T2/FLAIR
    but not labelled. Contrasts are taken from :data:`MR_CONTRASTS` in order (T1c, T1, T2,
    FLAIR); all share the anatomy and the bias field, each has its own Rician noise.

    Args:
        seed: Non-negative int.
        shape: Array shape (i, j, k) in the requested ``orientation``; at least 8 per axis.
        spacing_mm: Voxel size (mm) along i, j, k.
        orientation: nibabel axis codes of the array axes.
        channels: Number of contrasts, 1 to 4.
        blur_sigma_mm: Gaussian partial-volume blur (mm).

    Returns:
        A :class:`Phantom` with a float32 image (i, j, k) for one channel or channel-first
        (C, i, j, k) for several, uint8 labels (i, j, k) and its RAS affine.

    Raises:
        ValueError: On a bad shape, spacing, orientation, seed or channels.
    """
    seed, shape, spacing, codes = _validated_common(seed, shape, spacing_mm, orientation)
    if (
        isinstance(channels, bool)
        or not isinstance(channels, int | np.integer)
        or not (1 <= channels <= len(MR_CONTRASTS))
    ):
        raise ValueError(f"channels: expected an int in 1..{len(MR_CONTRASTS)}, got {channels!r}")
    grid, transform = _canonical_grid(shape, spacing, codes)
    anatomy_ss, intensity_ss, noise_ss = np.random.SeedSequence(seed).spawn(3)
    tissue = _brain_tissue(np.random.default_rng(anatomy_ss), grid)
    label = np.isin(tissue, [BRAIN_TISSUES["tumor_core"], BRAIN_TISSUES["tumor_rim"]]).astype(np.uint8)
    intensity_rng = np.random.default_rng(intensity_ss)
    noise_rng = np.random.default_rng(noise_ss)
    bias = np.exp(_smooth_field(intensity_rng, grid, intensity_rng.uniform(0.1, 0.25)))
    images = []
    for contrast in MR_CONTRASTS[:channels]:
        table = _BRAIN_SIGNAL[contrast]
        lut = np.array(
            [table[name] * intensity_rng.uniform(0.93, 1.07) for name in BRAIN_TISSUES],
            dtype=np.float32,
        )
        image = _blur(lut[tissue], grid.spacing, blur_sigma_mm) * bias
        image = _rician(noise_rng, image, np.float32(noise_rng.uniform(8.0, 16.0)))
        images.append(image.astype(np.float32))
    image = images[0] if channels == 1 else np.stack(images)
    affine, image, label, tissue = _reorient(grid, transform, image, label, tissue)
    return Phantom(
        image, label, affine, {0: "background", 1: "tumor"}, "MR", tissue, {i: n for n, i in BRAIN_TISSUES.items()}
    )


def _brain_tissue(rng: np.random.Generator, grid: _Grid) -> np.ndarray:
    """Tissue map (canonical grid, uint8) of a head: scalp, skull, CSF, cortex, white matter,
    lateral ventricles, midline fissure and a tumour with mass effect."""
    # in-plane scale fits the head to the field of view; along z the head may be up to 1.4x
    # taller than the in-plane scale implies, so thick-slice stacks are not mostly empty
    s_xy = min(1.0, *(grid.fov_mm[:2] / _HEAD_FOV_MM[:2]))
    s_z = min(1.0, grid.fov_mm[2] / _HEAD_FOV_MM[2], 1.4 * s_xy)
    habitus = rng.uniform(0.93, 1.04)
    scale_v = np.array([s_xy, s_xy, s_z]) * habitus
    scale = float(np.cbrt(np.prod(scale_v)))
    semi = np.array([68.0, 86.0, 76.0]) * scale_v * np.exp(rng.normal(0, 0.03, 3))
    # vertex just below the top of the field of view, skull base cut off if it does not fit
    center_z = float(np.clip(0.46 * grid.fov_mm[2] - semi[2], -0.25 * semi[2], 0.0))
    center = np.array([rng.normal(0, 2), rng.normal(0, 3), center_z + rng.normal(0, 2)])
    modulation = rng.normal(0, 0.02, 9)
    head = _Ellipsoid(center, semi, _rotation(rng.normal(0, 3)), modulation)
    x = grid.axis(0)[:, None, None]
    y = grid.axis(1)[None, :, None]
    z = grid.axis(2)[None, None, :]
    level = head.level(x, y, z)

    # tumour: in one hemisphere, deep enough to stay inside the white matter
    side = 1.0 if rng.uniform() < 0.5 else -1.0
    t_local = np.array([side * rng.uniform(0.25, 0.45), rng.uniform(-0.35, 0.35), rng.uniform(-0.05, 0.35)])
    t_center = center + head.rotation @ (t_local * semi)
    t_level = float(head.level(*(np.float32(v) for v in t_center)))
    radius = rng.uniform(12.0, 24.0) * scale
    radius = max(4.0 * scale, min(radius, (0.7 - t_level) * semi.min() / 1.35))
    t_shape = _Ellipsoid(
        t_center,
        radius * np.exp(rng.normal(0, 0.1, 3)),
        _rotation(rng.uniform(0, 180), rng.normal(0, 10)),
        _capped(rng.normal(0, 0.06, 9), 0.3),
    )
    core = rng.uniform(0.35, 0.6)
    edema = rng.uniform(1.4, 1.9)
    # mass effect: structures near the tumour are pushed away radially
    dx = x - np.float32(t_center[0])
    dy = y - np.float32(t_center[1])
    dz = z - np.float32(t_center[2])
    width2 = np.float32(2 * (1.6 * radius) ** 2)
    push = np.float32(0.35) * np.exp(-(dx * dx + dy * dy + dz * dz) / width2)
    xs, ys, zs = x - dx * push, y - dy * push, z - dz * push
    inner_level = head.level(xs, ys, zs)

    tissue = np.zeros(grid.shape, dtype=np.uint8)
    t = BRAIN_TISSUES
    gyri = np.sin(xs / np.float32(7.0 * scale) + np.float32(rng.uniform(0, 6))) * np.sin(
        ys / np.float32(8.0 * scale) + np.float32(rng.uniform(0, 6))
    ) + np.sin(zs / np.float32(7.5 * scale) + np.float32(rng.uniform(0, 6))) * np.sin(
        xs / np.float32(9.0 * scale) + np.float32(rng.uniform(0, 6))
    )
    tissue[level <= 1.0] = t["scalp"]
    tissue[level <= 0.94] = t["skull"]
    tissue[level <= 0.87] = t["csf"]
    tissue[np.broadcast_to(inner_level <= 0.845, grid.shape) & (level <= 0.87)] = t["grey_matter"]
    white = inner_level <= np.float32(0.76) + np.float32(0.03) * gyri
    tissue[white & (level <= 0.87)] = t["white_matter"]
    # sulci reaching into the cortex
    sulci = (gyri > 1.3) & (inner_level > 0.78) & (level <= 0.87)
    tissue[sulci] = t["csf"]
    fissure = (
        (np.abs(xs - np.float32(center[0])) < np.float32(1.5 * scale))
        & (zs > np.float32(center[2] - 0.2 * semi[2]))
        & (level <= 0.87)
        & (inner_level > 0.25)
    )
    tissue[np.broadcast_to(fissure, grid.shape)] = t["csf"]
    for side_v in (1.0, -1.0):
        ventricle = _Ellipsoid(
            center + np.array([side_v * 0.12 * semi[0], 0.05 * semi[1], 0.1 * semi[2]]),
            np.array([0.09, 0.33, 0.14]) * semi * np.exp(rng.normal(0, 0.08, 3)),
            _rotation(-side_v * rng.uniform(4, 12), 0, rng.uniform(-10, 10)),
            _capped(rng.normal(0, 0.08, 9), 0.35),
        )
        tissue[np.broadcast_to(ventricle.level(xs, ys, zs) <= 1.0, grid.shape)] = t["ventricle"]
    t_level_map = t_shape.level(x, y, z)
    brain = np.isin(tissue, [t["grey_matter"], t["white_matter"]])
    tissue[(t_level_map <= edema) & brain] = t["edema"]
    inside = np.isin(tissue, [t["grey_matter"], t["white_matter"], t["edema"], t["ventricle"], t["csf"]]) & (
        level <= 0.8
    )
    tissue[(t_level_map <= 1.0) & inside] = t["tumor_rim"]
    tissue[(t_level_map <= core) & inside] = t["tumor_core"]
    return tissue


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


def write_nifti(phantom: Phantom, folder: Path) -> tuple[Path, Path]:
    """Write ``folder/image.nii.gz`` and ``folder/label.nii.gz`` atomically.

    A channel-first image (C, i, j, k) is stored as a 4D NIfTI (i, j, k, C), as in the Medical
    Segmentation Decathlon. Both files carry the phantom's affine as qform and sform (scanner).

    Args:
        phantom: The phantom to write.
        folder: Output folder; created if missing. Existing files of the same names are replaced.

    Returns:
        (image path, label path).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = phantom.image
    if image.ndim == 4:
        image = np.moveaxis(image, 0, -1)
    paths = []
    for name, data in (("image", image), ("label", phantom.label.astype(np.uint8, copy=False))):
        img = nib.Nifti1Image(data, phantom.affine)
        img.set_qform(phantom.affine, code=1)
        img.set_sform(phantom.affine, code=1)
        img.header.set_xyzt_units("mm")
        target = folder / f"{name}.nii.gz"
        temporary = folder / f".{name}-{uuid.uuid4().hex}.nii.gz"
        try:
            nib.save(img, temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        paths.append(target)
    return paths[0], paths[1]


def _lps(vector: np.ndarray) -> np.ndarray:
    return vector * np.array([-1.0, -1.0, 1.0])


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text if len(text) <= 16 else f"{value:.8g}"


def write_dicom_series(
    phantom: Phantom,
    folder: Path,
    *,
    series_uid: str | None = None,
    patient_id: str = "PHANTOM",
    series_number: int = 1,
    compress: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """Write a single-channel phantom as a DICOM series, one file per slice along k.

    CT phantoms become CT Image Storage (stored uint16 = HU + 1024, RescaleIntercept -1024),
    MR phantoms MR Image Storage (stored uint16 = rounded signal). Slice k holds
    ``image[:, :, k].T`` (rows run along j, columns along i); ImageOrientationPatient,
    ImagePositionPatient and PixelSpacing (row spacing, column spacing) come from the affine in
    DICOM's LPS patient coordinates. UIDs are derived from the image content, so writing the
    same phantom twice gives the same UIDs. The series is written into a temporary sibling
    folder that is renamed to ``folder`` at the end.

    Args:
        phantom: A phantom with a 3D image and an affine whose axes are orthogonal.
        folder: Output folder; must not exist unless it is empty or ``overwrite``.
        series_uid: SeriesInstanceUID; None derives one from the content.
        patient_id: PatientID and PatientName.
        series_number: SeriesNumber.
        compress: Encode the pixel data with RLE Lossless.
        overwrite: Replace an existing non-empty ``folder``.

    Returns:
        Paths of the files, in InstanceNumber order (k = 0 first).

    Raises:
        ValueError: On a multi-channel image, an oblique/sheared affine or an unknown modality.
        FileExistsError: If ``folder`` exists, is not empty and ``overwrite`` is False.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        ExplicitVRLittleEndian,
        RLELossless,
        generate_uid,
    )

    folder = Path(folder)
    image = phantom.image
    if image.ndim != 3:
        raise ValueError(
            f"phantom.image: DICOM series need a single-channel 3D image, got shape {image.shape}; "
            "select one channel first"
        )
    if phantom.modality not in ("CT", "MR"):
        raise ValueError(f"phantom.modality: expected 'CT' or 'MR', got {phantom.modality!r}")
    affine = np.asarray(phantom.affine, dtype=np.float64)
    axes = affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    unit = axes / spacing
    if not np.allclose(unit.T @ unit, np.eye(3), atol=1e-6):
        raise ValueError(f"phantom.affine: axes must be orthogonal for a DICOM series, got {axes}")
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder")
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{folder}: folder exists and is not empty (pass overwrite=True)")

    if phantom.modality == "CT":
        stored = np.clip(np.rint(image.astype(np.float64)) + 1024, 0, 65535).astype(np.uint16)
        intercept, sop_class = -1024.0, _CT_IMAGE_STORAGE
    else:
        stored = np.clip(np.rint(image.astype(np.float64)), 0, 65535).astype(np.uint16)
        intercept, sop_class = 0.0, _MR_IMAGE_STORAGE
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    digest.update(affine.tobytes())
    digest.update(phantom.modality.encode())
    key = digest.hexdigest()
    study_uid = generate_uid(entropy_srcs=[key, patient_id, "study"])
    frame_uid = generate_uid(entropy_srcs=[key, patient_id, "frame-of-reference"])
    series_uid = series_uid or generate_uid(entropy_srcs=[key, patient_id, str(series_number)])
    row_dir, col_dir = _lps(unit[:, 0]), _lps(unit[:, 1])  # i along a row, j down a column
    normal = np.cross(row_dir, col_dir)
    orientation = [_ds(v) for v in (*row_dir, *col_dir)]
    description = "Synthetic abdomen" if phantom.modality == "CT" else "Synthetic MR phantom"

    temporary = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex}"
    temporary.mkdir(parents=True)
    names = []
    try:
        for k in range(image.shape[2]):
            ds = Dataset()
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["DERIVED", "PRIMARY", "AXIAL"]
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(series_uid), str(k)])
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = "20240101"
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = "120000"
            ds.AccessionNumber = key[:16]
            ds.Modality = phantom.modality
            ds.Manufacturer = "medseg"
            ds.ManufacturerModelName = "synthetic phantom"
            ds.SoftwareVersions = __version__
            ds.InstitutionName = "medseg phantoms"
            ds.ReferringPhysicianName = ""
            ds.StudyDescription = description
            ds.SeriesDescription = f"{description} series {series_number}"
            ds.PatientName = f"{patient_id}^"  # family name only, unambiguous
            ds.PatientID = patient_id
            ds.PatientBirthDate = "19700101"
            ds.PatientSex = "O"
            ds.PatientAge = "054Y"
            ds.BodyPartExamined = "HEAD" if "tumor" in phantom.labels.values() else "ABDOMEN"
            ds.SliceThickness = _ds(spacing[2])
            ds.SpacingBetweenSlices = _ds(spacing[2])
            ds.PatientPosition = "HFS"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = "1"
            ds.SeriesNumber = int(series_number)
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = k + 1
            position = _lps((affine @ np.array([0.0, 0.0, float(k), 1.0]))[:3])
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.ImageOrientationPatient = orientation
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            ds.SliceLocation = _ds(float(position @ normal))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = image.shape[1]
            ds.Columns = image.shape[0]
            ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing, column spacing
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = _ds(intercept)
            ds.RescaleSlope = "1"
            ds.BurnedInAnnotation = "NO"
            ds.LossyImageCompression = "00"
            if phantom.modality == "CT":
                ds.RescaleType = "HU"
                ds.KVP = "120"
                ds.WindowCenter = "40"
                ds.WindowWidth = "400"
                ds.ConvolutionKernel = "STANDARD"
            else:
                ds.ScanningSequence = "SE"
                ds.SequenceVariant = "NONE"
                ds.ScanOptions = ""
                ds.MRAcquisitionType = "2D"
                ds.RepetitionTime = "500"
                ds.EchoTime = "10"
                ds.EchoTrainLength = 1
                ds.MagneticFieldStrength = "1.5"
                ds.ImagedNucleus = "1H"
            pixels = np.ascontiguousarray(stored[:, :, k].T)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds.file_meta = meta
            if compress:
                ds.compress(RLELossless, pixels, generate_instance_uid=False)
            else:
                ds.PixelData = pixels.tobytes()
            name = f"IM{k + 1:05d}.dcm"
            ds.save_as(temporary / name, enforce_file_format=True)
            names.append(name)
        _replace_folder(temporary, folder, overwrite)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.debug("wrote %d DICOM slices to %s", len(names), folder)
    return [folder / name for name in names]


def _replace_folder(temporary: Path, folder: Path, overwrite: bool) -> None:
    """Move a finished temporary folder into place; an old one is swapped out, then removed."""
    if folder.exists():
        if not folder.is_dir():
            raise FileExistsError(f"{folder}: exists and is not a folder")
        if any(folder.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{folder}: folder exists and is not empty")
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex}"
            os.replace(folder, old)
            os.replace(temporary, folder)
            shutil.rmtree(old, ignore_errors=True)
            return
        folder.rmdir()
    os.replace(temporary, folder)
