"""The phantom factories: :func:`make_ct_phantom`, :func:`make_mr_phantom`, :func:`make_brain_tumor_phantom`.

Each checks its arguments, builds the canonical grid, draws the anatomy from the seed's anatomy
stream, turns tissue into intensities with the intensity and noise streams, and reorients the
arrays to the requested axis codes (see :mod:`pipelines.data.phantoms` for the whole recipe).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipelines.data.phantoms.abdomen import abdomen_anatomy, render_abdomen
from pipelines.data.phantoms.body import body_anatomy, check_body_options
from pipelines.data.phantoms.body_paint import render_body
from pipelines.data.phantoms.brain import brain_tissue
from pipelines.data.phantoms.head import head_tissue
from pipelines.data.phantoms.render import blur, correlated_noise, lookup, rician
from pipelines.data.phantoms.shapes import CanonicalGrid, canonical_grid, reorient, smooth_field
from pipelines.data.phantoms.tissues import (
    BODY_TISSUES,
    BRAIN_SIGNAL,
    BRAIN_TISSUES,
    BRAIN_TUMOUR_TISSUES,
    CT_CLIP_HU,
    CT_HU,
    CT_STRUCTURES,
    HEAD_TISSUES,
    MR_CONTRASTS,
    MR_T1,
    TISSUES,
    VARIED_BRAIN_TISSUES,
)

logger = logging.getLogger(__name__)

__all__ = ["ANATOMIES", "Phantom", "make_brain_tumor_phantom", "make_ct_phantom", "make_mr_phantom"]

_MIN_VOXELS = 8
ANATOMIES = ("classic", "body")
"""``anatomy`` of the factories: "classic" (the default, unchanged: anatomy shrunk to fit the field of view)
or "body" (real-size adult anatomy, literature organ sizes, patient size, field of view placed on a region of
the trunk and truncated at its edge; see :mod:`pipelines.data.phantoms.body` and
:mod:`pipelines.data.phantoms.head`)."""


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic volume with its truth.

    Attributes:
        image: Intensities indexed (i, j, k): int16 HU for CT, int16 signal for abdominal MR,
            float32 for the brain phantom, which is channel-first (C, i, j, k) when it has more
            than one contrast.
        label: uint8 label map (i, j, k), same spatial shape as ``image``.
        affine: 4x4 float64 mapping (i, j, k, 1) to RAS world coordinates in mm.
        labels: Id -> name of every id of the label scheme (0 is "background"). An id may be
            absent from a given case (no lesion drawn, structure outside a small field of view).
        modality: "CT" or "MR".
        tissue: uint8 tissue-class map (i, j, k) the intensities were made from (see
            ``tissue_names``), handy for tests and benchmarks; None when not kept.
        tissue_names: Id -> name of the tissue classes of ``tissue``.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    labels: dict[int, str]
    modality: str
    tissue: np.ndarray | None = None
    tissue_names: dict[int, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed: expected a non-negative int, got {type(seed).__name__} {seed!r}")
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed}")
    return int(seed)


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        values = tuple(shape)
    except TypeError:
        raise ValueError(f"shape: expected 3 ints, got {shape!r}") from None
    if len(values) != 3 or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
        raise ValueError(f"shape: expected 3 ints, got {shape!r}")
    if min(values) < _MIN_VOXELS:
        raise ValueError(f"shape: expected at least {_MIN_VOXELS} voxels along every axis, got {values}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def _check_spacing(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in spacing_mm)
    except (TypeError, ValueError):
        raise ValueError(f"spacing_mm: expected 3 positive numbers, got {spacing_mm!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing_mm: expected 3 positive finite numbers (mm), got {spacing_mm!r}")
    return values  # type: ignore[return-value]


def _check_orientation(orientation: str) -> tuple[str, str, str]:
    codes = tuple(orientation) if isinstance(orientation, str) else ()
    pairs = [{"L", "R"}, {"A", "P"}, {"S", "I"}]
    used = sorted(i for c in codes for i, pair in enumerate(pairs) if c in pair)
    if len(codes) != 3 or used != [0, 1, 2]:
        raise ValueError(
            f"orientation: expected a 3-letter axis code with one of R/L, A/P and S/I each "
            f"(e.g. 'RAS', 'LPS', 'LAS'), got {orientation!r}"
        )
    return codes  # type: ignore[return-value]


def _check_label_ids(label_ids: Mapping[str, int] | None, default: Mapping[str, int]) -> dict[str, int]:
    if label_ids is None:
        return dict(default)
    if not isinstance(label_ids, Mapping):
        raise TypeError(f"label_ids: expected a mapping name -> id, got {type(label_ids).__name__}")
    unknown = sorted(set(label_ids) - set(CT_STRUCTURES))
    if unknown:
        raise ValueError(f"label_ids: unknown structure(s) {unknown}; expected names from {sorted(CT_STRUCTURES)}")
    ids: dict[str, int] = {}
    for name, value in label_ids.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= value <= 255:
            raise ValueError(f"label_ids: id of {name!r} must be an int in 1..255, got {value!r}")
        ids[name] = int(value)
    if len(set(ids.values())) != len(ids):
        raise ValueError(f"label_ids: ids must be unique, got {ids}")
    return ids


def _validated_common(
    seed: int, shape: Sequence[int], spacing_mm: Sequence[float], orientation: str
) -> tuple[int, tuple[int, int, int], tuple[float, float, float], tuple[str, str, str]]:
    seed = _check_seed(seed)
    shape = _check_shape(shape)
    spacing = _check_spacing(spacing_mm)
    codes = _check_orientation(orientation)
    return seed, shape, spacing, codes


def _check_anatomy(
    anatomy: str,
    region: str | None = None,
    patient_size: str | float | None = None,
    perirenal_fat: bool = False,
    renal_sinus: str = "small",
    spleen: str = "typical",
) -> None:
    if anatomy not in ANATOMIES:
        raise ValueError(f"anatomy: expected one of {', '.join(ANATOMIES)}, got {anatomy!r}")
    if not isinstance(perirenal_fat, bool):
        raise ValueError(f"perirenal_fat: expected true or false, got {perirenal_fat!r}")
    if anatomy == "classic" and (region is not None or patient_size is not None or spleen != "typical"):
        raise ValueError('region, patient_size and spleen need anatomy="body"; the classic anatomy has none of them')
    check_body_options(region, patient_size, renal_sinus, spleen)
    if renal_sinus != "small" and not (anatomy == "body" and perirenal_fat):
        raise ValueError(
            f'renal_sinus={renal_sinus!r} needs anatomy="body" and perirenal_fat=true: only those kidneys have a sinus'
        )


def _labels_dict(label_ids: Mapping[str, int]) -> dict[int, str]:
    return {0: "background", **{i: name for name, i in sorted(label_ids.items(), key=lambda t: t[1])}}


# --------------------------------------------------------------------------------------------
# Phantoms
# --------------------------------------------------------------------------------------------


def make_ct_phantom(
    seed: int,
    *,
    shape: tuple[int, int, int] = (192, 160, 96),
    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 2.0),
    orientation: str = "RAS",
    label_ids: Mapping[str, int] | None = None,
    lesions: bool = True,
    blur_sigma_mm: float = 0.8,
    noise_hu: float | None = None,
    anatomy: str = "classic",
    region: str | None = None,
    patient_size: str | float | None = None,
    perirenal_fat: bool = False,
    renal_sinus: str = "small",
    spleen: str = "typical",
) -> Phantom:
    """A contrast-enhanced abdominal CT phantom with its organ labels.

    Args:
        seed: Non-negative int; the same seed gives the same volume, bit for bit.
        shape: Array shape (i, j, k) in the requested ``orientation``; at least 8 voxels per axis.
        spacing_mm: Voxel size (mm) along i, j, k.
        orientation: nibabel axis codes of the array axes, e.g. "RAS", "LPS", "LAS", "PIR".
        label_ids: Structures to label and their ids (names from :data:`CT_STRUCTURES`);
            structures left out are still drawn but labelled 0. Default: :data:`CT_STRUCTURES`.
            Without "liver_tumor", lesions take the liver's id.
        lesions: Draw 1-3 hypodense liver lesions (10-30 mm, ~40 HU below liver).
        blur_sigma_mm: Gaussian partial-volume blur (mm, 0 for none).
        noise_hu: Noise standard deviation (HU); None draws 10-20 HU per case.
        anatomy: "classic" (default, bit-for-bit unchanged) or "body" (see :data:`ANATOMIES`): the
            tissue map then uses :data:`BODY_TISSUES`.
        region: With "body": where the field of view lies ("chest", "abdomen", "pelvis", "trunk");
            None draws it from the seed.
        patient_size: With "body": "slim", "average", "overweight", "obese" or an index 0..1 (fat
            thickness); None draws it from the seed.
        perirenal_fat: The kidneys lie with the adrenal glands in their perirenal fat, apart from the liver
            and the spleen (off: painted over their neighbours, the right adrenal gland inside the liver,
            what the shipped CT U-Net weights were trained on). With "body" the kidneys also get a renal
            sinus (:func:`~pipelines.data.phantoms.body.body_anatomy`); the classic anatomy keeps its organs
            and adds only the fat (:func:`~pipelines.data.phantoms.abdomen.abdomen_anatomy`).
        renal_sinus: With "body" and ``perirenal_fat``: "small" (default, every sinus 0.45 of its kidney's
            semi-axes) or "varied" (0.45 to 0.70, larger in heavier patients, the parenchyma then a rim;
            :data:`~pipelines.data.phantoms.variants.RENAL_SINUSES`). The rest of the case is unchanged.
        spleen: With "body": "typical" (default) or "varied" (larger, longer and lower over the
            literature's range, :data:`~pipelines.data.phantoms.variants.SPLEENS`); the spleen, what it
            covers and the left diaphragm dome change, the rest of the case does not.

    Returns:
        A :class:`Phantom` with an int16 HU image in [-1024, 3071], uint8 labels, its RAS affine
        (volume centred on the world origin) and the tissue map.

    Raises:
        ValueError: On a bad shape, spacing, orientation, seed or label_ids.
    """
    seed, shape, spacing, codes = _validated_common(seed, shape, spacing_mm, orientation)
    ids = _check_label_ids(label_ids, CT_STRUCTURES)
    _check_anatomy(anatomy, region, patient_size, perirenal_fat, renal_sinus, spleen)
    body = (region, patient_size, perirenal_fat, renal_sinus, spleen) if anatomy == "body" else None
    tissue, label, grid, transform, streams = _abdomen_maps(
        seed, shape, spacing, codes, ids, lesions, body, perirenal_fat
    )
    intensity_rng, noise_rng = streams
    names = TISSUES if body is None else BODY_TISSUES
    hu = lookup(intensity_rng, CT_HU, names)
    hu["liver_lesion"] = hu["liver"] - intensity_rng.uniform(30.0, 50.0)
    hu["kidney_medulla"] = hu["kidney_cortex"] - intensity_rng.uniform(40.0, 80.0)
    hu["hepatic_vein"] = hu["vein"] + intensity_rng.uniform(-10.0, 20.0)
    lut = np.array([hu[name] for name in names], dtype=np.float32)
    sigma = float(noise_rng.uniform(10.0, 20.0)) if noise_hu is None else float(noise_hu)
    if sigma < 0:
        raise ValueError(f"noise_hu: expected a non-negative number, got {noise_hu}")
    image = blur(lut[tissue], grid.spacing, blur_sigma_mm)
    image += correlated_noise(noise_rng, grid.shape, sigma, 0.6)
    np.rint(image, out=image)
    np.clip(image, *CT_CLIP_HU, out=image)
    affine, image, label, tissue = reorient(grid, transform, image.astype(np.int16), label, tissue)
    logger.debug("CT phantom seed=%d shape=%s spacing=%s orientation=%s", seed, shape, spacing, "".join(codes))
    return Phantom(image, label, affine, _labels_dict(ids), "CT", tissue, {i: n for n, i in names.items()})


def _abdomen_maps(
    seed: int,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    codes: tuple[str, str, str],
    ids: Mapping[str, int],
    lesions: bool,
    body: tuple[str | None, str | float | None, bool, str, str] | None = None,
    perirenal_fat: bool = False,
) -> tuple[np.ndarray, np.ndarray, CanonicalGrid, np.ndarray, tuple[np.random.Generator, np.random.Generator]]:
    """Tissue and label maps of a seed's abdomen (canonical grid), the grid, its reorientation
    and the intensity and noise random streams, in that order. ``body``: (region, patient_size, perirenal_fat,
    renal_sinus, spleen) for the "body" anatomy, None for the classic one, whose perirenal fat is ``perirenal_fat``."""
    grid, transform = canonical_grid(shape, spacing, codes)
    anatomy_ss, lesion_ss, intensity_ss, noise_ss = np.random.SeedSequence(seed).spawn(4)
    if body is None:
        anatomy = abdomen_anatomy(
            np.random.default_rng(anatomy_ss), np.random.default_rng(lesion_ss), grid, perirenal_fat
        )
        tissue, label = render_abdomen(anatomy, grid, ids, lesions)
    else:
        placement_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(5)[4])
        trunk = body_anatomy(
            np.random.default_rng(anatomy_ss), np.random.default_rng(lesion_ss), placement_rng, grid, *body
        )
        tissue, label = render_body(trunk, grid, ids, lesions)
    streams = (np.random.default_rng(intensity_ss), np.random.default_rng(noise_ss))
    return tissue, label, grid, transform, streams


def make_mr_phantom(
    seed: int,
    *,
    shape: tuple[int, int, int] = (192, 160, 64),
    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 3.0),
    orientation: str = "RAS",
    label_ids: Mapping[str, int] | None = None,
    lesions: bool = False,
    blur_sigma_mm: float = 1.0,
    anatomy: str = "classic",
    region: str | None = None,
    patient_size: str | float | None = None,
    perirenal_fat: bool = False,
    renal_sinus: str = "small",
    spleen: str = "typical",
) -> Phantom:
    """A T1-weighted-like abdominal MR phantom: the anatomy of :func:`make_ct_phantom` for the
    same seed, with MR signal (fat bright, fluid and flowing blood dark), a smooth multiplicative
    bias field and Rician noise.

    Args:
        seed: Non-negative int.
        shape: Array shape (i, j, k) in the requested ``orientation``; at least 8 per axis.
        spacing_mm: Voxel size (mm) along i, j, k.
        orientation: nibabel axis codes of the array axes.
        label_ids: As for :func:`make_ct_phantom`; default :data:`CT_STRUCTURES` without
            "liver_tumor" unless ``lesions``.
        lesions: Draw T1-hypointense liver lesions.
        blur_sigma_mm: Gaussian partial-volume blur (mm).
        anatomy, region, patient_size, perirenal_fat, renal_sinus, spleen: As for :func:`make_ct_phantom`.

    Returns:
        A :class:`Phantom` with an int16 image (signal >= 0), uint8 labels and its RAS affine.

    Raises:
        ValueError: On a bad shape, spacing, orientation, seed or label_ids.
    """
    seed, shape, spacing, codes = _validated_common(seed, shape, spacing_mm, orientation)
    default = dict(CT_STRUCTURES)
    if not lesions:
        default.pop("liver_tumor")
    ids = _check_label_ids(label_ids, default)
    _check_anatomy(anatomy, region, patient_size, perirenal_fat, renal_sinus, spleen)
    body = (region, patient_size, perirenal_fat, renal_sinus, spleen) if anatomy == "body" else None
    tissue, label, grid, transform, streams = _abdomen_maps(
        seed, shape, spacing, codes, ids, lesions, body, perirenal_fat
    )
    intensity_rng, noise_rng = streams
    names = TISSUES if body is None else BODY_TISSUES
    signal = lookup(intensity_rng, MR_T1, names)
    signal["liver_lesion"] = signal["liver"] * intensity_rng.uniform(0.55, 0.7)
    lut = np.array([signal[name] for name in names], dtype=np.float32)
    image = blur(lut[tissue], grid.spacing, blur_sigma_mm)
    bias = smooth_field(intensity_rng, grid, intensity_rng.uniform(0.15, 0.3))
    image *= np.exp(bias)
    del bias
    sigma = np.float32(noise_rng.uniform(10.0, 20.0))
    image = rician(noise_rng, image, sigma)
    np.rint(image, out=image)
    np.clip(image, 0, np.iinfo(np.int16).max, out=image)
    affine, image, label, tissue = reorient(grid, transform, image.astype(np.int16), label, tissue)
    return Phantom(image, label, affine, _labels_dict(ids), "MR", tissue, {i: n for n, i in names.items()})


def make_brain_tumor_phantom(
    seed: int,
    *,
    shape: tuple[int, int, int] = (128, 128, 40),
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 4.0),
    orientation: str = "RAS",
    channels: int = 1,
    blur_sigma_mm: float = 0.8,
    anatomy: str = "classic",
    varied: bool = False,
) -> Phantom:
    """A head MR phantom with one glioma-like tumour (enhancing rim, necrotic core, edema).

    The label is binary: 1 = tumour (rim + core); the surrounding edema is visible on T2/FLAIR
    but not labelled. Contrasts are taken from :data:`MR_CONTRASTS` in order (T1c, T1, T2,
    FLAIR); all share the anatomy and the bias field, each has its own Rician noise.

    Args:
        seed: Non-negative int.
        shape: Array shape (i, j, k) in the requested ``orientation``; at least 8 per axis.
        spacing_mm: Voxel size (mm) along i, j, k.
        orientation: nibabel axis codes of the array axes.
        channels: Number of contrasts, 1 to 4.
        blur_sigma_mm: Gaussian partial-volume blur (mm).
        anatomy: "classic" (default, unchanged) or "body": an adult head at real size (truncated by a
            small field of view) with literature-sized brain, ventricles and skull, deep grey nuclei, and
            a tumour anywhere in the hemispheres with mass effect (tissue map: :data:`HEAD_TISSUES`).
        varied: With "classic": T1-bright scalp fat and diploe, and a tumour that may reach the cortex and
            enhances in a ring, solidly or patchily (:func:`~pipelines.data.phantoms.brain.brain_tissue`;
            tissue map: :data:`VARIED_BRAIN_TISSUES`). Drawn from a stream of its own, so the rest of the
            head is the default phantom's.

    Returns:
        A :class:`Phantom` with a float32 image (i, j, k) for one channel or channel-first
        (C, i, j, k) for several, uint8 labels (i, j, k) and its RAS affine.

    Raises:
        ValueError: On a bad shape, spacing, orientation, seed or channels.
    """
    seed, shape, spacing, codes = _validated_common(seed, shape, spacing_mm, orientation)
    if (
        isinstance(channels, bool)
        or not isinstance(channels, int | np.integer)
        or not (1 <= channels <= len(MR_CONTRASTS))
    ):
        raise ValueError(f"channels: expected an int in 1..{len(MR_CONTRASTS)}, got {channels!r}")
    _check_anatomy(anatomy)
    if not isinstance(varied, bool):
        raise ValueError(f"varied: expected true or false, got {varied!r}")
    if varied and anatomy != "classic":
        raise ValueError('varied: only the classic head (anatomy="classic") has it')
    grid, transform = canonical_grid(shape, spacing, codes)
    # the first three streams are those of a default phantom; the fourth draws what ``varied`` adds
    anatomy_ss, intensity_ss, noise_ss, varied_ss = np.random.SeedSequence(seed).spawn(4)
    if varied:
        names = VARIED_BRAIN_TISSUES
        tissue = brain_tissue(np.random.default_rng(anatomy_ss), grid, np.random.default_rng(varied_ss))
    else:
        names = BRAIN_TISSUES if anatomy == "classic" else HEAD_TISSUES
        draw = brain_tissue if anatomy == "classic" else head_tissue
        tissue = draw(np.random.default_rng(anatomy_ss), grid)
    label = np.isin(tissue, [names[n] for n in BRAIN_TUMOUR_TISSUES if n in names]).astype(np.uint8)
    intensity_rng = np.random.default_rng(intensity_ss)
    noise_rng = np.random.default_rng(noise_ss)
    bias = np.exp(smooth_field(intensity_rng, grid, intensity_rng.uniform(0.1, 0.25)))
    images = []
    for contrast in MR_CONTRASTS[:channels]:
        table = BRAIN_SIGNAL[contrast]
        lut = np.array(
            [table[name] * intensity_rng.uniform(0.93, 1.07) for name in names],
            dtype=np.float32,
        )
        image = blur(lut[tissue], grid.spacing, blur_sigma_mm) * bias
        image = rician(noise_rng, image, np.float32(noise_rng.uniform(8.0, 16.0)))
        images.append(image.astype(np.float32))
    image = images[0] if channels == 1 else np.stack(images)
    affine, image, label, tissue = reorient(grid, transform, image, label, tissue)
    return Phantom(image, label, affine, {0: "background", 1: "tumor"}, "MR", tissue, {i: n for n, i in names.items()})
