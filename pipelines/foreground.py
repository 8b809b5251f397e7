"""What in an image is body and what is air, from its intensities alone (numpy, SciPy, scikit-image).

:func:`body_mask` is the body of a scan: foreground by Otsu's threshold (scikit-image), the holes of
every slice filled along each axis (the dark skull and CSF of a T1 head lie inside the bright scalp
ring; a head cut by the field of view is open in 3-D, never in every slice), its largest connected
component kept. :func:`finite_sample` is the strided sample of finite voxels that image-wide
percentiles are read from. Used by the QC (:mod:`pipelines.outputs.depth`, the input checks), the
preview's window and the normalisation over the body (:mod:`pipelines.transforms.body`); a module of
its own, at the bottom of the package, so that none of them pays for torch to use it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["SAMPLE_VOXELS", "body_mask", "finite_sample", "sample_step"]

SAMPLE_VOXELS = 2_000_000
"""About how many voxels :func:`finite_sample` reads: image-wide percentiles within a voxel's worth."""


def sample_step(size: int, max_voxels: int = SAMPLE_VOXELS) -> int:
    """Voxels to step along each axis so that an image of ``size`` voxels gives about ``max_voxels``."""
    return max(1, math.ceil((size / max_voxels) ** (1 / 3)))


def finite_sample(image: np.ndarray, max_voxels: int = SAMPLE_VOXELS) -> np.ndarray:
    """The finite voxels (float64, flat) of ``image`` taken every ``step`` along each axis, ``step`` chosen so that
    at most about ``max_voxels`` are read: image-wide percentiles without sorting a whole 512x512x200 volume."""
    step = sample_step(image.size, max_voxels)
    sample = np.asarray(image[::step, ::step, ::step], dtype=np.float64).ravel()
    return sample[np.isfinite(sample)]


def body_mask(image: np.ndarray) -> np.ndarray | None:
    """Boolean mask ``(i, j, k)`` of the body in ``image``; None when no background can be told apart
    (a constant image, or one without a single voxel of background)."""
    from skimage.filters import threshold_otsu

    sample = finite_sample(image)
    if sample.size == 0 or sample.min() == sample.max():
        return None
    foreground = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=-np.inf) > threshold_otsu(sample)
    filled = foreground.copy()
    for axis in range(3):
        moved = np.moveaxis(foreground, axis, 0)
        target = np.moveaxis(filled, axis, 0)
        for index in range(moved.shape[0]):
            target[index] |= ndimage.binary_fill_holes(moved[index])
    components, count = ndimage.label(filled)
    if count == 0:
        return None
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    body = components == int(np.argmax(sizes))
    return None if body.all() else body
