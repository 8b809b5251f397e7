"""The MONAI Label app: every medseg bundle of a folder as an infer task and a train task.

MONAI Label builds it from the thin ``main.py`` that :mod:`pipelines.label_app.server` writes into
the app folder. Settings come from ``--conf`` pairs of ``monailabel start_server``:

- ``bundles``: the bundles folder (required);
- ``device`` / ``precision``: as for ``medseg segment`` (default ``auto``);
- ``max_epochs``: epochs of a train request that does not say (default 1);
- ``upload_dir``: the server's temporary folder, where uploaded images land (set by ``medseg serve``).

Active learning: ``random`` and ``first`` (MONAI Label's own strategies). Datastore: MONAI Label's
local folder, or DICOMweb when ``studies`` is an ``http(s)://`` address
(:mod:`pipelines.label_app.dicomweb`: final labels go back to the PACS as medseg's DICOM-SEG).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from pipelines import __version__
from pipelines.label_app.catalog import ServedBundle, served_bundles
from pipelines.label_app.checks import ImageRefused, check_image_id, check_max_epochs, overrides_setting
from pipelines.label_app.dicomweb import MedsegDICOMWebDatastore, SegNaming, open_dicomweb_datastore
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
        self.overrides = overrides_setting(conf.get("overrides"))
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
        return {s.model: MedsegInferTask(s, self.device, self.precision, self.overrides) for s in self.served}

    def init_trainers(self) -> dict[str, Any]:
        work_dir = Path(self.app_dir) / "train"
        only = len(self.served) == 1
        return {s.model: MedsegTrainTask(s, work_dir, self.max_epochs, self.device, only) for s in self.served}

    def init_strategies(self) -> dict[str, Any]:
        return {"random": Random(), "first": First()}

    def init_remote_datastore(self) -> Any:
        """DICOMweb through :mod:`pipelines.label_app.dicomweb`: final labels become our DICOM-SEG, no dcmqi."""
        if settings.MONAI_LABEL_DATASTORE.lower() in ("xnat", "dsa"):
            return super().init_remote_datastore()
        return open_dicomweb_datastore(self.studies, self.seg_naming)

    def seg_naming(self, label_info: Mapping[str, Any]) -> SegNaming:
        """Segment names of a final label: the bundle it names (``params={"model": NAME}``), or the only one served.

        Raises:
            ValueError: no model named while several bundles are served, or an unknown model.
        """
        by_model = {s.model: s for s in self.served}
        model = label_info.get("model") or (self.served[0].model if len(self.served) == 1 else None)
        if model not in by_model:
            raise ValueError(
                f"label info {dict(label_info)}: expected params {{'model': NAME}} naming one of "
                f"{', '.join(sorted(by_model))} (its labels name the DICOM-SEG segments)"
            )
        bundle = by_model[model].bundle
        return SegNaming(names=dict(bundle.labels), algorithm_name=bundle.name, algorithm_version=bundle.version)

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
            if isinstance(store, MedsegDICOMWebDatastore):
                if not store.has_series(image):
                    raise HTTPException(status_code=404, detail=f"image {image!r}: no such series on {store.name()}")
                # Inference reads the fetched DICOM folder with our reader (series rules, slice checks).
                request = {**request, "image": store.series_folder(image)}
        return super().infer(request, datastore)
