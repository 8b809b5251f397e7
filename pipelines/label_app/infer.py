"""The MONAI Label infer task of one medseg bundle: the same case path as ``medseg segment``.

A request's image (a NIfTI/NRRD file, or a DICOM folder fetched from DICOMweb) goes through
:class:`pipelines.segment.Segmenter` (our reader, the bundle's preprocessing, the sliding-window
predictor with its precision policy, the bundle's postprocessing with island removal) and the
label map comes back on the image's own grid as NIfTI, with the run.json provenance (bundle
version, model sha256, software, timings) in the JSON part of the answer.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from pipelines.io.writers import write_labels
from pipelines.label_app.catalog import ServedBundle
from pipelines.segment import Segmenter, SegmentOptions

logger = logging.getLogger(__name__)

__all__ = ["MedsegInferTask"]


class MedsegInferTask(InferTask):
    """Segment one datastore image with a medseg bundle.

    The bundle is loaded on the first request and again whenever its ``models/model.pt`` changed
    (after a train task), so an answer always names the weights it was computed with.

    Args:
        served: the bundle and its MONAI Label name.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        overrides: ``medseg serve --override`` config ids and values, applied as ``medseg segment`` does.
    """

    def __init__(
        self,
        served: ServedBundle,
        device: str = "auto",
        precision: str = "auto",
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=served.labels,
            dimension=3,
            description=served.description,
            config={"device": device, "precision": precision},
        )
        self.served = served
        self.options = SegmentOptions(
            device=device, precision=precision, outputs=("labels",), overrides=dict(overrides or {})
        )
        self._segmenter: Segmenter | None = None
        self._weights_stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def is_valid(self) -> bool:
        return self.served.bundle.weights.is_file()

    def get_path(self, validate: bool = True) -> str | None:
        """The weights file MONAI Label reports (``/model/<name>``, checksum and time)."""
        path = self.served.bundle.weights
        return str(path) if path.is_file() or not validate else None

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["bundle"] = {
            "name": self.served.bundle.name,
            "version": self.served.bundle.version,
            "modality": self.served.bundle.modality,
        }
        return info

    def segmenter(self) -> Segmenter:
        """The loaded bundle, reloaded when its weights file changed since the last request."""
        stat = self.served.bundle.weights.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if self._segmenter is None or stamp != self._weights_stamp:
            logger.info("%s: loading %s", self.served.model, self.served.bundle.weights)
            self._segmenter = Segmenter(self.served.bundle, self.options)
            self._weights_stamp = stamp
        return self._segmenter

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Run the bundle on ``request["image"]``; returns (label NIfTI path, JSON answer)."""
        image = request.get("image")
        if not isinstance(image, str) or not os.path.exists(image):
            raise HTTPException(status_code=404, detail=f"image {image!r}: not found in the datastore")
        with self._lock:  # one case at a time per bundle: the network and its buffers are shared
            segmenter = self.segmenter()
            try:
                prepared = segmenter.prepare(image)
            except (ValueError, FileNotFoundError) as err:
                # An input our reader refuses (not an image, NaN voxels, uneven DICOM slices...).
                raise HTTPException(status_code=422, detail=" ".join(str(err).split())) from err
            labels = segmenter.predict(prepared)
        fd, name = tempfile.mkstemp(prefix=f"{self.served.model}-", suffix=".nii.gz")
        os.close(fd)
        written = write_labels(labels, prepared.volume.affine, Path(name), header=prepared.volume.nifti_header)
        provenance = segmenter.provenance(prepared.volume, ("labels",), prepared.seconds)
        provenance["corrections"] = prepared.corrections
        provenance["label_sha256"] = written.sha256
        answer = {
            "label_names": self.served.labels,
            "latencies": {k: round(v, 3) for k, v in prepared.seconds.items()},
            "medseg": provenance,
        }
        return str(written.path), answer
