"""The ``anatomy="body"`` head of the brain tumour phantom: an adult head at real size, with realistic variation.

Compared with :mod:`pipelines.data.phantoms.brain` (the classic head, shrunk to fit the field of view), the
head keeps its adult size (a small field of view cuts it), and the brain volume, skull thickness, ventricle
size and tumour (diameter, necrotic core, oedema margin) are drawn from the ranges of
:mod:`pipelines.data.phantoms.anatomy_facts`. The tumour may lie anywhere in either hemisphere (frontal to
occipital, superficial to periventricular); it pushes its surroundings away (mass effect, larger for larger
tumours) and the deep grey nuclei (thalami, basal ganglia) sit beside the ventricles.
"""

from __future__ import annotations

import numpy as np

from pipelines.data.phantoms.anatomy_facts import FACTS
from pipelines.data.phantoms.shapes import CanonicalGrid, Ellipsoid, capped, rotation_matrix
from pipelines.data.phantoms.tissues import HEAD_TISSUES

__all__ = ["head_tissue"]

_BRAIN_LEVEL = 0.87  # level of the inner table of the skull at the mean semi-axis (refined per case)


def _uniform(rng: np.random.Generator, name: str, lo_frac: float = 0.1, hi_frac: float = 0.1) -> float:
    fact = FACTS[name]
    span = fact.high - fact.low
    return float(rng.uniform(fact.low + lo_frac * span, fact.high - hi_frac * span))


def head_tissue(rng: np.random.Generator, grid: CanonicalGrid) -> np.ndarray:
    """Tissue map (canonical grid, uint8, :data:`HEAD_TISSUES`) of an adult head with one glioma-like tumour.

    The vertex lies 5-20 mm below the top of the field of view; the head is centred in-plane (±3 mm).
    """
    # sizes: brain volume -> semi-axes of the head; scalp, skull and CSF layers in mm
    aspect = np.array([68.0, 86.0, 76.0]) * np.exp(rng.normal(0, 0.04, 3))
    scalp_mm, skull_mm, csf_mm = rng.uniform(4.0, 7.0), _uniform(rng, "skull_thickness"), rng.uniform(2.0, 4.0)
    brain_ml = _uniform(rng, "brain_volume", 0.15, 0.2)
    # the brain (grey + white matter) fills the level 0.845/0.87 of the intracranial ellipsoid, minus ventricles
    r_brain = np.cbrt(brain_ml * 1000.0 / (4 / 3 * np.pi * np.prod(aspect))) * 0.845 / 0.87
    semi = aspect * r_brain + scalp_mm + skull_mm + csf_mm
    mean = float(np.cbrt(np.prod(semi)))
    l_skull = 1.0 - scalp_mm / mean
    l_csf = l_skull - skull_mm / mean
    l_brain = l_csf - csf_mm / mean
    center_z = 0.5 * grid.fov_mm[2] - semi[2] - rng.uniform(5.0, 20.0)
    center = np.array([rng.normal(0, 3), rng.normal(0, 3), center_z])
    head = Ellipsoid(center, semi, rotation_matrix(rng.normal(0, 3)), rng.normal(0, 0.02, 9))
    x = grid.axis(0)[:, None, None]
    y = grid.axis(1)[None, :, None]
    z = grid.axis(2)[None, None, :]
    level = head.level(x, y, z)

    # tumour: diameter from the literature, anywhere in a hemisphere where it fits inside the brain
    radius = _uniform(rng, "tumor_diameter", 0.0, 0.15) / 2
    for _attempt in range(60):
        local = rng.uniform(-1, 1, 3)
        local[0] = np.sign(local[0] or 1.0) * (0.12 + 0.88 * abs(local[0]))  # off the midline
        local *= l_brain * rng.uniform(0.2, 0.85) / max(np.linalg.norm(local), 1e-6)
        t_center = center + head.rotation @ (local * semi)
        t_level = float(head.level(*(np.float32(v) for v in t_center)))
        room = (l_brain - 0.06 - t_level) * semi.min()
        if room >= 0.8 * radius:
            break
        radius = max(6.0, 0.9 * radius)
    radius = float(max(4.0, min(radius, room)))
    t_shape = Ellipsoid(
        t_center,
        radius * np.exp(rng.normal(0, 0.1, 3)),
        rotation_matrix(rng.uniform(0, 180), rng.normal(0, 10)),
        capped(rng.normal(0, 0.06, 9), 0.3),
    )
    core = rng.uniform(0.3, 0.65)  # necrotic core: this fraction of the enhancing rim's radius
    edema = 1.0 + _uniform(rng, "edema_margin", 0.0, 0.0) / radius
    # mass effect: points near the tumour sample the anatomy closer to its centre (structures pushed away)
    dx, dy, dz = (c - np.float32(v) for c, v in zip((x, y, z), t_center, strict=True))
    width2 = np.float32(2 * (1.6 * (radius + 5.0)) ** 2)
    strength = np.float32(min(0.5, 0.15 + radius / 80.0))
    push = strength * np.exp(-(dx * dx + dy * dy + dz * dz) / width2)
    xs, ys, zs = x - dx * push, y - dy * push, z - dz * push
    inner = head.level(xs, ys, zs)

    t = HEAD_TISSUES
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    phases = rng.uniform(0, 6, 4).astype(np.float32)
    gyri = np.sin(xs / np.float32(7.0) + phases[0]) * np.sin(ys / np.float32(8.0) + phases[1]) + np.sin(
        zs / np.float32(7.5) + phases[2]
    ) * np.sin(xs / np.float32(9.0) + phases[3])
    intracranial = level <= l_csf
    tissue[level <= 1.0] = t["scalp"]
    tissue[level <= l_skull] = t["skull"]
    tissue[intracranial] = t["csf"]
    tissue[np.broadcast_to(inner <= l_brain, grid.shape) & intracranial] = t["grey_matter"]
    white = inner <= np.float32(l_brain - 0.085) + np.float32(0.03) * gyri
    tissue[white & intracranial] = t["white_matter"]
    tissue[(gyri > 1.3) & (inner > l_brain - 0.065) & intracranial] = t["csf"]
    fissure = (np.abs(xs - np.float32(center[0])) < np.float32(1.5)) & (zs > np.float32(center[2] - 0.2 * semi[2]))
    tissue[np.broadcast_to(fissure & (inner > 0.25), grid.shape) & intracranial] = t["csf"]
    # lateral ventricles (volume from the literature) and deep grey nuclei beside them
    ventricle_scale = np.cbrt(_uniform(rng, "lateral_ventricles_volume", 0.05, 0.3) / 15.0)
    for side in (1.0, -1.0):
        nuclei = Ellipsoid(
            center + np.array([side * 0.2 * semi[0], -0.02 * semi[1], -0.02 * semi[2]]),
            np.array([0.1, 0.2, 0.13]) * semi * np.exp(rng.normal(0, 0.06, 3)),
            rotation_matrix(side * rng.uniform(5, 15)),
            capped(rng.normal(0, 0.06, 9), 0.3),
        )
        tissue[np.broadcast_to(nuclei.level(xs, ys, zs) <= 1.0, grid.shape) & intracranial] = t["deep_grey_matter"]
    for side in (1.0, -1.0):
        ventricle = Ellipsoid(
            center + np.array([side * 0.12 * semi[0], 0.05 * semi[1], 0.1 * semi[2]]),
            np.array([0.09, 0.33, 0.14]) * semi * ventricle_scale * np.exp(rng.normal(0, 0.08, 3)),
            rotation_matrix(-side * rng.uniform(4, 12), 0, rng.uniform(-10, 10)),
            capped(rng.normal(0, 0.08, 9), 0.35),
        )
        tissue[np.broadcast_to(ventricle.level(xs, ys, zs) <= 1.0, grid.shape) & intracranial] = t["ventricle"]
    # tumour: oedema in the parenchyma, enhancing rim, necrotic core (nested levels of one shape)
    t_level = t_shape.level(x, y, z)
    parenchyma = np.isin(tissue, [t["grey_matter"], t["white_matter"], t["deep_grey_matter"]])
    tissue[(t_level <= edema) & parenchyma] = t["edema"]
    inside = intracranial & (level <= l_brain)
    tissue[(t_level <= 1.0) & inside] = t["tumor_rim"]
    tissue[(t_level <= core) & inside] = t["tumor_core"]
    return tissue
