"""Our own MONAI-style transforms: each an array ``Transform`` plus a dictionary ``MapTransform``.

Post-processing of integer label maps (after argmax and a cast to uint8 / uint16; casts are MONAI's
``CastToTyped``), usable from bundle JSON with ``_target_``, e.g.
``{"_target_": "pipelines.transforms.RemoveSmallIslandsd", "keys": "pred", "min_size_mm3": 100}``:

- :class:`RemoveSmallIslands` / :class:`RemoveSmallIslandsd`: drop components below a size in mm³;
- :class:`KeepLargestComponent` / :class:`KeepLargestComponentd`: one piece per listed label;
- :class:`FillHoles` / :class:`FillHolesd`: fill enclosed background holes of labels;
- :class:`ResampleLabelsToGrid` / :class:`ResampleLabelsToOriginald`: back to the input's grid,
  nearest neighbour, without the float copies and dense grids ``Invertd`` builds;
- :class:`ResampleScoresToGrid` / :class:`ResampleScoresToOriginald`: class scores back to the
  input's grid with trilinear interpolation (near boundaries only) and a fused argmax.

Pre-processing: :class:`SeparableSpacingd`, MONAI's ``Spacingd`` (same arguments, same geometry)
with its bilinear resampling done one axis at a time; :class:`CropForegroundOrKeepd`, MONAI's
``CropForegroundd`` that leaves an image without foreground whole; :class:`NormalizeOverBody` /
:class:`NormalizeOverBodyd`, zero mean and unit variance over the body instead of every non-zero voxel.

Randomised appearance for synthetic training (:mod:`pipelines.transforms.randomise`,
:mod:`pipelines.transforms.randomise_artefacts`; chained by :mod:`pipelines.data.synthetic`):
:class:`RandTissueIntensity`, :class:`RandPartialVolume`, :class:`RandSliceThickness`,
:class:`RandStreaks`, :class:`RandRings`, :class:`RandMetal` and their ``d`` wrappers.
"""

from __future__ import annotations

from pipelines.geometry import spacing_from_affine
from pipelines.transforms.body import NormalizeOverBody, NormalizeOverBodyd
from pipelines.transforms.crop import CropForegroundOrKeepd
from pipelines.transforms.grid import (
    ResampleLabelsToGrid,
    ResampleLabelsToOriginald,
    ResampleScoresToGrid,
    ResampleScoresToOriginald,
)
from pipelines.transforms.holes import FillHoles, FillHolesd
from pipelines.transforms.islands import (
    KeepLargestComponent,
    KeepLargestComponentd,
    RemoveSmallIslands,
    RemoveSmallIslandsd,
)
from pipelines.transforms.randomise import (
    RandPartialVolume,
    RandPartialVolumed,
    RandSliceThickness,
    RandSliceThicknessd,
    RandTissueIntensity,
    RandTissueIntensityd,
)
from pipelines.transforms.randomise_artefacts import (
    RandMetal,
    RandMetald,
    RandRings,
    RandRingsd,
    RandStreaks,
    RandStreaksd,
)
from pipelines.transforms.spacing import SeparableSpacingd

__all__ = [
    "CropForegroundOrKeepd",
    "FillHoles",
    "FillHolesd",
    "KeepLargestComponent",
    "KeepLargestComponentd",
    "NormalizeOverBody",
    "NormalizeOverBodyd",
    "RandMetal",
    "RandMetald",
    "RandPartialVolume",
    "RandPartialVolumed",
    "RandRings",
    "RandRingsd",
    "RandSliceThickness",
    "RandSliceThicknessd",
    "RandStreaks",
    "RandStreaksd",
    "RandTissueIntensity",
    "RandTissueIntensityd",
    "RemoveSmallIslands",
    "RemoveSmallIslandsd",
    "ResampleLabelsToGrid",
    "ResampleLabelsToOriginald",
    "ResampleScoresToGrid",
    "ResampleScoresToOriginald",
    "SeparableSpacingd",
    "spacing_from_affine",
]
