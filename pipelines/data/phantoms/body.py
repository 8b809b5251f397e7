"""The ``anatomy="body"`` trunk of the CT and MR phantoms: an adult trunk at real size, seen through a field of view.

Unlike the classic abdomen (:mod:`pipelines.data.phantoms.abdomen`), which is shrunk to fit any field of
view, this anatomy is drawn at adult size in a fixed *body frame* (mm, RAS; z = 0 near the L1-L2 level, the
renal hila) from the lung apices to below the pubic symphysis, with organ sizes drawn from the literature
ranges of :mod:`pipelines.data.phantoms.anatomy_facts`, a patient size (subcutaneous and visceral fat) and
a smooth deformation field. The field of view is then *placed* over the body by region (chest, abdomen,
pelvis or the whole trunk), so what is outside it is simply not seen and a body wider than the field is
cut at its edge, as in real scans. With ``perirenal_fat`` the kidneys are beans, not ellipsoids (a renal
sinus of fat and a pelvis of urine open at the medial hilum), and they and the adrenal glands lie in their
perirenal fat, apart from the liver and the spleen.

:func:`body_anatomy` draws a case; :func:`pipelines.data.phantoms.body_paint.render_body` paints it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.data.phantoms.abdomen import (
    ADRENALS_MM,
    COLON_PATH_MM,
    COLON_RADII_MM,
    DUODENUM_PATH_MM,
    KIDNEYS_MM,
    PANCREAS_PATH_MM,
    PANCREAS_RADII_MM,
    SMALL_VESSELS_MM,
    perirenal_fat_ops,
    random_modulation,
    small_bowel_loop,
)
from pipelines.data.phantoms.anatomy_facts import FACTS, PATIENT_SIZES
from pipelines.data.phantoms.render import Op
from pipelines.data.phantoms.shapes import CanonicalGrid, Ellipsoid, Tube, Warp, capped, rotation_matrix
from pipelines.data.phantoms.variants import (
    RENAL_SINUSES,
    SMALL_SINUS,
    SPLEENS,
    renal_sinus_shapes,
    sinus_scale,
    varied_spleen,
)

__all__ = ["REGIONS", "Body", "body_anatomy", "check_body_options"]

REGIONS: tuple[str, ...] = ("chest", "abdomen", "pelvis", "trunk")
"""Where a field of view can be placed: ``chest`` (top at the lung apices), ``abdomen`` (top just above the
diaphragm domes, like BTCV), ``pelvis`` (bottom just below the pubic symphysis), ``trunk`` (centred between
the apices and the symphysis). How far a field reaches from there is set by its size (shape x spacing)."""

_REGION_WEIGHTS = (0.15, 0.55, 0.15, 0.15)  # when the region is drawn from the seed
_WARP_EXTENT_MM = np.array([400.0, 320.0, 700.0])  # body-frame extent of the deformation field


@dataclass
class Body:
    """One case drawn from the anatomy stream: shapes in body-frame mm and the landmarks the painter needs.

    Attributes:
        ops: Shapes painted after the body wall and lungs, before the skeleton.
        bone_ops: Pelvic bones, painted last (unwarped).
        lesion_ops: Liver lesions (from their own stream).
        warp: The smooth deformation of the soft tissue.
        wall: Body outline knots and wall thicknesses (see :mod:`pipelines.data.phantoms.body_paint`).
        landmarks: Body-frame z (mm) of the diaphragm domes, lung apices, iliac crests, symphysis...
        offset: Body-frame position (mm) of the world origin, i.e. of the centre of the field of view.
        region: The region the field of view was placed on.
        habitus: Patient size index 0 (slim) .. 1 (obese).
    """

    ops: list[Op]
    bone_ops: list[Op]
    lesion_ops: list[Op]
    warp: Warp
    wall: dict[str, np.ndarray | float]
    landmarks: dict[str, float]
    offset: np.ndarray
    region: str
    habitus: float


def check_body_options(
    region: str | None, patient_size: str | float | None, renal_sinus: str = "small", spleen: str = "typical"
) -> None:
    """Raise ValueError on a region, patient size, renal sinus or spleen :func:`body_anatomy` does not know."""
    if renal_sinus not in RENAL_SINUSES:
        raise ValueError(f"renal_sinus: expected one of {', '.join(RENAL_SINUSES)}, got {renal_sinus!r}")
    if spleen not in SPLEENS:
        raise ValueError(f"spleen: expected one of {', '.join(SPLEENS)}, got {spleen!r}")
    if region is not None and region not in REGIONS:
        raise ValueError(f"region: expected one of {', '.join(REGIONS)} or None (drawn from the seed), got {region!r}")
    if patient_size is None or patient_size in PATIENT_SIZES:
        return
    if isinstance(patient_size, bool) or not isinstance(patient_size, int | float) or not 0 <= patient_size <= 1:
        raise ValueError(
            f"patient_size: expected one of {', '.join(PATIENT_SIZES)}, a number in 0..1 or None "
            f"(drawn from the seed), got {patient_size!r}"
        )


def _inner(name: str, lo_frac: float = 0.12, hi_frac: float = 0.12) -> tuple[float, float]:
    """The central part of a literature range: targets drawn from it keep the rendered size (after
    carving by neighbours and the deformation) inside the full range."""
    fact = FACTS[name]
    span = fact.high - fact.low
    return fact.low + lo_frac * span, fact.high - hi_frac * span


def _volume_ml(shapes: Sequence[Ellipsoid | Tube], step_mm: float = 3.0) -> float:
    """Volume (mL) of the union of the shapes' level <= 1 regions, counted on a ``step_mm`` grid."""
    lo = np.min([s.bbox()[0] for s in shapes], axis=0)
    hi = np.max([s.bbox()[1] for s in shapes], axis=0)
    axes = [np.arange(a, b, step_mm, dtype=np.float32) for a, b in zip(lo, hi, strict=True)]
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    inside = np.zeros((len(axes[0]), len(axes[1]), len(axes[2])), dtype=bool)
    for shape in shapes:
        inside |= shape.level(x, y, z) <= 1.0
    return float(inside.sum()) * step_mm**3 / 1000.0


def _scaled(shapes: Sequence[Ellipsoid | Tube], factor: float, about: np.ndarray) -> list[Ellipsoid | Tube]:
    out: list[Ellipsoid | Tube] = []
    for s in shapes:
        if isinstance(s, Ellipsoid):
            out.append(Ellipsoid(about + (s.center - about) * factor, s.semi * factor, s.rotation, s.modulation))
        else:
            out.append(Tube(about + (s.points - about) * factor, s.radii * factor))
    return out


def _fit_volume(
    shapes: Sequence[Ellipsoid | Tube], target_ml: float, *, radii_only: bool = False
) -> list[Ellipsoid | Tube]:
    """Scale shapes (about their common centre) so that their union has ``target_ml``; tubes with
    ``radii_only`` keep their path and only thicken (volume ~ radius squared)."""
    shapes = list(shapes)
    for _ in range(2):
        factor = target_ml / max(_volume_ml(shapes), 1e-6)
        if radii_only:
            shapes = [Tube(s.points, s.radii * np.sqrt(factor)) for s in shapes]  # type: ignore[union-attr]
        else:
            about = np.mean([s.bbox()[0] + s.bbox()[1] for s in shapes], axis=0) / 2
            shapes = _scaled(shapes, float(np.cbrt(factor)), about)
    return shapes


class _Draw:
    """Jittered, deformed shapes at real size (no fitting to the field of view)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def point(self, p: Sequence[float], jitter_mm: float = 0.0) -> np.ndarray:
        return np.asarray(p, dtype=float) + self.rng.normal(0, jitter_mm, 3)

    def ellipsoid(
        self,
        center: Sequence[float],
        semi: Sequence[float],
        rot: tuple[float, float, float] = (0.0, 0.0, 0.0),
        *,
        jitter_mm: float = 4.0,
        modulation: float = 0.1,
        aspect_sd: float = 0.06,
        rot_jitter_deg: float = 6.0,
    ) -> Ellipsoid:
        aspect = self.rng.normal(0, aspect_sd, 3)
        semi_mm = np.asarray(semi, float) * np.exp(aspect - aspect.mean())
        angles = np.asarray(rot, float) + self.rng.normal(0, rot_jitter_deg, 3) * [1, 0.5, 0.5]
        m = random_modulation(self.rng, modulation)
        return Ellipsoid(self.point(center, jitter_mm), semi_mm, rotation_matrix(*angles), m)

    def tube(self, points: Sequence[Sequence[float]], radii: Sequence[float] | float, jitter_mm: float = 3.0) -> Tube:
        pts = np.array([self.point(p, jitter_mm) for p in points])
        return Tube(pts, np.broadcast_to(np.asarray(radii, float), (len(pts),)).copy())


def _habitus(rng: np.random.Generator, patient_size: str | float | None) -> float:
    if patient_size is None:
        return float(rng.beta(2.0, 2.2))  # most patients average to overweight, a few at either end
    if isinstance(patient_size, str):
        return float(rng.uniform(*PATIENT_SIZES[patient_size]))
    return float(patient_size)


def body_anatomy(
    rng: np.random.Generator,
    lesion_rng: np.random.Generator,
    placement_rng: np.random.Generator,
    grid: CanonicalGrid,
    region: str | None = None,
    patient_size: str | float | None = None,
    perirenal_fat: bool = False,
    renal_sinus: str = "small",
    spleen: str = "typical",
) -> Body:
    """Draw one trunk and place the field of view on it.

    The anatomy depends only on ``rng`` (not on the grid, region or patient size: those come from
    ``placement_rng`` or the arguments), so a seed's organs are the same whatever the field of view.

    Args:
        rng: Anatomy stream.
        lesion_rng: Liver lesion stream.
        placement_rng: Region, patient size and field-of-view placement stream.
        grid: The canonical grid (its extent decides how much the field of view shows).
        region: One of :data:`REGIONS`, or None to draw it.
        patient_size: A key of :data:`~pipelines.data.phantoms.anatomy_facts.PATIENT_SIZES`, an index in
            0..1, or None to draw it.
        perirenal_fat: Draw the kidneys as beans (renal sinus and pelvis) lying with the adrenal glands in
            their perirenal fat, apart from the liver and the spleen (:func:`_perirenal_fat`). Off by
            default: without it the kidneys are solid ellipsoids painted over their neighbours, the anatomy
            the shipped CT weights were trained on (their recipe stays reproducible); same anatomy stream
            either way.
        renal_sinus: With ``perirenal_fat``, one of :data:`~pipelines.data.phantoms.variants.RENAL_SINUSES`.
            ``varied`` draws each sinus's size from a stream of its own (spawned from ``placement_rng``), so
            the rest of the case is unchanged.
        spleen: One of :data:`~pipelines.data.phantoms.variants.SPLEENS`. ``varied`` resizes, stretches and
            moves the anatomy stream's spleen from a second stream of its own; the diaphragm's left dome
            follows it and it covers what was painted before it there (stomach, bowel, liver); the kidneys and
            every other draw are unchanged.
    """
    check_body_options(region, patient_size, renal_sinus, spleen)
    d = _Draw(rng)
    # the patient size is placement_rng's first draw wherever it is made; it is needed here for the sinus
    habitus = _habitus(placement_rng, patient_size)
    # spawning draws nothing from placement_rng, and child k is the same however many are spawned
    sinus_stream, spleen_stream = placement_rng.spawn(2) if "varied" in (renal_sinus, spleen) else (None, None)
    sinus_rng = sinus_stream if renal_sinus == "varied" else None
    spleen_rng = spleen_stream if spleen == "varied" else None
    ops: list[Op] = []

    def add(shape, layers, **kwargs) -> None:
        ops.append(Op(shape, tuple(layers), **kwargs))

    # --- solid organs, sized from the literature (FACTS); positions from the classic abdomen ---
    liver = _fit_volume(
        [
            d.ellipsoid((50, 2, 14), (61, 88, 80), (10, 0, 0)),
            d.ellipsoid((-6, 40, 44), (62, 36, 36), (-12, 0, -6)),
        ],
        rng.uniform(*_inner("liver_volume", 0.3, 0.3)) / 0.76,  # neighbours and the diaphragm take ~25 %
    )
    spleen_shape = _fit_volume(
        [d.ellipsoid((-68, -28, 44), (26, 56, 42), (30, 0, 10))],
        rng.uniform(*_inner("spleen_volume", 0.25, 0.2)) / 0.92,
    )[0]
    if spleen_rng is not None:
        spleen_shape = varied_spleen(spleen_shape, spleen_rng)
    gallbladder = _fit_volume(
        [d.ellipsoid((38, 50, -14), (14, 15, 30), (20, 0, 25))], rng.uniform(*_inner("gallbladder_volume", 0.15, 0.2))
    )[0]
    kidneys = {}
    for side, name, z in KIDNEYS_MM:
        half_length = rng.uniform(*_inner("kidney_length", 0.2, 0.2)) / 2
        volume = rng.uniform(*_inner("kidney_volume", 0.2, 0.35))
        ab = 3 * volume * 1000 / (4 * np.pi * half_length)
        semi = (np.sqrt(ab * 1.27), np.sqrt(ab / 1.27), half_length)
        kidneys[name] = d.ellipsoid(
            (side * 60, -30, z), semi, (side * 35, side * 10, 0), modulation=0.05, aspect_sd=0.0, jitter_mm=5.0
        )
    pancreas = _fit_volume(
        [d.tube(PANCREAS_PATH_MM, PANCREAS_RADII_MM)],
        rng.uniform(*_inner("pancreas_volume", 0.2, 0.3)),
        radii_only=True,
    )[0]
    bladder = _fit_volume(
        [d.ellipsoid((0, 45, -232), (48, 38, 36), modulation=0.06)], rng.uniform(*_inner("bladder_volume", 0.1, 0.2))
    )[0]

    # --- landmarks: the diaphragm domes hug the liver and the spleen / fundus ---
    fundus = d.ellipsoid((-50, 28, 52), (36, 30, 42), (-25, 0, 0))
    dome_r = float(liver[0].center[2] + np.abs(liver[0].rotation[2] * liver[0].semi).max() + 8.0)
    dome_l = float(
        max(spleen_shape.center[2] + 0.8 * spleen_shape.semi[2], fundus.center[2] + 0.8 * fundus.semi[2]) + 4.0
    )
    dome_l = min(dome_l, dome_r - 5.0)  # the left dome is lower
    apex = dome_r + rng.uniform(180.0, 230.0)
    crest = rng.uniform(-115.0, -95.0)
    landmarks = {
        "dome_right": dome_r,
        "dome_left": dome_l,
        "lung_apex": apex,
        "l5_s1": crest - 30.0,
        "iliac_crest": crest,
        "femoral_heads": crest - 140.0,
        "symphysis": crest - 160.0,
        "rib_bottom": rng.uniform(15.0, 35.0),
    }

    # --- muscles (unwarped: they follow the skeleton) ---
    for side in (1, -1):
        add(
            d.ellipsoid((side * 29, -70, 0), (22, 15, 600), modulation=0.0, jitter_mm=1.0, rot_jitter_deg=0.0),
            [(1.0, "muscle", None)],
            warp=False,
            clip="body",
        )
        add(
            d.tube(
                [
                    (side * 22, -34, 40),
                    (side * 40, -40, -60),
                    (side * 58, -30, crest - 60),
                    (side * 72, -5, crest - 130),
                ],
                [4.0, 17.0, 22.0, 17.0],
                jitter_mm=1.5,
            ),
            [(1.0, "muscle", None)],
            warp=False,
        )
        add(
            d.ellipsoid((side * 85, -80, crest - 120), (62, 42, 75), modulation=0.05, jitter_mm=3.0),
            [(1.0, "muscle", None)],
            warp=False,
            clip="body",
        )

    # --- heart and mediastinal vessels (above the diaphragm) ---
    add(
        d.ellipsoid((-18, 24, dome_l + 48), (58, 46, 56), (-30, 0, 0)),
        [(1.0, "myocardium", None), (0.72, "blood", None)],
        clip="thorax",
    )

    # --- bowel (unlabelled), painted first so solid organs push it aside ---
    add(
        d.tube(
            [*COLON_PATH_MM, (-10, -35, crest - 70), (0, -48, crest - 150)],  # on down to the rectum
            [*COLON_RADII_MM, 15, 16],
            jitter_mm=4.0,
        ),
        [(1.0, "bowel_wall", None), (0.84, "bowel_content", None)],
        gas=("bowel_content", rng.uniform(-6.0, 6.0)),
        clip="abdomen",
    )
    for _ in range(26):
        add(
            d.tube(small_bowel_loop(rng, crest - 90), rng.uniform(9, 13), jitter_mm=0.0),
            [(1.0, "bowel_wall", None), (0.7, "bowel_content", None)],
            gas=("bowel_content", rng.uniform(4.0, 20.0)),
            clip="abdomen",
        )
    add(d.tube(DUODENUM_PATH_MM, 11.5), [(1.0, "bowel_wall", None), (0.7, "bowel_content", None)], clip="abdomen")
    add(bladder, [(1.0, "bladder_wall", None), (0.9, "urine", None)], clip="abdomen")

    # --- liver with hepatic veins, stomach, spleen, gallbladder, kidneys, adrenals, pancreas ---
    for lobe in liver:
        add(lobe, [(1.0, "liver", "liver")], clip="abdomen")
    for end in ((88, -6, 30), (42, 46, 24), (-12, 42, 50)):
        add(
            d.tube([(24, -8, dome_r - 20), (45, 10, dome_r - 38), end], [5.5, 4.5, 2.5]),
            [(1.0, "hepatic_vein", "liver")],
            only_in=("liver",),
            clip="abdomen",
        )
    stomach_gas = ("stomach_content", rng.uniform(4.0, 20.0))
    add(
        fundus,
        [(1.0, "stomach_wall", "stomach"), (0.84, "stomach_content", "stomach")],
        gas=stomach_gas,
        clip="abdomen",
    )
    add(
        d.ellipsoid((-2, 50, 22), (36, 16, 16), (12, 0, 0)),
        [(1.0, "stomach_wall", "stomach"), (0.72, "stomach_content", "stomach")],
        gas=stomach_gas,
        clip="abdomen",
    )
    add(spleen_shape, [(1.0, "spleen", "spleen")], clip="abdomen")
    add(gallbladder, [(1.0, "gallbladder", "gallbladder")], clip="abdomen")
    perirenal_at = len(ops)  # the perirenal fat goes here, once the patient size is known (below)
    for side, name, _ in KIDNEYS_MM:
        kidney = kidneys[name]
        add(kidney, [(1.0, "kidney_cortex", name), (0.66, "kidney_medulla", name)], clip="abdomen")
        if not perirenal_fat:
            continue
        scale = SMALL_SINUS if sinus_rng is None else sinus_scale(sinus_rng, habitus)
        sinus, pelvis = renal_sinus_shapes(kidney, side, scale)
        add(sinus, [(1.0, "visceral_fat", None)], only_in=("kidney_cortex", "kidney_medulla"), clip="abdomen")
        add(pelvis, [(1.0, "urine", None)], only_in=("visceral_fat",), clip="abdomen")
    adrenals: list[Ellipsoid] = []
    for side, name, center, limb in ADRENALS_MM:
        kidney = kidneys["kidney_right" if side > 0 else "kidney_left"]
        lift = np.array([0.0, 0.0, kidney.center[2] + kidney.semi[2] - (-30.0 if side > 0 else -16.0) - 56.0])
        for c, semi, rot in ((center, (3.5, 12, 15), side * 20), (limb, (3.0, 10, 11), -side * 25)):
            adrenals.append(d.ellipsoid(np.add(c, lift), semi, (rot, 0, 0), jitter_mm=2.0, modulation=0.05))
            add(adrenals[-1], [(1.0, "adrenal", name)], clip="abdomen")
    add(pancreas, [(1.0, "pancreas", "pancreas")], clip="abdomen")

    # --- vessels: calibres from FACTS (radius = diameter / 2) ---
    aorta_r = rng.uniform(*_inner("aorta_diameter", 0.15, 0.25)) / 2
    ivc_r = rng.uniform(*_inner("ivc_diameter", 0.15, 0.3)) / 2
    portal_r = rng.uniform(*_inner("portal_vein_diameter", 0.15, 0.25)) / 2
    for path, radii, vessel in SMALL_VESSELS_MM:
        add(d.tube(path, radii), [(1.0, vessel, None)], clip="abdomen")
    add(
        d.tube([(6, 4, 6), (-30, -4, 15), (-60, -20, 26), (-72, -26, 34)], portal_r * np.array([0.8, 0.75, 0.7, 0.7])),
        [(1.0, "portal_vein", "portal_vein")],
        clip="abdomen",
    )
    add(
        d.tube([(6, 4, 6), (34, 10, 26), (50, 8, 34)], portal_r * np.array([1.0, 0.95, 0.9])),
        [(1.0, "portal_vein", "portal_vein")],
        clip="abdomen",
    )
    for end in ((82, 4, 40), (6, 36, 42)):
        add(
            d.tube([(50, 8, 34), end], [portal_r * 0.6, 2.5]),
            [(1.0, "portal_vein", "liver")],
            only_in=("liver", "hepatic_vein"),
            clip="abdomen",
        )
    bifurcation = crest + rng.uniform(5.0, 25.0)
    for side in (1, -1):
        add(
            d.tube([(side * 3 - 10, -4, bifurcation), (side * 45, -8, crest - 90), (side * 80, 5, crest - 150)], 6.5),
            [(1.0, "artery", None)],
            clip="abdomen",
        )
        add(
            d.tube([(18, -6, bifurcation - 5), (side * 45 + 8, -14, crest - 90), (side * 78, -2, crest - 150)], 7.5),
            [(1.0, "vein", None)],
            clip="abdomen",
        )
    add(
        d.tube(
            [(18, -6, bifurcation - 5), (22, -8, 0), (25, -12, 40), (24, -8, dome_r - 20), (12, 8, dome_r + 15)],
            ivc_r * np.array([0.95, 1.0, 1.05, 1.1, 1.1]),
        ),
        [(1.0, "vein", "inferior_vena_cava")],
        clip="cavity",
    )
    arch_z = apex - rng.uniform(60.0, 80.0)
    add(
        d.tube(
            [
                (-10, -4, bifurcation),
                (-10, -6, 0),
                (-12, -10, 58),
                (-28, -20, dome_r + 20),
                (-30, -22, arch_z - 20),
                (-12, 5, arch_z + 5),
                (5, 30, arch_z - 40),
                (0, 25, dome_l + 70),
            ],
            aorta_r * np.array([0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.3, 1.3]),
        ),
        [(1.0, "artery", "aorta")],
        clip="cavity",
    )
    add(
        d.tube([(2, -14, apex + 40), (0, -12, dome_r), (-16, 14, 70), (-34, 24, 56)], [8.0, 8.0, 7.5, 7.5]),
        [(1.0, "esophagus", "esophagus")],
        clip="cavity",
    )

    # --- pelvic bones (painted last, unwarped, over everything inside the skin) ---
    bone = [(1.0, "bone_cortical", None), (0.7, "bone_marrow", None)]
    bone_ops = [Op(d.ellipsoid((0, -55, crest - 75), (46, 17, 55), (0, 0, -25), jitter_mm=2.0), tuple(bone))]
    for side in (1, -1):
        hip = (side * 92, -5, crest - 140)
        shapes = [
            d.ellipsoid((side * 98, -28, crest - 35), (11, 50, 48), (side * 35, 0, 0), jitter_mm=2.0, modulation=0.04),
            d.tube([(side * 90, -35, crest - 60), hip], [17.0, 20.0], jitter_mm=1.0),
            Ellipsoid(np.array(hip, float), np.full(3, 24.0)),
            d.tube(
                [hip, (side * 128, -8, crest - 165), (side * 120, 5, crest - 330)], [16.0, 15.0, 14.0], jitter_mm=1.0
            ),
            d.tube([(side * 85, 10, crest - 150), (side * 14, 48, crest - 168)], 9.0, jitter_mm=1.0),
            d.tube([(side * 88, -12, crest - 150), (side * 60, -35, crest - 200)], 12.0, jitter_mm=1.0),
        ]
        bone_ops += [Op(s, tuple(bone), warp=False, clip="body") for s in shapes]
    bone_ops[0] = Op(bone_ops[0].shape, tuple(bone), warp=False, clip="body")

    # --- body wall (the patient size was drawn above) ---
    frame = rng.uniform(0.95, 1.06, size=2)
    wall: dict[str, np.ndarray | float] = {
        # cavity (inner wall surface) semi-axes about y0 along z: (z, a, b_front, b_back)
        "z": np.array([apex + 70, apex + 10, apex - 60, dome_r, 0.0, crest, crest - 100, crest - 160, crest - 240]),
        "a": np.array([55, 95, 120, 125, 118, 122, 128, 122, 110]) * frame[0],
        "b_front": np.array([40, 65, 80, 82, 78, 74, 70, 66, 60]) * frame[1],
        "b_back": np.array([40, 55, 62, 64, 62, 60, 62, 64, 55]) * frame[1],
        "y0": 4.0,
        "p": rng.uniform(2.1, 2.5),
        "muscle": rng.uniform(8.0, 13.0),
        "fat": 4.0 + 60.0 * habitus**1.4,
        "visceral": 28.0 * habitus,
        "skin": 2.0,
        "rib_period": rng.uniform(24.0, 30.0),
        "rib_phase": rng.uniform(0, 1),
        "rib_slope": rng.uniform(0.35, 0.5),
        "spine_y": -38.0 + rng.normal(0, 2),
    }

    if perirenal_fat:
        ops[perirenal_at:perirenal_at] = _perirenal_fat(list(kidneys.values()), adrenals, habitus)

    # --- liver lesions, from their own stream ---
    carving = [op.shape for op in ops[ops.index(next(op for op in ops if op.shape is liver[-1])) + 1 :]]
    lesion_ops = _lesions(lesion_rng, liver, carving, dome_r)

    # --- field of view placement ---
    region = region if region is not None else str(placement_rng.choice(REGIONS, p=_REGION_WEIGHTS))
    fov_z = float(grid.fov_mm[2])
    centre_z = {
        "chest": lambda: apex + placement_rng.uniform(0.0, 30.0) - fov_z / 2,
        "abdomen": lambda: dome_r + placement_rng.uniform(0.0, 40.0) - fov_z / 2,
        "pelvis": lambda: landmarks["symphysis"] - placement_rng.uniform(20.0, 50.0) + fov_z / 2,
        "trunk": lambda: (apex + landmarks["symphysis"]) / 2 + placement_rng.normal(0.0, 20.0),
    }[region]()
    offset = np.array([placement_rng.normal(0, 8), 4.0 + placement_rng.normal(0, 10), centre_z])
    warp = Warp(rng, _WARP_EXTENT_MM, rng.uniform(6.0, 12.0))
    return Body(ops, bone_ops, lesion_ops, warp, wall, landmarks, offset, region, habitus)


def _perirenal_fat(kidneys: Sequence[Ellipsoid], adrenals: Sequence[Ellipsoid], habitus: float) -> list[Op]:
    """The perirenal fat of each kidney and adrenal gland (:func:`~pipelines.data.phantoms.abdomen.perirenal_fat_ops`),
    its thickness following the patient size. Nothing is drawn from the random stream, so the rest of a
    seed's anatomy is unchanged."""
    fact = FACTS["perirenal_fat_thickness"]
    margin = fact.low + (fact.high - fact.low) * 0.6 * habitus  # slim .. obese, short of the extreme
    return perirenal_fat_ops(kidneys, adrenals, margin, clip="abdomen")


def _lesions(rng: np.random.Generator, liver: Sequence[Ellipsoid | Tube], carving: Sequence, dome: float) -> list[Op]:
    """1-3 hypodense liver lesions (10-30 mm), centred well inside the parenchyma."""
    lesion_ops = []
    for _ in range(int(rng.integers(1, 4))):
        radius = rng.uniform(5.0, 15.0)
        for _attempt in range(40):  # rejection sampling: clear of the dome and of every later shape
            lobe = liver[0] if rng.uniform() < 0.8 else liver[1]
            direction = rng.normal(size=3)
            local = direction / np.linalg.norm(direction) * rng.uniform(0.0, 0.7)
            center = lobe.center + lobe.rotation @ (local * lobe.semi)
            point = [np.array([v], dtype=np.float32) for v in center]
            clear = center[2] < dome - radius - 15.0 and all(
                float(np.asarray(s.level(*point)).ravel()[0]) > 1.0 + radius / max(float(np.min(_size(s))), 1e-6)
                for s in carving
            )
            if clear:
                break
        semi = radius * np.exp(rng.normal(0, 0.1, 3))
        shape = Ellipsoid(center, semi, rotation_matrix(rng.uniform(0, 180)), capped(rng.normal(0, 0.06, 9), 0.3))
        lesion_ops.append(Op(shape, ((1.0, "liver_lesion", "liver_tumor"),), only_in=("liver", "hepatic_vein")))
    return lesion_ops


def _size(shape: Ellipsoid | Tube) -> np.ndarray:
    return shape.semi if isinstance(shape, Ellipsoid) else shape.radii
