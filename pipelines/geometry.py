"""Voxel grids in physical space: the one place that knows LPS, RAS, affines and label maps.

Conventions used everywhere in medseg:

- an *affine* is a 4x4 float64 matrix from voxel indices ``(i, j, k, 1)`` to **RAS** world
  coordinates in mm, as nibabel and MONAI's ``MetaTensor`` use;
- DICOM and ITK (SimpleITK, NRRD, MetaImage) describe the same grid in **LPS** with an origin, a
  spacing per axis and a row-major 3x3 direction matrix. :func:`affine_from_itk` and
  :func:`itk_from_affine` convert between the two, exactly (no rounding).

Only numpy is imported here: every layer of the package may use this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "GRID_TOLERANCE_MM",
    "LPS_TO_RAS",
    "Grid",
    "affine_from_itk",
    "affine_text",
    "check_affine",
    "check_label_map",
    "grids_match",
    "itk_from_affine",
    "lps_to_ras",
    "spacing_from_affine",
]

# Two grids whose affines differ by less than this (mm) are the same grid.
GRID_TOLERANCE_MM = 1e-3
# DICOM's patient coordinates are LPS; nibabel and MONAI use RAS. The two differ by this flip,
# which is its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(vector: Sequence[float] | np.ndarray) -> np.ndarray:
    """A point or direction flipped between LPS and RAS (the same flip both ways)."""
    return np.asarray(vector, dtype=np.float64) * np.array([-1.0, -1.0, 1.0])


def affine_from_itk(origin: Sequence[float], spacing: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """4x4 RAS affine from ITK/DICOM geometry.

    Args:
        origin: LPS position of voxel (0, 0, 0) in mm (extra dimensions beyond 3 are ignored).
        spacing: voxel size along i, j, k in mm.
        direction: row-major direction cosines, ``dim * dim`` numbers (ITK's ``GetDirection``).
    """
    dim = round(len(direction) ** 0.5)
    if dim * dim != len(direction) or dim < 3:
        raise ValueError(f"expected a row-major 3x3 direction matrix, got {len(direction)} numbers")
    rotation = np.asarray(direction, dtype=np.float64).reshape(dim, dim)[:3, :3]
    lps = np.eye(4)
    lps[:3, :3] = rotation @ np.diag(np.asarray(spacing, dtype=np.float64)[:3])
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)[:3]
    return LPS_TO_RAS @ lps


def itk_from_affine(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """ITK/DICOM geometry ``(origin_lps, spacing, direction_row_major)`` from a RAS affine."""
    lps = LPS_TO_RAS @ check_affine(affine, "affine")
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return tuple(lps[:3, 3].tolist()), tuple(spacing.tolist()), tuple(direction.ravel().tolist())


def sitk_image(array: np.ndarray, affine: np.ndarray) -> Any:
    """A SimpleITK image of an (i, j, k) array on the grid of its RAS ``affine`` (SimpleITK holds
    arrays as (k, j, i) and its geometry in LPS; this is the one place that turns ours into its)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    origin, spacing, direction = itk_from_affine(affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def spacing_from_affine(affine: Any) -> tuple[float, float, float]:
    """Voxel size in mm from a voxel-to-world affine.

    Args:
        affine: ``(4, 4)`` (or ``(3, 3)``, or a batch of one) matrix, numpy or torch.

    Returns:
        ``(si, sj, sk)`` in mm: the lengths of the first three columns of ``affine[:3, :3]``.

    Raises:
        ValueError: the affine is not at least 3x3 or gives a zero or non-finite voxel size.
    """
    if hasattr(affine, "detach"):  # a torch tensor; torch itself is not imported here
        affine = affine.detach().cpu().numpy()
    a = np.asarray(affine, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.shape[0] < 3 or a.shape[1] < 3:
        raise ValueError(f"expected a (4, 4) affine, got shape {a.shape}")
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"the affine gives voxel size {spacing.tolist()} mm; expected three positive numbers")
    return float(spacing[0]), float(spacing[1]), float(spacing[2])


def check_affine(affine: Any, what: str) -> np.ndarray:
    """The affine as a finite, invertible 4x4 float64 array, or a ``ValueError`` naming ``what``."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"{what}: expected a 4x4 affine, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: affine has non-finite entries: {affine_text(a)}")
    if abs(np.linalg.det(a[:3, :3])) == 0.0:
        raise ValueError(
            f"{what}: affine is singular (a zero voxel size or parallel axes): {affine_text(a)}; "
            "expected three independent axes with positive spacing"
        )
    return a


def check_label_map(labels: Any, what: str) -> np.ndarray:
    """A 3D label map of non-negative integers ``(i, j, k)``; booleans are viewed as uint8.

    Raises:
        ValueError: not 3D, or negative values.
        TypeError: not an integer (or boolean) array.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"{what}: expected a 3D label map (i, j, k), got shape {labels.shape}")
    if labels.dtype == np.bool_:
        return labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{what}: label map must have an integer dtype, got {labels.dtype}")
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise ValueError(f"{what}: label map has negative values (min {labels.min()}); expected ids >= 0")
    return labels


def affine_text(affine: np.ndarray) -> str:
    """The top three rows of an affine on one line, e.g. ``[[1.5, 0, 0, -90], ...]``."""
    return "[" + ", ".join("[" + ", ".join(f"{v:.6g}" for v in row) + "]" for row in np.asarray(affine)[:3]) + "]"


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid: spatial shape ``(I, J, K)`` and its 4x4 RAS affine in mm."""

    shape: tuple[int, ...]
    affine: np.ndarray

    @property
    def spacing_mm(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    def describe(self) -> str:
        """``shape (I, J, K) spacing axbxc mm origin (x, y, z) mm``, for messages."""
        spacing = "x".join(f"{s:.4g}" for s in self.spacing_mm)
        origin = ", ".join(f"{o + 0.0:.4g}" for o in self.affine[:3, 3])  # + 0.0 turns -0.0 into 0
        return f"shape {self.shape} spacing {spacing} mm origin ({origin}) mm"


def grids_match(a: Grid, b: Grid, tolerance_mm: float = GRID_TOLERANCE_MM, *, allow_reorder: bool = True) -> bool:
    """True when two grids hold the same voxel centres (affine entries within ``tolerance_mm``).

    With ``allow_reorder`` a different axis order or direction in storage also matches (a label
    saved LAS for an LPS image): the voxels are the same, only their storage order differs.
    """
    if tuple(a.shape) == tuple(b.shape) and np.allclose(a.affine, b.affine, atol=tolerance_mm, rtol=0):
        return True
    if not allow_reorder:
        return False
    # index_b -> index_a; a pure axis permutation/flip has one +-1 per row and column.
    transform = np.linalg.solve(a.affine, b.affine)
    rotation = np.rint(transform[:3, :3])
    if not (np.abs(rotation).sum(axis=0) == 1).all() or not (np.abs(rotation).sum(axis=1) == 1).all():
        return False
    permuted_shape = tuple(int(abs(rotation[r]) @ np.asarray(b.shape)) for r in range(3))
    if permuted_shape != tuple(a.shape):
        return False
    exact = np.eye(4)
    exact[:3, :3] = rotation
    # a flipped axis starts at the far end of a's index range
    exact[:3, 3] = [(a.shape[r] - 1) if rotation[r].sum() < 0 else 0 for r in range(3)]
    return bool(np.allclose(a.affine @ exact, b.affine, atol=tolerance_mm, rtol=0))
