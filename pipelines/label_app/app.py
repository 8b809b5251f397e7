"""The MONAI Label app: every medseg bundle of a folder as an infer task and a train task.

MONAI Label builds it from the thin ``main.py`` that :mod:`pipelines.label_app.server` writes into
the app folder. Settings come from ``--conf`` pairs of ``monailabel start_server``:

- ``bundles``: the bundles folder (required);
- ``device`` / ``precision``: as for ``medseg segment`` (default ``auto``);
- ``max_epochs``: epochs of a train request that does not say (default 1);
- ``upload_dir``: the server's temporary folder, where uploaded images land (set by ``medseg serve``).

Active learning: ``random`` and ``first`` (MONAI Label's own strategies). Datastore: MONAI Label's
local folder, or DICOMweb when ``studies`` is an ``http(s)://`` address.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from pipelines import __version__
from pipelines.label_app.catalog import ServedBundle, served_bundles
from pipelines.label_app.checks import ImageRefused, check_image_id, check_max_epochs
from pipelines.label_app.infer import MedsegInferTask
from pipelines.label_app.train import MedsegTrainTask

logger = logging.getLogger(__name__)

__all__ = ["MedsegLabelApp"]


class MedsegLabelApp(MONAILabelApp):
    """MONAI Label app serving the bundles named by the ``bundles`` setting."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = dict(conf or {})
        if not conf.get("bundles"):
            raise ValueError(f"{app_dir}: the medseg app needs --conf bundles DIR (the bundles folder to serve)")
        self.served: list[ServedBundle] = served_bundles(conf["bundles"])
        self.device = conf.get("device", "auto")
        self.precision = conf.get("precision", "auto")
        self.max_epochs = check_max_epochs(conf.get("max_epochs"), 1)
        upload_dir = conf.get("upload_dir")
        self.upload_dir = Path(upload_dir) if upload_dir else None
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="medseg",
            description=f"medseg {__version__}: MONAI bundles for 3D CT and MRI segmentation",
            version=__version__,
        )

    def init_infers(self) -> dict[str, Any]:
        return {s.model: MedsegInferTask(s, self.device, self.precision) for s in self.served}

    def init_trainers(self) -> dict[str, Any]:
        work_dir = Path(self.app_dir) / "train"
        only = len(self.served) == 1
        return {s.model: MedsegTrainTask(s, work_dir, self.max_epochs, self.device, only) for s in self.served}

    def init_strategies(self) -> dict[str, Any]:
        return {"random": Random(), "first": First()}

    def _download_dcmqi_tools(self) -> None:
        # MONAI Label 0.8.5 downloads dcmqi from GitHub whenever it opens a DICOMweb datastore, and
        # fails without a network. Its DICOMweb save_label converts final labels to DICOM-SEG with
        # dcmqi's itkimage2segimage, so say plainly when that tool is missing instead.
        if shutil.which("itkimage2segimage") is None:
            logger.warning(
                "itkimage2segimage (dcmqi) is not on PATH: inference on DICOMweb series works, saving a final "
                "label back to the PACS as DICOM-SEG will fail until dcmqi is installed"
            )

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """Check the model and image before MONAI Label's own infer (which reads any existing path)."""
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(
                status_code=404, detail=f"model {model!r}: not served here; models: {', '.join(sorted(self._infers))}"
            )
        image = request.get("image")
        if isinstance(image, str):
            store = datastore or self.datastore()
            try:
                check_image_id(
                    image,
                    known=lambda i: bool(store.get_image_uri(i)),
                    upload_dir=self.upload_dir,
                    dicomweb=isinstance(store, DICOMWebDatastore),
                )
            except ImageRefused as err:
                raise HTTPException(status_code=err.status, detail=str(err)) from err
        return super().infer(request, datastore)
