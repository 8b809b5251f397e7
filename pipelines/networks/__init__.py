"""Networks medseg's bundles build that MONAI does not offer as they are needed.

- :class:`PatchUNETR`: MONAI's UNETR with the patch size and the transformer's depth as parameters
  (MONAI's fixes them at 16 voxels and 12 layers), from MONAI's own ViT and UNETR blocks. Bundle
  configs name it ``{"_target_": "pipelines.networks.PatchUNETR", ...}``.
"""

from __future__ import annotations

from pipelines.networks.unetr import PatchUNETR

__all__ = ["PatchUNETR"]
