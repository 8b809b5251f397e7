"""Tissue classes, structure ids and the intensity tables of the phantoms (pure data).

Structure ids follow BTCV for the abdomen; the tissue classes are what the painters of
:mod:`pipelines.data.phantoms.abdomen` and :mod:`pipelines.data.phantoms.brain` draw, and the
tables give each tissue its per-case intensity range (CT Hounsfield units, T1-like abdominal MR
signal) or its mean signal per brain MR contrast.
"""

from __future__ import annotations

__all__ = [
    "BODY_TISSUES",
    "BRAIN_SIGNAL",
    "BRAIN_STRUCTURES",
    "BRAIN_TISSUES",
    "CT_CLIP_HU",
    "CT_HU",
    "CT_STRUCTURES",
    "HEAD_TISSUES",
    "MR_CONTRASTS",
    "MR_T1",
    "TISSUES",
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

BODY_TISSUES: dict[str, int] = {
    **TISSUES,
    **{
        name: len(TISSUES) + index
        for index, name in enumerate(("diaphragm", "cartilage", "bladder_wall", "urine", "mediastinal_fat"))
    },
}
"""Tissue classes of the ``anatomy="body"`` abdominal phantoms: :data:`TISSUES` (same ids) and the
classes only that anatomy draws, appended (the classic phantoms never use them)."""

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

HEAD_TISSUES: dict[str, int] = {**BRAIN_TISSUES, "deep_grey_matter": len(BRAIN_TISSUES)}
"""Tissue classes of the ``anatomy="body"`` brain tumour phantom: :data:`BRAIN_TISSUES` (same ids) and
the deep grey nuclei (thalami, basal ganglia)."""

VARIED_BRAIN_TISSUES: dict[str, int] = {
    **BRAIN_TISSUES,
    **{
        name: len(BRAIN_TISSUES) + index
        for index, name in enumerate(("scalp_fat", "diploe", "tumor_solid", "tumor_mottled"))
    },
}
"""Tissue classes of the ``varied`` brain tumour phantom: :data:`BRAIN_TISSUES` (same ids), the scalp's fat,
the diploe, and the solidly enhancing tumour with its less enhancing mottle."""
BRAIN_TUMOUR_TISSUES: tuple[str, ...] = ("tumor_core", "tumor_rim", "tumor_solid", "tumor_mottled")
"""The tissues labelled tumour (label 1) in the brain tumour phantoms."""


CT_CLIP_HU: tuple[int, int] = (-1024, 3071)
"""HU range a CT series stores as uint16 with intercept -1024; CT phantoms are clipped to it."""

# Per-case intensity ranges (uniform draws). CT in HU, contrast-enhanced portal-venous-like phase.
CT_HU: dict[str, tuple[float, float]] = {
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
    # classes of the "body" anatomy only
    "diaphragm": (40, 60),
    "cartilage": (80, 200),
    "bladder_wall": (40, 70),
    "urine": (0, 15),
    "mediastinal_fat": (-110, -80),
}
# T1-weighted-like MR signal (arbitrary units): fat bright, fluid dark, flowing blood dark.
MR_T1: dict[str, tuple[float, float]] = {
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
    # classes of the "body" anatomy only
    "diaphragm": (250, 320),
    "cartilage": (150, 250),
    "bladder_wall": (280, 340),
    "urine": (40, 90),
    "mediastinal_fat": (800, 900),
}
# Brain contrasts (arbitrary units): mean value per tissue, jittered per case.
BRAIN_SIGNAL: dict[str, dict[str, float]] = {
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
        "deep_grey_matter": 540,
        # classes of the ``varied`` head only (scalp fat and diploe: fat, the brightest on T1)
        "scalp_fat": 1150,
        "diploe": 820,
        "tumor_solid": 820,
        "tumor_mottled": 700,
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
        "deep_grey_matter": 530,
        # classes of the ``varied`` head only (scalp fat and diploe: fat, the brightest on T1)
        "scalp_fat": 1150,
        "diploe": 820,
        "tumor_solid": 450,
        "tumor_mottled": 420,
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
        "deep_grey_matter": 480,
        # classes of the ``varied`` head only
        "scalp_fat": 700,
        "diploe": 500,
        "tumor_solid": 650,
        "tumor_mottled": 720,
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
        "deep_grey_matter": 520,
        # classes of the ``varied`` head only
        "scalp_fat": 600,
        "diploe": 450,
        "tumor_solid": 700,
        "tumor_mottled": 720,
    },
}
