"""Dictionary keys shared by every stage of the pipeline.

MONAI dictionary transforms address data by key. Using these names everywhere (bundle configs use
the same literal strings) keeps the stages in agreement without scattering literals around.
"""

from __future__ import annotations

IMAGE = "image"
"""The input volume, channel-first ``(C, H, W, D)`` once loaded."""

LABEL = "label"
"""A reference label map (training, evaluation)."""

PRED = "pred"
"""The network output, and after post-processing the integer label map."""

CASE_ID = "case_id"
"""Identifier of one case; names its output folder."""

IMAGE_META = "image_meta_dict"
"""Meta data of the image, for transforms that still ask for a meta dict key."""

OUTPUTS = ("labels", "dicom-seg", "stats", "preview", "mesh")
"""What a case can write besides run.json: the label map, DICOM-SEG, statistics, a preview picture,
surface meshes (``meshes/``, one STL and one OBJ per structure)."""

TTA = "tta"
"""The test-time augmentation result of a case (:class:`pipelines.tta.TTAResult`) beside its scores."""

DEFAULT_OUTPUTS = ("labels", "stats", "preview")
"""What a case writes when nobody asks (DICOM input adds ``dicom-seg``)."""
