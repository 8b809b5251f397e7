"""A read :class:`~pipelines.io.readers.Volume` as the ``MetaTensor`` MONAI's ``LoadImage`` returns."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import MetaKeys, SpaceKeys

from pipelines.io.readers import Volume

__all__ = ["to_metatensor"]


def to_metatensor(volume: Volume, *, dtype: torch.dtype = torch.float32) -> MetaTensor:
    """The volume as MONAI's ``LoadImage`` would return it: no channel axis, RAS affine, meta keys set.

    Bundles start their preprocessing with ``LoadImaged``; running the rest of that chain on this
    tensor gives the same result as letting MONAI read the file, without reading it twice.
    """
    # A multi-channel input (pipelines.io.channels) is channel-first (C, I, J, K), as LoadImage stacks a file list.
    array = volume.array if volume.channels is None else volume.channels
    if array.strides and min(array.strides) < 0:
        array = np.ascontiguousarray(array)  # torch takes no negative strides
    # One pass converts the dtype and lays the voxels out C-contiguously: readers hand over Fortran-order
    # arrays (nibabel), and numpy's reordering copy followed by the dtype cast took twice as long.
    tensor = torch.from_numpy(array).to(dtype, memory_format=torch.contiguous_format)
    affine = torch.as_tensor(volume.affine, dtype=torch.float64)
    meta = {
        MetaKeys.AFFINE: affine.clone(),
        MetaKeys.ORIGINAL_AFFINE: affine.clone(),
        MetaKeys.SPATIAL_SHAPE: np.asarray(volume.shape),
        MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if volume.channels is None else 0,
        MetaKeys.SPACE: SpaceKeys.RAS,
        "filename_or_obj": str(volume.path),
    }
    return MetaTensor(tensor, meta=meta)
