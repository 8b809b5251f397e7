"""Surface meshes of a label map: one STL and one OBJ per structure, in physical LPS millimetres.

The surface is scikit-image's marching cubes (Lewiner) at level 0.5 of each structure's mask,
padded by one empty voxel so that a structure cut by the field of view is still closed. Vertices
go through the label map's voxel-to-world affine and are written in **LPS** (x towards the
patient's left, y posterior, z superior), the convention of DICOM, ITK and 3D Slicer, which reads
the ``SPACE=LPS`` tag both files carry (STL header, OBJ comment). Faces are wound so that normals
point out of the structure. Two optional smoothings: a Gaussian blur of the mask (sigma in mm) before
the surface is extracted, and Taubin's lambda/mu smoothing of the mesh (``smoothing_iterations``,
``medseg segment --mesh-smoothing N``), which rounds off the voxel steps without the shrinkage of
plain Laplacian smoothing (Taubin 1995, "A signal processing approach to fair surface design").

Both formats are written here rather than through a mesh library: binary STL and OBJ are a few
lines of numpy, and no well-kept dependency of ours writes them (scikit-image extracts, VTK would
be a large dependency for two file formats). Taubin smoothing is written here too (a sparse
umbrella operator, a dozen lines of scipy) for the same reason: VTK's ``vtkWindowedSincPolyDataFilter``
or trimesh's ``filter_taubin`` would each add a dependency for this one step.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy import ndimage

from pipelines.geometry import check_affine, check_label_map
from pipelines.io.writers import Written, write_bytes
from pipelines.outputs.names import name_of, names_by_id
from pipelines.outputs.stats import present_structures

logger = logging.getLogger(__name__)

__all__ = ["MESH_SPACE", "mesh_volume_mm3", "structure_mesh", "taubin_smooth", "write_meshes"]

MESH_SPACE = "LPS"
"""The coordinate system of the meshes' vertices (mm)."""

_STL_TRIANGLE = np.dtype([("normal", "<f4", 3), ("vertices", "<f4", (3, 3)), ("attribute", "<u2")])


def taubin_smooth(
    vertices: np.ndarray, faces: np.ndarray, iterations: int, lam: float = 0.5, mu: float = -0.53
) -> np.ndarray:
    """Taubin lambda/mu smoothing: each iteration a shrinking step (``lam``) then an inflating one (``mu``).

    Each step moves every vertex towards (``lam`` > 0) or away from (``mu`` < 0) the mean of its
    neighbours (uniform umbrella weights); the pair removes the voxel staircase while keeping the
    enclosed volume close to the unsmoothed one.

    Args:
        vertices: ``(N, 3)`` float coordinates (mm).
        faces: ``(M, 3)`` vertex indices.
        iterations: lambda/mu pairs (0: vertices unchanged).
        lam, mu: step sizes, ``0 < lam < -mu`` (Taubin's pass band).

    Returns:
        The smoothed ``(N, 3)`` vertices (a new array); faces are unchanged.
    """
    from scipy import sparse

    out = np.array(vertices, dtype=np.float64)
    if iterations <= 0 or not len(faces):
        return out
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]])
    adjacency = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(out), len(out)))
    adjacency.data[:] = 1.0  # an edge shared by two faces counts once
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    mean_of_neighbours = sparse.diags(np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)) @ adjacency
    for _ in range(iterations):
        for step in (lam, mu):
            out += step * (mean_of_neighbours @ out - out)
    return out


def structure_mesh(
    mask: np.ndarray,
    affine: np.ndarray,
    offset: tuple[int, int, int] = (0, 0, 0),
    smoothing_sigma_mm: float = 0.0,
    smoothing_iterations: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The closed surface of a boolean mask in LPS mm.

    Args:
        mask: boolean ``(i, j, k)`` (e.g. a structure's bounding box).
        affine: 4x4 voxel-to-RAS matrix (mm) of the full grid.
        offset: index of ``mask[0, 0, 0]`` in the full grid.
        smoothing_sigma_mm: Gaussian blur of the mask before extraction (0: none).
        smoothing_iterations: Taubin smoothing iterations of the mesh (:func:`taubin_smooth`; 0: none).

    Returns:
        ``(vertices (N, 3) float64 LPS mm, faces (M, 3) int64)``, faces wound outwards.
    """
    from skimage.measure import marching_cubes

    field = np.pad(mask.astype(np.float32), 1)
    if smoothing_sigma_mm > 0:
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        field = ndimage.gaussian_filter(field, sigma=smoothing_sigma_mm / spacing)
    vertices, faces, _normals, _values = marching_cubes(field, level=0.5, method="lewiner")
    index = vertices - 1.0 + np.asarray(offset, dtype=np.float64)
    ras = index @ affine[:3, :3].T + affine[:3, 3]
    lps = ras * np.array([-1.0, -1.0, 1.0])
    faces = faces.astype(np.int64)
    lps = taubin_smooth(lps, faces, smoothing_iterations)  # in mm, so anisotropic voxels smooth evenly
    if _signed_volume(lps, faces) < 0:
        faces = faces[:, ::-1].copy()
    return lps, faces


def _signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    a, b, c = (vertices[faces[:, n]] for n in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def mesh_volume_mm3(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed triangle mesh (divergence theorem), mm³ for vertices in mm."""
    return abs(_signed_volume(np.asarray(vertices, np.float64), np.asarray(faces)))


def _stl_bytes(vertices: np.ndarray, faces: np.ndarray, name: str) -> bytes:
    triangles = np.zeros(len(faces), dtype=_STL_TRIANGLE)
    corners = vertices[faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    lengths = np.linalg.norm(normals, axis=1, keepdims=True)
    triangles["normal"] = np.divide(normals, lengths, out=np.zeros_like(normals), where=lengths > 0)
    triangles["vertices"] = corners
    header = f"medseg {name} SPACE={MESH_SPACE} units=mm".encode("ascii", "replace")[:80].ljust(80, b" ")
    return header + np.uint32(len(faces)).tobytes() + triangles.tobytes()


def _obj_bytes(vertices: np.ndarray, faces: np.ndarray, name: str) -> bytes:
    buffer = io.StringIO()
    buffer.write(f"# medseg surface mesh of {name}\n# SPACE={MESH_SPACE} units=mm (x left, y posterior, z superior)\n")
    buffer.write(f"o {name}\n")
    np.savetxt(buffer, vertices, fmt="v %.4f %.4f %.4f")
    np.savetxt(buffer, faces + 1, fmt="f %d %d %d")
    return buffer.getvalue().encode("utf-8")


def _file_stem(label: int, name: str) -> str:
    return f"{label}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('._') or 'label'}"


def write_meshes(
    labels: np.ndarray,
    affine: np.ndarray,
    label_names: Mapping[int, str],
    folder: str | Path,
    *,
    smoothing_sigma_mm: float = 0.0,
    smoothing_iterations: int = 0,
) -> dict[str, Written]:
    """Write ``<label>_<name>.stl`` and ``.obj`` for every structure present in ``labels``.

    Args:
        labels: integer label map ``(i, j, k)``, 0 = background.
        affine: 4x4 voxel-to-RAS matrix (mm).
        label_names: label id -> structure name.
        folder: the ``meshes/`` folder (created).
        smoothing_sigma_mm: Gaussian blur of each mask before extraction (0: none).
        smoothing_iterations: Taubin smoothing iterations of each mesh (0: none).

    Returns:
        ``{"mesh_<label>_stl": Written, "mesh_<label>_obj": Written, ...}``, each written atomically.

    Raises:
        ValueError / TypeError: a label map or affine that does not fit (:func:`pipelines.geometry.check_label_map`).
    """
    labels = check_label_map(labels, "labels")
    affine = check_affine(affine, "affine")
    if smoothing_sigma_mm < 0:
        raise ValueError(f"smoothing_sigma_mm: expected 0 or more, got {smoothing_sigma_mm}")
    if isinstance(smoothing_iterations, bool) or not isinstance(smoothing_iterations, int) or smoothing_iterations < 0:
        raise ValueError(f"mesh smoothing: expected a whole number of iterations >= 0, got {smoothing_iterations!r}")
    names = names_by_id(label_names)
    folder = Path(folder)
    written: dict[str, Written] = {}
    for label, box in present_structures(labels):
        name = name_of(label, names)
        offset = tuple(int(s.start) for s in box)
        vertices, faces = structure_mesh(
            labels[box] == label,
            affine,
            offset,  # type: ignore[arg-type]
            smoothing_sigma_mm,
            smoothing_iterations,
        )
        stem = _file_stem(label, name)
        written[f"mesh_{label}_stl"] = write_bytes(_stl_bytes(vertices, faces, name), folder / f"{stem}.stl")
        written[f"mesh_{label}_obj"] = write_bytes(_obj_bytes(vertices, faces, name), folder / f"{stem}.obj")
        logger.debug("mesh of %s: %d vertices, %d faces", name, len(vertices), len(faces))
    return written
