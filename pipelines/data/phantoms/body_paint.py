"""Painting the ``anatomy="body"`` trunk (:mod:`pipelines.data.phantoms.body`) into tissue and label maps.

Per slab of slices, in anatomical order: the body wall (skin, subcutaneous fat, muscle) around the
thoraco-abdominal cavity, the diaphragm and the lungs above it with the mediastinum between them, the
shapes of :class:`~pipelines.data.phantoms.body.Body` (muscles, heart, bowel, organs, vessels), the spine
(vertebral bodies, discs, arches, processes; lumbar vertebrae taller than thoracic), the ribs with their
costal cartilages and the sternum, and the pelvic bones. Clip masks the shapes use: ``body`` (inside the
skin), ``cavity`` (inside the muscle wall), ``thorax`` (cavity above the diaphragm), ``abdomen`` (cavity
below it).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pipelines.data.phantoms.abdomen import paint_in_slabs, structure_label_ids
from pipelines.data.phantoms.body import Body
from pipelines.data.phantoms.render import Canvas, paint
from pipelines.data.phantoms.shapes import CanonicalGrid
from pipelines.data.phantoms.tissues import BODY_TISSUES

__all__ = ["render_body"]

_DIAPHRAGM_MM = 5.0
_T = BODY_TISSUES


def _wall_axes(body: Body, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cavity semi-axes (a, b_front, b_back) at the slices ``z`` (mm), with the visceral fat padding."""
    w = body.wall
    order = np.argsort(w["z"])  # type: ignore[arg-type]
    kz = np.asarray(w["z"])[order]
    a, bf, bb = (np.interp(z, kz, np.asarray(w[k])[order]) for k in ("a", "b_front", "b_back"))
    below = np.clip((body.landmarks["dome_right"] - 40.0 - z) / 40.0, 0.0, 1.0)
    pad = float(w["visceral"]) * below
    return a + pad, bf + pad, bb + 0.4 * pad


def _outline(body: Body, x, y, a: np.ndarray, bf: np.ndarray, bb: np.ndarray) -> np.ndarray:
    """Boolean (nx, ny, nz): inside the superellipse of semi-axes per slice (1D arrays over z)."""
    p = float(body.wall["p"])
    dy = (y - float(body.wall["y0"]))[:, None]
    b = np.where(dy >= 0, bf[None, :], bb[None, :])
    term_x = (np.abs(x) ** p)[:, None, None] * (np.maximum(a, 1.0) ** -p)[None, None, :]
    term_y = (np.abs(dy) / np.maximum(b, 1.0)) ** p
    return (term_x + term_y[None, :, :]) <= 1.0


def _diaphragm(body: Body, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height (mm, (nx, ny)) of the diaphragm surface: two domes, lower posteriorly (costophrenic recesses)."""
    lm = body.landmarks
    out = np.full((len(x), len(y)), -np.inf, dtype=np.float32)
    for cx, cy, dome in ((55.0, 0.0, lm["dome_right"]), (-60.0, -15.0, lm["dome_left"])):
        dx = (x[:, None] - cx) / 85.0
        dy = (y[None, :] - cy) / 80.0
        back = np.where(dy < 0, 1.5, 1.0)
        out = np.maximum(out, dome - 35.0 * (dx * dx + back * dy * dy))
    return out


def _paint_wall(canvas: Canvas, body: Body, zd: np.ndarray) -> None:
    """Skin, fat, muscle, cavity, diaphragm, lungs and mediastinum; sets the clip masks."""
    x, y, z = canvas.x, canvas.y, canvas.z
    w, lm = body.wall, body.landmarks
    a, bf, bb = _wall_axes(body, z)
    chest = np.clip((z - (lm["dome_right"] - 60.0)) / 40.0, 0.0, 1.0)
    m = float(w["muscle"]) + 6.0 * chest
    f = float(w["fat"]) * (1.0 - 0.3 * chest)
    s = float(w["skin"])
    cavity = _outline(body, x, y, a, bf, bb)
    muscle = _outline(body, x, y, a + m, bf + m, bb + m + 24.0)
    fat = _outline(body, x, y, a + m + f, bf + m + f, bb + m + 24.0 + 0.8 * f)
    skin = _outline(body, x, y, a + m + f + s, bf + m + f + s, bb + m + 24.0 + 0.8 * f + s)
    tissue = canvas.tissue
    tissue[skin] = _T["skin"]
    tissue[fat] = _T["fat"]
    tissue[muscle] = _T["muscle"]
    tissue[cavity] = _T["visceral_fat"]
    z3 = z[None, None, :]
    surface = zd[:, :, None]
    thorax = cavity & (z3 > surface)
    band = cavity & (z3 <= surface) & (z3 > surface - _DIAPHRAGM_MM)
    tissue[thorax] = _T["mediastinal_fat"]
    tissue[band] = _T["diaphragm"]
    heart = np.clip(1.0 - np.abs(z - (lm["dome_left"] + 48.0)) / 70.0, 0.0, 1.0)
    sx = 22.0 + 10.0 * heart  # the heart itself is painted over the lungs afterwards
    medi = ((x[:, None, None] + 8.0) / sx[None, None, :]) ** 2 + ((y[None, :, None] - 10.0) / 95.0) ** 2 <= 1.0
    lung_top = lm["lung_apex"] - 0.012 * np.maximum(np.abs(x) - 45.0, 0.0) ** 2
    lung = thorax & ~medi & (z3 < lung_top[:, None, None])
    tissue[lung] = _T["lung"]
    ring = _outline(body, x, y, a + 10.0, bf + 10.0, bb + 10.0) & ~cavity
    canvas.masks.update(
        body=skin, cavity=cavity, thorax=thorax, abdomen=cavity & (z3 <= surface - _DIAPHRAGM_MM), ring=ring
    )
    canvas.masks["_a"] = a  # type: ignore[assignment]
    canvas.masks["_bf"] = bf  # type: ignore[assignment]


def _paint_spine(canvas: Canvas, body: Body) -> None:
    """Vertebrae from L5 up: body (cortex, marrow), discs, arch, spinous and transverse processes."""
    lm = body.landmarks
    x = canvas.x[:, None, None]
    y = canvas.y[None, :, None]
    z = canvas.z
    # vertebral level coordinate: 5 lumbar levels of ~36 mm, then thoracic levels of ~26 mm
    s1 = lm["l5_s1"]
    t12 = s1 + 5 * 36.0
    u = np.where(z < t12, (z - s1) / 36.0, 5.0 + (z - t12) / 26.0)
    phase = (u % 1.0)[None, None, :]
    lumbar = np.clip((t12 + 40.0 - z) / 80.0, 0.0, 1.0)
    a = (17.0 + 6.0 * lumbar)[None, None, :]
    b = (14.0 + 3.0 * lumbar)[None, None, :]
    ys = (
        float(body.wall["spine_y"])
        + 6.0 * np.exp(-(((z + 60.0) / 90.0) ** 2))
        - 5.0 * np.clip((z - 60.0) / 200.0, 0, 1)
    )[None, None, :]
    valid = (z > s1)[None, None, :]
    disc = phase < (0.2 + 0.07 * lumbar)[None, None, :]
    level = np.sqrt((x / a) ** 2 + ((y - ys) / b) ** 2)
    vert = (level <= 1.0) & valid
    canal_y = ys - b - 9.0
    canal_d = np.sqrt(x * x + (y - canal_y) ** 2)
    canal = (canal_d <= 9.0) & valid
    arch = (canal_d <= 15.0) & (y < ys) & valid
    mid = (phase > 0.35) & (phase < 0.75)
    spinous = (np.abs(x) <= 5.5) & (y < canal_y) & (y >= canal_y - 22.0) & mid & valid
    t_off = np.abs(y - canal_y - 6.0)
    transverse = (np.abs(x) <= 1.7 * a - t_off) & (t_off <= 4.0) & mid & (phase < 0.55) & valid
    tissue, label = canvas.tissue, canvas.label
    for mask, name in (
        (vert, "bone_marrow"),
        (vert & (level > 0.8) & ~disc, "bone_cortical"),
        (vert & disc, "disc"),
        (arch & mid, "bone_cortical"),
        (spinous | transverse, "bone_cortical"),
        (arch & ~mid & ~disc, "bone_cortical"),
        (canal, "csf"),
    ):
        mask = np.broadcast_to(mask, tissue.shape)
        tissue[mask] = _T[name]
        label[mask] = 0


def _paint_ribs(canvas: Canvas, body: Body) -> None:
    """Ribs descending anteriorly in the chest wall, costal cartilage in front, the sternum in the midline."""
    w, lm = body.wall, body.landmarks
    x = canvas.x[:, None, None]
    y = canvas.y[None, :, None]
    z = canvas.z[None, None, :]
    a = canvas.masks["_a"][None, None, :]
    bf = canvas.masks["_bf"][None, None, :]
    ring = canvas.masks["ring"]
    shifted = z + float(w["rib_slope"]) * (y - float(w["spine_y"]))
    band = ((shifted / float(w["rib_period"]) + float(w["rib_phase"])) % 1.0) < 0.45
    zone = (shifted > lm["rib_bottom"]) & (shifted < lm["lung_apex"] + 10.0)
    ribs = ring & band & zone & (np.abs(x) > 0.18 * a)
    front = y > float(w["y0"]) + 0.55 * bf
    sternum = ring & (np.abs(x) < 16.0) & (y > 0) & (z > lm["dome_right"] - 40.0) & (z < lm["lung_apex"] - 30.0)
    tissue, label = canvas.tissue, canvas.label
    for mask, name in ((ribs & ~front, "rib"), (ribs & front, "cartilage"), (sternum, "bone_marrow")):
        mask = np.broadcast_to(mask, tissue.shape)
        tissue[mask] = _T[name]
        label[mask] = 0


def render_body(
    body: Body, grid: CanonicalGrid, label_ids: Mapping[str, int], lesions: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Paint tissue (:data:`BODY_TISSUES`) and label maps of ``body`` on the canonical grid, slab by slab.

    Args:
        body: The case drawn by :func:`~pipelines.data.phantoms.body.body_anatomy` (its ``offset`` places the grid).
        grid: The canonical grid.
        label_ids: Structure name -> label id; structures left out are painted with id 0.
        lesions: Paint the liver lesions (``liver_tumor``, or liver when that is not in ``label_ids``).

    Returns:
        (tissue, label), both uint8 of ``grid.shape``.
    """
    label_of = structure_label_ids(label_ids)
    x, y, z = (grid.axis(i) + np.float32(body.offset[i]) for i in range(3))
    zd = _diaphragm(body, x, y)
    ops = body.ops + (body.lesion_ops if lesions else [])
    margin = body.warp.max_mm + 1.0

    def paint_slab(canvas: Canvas) -> None:
        _paint_wall(canvas, body, zd)
        for op in ops:
            paint(canvas, op, label_of, margin)
        _paint_spine(canvas, body)
        _paint_ribs(canvas, body)
        for op in body.bone_ops:
            paint(canvas, op, label_of, margin)

    return paint_in_slabs(grid, x, y, z, body.warp, paint_slab)
