"""Crop to what the image shows: MONAI's ``CropForegroundd``, safe for an image with nothing in it.

Used before sliding-window inference on CT: after the intensity window (-175..250 HU -> 0..1,
clipped) everything above zero is body, table or bedding, and a sliding window over the air around
them is work whose answer is known. On the 512 x 512 x 200 benchmark phantom the body spans
289 x 195 mm of a 410 x 410 mm field of view, and cropping halves the windows (8 -> 4). The label
map still covers the whole input: the way back to the input grid
(:class:`~pipelines.transforms.grid.ResampleScoresToOriginald`) follows the cropped image's affine,
and voxels outside the crop take the crop's edge, which is air (background) since the crop keeps a
margin around the foreground.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import CropForegroundd

__all__ = ["CropForegroundOrKeepd"]

logger = logging.getLogger(__name__)


class CropForegroundOrKeepd(CropForegroundd):
    """``monai.transforms.CropForegroundd`` (same arguments), except that an image without foreground stays whole.

    MONAI crops such an image to zero voxels, on which no inferer runs; an all-air scan is better
    segmented as it is (it gives an empty label map, which the QC then reports as missing organs).
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, Any]:
        start, end = self.cropper.compute_bounding_box(img=data[self.source_key])
        if any(int(e) <= int(s) for s, e in zip(start, end, strict=True)):
            logger.warning("%s: no foreground in %r; the image is not cropped", type(self).__name__, self.source_key)
            return dict(data)
        return super().__call__(data, lazy)
