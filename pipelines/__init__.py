"""medseg: MONAI bundles for 3D CT and MRI segmentation, from one scan to a study."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
