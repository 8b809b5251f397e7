"""The abdomen of the CT and MR phantoms: organs, vessels, bowel, body wall and spine, drawn from a seed.

:func:`abdomen_anatomy` draws one case from the anatomy stream (and its liver lesions from their
own stream) as shapes in world millimetres; :func:`render_abdomen` paints them, in anatomical
order and one slab of slices at a time, into a tissue map and a label map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.data.phantoms.anatomy_facts import FACTS
from pipelines.data.phantoms.render import Canvas, Op, paint
from pipelines.data.phantoms.shapes import CanonicalGrid, Ellipsoid, Tube, Warp, capped, rotation_matrix
from pipelines.data.phantoms.tissues import CT_STRUCTURES, TISSUES

__all__ = [
    "ADRENALS_MM",
    "COLON_PATH_MM",
    "COLON_RADII_MM",
    "DUODENUM_PATH_MM",
    "KIDNEYS_MM",
    "PANCREAS_PATH_MM",
    "PANCREAS_RADII_MM",
    "PERIRENAL_DISPLACES",
    "SMALL_VESSELS_MM",
    "Abdomen",
    "abdomen_anatomy",
    "paint_in_slabs",
    "perirenal_fat_ops",
    "random_modulation",
    "render_abdomen",
    "small_bowel_loop",
    "structure_label_ids",
]

# Reference field of view (mm, RAS axes) the abdominal anatomy is drawn for; smaller fields of
# view shrink the anatomy to fit, larger ones leave it at its natural size.
_ABDOMEN_FOV_MM = np.array([290.0, 230.0, 190.0])
_SLAB_VOXELS = 4_000_000  # voxels painted per slab: bounds memory, keeps arrays cache-friendly

# Reference placements (mm, RAS, origin as in :func:`abdomen_anatomy`) that the body anatomy
# (:mod:`pipelines.data.phantoms.body`) draws its organs at too.
COLON_PATH_MM: tuple[tuple[float, float, float], ...] = (
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
)
"""Colon centreline from the caecum (right iliac fossa) round to the sigmoid."""
COLON_RADII_MM: tuple[float, ...] = (21, 20, 20, 19, 18, 18, 18, 17, 17, 16)
DUODENUM_PATH_MM: tuple[tuple[float, float, float], ...] = (
    (22, 50, 16),
    (46, 32, 10),
    (54, 14, -12),
    (46, 10, -38),
    (12, 10, -44),
    (-16, 14, -36),
)
"""Duodenal sweep (radius 11.5 mm) round the pancreatic head."""
KIDNEYS_MM: tuple[tuple[int, str, float], ...] = ((1, "kidney_right", -30.0), (-1, "kidney_left", -16.0))
"""(side, structure, centre z): the right kidney sits lower."""
ADRENALS_MM: tuple[tuple[int, str, tuple[float, float, float], tuple[float, float, float]], ...] = (
    (1, "adrenal_gland_right", (36, -30, 38), (40, -34, 30)),
    (-1, "adrenal_gland_left", (-36, -22, 30), (-40, -27, 22)),
)
"""(side, structure, body centre, limb centre), above and medial to the upper poles."""
PANCREAS_PATH_MM: tuple[tuple[float, float, float], ...] = (
    (32, 14, -6),
    (10, 20, 6),
    (-22, 12, 14),
    (-55, -8, 24),
    (-68, -20, 30),
)
"""Head in the duodenal sweep, body across the spine, tail at the splenic hilum."""
PANCREAS_RADII_MM: tuple[float, ...] = (18, 11, 12, 10, 8.5)
SMALL_VESSELS_MM: tuple[tuple[tuple[tuple[float, float, float], ...], float | tuple[float, ...], str], ...] = (
    (((-48, -22, -6), (-14, 10, -2), (22, -6, 0)), 5.0, "vein"),  # left renal vein
    (((46, -24, -16), (22, -8, -10)), 5.0, "vein"),  # right renal vein
    (((6, 4, 6), (8, 18, -45), (10, 25, -100)), (6.5, 5.0, 4.0), "vein"),  # superior mesenteric vein
    (((-8, 2, -2), (-4, 20, -45), (-2, 28, -100)), (4.5, 3.5, 3.0), "artery"),  # superior mesenteric artery
)
"""Unlabelled vessels: (centreline, radii, tissue)."""

# What the perirenal fat displaces: the intraperitoneal organs and bowel drawn before it (so the liver and
# the spleen lie *against* the kidney's fat, not around the kidney), never muscle, bone or vessels.
PERIRENAL_DISPLACES = (
    "liver",
    "hepatic_vein",
    "spleen",
    "gallbladder",
    "stomach_wall",
    "stomach_content",
    "bowel_wall",
    "bowel_content",
    "gas",
    "visceral_fat",
)


def perirenal_fat_ops(
    kidneys: Sequence[Ellipsoid], adrenals: Sequence[Ellipsoid], margin_mm: float, clip: str
) -> list[Op]:
    """The perirenal fat of each kidney and adrenal gland, as a layer of ``visceral_fat`` around them.

    Facts: the kidneys and adrenal glands are retroperitoneal; each lies in its own perirenal space, a fat
    pad closed by the renal (Gerota's) fascia, so on CT a fat plane separates the kidney and the adrenal
    from the liver, the spleen and the bowel, thicker in heavier patients (``perirenal_fat_thickness``
    in :data:`~pipelines.data.phantoms.anatomy_facts.FACTS`). The right adrenal gland lies behind the
    inferior vena cava, medial to the liver's bare area and above the kidney: in fat, not in the liver.
    Without this layer the upper poles and the right adrenal lie *inside* the liver and the spleen, an
    anatomy no scan shows. Painted before the kidneys and adrenals (``margin_mm`` beyond a kidney, half
    that and at least 4 mm beyond an adrenal), over the organs of :data:`PERIRENAL_DISPLACES` only.
    """
    shapes = [Ellipsoid(k.center, k.semi + margin_mm, k.rotation, k.modulation) for k in kidneys]
    shapes += [Ellipsoid(a.center, a.semi + max(0.5 * margin_mm, 4.0), a.rotation) for a in adrenals]
    layers = ((1.0, "visceral_fat", None),)
    return [Op(shape, layers, only_in=PERIRENAL_DISPLACES, clip=clip) for shape in shapes]


@dataclass
class Abdomen:
    """Everything drawn from the anatomy stream for one case, in world mm."""

    ops: list[Op]
    lesion_ops: list[Op]
    warp: Warp
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
        return random_modulation(self.rng, amount)

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
    ) -> Ellipsoid:
        volume_factor = self.rng.uniform(*size_range)
        aspect = self.rng.normal(0, aspect_sd, 3)
        semi_mm = np.asarray(semi, float) * np.cbrt(volume_factor) * np.exp(aspect - aspect.mean())
        angles = np.asarray(rot, float) + self.rng.normal(0, rot_jitter_deg, 3) * [1, 0.5, 0.5]
        return Ellipsoid(
            self.point(center, jitter_mm),
            semi_mm * self.scale,
            rotation_matrix(*angles),
            self.modulation(modulation),
        )

    def tube(
        self,
        points: Sequence[Sequence[float]],
        radii: Sequence[float] | float,
        *,
        jitter_mm: float = 3.0,
        size_range: tuple[float, float] = (0.9, 1.1),
    ) -> Tube:
        pts = np.array([self.point(p, jitter_mm) for p in points])
        r = np.broadcast_to(np.asarray(radii, float), (len(pts),)) * self.rng.uniform(*size_range)
        return Tube(pts, r * self.radius_scale)


def random_modulation(rng: np.random.Generator, amount: float) -> np.ndarray:
    """Shape modulation coefficients of an :class:`Ellipsoid` (standard deviation ``amount``, the
    first three milder), capped."""
    m = rng.normal(0, amount, 9)
    m[:3] *= 0.6
    return capped(m, 0.45)


def small_bowel_loop(rng: np.random.Generator, z_low_mm: float) -> list[np.ndarray]:
    """Start, middle and end (reference mm) of a short small-bowel loop in the mid-abdomen, its start
    between ``z_low_mm`` and -15 mm."""
    start = np.array([rng.uniform(-70, 70), rng.uniform(5, 60), rng.uniform(z_low_mm, -15)])
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    end = start + direction * rng.uniform(25, 60)
    middle = (start + end) / 2 + rng.normal(0, 10, 3)
    return [start, middle, end]


def abdomen_anatomy(
    rng: np.random.Generator, lesion_rng: np.random.Generator, grid: CanonicalGrid, perirenal_fat: bool = False
) -> Abdomen:
    """Draw one abdomen. Reference coordinates: mm, RAS (+x = patient's right), origin at the
    centre of a 290 x 230 x 190 mm field of view from the lung bases to the iliac crests.

    ``perirenal_fat``: the kidneys and adrenal glands lie in their perirenal fat, apart from the liver and
    the spleen (:func:`perirenal_fat_ops`, a thin patient's layer of about 8 mm). Off by default: the
    kidneys' upper poles and the right adrenal gland are then painted inside the liver, the anatomy the
    shipped weights were first trained on. Nothing more is drawn from the random streams for the fat, so
    the organs are the same either way; the liver lesions may move, since they keep clear of the fat.
    """
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
    warp = Warp(rng, grid.fov_mm, rng.uniform(6.0, 12.0) * s_xy)

    ops: list[Op] = []

    def add(shape, layers, **kwargs) -> None:
        ops.append(Op(shape, tuple(layers), **kwargs))

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
        b.tube(COLON_PATH_MM, COLON_RADII_MM, jitter_mm=4.0),
        [(1.0, "bowel_wall", None), (0.84, "bowel_content", None)],
        gas=("bowel_content", rng.uniform(-6.0, 6.0) * s_xy),
    )
    for _ in range(22):
        add(
            b.tube(small_bowel_loop(rng, -180), rng.uniform(9, 13), jitter_mm=0.0),
            [(1.0, "bowel_wall", None), (0.7, "bowel_content", None)],
            gas=("bowel_content", rng.uniform(4.0, 20.0) * s_xy),
        )
    add(b.tube(DUODENUM_PATH_MM, 11.5), [(1.0, "bowel_wall", None), (0.7, "bowel_content", None)])
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
    perirenal_at = len(ops)  # the perirenal fat goes here, under the kidneys and adrenals (below)
    retroperitoneal: list[Ellipsoid] = []
    for side, name, z in KIDNEYS_MM:
        retroperitoneal.append(
            b.ellipsoid(
                (side * 60, -30, z), (28, 22, 56), (side * 35, side * 10, 0), size_range=(0.85, 1.25), modulation=0.06
            )
        )
        add(retroperitoneal[-1], [(1.0, "kidney_cortex", name), (0.66, "kidney_medulla", name)])
    # adrenal glands: two thin limbs each, above and medial to the upper poles
    for side, name, center, limb in ADRENALS_MM:
        retroperitoneal.append(b.ellipsoid(center, (3.5, 12, 15), (side * 20, 0, 0), jitter_mm=2.0, modulation=0.05))
        add(retroperitoneal[-1], [(1.0, "adrenal", name)])
        retroperitoneal.append(b.ellipsoid(limb, (3.0, 10, 11), (-side * 25, 0, 0), jitter_mm=2.0, modulation=0.05))
        add(retroperitoneal[-1], [(1.0, "adrenal", name)])
    if perirenal_fat:
        fact = FACTS["perirenal_fat_thickness"]
        margin = (fact.low + 0.2 * (fact.high - fact.low)) * b.radius_scale  # a thin patient's fat
        fat = perirenal_fat_ops(retroperitoneal[:2], retroperitoneal[2:], margin, clip="cavity")
        ops[perirenal_at:perirenal_at] = fat
    # pancreas: head in the duodenal sweep, body across the spine, tail at the splenic hilum
    add(
        b.tube(PANCREAS_PATH_MM, PANCREAS_RADII_MM, jitter_mm=3.0, size_range=(0.9, 1.15)),
        [(1.0, "pancreas", "pancreas")],
    )
    # veins and arteries (renal vessels, iliacs and mesenterics unlabelled)
    for path, radii, vessel in SMALL_VESSELS_MM:
        add(b.tube(path, radii), [(1.0, vessel, None)])
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
    carving = [op.shape for op in after_liver if op.only_in is None or op.only_in == PERIRENAL_DISPLACES]
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
        modulation = capped(lesion_rng.normal(0, 0.06, 9), 0.3)
        lesion_ops.append(
            Op(
                Ellipsoid(center, semi, rotation_matrix(lesion_rng.uniform(0, 180)), modulation),
                ((1.0, "liver_lesion", "liver_tumor"),),
                only_in=("liver", "hepatic_vein"),
            )
        )
    return Abdomen(ops, lesion_ops, warp, body, spine)


def _lesion_fits(
    center: np.ndarray,
    radius: float,
    carving: Sequence[Ellipsoid | Tube],
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
        size = float(np.min(shape.semi)) if isinstance(shape, Ellipsoid) else float(shape.radii.min())
        if level <= 1.0 + radius / max(size, 1e-6):
            return False
    return True


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


def _superellipse(canvas: Canvas, body: Mapping[str, float], inset_mm: float) -> np.ndarray:
    """Boolean (nx, ny, nz) over the canvas: inside the body outline shrunk by ``inset_mm``."""
    return _inside_body(body, canvas.x, canvas.y, canvas.z, inset_mm)


def _paint_body(canvas: Canvas, anatomy: Abdomen) -> None:
    """Skin, subcutaneous fat, muscle wall and the abdominal cavity; sets the canvas's clip masks."""
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


def _paint_bones(canvas: Canvas, anatomy: Abdomen) -> None:
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


def structure_label_ids(label_ids: Mapping[str, int]) -> dict[str | None, int]:
    """Label id of each structure (and of None, unlabelled: 0) to paint with: structures left out of
    ``label_ids`` get 0; a liver lesion is part of the liver when ``liver_tumor`` is not labelled apart."""
    label_of: dict[str | None, int] = {name: label_ids.get(name, 0) for name in CT_STRUCTURES}
    label_of[None] = 0
    if "liver_tumor" not in label_ids:
        label_of["liver_tumor"] = label_ids.get("liver", 0)
    return label_of


def paint_in_slabs(
    grid: CanonicalGrid,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    warp: Warp,
    paint_slab: Callable[[Canvas], None],
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue and label maps (uint8, ``grid.shape``) painted by ``paint_slab`` one slab of slices at a time.

    Args:
        grid: The canonical grid.
        x, y, z: World coordinates (mm) of the grid's voxel centres along each axis.
        warp: The deformation of the soft tissue (its field is given to each slab's canvas).
        paint_slab: Paints one slab's canvas in place.
    """
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    label = np.zeros(grid.shape, dtype=np.uint8)
    step = max(1, _SLAB_VOXELS // (grid.shape[0] * grid.shape[1]))
    for k0 in range(0, grid.shape[2], step):
        k1 = min(grid.shape[2], k0 + step)
        zs = z[k0:k1]
        paint_slab(Canvas(x, y, zs, tissue[:, :, k0:k1], label[:, :, k0:k1], warp.field(x, y, zs), {}))
    return tissue, label


def render_abdomen(
    anatomy: Abdomen, grid: CanonicalGrid, label_ids: Mapping[str, int], lesions: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Paint tissue and label maps (canonical RAS grid, uint8) slab by slab.

    Args:
        anatomy: The case drawn by :func:`abdomen_anatomy`.
        grid: The canonical grid to paint on.
        label_ids: Structure name -> label id; structures left out are painted with id 0.
        lesions: Paint the liver lesions (labelled ``liver_tumor``, or liver when that is not in ``label_ids``).

    Returns:
        (tissue, label), both uint8 of ``grid.shape``.
    """
    label_of = structure_label_ids(label_ids)
    ops = anatomy.ops + (anatomy.lesion_ops if lesions else [])
    margin = anatomy.warp.max_mm + 1.0

    def paint_slab(canvas: Canvas) -> None:
        _paint_body(canvas, anatomy)
        for op in ops:
            paint(canvas, op, label_of, margin)
        _paint_bones(canvas, anatomy)

    return paint_in_slabs(grid, grid.axis(0), grid.axis(1), grid.axis(2), anatomy.warp, paint_slab)
