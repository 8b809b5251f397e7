"""Phantoms made to go wrong: graded degradations of a CT phantom and a head-only CT.

Used by the QC-signal benchmark (``scripts/bench/qc_signals.py``) and the tests of the QC flags:
each produces an image a segmentation model should do worse on, with the truth it should have found.

- :func:`degrade_ct`: noise, blur, low dose (noise plus a softer kernel), an intensity shift, or a
  truncated field of view (the top of the volume cut through the organs); ``level`` 0..1 grades it.
- :func:`make_head_ct_phantom`: the head of :func:`~pipelines.data.phantoms.make.make_brain_tumor_phantom`
  in Hounsfield units (skull, brain, CSF, air), with no abdominal organ in view: the truth is empty.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from pipelines.data.phantoms.make import Phantom, make_brain_tumor_phantom
from pipelines.data.phantoms.render import blur, correlated_noise
from pipelines.data.phantoms.tissues import BRAIN_TISSUES, CT_CLIP_HU

logger = logging.getLogger(__name__)

__all__ = ["DEGRADATIONS", "HEAD_HU", "degrade_ct", "make_head_ct_phantom"]

DEGRADATIONS = ("noise", "blur", "low_dose", "shift", "truncation")
"""What :func:`degrade_ct` can do to a CT phantom."""

HEAD_HU: dict[str, float] = {
    "air": -1000.0,
    "scalp": 30.0,
    "skull": 1100.0,
    "csf": 8.0,
    "grey_matter": 40.0,
    "white_matter": 28.0,
    "ventricle": 8.0,
    "tumor_core": 20.0,
    "tumor_rim": 55.0,
    "edema": 22.0,
}
"""Typical non-contrast head CT values (HU) of the brain phantom's tissue classes."""


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))  # type: ignore[return-value]


def degrade_ct(phantom: Phantom, kind: str, level: float, seed: int = 0) -> Phantom:
    """A degraded copy of a CT phantom.

    Args:
        phantom: a CT phantom (int16 HU image).
        kind: one of :data:`DEGRADATIONS`.
        level: 0 (unchanged) to 1 (severe): noise up to 250 HU; blur up to 6 mm sigma; low dose up to
            180 HU noise with a 2 mm blur; shift up to +400 HU; truncation keeps down to 35 % of the
            slices (the lower part; the truth is cut the same way).
        seed: noise stream.

    Raises:
        ValueError: unknown kind, level outside 0..1, or not a CT phantom.
    """
    if kind not in DEGRADATIONS:
        raise ValueError(f"degradation {kind!r}: expected one of {', '.join(DEGRADATIONS)}")
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"degradation level {level}: expected a number in 0..1")
    if phantom.modality != "CT":
        raise ValueError(f"degrade_ct: expected a CT phantom, got {phantom.modality}")
    rng = np.random.default_rng([seed, 15])
    spacing = _spacing(phantom.affine)
    image = phantom.image.astype(np.float32)
    label = phantom.label
    if kind == "noise":
        image += correlated_noise(rng, image.shape, 250.0 * level, 0.6)
    elif kind == "blur":
        image = blur(image, spacing, 6.0 * level)
    elif kind == "low_dose":
        image = blur(image, spacing, 2.0 * level) + correlated_noise(rng, image.shape, 180.0 * level, 1.0)
    elif kind == "shift":
        image += 400.0 * level
    else:  # truncation: keep the lower slices (voxel axis 2 runs inferior -> superior in RAS phantoms)
        keep = max(8, round(image.shape[2] * (1.0 - 0.65 * level)))
        superior = phantom.affine[2, 2] > 0
        cut = slice(0, keep) if superior else slice(image.shape[2] - keep, image.shape[2])
        image, label = image[:, :, cut], label[:, :, cut]
        affine = phantom.affine.copy()
        affine[:3, 3] += affine[:3, 2] * cut.start
        out = np.clip(np.rint(image), *CT_CLIP_HU).astype(np.int16)
        return dataclasses.replace(phantom, image=out, label=np.ascontiguousarray(label), affine=affine, tissue=None)
    out = np.clip(np.rint(image), *CT_CLIP_HU).astype(np.int16)
    return dataclasses.replace(phantom, image=out, tissue=None)


def make_head_ct_phantom(
    seed: int,
    labels: dict[int, str],
    *,
    shape: tuple[int, int, int] = (160, 160, 96),
    spacing_mm: tuple[float, float, float] = (1.2, 1.2, 2.0),
    noise_hu: float = 6.0,
) -> Phantom:
    """A head-only CT: the brain phantom's anatomy in HU, with an empty truth for an abdominal bundle.

    Args:
        seed: anatomy and noise.
        labels: the label scheme of the bundle it will be given to (the truth has none of them).
        shape, spacing_mm: the grid (RAS).
        noise_hu: noise standard deviation (HU).
    """
    brain = make_brain_tumor_phantom(seed, shape=shape, spacing_mm=spacing_mm)
    lut = np.array([HEAD_HU[name] for name in BRAIN_TISSUES], dtype=np.float32)
    image = blur(lut[brain.tissue], spacing_mm, 0.7)
    image += correlated_noise(np.random.default_rng([seed, 16]), image.shape, noise_hu, 0.6)
    out = np.clip(np.rint(image), *CT_CLIP_HU).astype(np.int16)
    return Phantom(out, np.zeros(out.shape, np.uint8), brain.affine, dict(labels), "CT")
