"""Organ variants of the ``anatomy="body"`` trunk, each drawn from a random stream of its own.

:func:`pipelines.data.phantoms.body.body_anatomy` draws every case's anatomy from one stream; a variant
(a larger renal sinus, a larger and lower spleen) changes one organ of that anatomy from a stream spawned for
it, so the rest of the case stays the same voxels and the default phantoms stay bit for bit what the shipped
weights were trained on. The sizes and positions are facts from the literature, with their sources.
"""

from __future__ import annotations

import numpy as np

from pipelines.data.phantoms.shapes import Ellipsoid

__all__ = ["RENAL_SINUSES", "SMALL_SINUS", "SPLEENS", "renal_sinus_shapes", "sinus_scale", "varied_spleen"]

RENAL_SINUSES: tuple[str, ...] = ("small", "varied")
"""How large the renal sinus of the ``perirenal_fat`` kidneys is: ``small`` (0.45 of the kidney's semi-axes in
every case, a young slim adult's) or ``varied`` (0.45 to 0.70, larger in heavier patients; see
:func:`sinus_scale`)."""

SPLEENS: tuple[str, ...] = ("typical", "varied")
"""How the spleen is sized and placed: ``typical`` (the anatomy stream's spleen, which renders at about
70-130 mL and 65-85 mm craniocaudal, high under the left dome) or ``varied`` (larger, longer and lower
over the literature's range; see :func:`varied_spleen`)."""

SMALL_SINUS = 0.45  # of the kidney's semi-axes across (0.1 more along its length)


def varied_spleen(spleen: Ellipsoid, rng: np.random.Generator) -> Ellipsoid:
    """The anatomy stream's spleen made larger, longer and lower, drawing only from ``rng``.

    Facts: the adult spleen on CT is 107-314 mL (mean 215 mL; Prassopoulos et al. 1997) and 80-130 mm
    long (Loftus & Metreweli 1998); it lies against the diaphragm under ribs 9-11, its long axis along
    the 10th rib, and its visceral surface carries the renal impression of the upper half of the left
    kidney, its lower pole posterolateral at the kidney's level. The typical spleen here is carved by the
    diaphragm and its neighbours to 70-130 mL and 65-85 mm craniocaudal, its lower pole at the top third
    of the kidney: the small, high end of those ranges. Here the ellipsoid grows by a volume factor (the
    carving takes about half of it), stretches along its craniocaudal axis at constant volume and moves
    down, outwards (to the patient's left) and a little back, so the rendered spleen covers the
    literature's volumes and lengths and reaches down beside the kidney.
    """
    volume = rng.uniform(1.3, 2.4)
    stretch = rng.uniform(1.0, 1.25)
    shift = np.array([-rng.uniform(6.0, 20.0), -rng.uniform(0.0, 8.0), -rng.uniform(5.0, 28.0)])
    semi = spleen.semi * np.cbrt(volume) * np.array([1 / np.sqrt(stretch), 1 / np.sqrt(stretch), stretch])
    return Ellipsoid(spleen.center + shift, semi, spleen.rotation, spleen.modulation)


def sinus_scale(rng: np.random.Generator, habitus: float) -> float:
    """The size of one renal sinus, as a fraction of its kidney's semi-axes across: 0.45 to 0.70.

    Facts: renal sinus fat grows with age and with visceral adiposity (Foster et al. 2011, Hypertension
    58:784, Framingham Heart Study CT: sinus fat volume rises with body mass index and visceral fat),
    while the parenchyma thins with age (normal adult parenchymal thickness about 15-20 mm, less in the
    elderly). In an older or heavier adult the sinus fills much of the kidney's central cross-section and
    the parenchyma is a rim around it. Here the size leans on the patient size and keeps a random part for
    age, which the phantoms do not otherwise model.
    """
    return SMALL_SINUS + 0.25 * float(np.clip(0.6 * habitus + 0.4 * rng.uniform(), 0.0, 1.0))


def renal_sinus_shapes(kidney: Ellipsoid, side: int, scale: float = SMALL_SINUS) -> tuple[Ellipsoid, Ellipsoid]:
    """The renal sinus (fat) and pelvis (urine) of a kidney, which make it a bean, not a solid ellipsoid.

    Facts: the sinus is the cavity inside the kidney's medial border, opening at the hilum, which faces
    medially and somewhat anteriorly; it holds fat, the renal vessels' branches and the collecting
    system, whose pelvis leaves through the hilum into the ureter. Renal sinus fat on adult CT is of the
    order of 10 mL per kidney (more with age and body mass). The sinus and pelvis are not part of the
    kidney's label (the parenchyma is), and are painted only where the kidney is (the pelvis only into
    the sinus fat). Derived from the kidney and ``scale`` (the sinus's semi-axes across, as a fraction of
    the kidney's), so they draw nothing from the random stream. A larger sinus sits nearer the kidney's
    centre, so that parenchyma encloses it above and below the hilum (a ring on axial slices) and it opens
    medially at the hilum.
    """
    medial = np.array([-side * 0.87, 0.5, 0.0])  # towards the spine and a little anterior (RAS: +x right, +y anterior)
    local = kidney.rotation.T @ medial
    reach = 1.0 / float(np.sqrt(((local / kidney.semi) ** 2).sum()))  # the kidney's radius towards the hilum (mm)
    shift = 0.72 - 1.2 * (scale - SMALL_SINUS)  # 0.72 of the way to the hilum for the small sinus
    sinus = Ellipsoid(
        kidney.center + medial * shift * reach, kidney.semi * [scale, scale, scale + 0.1], kidney.rotation
    )
    pelvis = Ellipsoid(kidney.center + medial * 0.95 * reach, kidney.semi * [0.24, 0.24, 0.3], kidney.rotation)
    return sinus, pelvis
