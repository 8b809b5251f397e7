"""The head of the brain tumour phantom: scalp, skull, CSF, cortex, white matter, ventricles and a tumour."""

from __future__ import annotations

import numpy as np

from pipelines.data.phantoms.shapes import CanonicalGrid, Ellipsoid, capped, rotation_matrix
from pipelines.data.phantoms.tissues import BRAIN_TISSUES, VARIED_BRAIN_TISSUES

__all__ = ["TUMOUR_KINDS", "brain_tissue"]

TUMOUR_KINDS: dict[str, float] = {"ring": 0.35, "solid": 0.4, "patchy": 0.25}
"""The tumours a ``varied`` head draws, with their probabilities: ring-enhancing round a necrotic core (the
only kind of the default phantom), solidly enhancing with a mottled texture, and enhancing with several
small necrotic pockets. Facts: glioblastomas typically enhance in a ring round necrosis; lower-grade and
many other enhancing tumours (metastases, lymphoma, meningioma) enhance solidly or patchily, without one
central core."""

# Reference field of view (mm, RAS axes) the head is drawn for; smaller fields of view shrink it.
_HEAD_FOV_MM = np.array([160.0, 196.0, 172.0])


def brain_tissue(
    rng: np.random.Generator, grid: CanonicalGrid, varied: np.random.Generator | None = None
) -> np.ndarray:
    """Tissue map (canonical grid, uint8) of a head: scalp, skull, CSF, cortex, white matter,
    lateral ventricles, midline fissure and a tumour with mass effect.

    ``varied`` (a random stream of its own; the tissue classes are then :data:`VARIED_BRAIN_TISSUES`): the
    scalp holds a layer of subcutaneous fat and the skull its diploe (fatty marrow), both bright on T1;
    the tumour may reach the cortex and is one of :data:`TUMOUR_KINDS`. Everything else is drawn from
    ``rng`` exactly as without it.
    """
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
    head = Ellipsoid(center, semi, rotation_matrix(rng.normal(0, 3)), modulation)
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
    if varied is not None:  # anywhere in a hemisphere, up to the cortex (the rng above is drawn all the same)
        t_local = np.array([side * varied.uniform(0.2, 0.6), varied.uniform(-0.5, 0.5), varied.uniform(-0.1, 0.45)])
        t_center = center + head.rotation @ (t_local * semi)
        t_level = float(head.level(*(np.float32(v) for v in t_center)))
    reach = 0.7 if varied is None else 0.84  # how far out the tumour may reach (the cortex ends at 0.845)
    radius = max(4.0 * scale, min(radius, (reach - t_level) * semi.min() / 1.35))
    t_shape = Ellipsoid(
        t_center,
        radius * np.exp(rng.normal(0, 0.1, 3)),
        rotation_matrix(rng.uniform(0, 180), rng.normal(0, 10)),
        capped(rng.normal(0, 0.06, 9), 0.3),
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
        ventricle = Ellipsoid(
            center + np.array([side_v * 0.12 * semi[0], 0.05 * semi[1], 0.1 * semi[2]]),
            np.array([0.09, 0.33, 0.14]) * semi * np.exp(rng.normal(0, 0.08, 3)),
            rotation_matrix(-side_v * rng.uniform(4, 12), 0, rng.uniform(-10, 10)),
            capped(rng.normal(0, 0.08, 9), 0.35),
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
    if varied is not None:
        _vary(varied, tissue, level, t_level_map <= 1.0, t_shape, (x, y, z), scale)
    return tissue


def _vary(
    rng: np.random.Generator,
    tissue: np.ndarray,
    level: np.ndarray,
    in_tumour: np.ndarray,
    tumour: Ellipsoid,
    axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    scale: float,
) -> None:
    """Paint the scalp fat, the diploe and a tumour of a drawn kind into ``tissue`` (in place).

    Facts: the scalp's subcutaneous fat (a few mm) and the diploe's fatty marrow are the brightest tissues
    of a T1-weighted head, brighter than enhancing tumour; the outer and inner tables of the skull are
    dark cortical bone.
    """
    t = VARIED_BRAIN_TISSUES
    fat_outer, fat_inner = 1.0 - rng.uniform(0.008, 0.015), rng.uniform(0.955, 0.965)
    tissue[(level <= fat_outer) & (level > fat_inner)] = t["scalp_fat"]
    tissue[(level <= rng.uniform(0.918, 0.925)) & (level > rng.uniform(0.885, 0.892))] = t["diploe"]
    kind = str(rng.choice(list(TUMOUR_KINDS), p=list(TUMOUR_KINDS.values())))
    if kind == "ring":
        return
    tumour_voxels = np.isin(tissue, [t["tumor_rim"], t["tumor_core"]]) & in_tumour
    tissue[tumour_voxels] = t["tumor_solid"]
    x, y, z = axes
    # a mottled texture: the sum of two products of sines at 4-8 mm, its upper part less enhancing
    mottle = sum(
        np.sin(x / np.float32(rng.uniform(4.0, 8.0) * scale) + np.float32(rng.uniform(0, 6)))
        * np.sin(y / np.float32(rng.uniform(4.0, 8.0) * scale) + np.float32(rng.uniform(0, 6)))
        * np.sin(z / np.float32(rng.uniform(4.0, 8.0) * scale) + np.float32(rng.uniform(0, 6)))
        for _ in range(2)
    )
    tissue[tumour_voxels & (mottle > rng.uniform(0.2, 0.6))] = t["tumor_mottled"]
    if kind == "patchy":
        for _ in range(int(rng.integers(2, 6))):
            direction = rng.normal(size=3)
            local = direction / np.linalg.norm(direction) * rng.uniform(0.0, 0.6)
            pocket = Ellipsoid(
                tumour.center + tumour.rotation @ (local * tumour.semi),
                tumour.semi * rng.uniform(0.15, 0.3),
                rotation_matrix(rng.uniform(0, 180)),
                capped(rng.normal(0, 0.08, 9), 0.3),
            )
            tissue[tumour_voxels & (pocket.level(x, y, z) <= 1.0)] = t["tumor_core"]
