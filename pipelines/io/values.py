"""Voxel values a model cannot be trusted on: NaN and infinite voxels, refused or filled on request."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from pipelines.io.readers import Volume

logger = logging.getLogger(__name__)

__all__ = ["NAN_POLICIES", "check_finite"]

NAN_POLICIES = ("refuse", "fill")


def check_finite(volume: Volume, policy: str = "refuse") -> tuple[Volume, dict[str, Any] | None]:
    """Apply the NaN policy to a read volume.

    A few NaN voxels make a network's output NaN around them, and argmax of NaN is background:
    the label map shrinks or vanishes without a word. So they are refused by default.

    Args:
        volume: the read input.
        policy: ``refuse`` (raise) or ``fill`` (replace NaN and +-Inf by the minimum finite voxel).

    Returns:
        The volume (a copy when filled) and, when something was filled, the correction to record
        in run.json: ``{"kind": "non_finite_filled", "voxels": n, "fill_value": v, "first_index": [i, j, k]}``.

    Raises:
        ValueError: non-finite voxels under ``refuse``; every voxel non-finite; an unknown policy.
    """
    if policy not in NAN_POLICIES:
        raise ValueError(f"NaN policy {policy!r}: expected one of {', '.join(NAN_POLICIES)}")
    array = volume.array
    if not np.issubdtype(array.dtype, np.floating):
        return volume, None
    bad = ~np.isfinite(array)
    count = int(bad.sum())
    if count == 0:
        return volume, None
    first = [int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape)]
    what = f"{count:,} of {array.size:,} voxels are NaN or infinite (first at index {tuple(first)})"
    if count == array.size:
        raise ValueError(f"{volume.path}: every voxel is NaN or infinite; expected an image with finite values")
    if policy == "refuse":
        raise ValueError(
            f"{volume.path}: {what}; expected finite values. Use --nan-policy fill to replace them by the "
            "image minimum (recorded in run.json)"
        )
    fill_value = float(np.min(array[~bad]))
    fixed = np.where(bad, np.asarray(fill_value, dtype=array.dtype), array)
    logger.warning("%s: %s; filled with the image minimum %g", volume.path, what, fill_value)
    correction = {"kind": "non_finite_filled", "voxels": count, "fill_value": fill_value, "first_index": first}
    return dataclasses.replace(volume, array=fixed), correction
