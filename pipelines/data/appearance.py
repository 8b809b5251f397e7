"""Appearance facts for randomised synthetic training: CT attenuation per tissue and contrast phase,
MR contrast sampling, and the settings of the randomised artefacts (pure data plus name -> id lookups).

The tables are keyed by tissue *name* (the names of
:data:`pipelines.data.phantoms.tissues.TISSUES` and :data:`~pipelines.data.phantoms.tissues.BRAIN_TISSUES`);
:func:`ct_intensity_table` and :func:`mr_intensity_table` turn a phantom's ``tissue_names``
(id -> name) into the ``{tissue_id: (low, high)}`` tables that
:class:`pipelines.transforms.RandTissueIntensity` draws from. A tissue name the tables do not know
(the anatomy grows independently of this module) gets a fallback range and a logged warning, never
a silent default.

CT ranges (HU) are the span a per-case mean is drawn from, not a voxel's spread: typical adult
values widened to cover scanners, kV, patients and contrast timing. The values follow the usual
reference ranges of abdominal CT; the sources they agree with:

- [Bae2010] Bae KT. Intravenous contrast medium administration and scan timing at CT:
  considerations and approaches. Radiology 2010;256(1):32-61 (aortic peak ~250-350 HU in the
  arterial phase; the liver's portal-venous enhancement of ~50 HU over its unenhanced value).
- [Heiken1995] Heiken JP et al. Dynamic incremental CT: effect of volume and concentration of
  contrast material and patient weight on hepatic enhancement. Radiology 1995;195(2):353-357.
- [Kodama2007] Kodama Y et al. Comparison of CT methods for determining the fat content of the
  liver. AJR 2007;188(5):1307-1312 (unenhanced normal liver ~55-65 HU, spleen ~8-10 HU lower).
- [Boyce2010] Boyce CJ et al. Hepatic steatosis (fatty liver disease) in asymptomatic adults
  identified by unenhanced low-dose CT. AJR 2010;194(3):623-628 (steatosis below ~40-48 HU).
- [New1976] New PF, Aronow S. Attenuation measurements of whole blood and blood fractions in
  computed tomography. Radiology 1976;121(3):635-640 (unenhanced blood ~40-55 HU with haematocrit).
- [Kvist1988] Kvist H et al. Total and visceral adipose-tissue volumes derived from measurements
  with computed tomography in adult men and women. Am J Clin Nutr 1988;48(6):1351-1361 (adipose
  tissue -190 to -30 HU, mode near -100).
- [Aubrey2014] Aubrey J et al. Measurement of skeletal muscle radiation attenuation and basis of
  its biological variation. Acta Physiol 2014;210(3):489-497 (skeletal muscle ~30-60 HU).
- [Schreiber2011] Schreiber JJ et al. Hounsfield units for assessing bone mineral density and
  strength. J Bone Joint Surg Am 2011;93(11):1057-1063 (vertebral trabecular bone ~100-300 HU).
- [Gevenois1995] Gevenois PA et al. Comparison of computed density and macroscopic morphometry in
  pulmonary emphysema. Am J Respir Crit Care Med 1995;152:653-657 (normal lung ~ -850 HU).
- [Yuh1999] Yuh BI, Cohan RH. Different phases of renal enhancement. AJR 1999;173:747-755
  (corticomedullary phase 25-70 s: cortex far brighter than medulla; nephrographic ~80-180 s).
- Brain (head CT, unenhanced): grey matter ~35-45 HU, white matter ~20-30 HU, CSF 0-15 HU, as in
  the standard neuroradiology references (e.g. Osborn's Brain, 2nd ed., 2017).

MR has no absolute scale: each tissue's mean is drawn uniformly in :data:`MR_MEAN_RANGE` for every
sample (SynthSeg: Billot B et al., SynthSeg: segmentation of brain MRI scans of any contrast and
resolution without retraining. Med Image Anal 2023;86:102789), except tissues without MR signal
(no mobile protons or a T2* far shorter than any routine echo time: air, gas, cortical bone, lung),
which stay near zero so the background is dark as in every real MR image.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "CT_GENERIC_HU",
    "CT_HU_BY_PHASE",
    "CT_PHASES",
    "MR_DARK",
    "MR_MEAN_RANGE",
    "CTAppearance",
    "MRAppearance",
    "appearance_settings",
    "ct_intensity_table",
    "mr_intensity_table",
]

Range = tuple[float, float]

# --------------------------------------------------------------------------------------------
# CT
# --------------------------------------------------------------------------------------------

_NON_CONTRAST: dict[str, Range] = {
    "air": (-1000, -1000),
    "gas": (-1000, -900),  # bowel gas mixes with content at the partial-volume scale
    "lung": (-900, -750),  # [Gevenois1995]; expiration and dependent lung run higher
    "fat": (-120, -80),  # [Kvist1988]
    "visceral_fat": (-120, -80),  # [Kvist1988]
    "skin": (10, 60),
    "muscle": (30, 60),  # [Aubrey2014]
    "myocardium": (35, 55),
    "bone_cortical": (700, 1400),
    "rib": (300, 700),  # thin cortex + marrow averaged at 1-3 mm voxels
    "bone_marrow": (100, 300),  # [Schreiber2011] vertebral trabecular bone
    "disc": (60, 110),
    "csf": (0, 15),
    "liver": (45, 70),  # [Kodama2007], mild steatosis down to ~45 [Boyce2010]
    "liver_lesion": (10, 35),  # cysts ~0-20, hypodense metastases ~20-40
    "spleen": (38, 55),  # [Kodama2007]: ~8-10 HU below the liver
    "kidney_cortex": (25, 45),
    "kidney_medulla": (25, 40),  # cortex and medulla are not separable unenhanced
    "gallbladder": (0, 25),  # bile
    "esophagus": (35, 55),
    "stomach_wall": (35, 55),
    "stomach_content": (0, 40),  # water to food
    "bowel_wall": (35, 55),
    "bowel_content": (0, 50),
    "pancreas": (30, 50),
    "adrenal": (10, 40),  # lipid-rich adrenal tissue sits low
    "artery": (35, 55),  # [New1976] unenhanced blood
    "vein": (35, 55),
    "portal_vein": (35, 55),
    "hepatic_vein": (35, 55),
    "blood": (35, 55),
    "diaphragm": (30, 60),  # skeletal muscle [Aubrey2014]
    "cartilage": (80, 200),  # costal cartilage, patchy calcification with age
    "bladder_wall": (30, 55),
    "urine": (0, 15),  # water-like until excreted contrast arrives (delayed phase)
    "mediastinal_fat": (-120, -80),  # [Kvist1988]
    # head (unenhanced): Osborn
    "scalp": (10, 60),
    "skull": (700, 1400),
    "grey_matter": (35, 45),
    "deep_grey_matter": (33, 45),  # basal ganglia, thalami: close to cortical grey matter
    "white_matter": (20, 32),
    "ventricle": (0, 15),
    "tumor_core": (10, 30),  # necrosis
    "tumor_rim": (30, 50),
    "edema": (15, 28),
}

_ENHANCED: dict[str, Range] = {
    **_NON_CONTRAST,
    # after contrast, alike in the arterial and the portal-venous phase
    "adrenal": (50, 90),
    "muscle": (40, 65),
    "diaphragm": (40, 65),
    "bladder_wall": (45, 80),
    "bone_marrow": (110, 320),
    "scalp": (20, 70),
    "grey_matter": (38, 50),
    "white_matter": (22, 35),
    "tumor_rim": (60, 130),  # enhancing rim (blood-brain barrier breakdown)
}

_ARTERIAL: dict[str, Range] = {
    **_ENHANCED,
    # late arterial / pancreatic phase, ~35-45 s after injection [Bae2010]
    "artery": (250, 450),
    "blood": (200, 420),  # heart chambers and aortic root
    "portal_vein": (100, 180),  # splanchnic return has begun
    "vein": (60, 150),  # IVC: unopacified infrarenal blood mixing with renal return
    "hepatic_vein": (50, 90),  # not yet opacified
    "liver": (60, 90),  # ~75 % of hepatic supply is portal: little arterial-phase enhancement
    "liver_lesion": (30, 58),  # hypovascular lesion
    "spleen": (90, 160),  # arciform enhancement averaged
    "kidney_cortex": (160, 260),  # corticomedullary phase [Yuh1999]
    "kidney_medulla": (60, 110),
    "pancreas": (100, 150),  # pancreatic-phase peak
    "myocardium": (90, 150),
    "esophagus": (50, 90),
    "stomach_wall": (70, 120),  # mucosal enhancement
    "bowel_wall": (70, 120),
}

_PORTAL_VENOUS: dict[str, Range] = {
    **_ENHANCED,
    # portal-venous phase, ~60-80 s [Bae2010], [Heiken1995]
    "artery": (150, 230),
    "blood": (140, 210),
    "portal_vein": (150, 230),
    "vein": (120, 190),
    "hepatic_vein": (130, 200),
    "liver": (95, 135),  # ~+50 HU over the unenhanced liver [Bae2010]
    "liver_lesion": (45, 85),
    "spleen": (100, 145),
    "kidney_cortex": (150, 220),
    "kidney_medulla": (110, 190),  # entering the nephrographic phase [Yuh1999]
    "pancreas": (80, 125),
    "myocardium": (80, 125),
    "esophagus": (45, 80),
    "stomach_wall": (60, 100),
    "bowel_wall": (60, 100),
}

CT_HU_BY_PHASE: dict[str, dict[str, Range]] = {
    "non_contrast": _NON_CONTRAST,
    "arterial": _ARTERIAL,
    "portal_venous": _PORTAL_VENOUS,
}
"""Per-case mean attenuation range (HU) of each tissue name, per contrast phase."""

CT_PHASES: tuple[str, ...] = tuple(CT_HU_BY_PHASE)
"""The contrast phases a CT sample can be drawn in."""

CT_GENERIC_HU: Range = (0.0, 80.0)
"""Fallback range (HU) for a tissue name no table knows: unenhanced to enhanced soft tissue."""

# --------------------------------------------------------------------------------------------
# MR
# --------------------------------------------------------------------------------------------

MR_MEAN_RANGE: Range = (0.0, 1.0)
"""Range of a tissue's mean MR signal (arbitrary units) in a random-contrast sample."""

MR_DARK: dict[str, Range] = {
    "air": (0.0, 0.0),
    "gas": (0.0, 0.0),
    "bone_cortical": (0.0, 0.08),
    "skull": (0.0, 0.08),
    "rib": (0.0, 0.15),
    "lung": (0.0, 0.1),
}
"""Tissues with (almost) no MR signal in any routine sequence, and their mean range."""


# --------------------------------------------------------------------------------------------
# Artefact settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CTAppearance:
    """How a synthetic CT sample is rendered (HU, mm; a ``*_prob`` is a per-sample probability).

    Attributes:
        phases: Contrast phases to draw from (names of :data:`CT_HU_BY_PHASE`), uniformly.
        texture_std_hu: Largest within-tissue texture standard deviation (HU), drawn per sample.
        partial_volume_sigma_mm: Gaussian sigma range of the blur at tissue borders (mm).
        blur_prob, blur_sigma_mm: Whole-image Gaussian blur (reconstruction kernel).
        slice_thickness_prob, slice_thickness_mm: Thick-slice acquisition along the slice axis.
        streak_prob, ring_prob, metal_prob: Streak, ring and metal artefacts.
        noise_prob, noise_std_hu: Gaussian noise, std drawn in [0, noise_std_hu].
        offset_prob, offset_hu: One HU offset added to every voxel, drawn uniformly in ``offset_hu``:
            a scanner's calibration and tube voltage move every tissue's CT number together (water
            is held within about +-5 HU, soft tissue differs by 10-20 HU between tube voltages and
            reconstructions), which per-tissue ranges drawn independently do not model. Off by
            default (``offset_prob`` 0), so the default samples stay as they were drawn before.
    """

    phases: tuple[str, ...] = CT_PHASES
    texture_std_hu: float = 6.0
    partial_volume_sigma_mm: Range = (0.3, 1.2)
    blur_prob: float = 0.3
    blur_sigma_mm: Range = (0.3, 1.2)
    slice_thickness_prob: float = 0.5
    slice_thickness_mm: Range = (1.0, 6.0)
    streak_prob: float = 0.15
    ring_prob: float = 0.1
    metal_prob: float = 0.1
    noise_prob: float = 0.9
    noise_std_hu: float = 35.0
    offset_prob: float = 0.0
    offset_hu: Range = (-25.0, 25.0)


@dataclass(frozen=True)
class MRAppearance:
    """How a synthetic MR sample is rendered (arbitrary signal units in [0, ~1], mm).

    Attributes:
        orderings: Pairs ``(darker, brighter)`` of tissue names whose means keep that order
            (e.g. ``[["csf", "grey_matter"], ["grey_matter", "white_matter"]]`` for T1-like);
            empty (default) for fully random contrasts.
        texture_std: Largest within-tissue texture standard deviation.
        partial_volume_sigma_mm: Gaussian sigma range of the blur at tissue borders (mm).
        bias_prob, bias_coeff: MONAI ``RandBiasField`` (degree 3) with coefficients in
            ``(-bias_coeff, bias_coeff)``.
        gamma_prob, gamma: MONAI ``RandAdjustContrast`` gamma range.
        blur_prob, blur_sigma_mm: Whole-image Gaussian blur.
        slice_thickness_prob, slice_thickness_mm: Thick-slice acquisition along a random axis.
        noise_prob, noise_std: MONAI ``RandRicianNoise`` std drawn in [0, noise_std].
    """

    orderings: tuple[tuple[str, str], ...] = ()
    texture_std: float = 0.03
    partial_volume_sigma_mm: Range = (0.3, 1.2)
    bias_prob: float = 0.7
    bias_coeff: float = 0.3
    gamma_prob: float = 0.5
    gamma: Range = (0.6, 1.6)
    blur_prob: float = 0.3
    blur_sigma_mm: Range = (0.3, 1.2)
    slice_thickness_prob: float = 0.5
    slice_thickness_mm: Range = (1.0, 6.0)
    noise_prob: float = 0.9
    noise_std: float = 0.05


def appearance_settings(kind: str, overrides: Mapping[str, Any] | None = None) -> CTAppearance | MRAppearance:
    """The default settings of ``kind`` ("CT" or "MR") with ``overrides`` (plain JSON values) applied.

    Raises:
        ValueError: unknown kind, unknown setting name or unknown CT phase.
    """
    base: CTAppearance | MRAppearance
    if kind == "CT":
        base = CTAppearance()
    elif kind == "MR":
        base = MRAppearance()
    else:
        raise ValueError(f"appearance kind {kind!r}: expected 'CT' or 'MR'")
    overrides = dict(overrides or {})
    allowed = {f.name for f in fields(base)}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"appearance settings {unknown} unknown for {kind}; expected some of {sorted(allowed)}")
    for name, value in overrides.items():  # JSON gives lists where the dataclass holds tuples
        if isinstance(value, list):
            overrides[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    settings = replace(base, **overrides)
    if isinstance(settings, CTAppearance):
        bad = [p for p in settings.phases if p not in CT_HU_BY_PHASE]
        if bad or not settings.phases:
            raise ValueError(f"appearance phases {list(settings.phases)}: expected some of {list(CT_PHASES)}")
    return settings


# --------------------------------------------------------------------------------------------
# name -> id tables
# --------------------------------------------------------------------------------------------


def ct_intensity_table(tissue_names: Mapping[int, str], phase: str) -> dict[int, Range]:
    """``{tissue_id: (low_hu, high_hu)}`` of a phantom's tissue classes in one contrast phase.

    Args:
        tissue_names: Tissue id -> name (a :class:`~pipelines.data.phantoms.make.Phantom`'s ``tissue_names``).
        phase: One of :data:`CT_PHASES`.

    Returns:
        A range for every id; a name no table knows gets :data:`CT_GENERIC_HU` with a warning.

    Raises:
        ValueError: unknown phase.
    """
    if phase not in CT_HU_BY_PHASE:
        raise ValueError(f"CT phase {phase!r}: expected one of {list(CT_PHASES)}")
    table = CT_HU_BY_PHASE[phase]
    out: dict[int, Range] = {}
    for tissue_id, name in sorted(tissue_names.items()):
        if name in table:
            out[int(tissue_id)] = table[name]
        else:
            logger.warning(
                "tissue %r (id %d) has no CT range for phase %s; using the generic soft-tissue range %s HU",
                name,
                tissue_id,
                phase,
                CT_GENERIC_HU,
            )
            out[int(tissue_id)] = CT_GENERIC_HU
    return out


def mr_intensity_table(tissue_names: Mapping[int, str], mean_range: Range = MR_MEAN_RANGE) -> dict[int, Range]:
    """``{tissue_id: (low, high)}`` for a random MR contrast: :data:`MR_DARK` tissues near zero,
    every other tissue ``mean_range``.

    A name that neither :data:`MR_DARK` nor the CT tables know is logged (it gets ``mean_range``
    like any signal-giving tissue; if it has no MR signal, add it to :data:`MR_DARK`).
    """
    known = set(MR_DARK).union(*CT_HU_BY_PHASE.values())
    out: dict[int, Range] = {}
    for tissue_id, name in sorted(tissue_names.items()):
        if name not in known:
            logger.warning(
                "tissue %r (id %d) is unknown to the appearance tables; drawn as signal-giving tissue in %s",
                name,
                tissue_id,
                mean_range,
            )
        out[int(tissue_id)] = MR_DARK.get(name, (float(mean_range[0]), float(mean_range[1])))
    return out
