"""MONAI's ``Spacingd`` with its linear interpolation done one axis at a time.

``Spacingd`` keeps the image's axes and changes only the voxel size, so the map from the new grid to
the old one is a scaling and a shift along each axis: linear interpolation on it is separable, three
1D interpolations. MONAI runs it as a general affine resampling instead: a dense float64 sampling
grid over the whole output, then ``grid_sample``. On a 512 x 512 x 200 CT resampled to
1.5 x 1.5 x 2 mm that took 0.85 s here (2 CPU cores), the separable way 0.23 s.

The geometry stays MONAI's: the transform runs MONAI's ``Spacingd`` lazily, which computes the
output affine and shape and records the operation without touching a voxel, and then carries the
voxels over itself. The result is MONAI's, to float rounding (float32 against float64 arithmetic:
6e-5 HU at most on the benchmark CT), with the same affine, shape and applied-operation record, so
``Invertd`` still inverts it. Anything else (nearest or spline interpolation, other padding modes,
``align_corners=True``, an operation that mixes axes, lazy pipelines) runs MONAI's own resampling.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import Spacingd
from monai.utils import TraceKeys

from pipelines.transforms.grid import _lerp_axis, linear_index_maps

__all__ = ["SeparableSpacingd"]


class SeparableSpacingd(Spacingd):
    """``monai.transforms.Spacingd`` (same arguments, same output) with a separable bilinear path."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, Any]:
        lazy_ = self.lazy if lazy is None else lazy
        if lazy_:
            return super().__call__(data, lazy=True)
        planned = super().__call__(data, lazy=True)  # geometry only: each key holds one pending operation
        done = {key: _resample_separably(planned[key]) for key in self.key_iterator(planned)}
        if not done or any(value is None for value in done.values()):
            return super().__call__(data, lazy=False)  # MONAI's own resampling, for every key
        return {**planned, **done}


def _resample_separably(image: Any) -> MetaTensor | None:
    """Carry out ``image``'s one pending bilinear resampling axis by axis; None where that does not apply."""
    if not isinstance(image, MetaTensor):
        return None
    pending = image.pending_operations
    if len(pending) != 1 or image.ndim != 4:
        return None
    info = pending[0].get(TraceKeys.EXTRA_INFO) or {}
    if str(info.get("mode")) != "bilinear" or str(info.get("padding_mode")) != "border" or info.get("align_corners"):
        return None
    source_affine = image.affine.detach().cpu().double().numpy()
    target_affine = image.peek_pending_affine().detach().cpu().double()
    target_shape = tuple(int(s) for s in image.peek_pending_shape())
    found = linear_index_maps(source_affine, tuple(image.shape[1:]), target_affine.numpy(), target_shape)
    if found is None:
        return None
    axes, taps = found
    device = image.device  # a volume already on the GPU stays there
    with torch.no_grad():
        values = image.as_tensor().detach().float().permute(0, *(1 + a for a in axes))
        for dim, tap in enumerate(taps):
            values = _lerp_axis(values, dim + 1, *(t.to(device) for t in tap))
        values = values.contiguous()
        if values.data_ptr() == image.data_ptr():  # nothing moved: still a new tensor, as MONAI returns
            values = values.clone()
    out = MetaTensor(values, meta=dict(image.meta), applied_operations=list(image.applied_operations))
    out.affine = target_affine
    for operation in pending:
        out.push_applied_operation(operation)
    return out
