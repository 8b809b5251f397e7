"""The DICOMweb datastore of the medseg app: MONAI Label's, with final labels stored as our DICOM-SEG.

MONAI Label 0.8.5's :class:`~monailabel.datastore.dicom.DICOMWebDatastore` fetches a series by
its SeriesInstanceUID (WADO-RS), converts it to NIfTI for the infer task and, for a ``final``
label, converts the label to DICOM-SEG with dcmqi's ``itkimage2segimage`` (downloaded from GitHub
when the app opens the datastore; not in Debian, and no network here) before STOW-RS. This
subclass keeps MONAI Label's fetching and caching and replaces the conversion with
:func:`pipelines.outputs.dicom_seg.write_dicom_seg` (highdicom): the label is mapped onto the
series as our DICOM reader reads it (checked by affine, never guessed), its segments are named
after the bundle's labels, and the SEG references the source instances. A SEG that Orthanc (or
any STOW-RS server) does not accept is an error, not a silently lost label.

It also answers an unknown series with 404 before MONAI Label indexes an empty search result, and
gives inference the series' DICOM folder (:meth:`MedsegDICOMWebDatastore.series_folder`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.convert import binary_to_image
from monailabel.interfaces.datastore import DefaultLabelTag
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from pipelines.io.readers import Volume, read_volume
from pipelines.outputs.dicom_seg import write_dicom_seg

logger = logging.getLogger(__name__)

__all__ = ["MedsegDICOMWebDatastore", "SegNaming", "label_on_series_grid", "open_dicomweb_datastore"]


@dataclass(frozen=True)
class SegNaming:
    """What a DICOM-SEG says about its segments and the algorithm behind them.

    Attributes:
        names: label id -> structure name (segment labels).
        algorithm_name / algorithm_version: the bundle's name and version.
    """

    names: Mapping[int, str]
    algorithm_name: str
    algorithm_version: str


NamingFor = Callable[[Mapping[str, Any]], SegNaming]
"""Chooses the naming of a saved label from its label info (the client's ``params``); ValueError if it cannot."""


def label_on_series_grid(label: nib.spatialimages.SpatialImage, volume: Volume, source: str) -> np.ndarray:
    """The label map of ``label`` on ``volume``'s ``(i, j, k)`` grid.

    The label may come in another axis order or direction (a NIfTI from SimpleITK, from 3D Slicer);
    nibabel's orientation tools permute and flip it onto the series' axes. Anything else (another
    shape, spacing or origin) is refused: a resampled label in a SEG would point at wrong voxels.

    Args:
        label: the saved label image (3D, integer values; a trailing axis of length 1 is dropped).
        volume: the DICOM series as :func:`pipelines.io.readers.read_volume` reads it.
        source: the label's name for messages.

    Returns:
        Integer label map (uint16), shape ``volume.shape``.

    Raises:
        ValueError: not 3D, values that are not whole non-negative numbers, or not on the series' grid.
    """
    data = np.asarray(label.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{source}: label of shape {data.shape}; expected a 3D label map")
    whole = np.issubdtype(data.dtype, np.integer) or (
        np.all(np.isfinite(data)) and np.array_equal(data, np.round(data))
    )
    if not whole:
        raise ValueError(f"{source}: label values are not whole numbers; expected integer label ids")
    if data.min() < 0 or data.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"{source}: label ids from {data.min()} to {data.max()}; expected 0..65535")
    transform = ornt_transform(io_orientation(label.affine), io_orientation(volume.affine))
    affine = label.affine @ inv_ornt_aff(transform, data.shape)
    data = apply_orientation(data, transform)
    tolerance_mm = 0.01 * min(volume.spacing_mm)
    if data.shape != volume.shape or not np.allclose(affine, volume.affine, atol=tolerance_mm):
        raise ValueError(
            f"{source}: label grid {data.shape} with affine {np.round(affine, 3).tolist()} is not the grid of "
            f"series {volume.series_uid} ({volume.shape}, affine {np.round(volume.affine, 3).tolist()}); "
            "expected a label on the image's own grid (as inference returns it)"
        )
    return data.astype(np.uint16)


class MedsegDICOMWebDatastore(DICOMWebDatastore):
    """MONAI Label's DICOMweb datastore with final labels written as DICOM-SEG by medseg (highdicom).

    Args:
        client: the DICOMweb client of the PACS.
        naming: chooses segment names and algorithm for a saved label (from its label info).
        search_filter, cache_path, fetch_by_frame, convert_to_nifti: as for MONAI Label's datastore.
    """

    def __init__(
        self,
        client: Any,
        naming: NamingFor,
        search_filter: dict[str, Any],
        cache_path: str | None = None,
        fetch_by_frame: bool = False,
        convert_to_nifti: bool = True,
    ) -> None:
        self._naming = naming
        super().__init__(client, search_filter, cache_path, fetch_by_frame, convert_to_nifti)

    def _series_dir(self, image_id: str) -> Path:
        return Path(os.path.realpath(os.path.join(self._datastore.image_path(), image_id)))

    def has_series(self, series_uid: str) -> bool:
        """Whether the series is cached here or the PACS has it (QIDO-RS)."""
        cached = self._series_dir(series_uid)
        if cached.is_dir() and any(cached.iterdir()):
            return True
        found = self._client.search_for_series(search_filters={"SeriesInstanceUID": series_uid})
        return any(s.get("0020000E", {}).get("Value") == [series_uid] for s in found)

    def series_folder(self, image_id: str) -> str:
        """The series' DICOM files, fetched into the cache (and indexed as MONAI Label does) when not there yet.

        Inference reads this folder with medseg's DICOM reader, as ``medseg segment`` does (the bundle's
        series rules, the slice-spacing checks), rather than MONAI Label's SimpleITK NIfTI conversion.
        """
        self.get_image_uri(image_id)
        return str(self._series_dir(image_id))

    def get_image_uri(self, image_id: str) -> str:
        if not self.has_series(image_id):
            raise HTTPException(status_code=404, detail=f"image {image_id!r}: no such series on {self.name()}")
        return super().get_image_uri(image_id)

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any], label_id: str = ""
    ) -> str:
        """Save a label; a ``final`` one also goes to the PACS as a DICOM-SEG series (STOW-RS).

        Raises:
            HTTPException: 404 for an unknown series; 422 for a label that is not on the series'
                grid or whose model cannot be told; 502 when the PACS refuses the SEG.
        """
        if label_tag != DefaultLabelTag.FINAL:
            return super().save_label(image_id, label_filename, label_tag, label_info, label_id)
        image_uri = self.get_image_uri(image_id)  # fetches the series when not cached
        converted = ""
        if "".join(Path(label_filename).suffixes) == ".bin":  # OHIF's raw label buffer
            converted = label_filename = binary_to_image(image_uri, label_filename)
        fd, seg_name = tempfile.mkstemp(suffix=".dcm")
        os.close(fd)
        try:
            try:
                naming = self._naming(label_info)
                volume = read_volume(self._series_dir(image_id))
                labels = label_on_series_grid(nib.load(label_filename), volume, f"label for {image_id}")
                written = write_dicom_seg(
                    labels,
                    volume,
                    naming.names,
                    seg_name,
                    algorithm_name=naming.algorithm_name,
                    algorithm_version=naming.algorithm_version,
                    series_description=f"{naming.algorithm_name} ({label_tag})",
                    source_headers=volume.dicom_headers or None,
                )
            except ValueError as err:
                raise HTTPException(status_code=422, detail=" ".join(str(err).split())) from err
            seg_series = self._store(written.path)
            image_info = self.get_image_info(image_id)
            label_info = {
                **label_info,
                "SeriesInstanceUID": seg_series,
                "Modality": image_info.get("Modality"),
                "PatientID": image_info.get("PatientID"),
                "StudyInstanceUID": image_info.get("StudyInstanceUID"),
                "seg_sha256": written.sha256,
            }
            saved = LocalDatastore.save_label(self, image_id, label_filename, label_tag, label_info)
        finally:
            Path(seg_name).unlink(missing_ok=True)
            if converted:
                Path(converted).unlink(missing_ok=True)
        logger.info("final label of %s stored on %s as DICOM-SEG series %s", image_id, self.name(), seg_series)
        return saved

    def _store(self, path: Path) -> str:
        """STOW-RS one DICOM-SEG file; returns its SeriesInstanceUID.

        Raises:
            HTTPException: 502 when the server answers with a FailedSOPSequence or without the instance.
        """
        dataset = pydicom.dcmread(path)
        try:
            answer = self._client.store_instances([dataset])
        except Exception as err:  # requests' HTTPError and friends: say what was refused, by whom
            raise HTTPException(
                status_code=502, detail=f"{self.name()}: STOW-RS of the DICOM-SEG failed: {err}"
            ) from err
        answer = answer if answer is not None else pydicom.Dataset()
        failed = answer.get("FailedSOPSequence")
        stored = [str(item.get("ReferencedSOPInstanceUID", "")) for item in answer.get("ReferencedSOPSequence", [])]
        if failed or str(dataset.SOPInstanceUID) not in stored:
            raise HTTPException(
                status_code=502,
                detail=f"{self.name()}: the PACS did not store DICOM-SEG {dataset.SOPInstanceUID} (answer: {answer})",
            )
        return str(dataset.SeriesInstanceUID)


def open_dicomweb_datastore(url: str, naming: NamingFor) -> MedsegDICOMWebDatastore:
    """The DICOMweb datastore at ``url`` with MONAI Label's settings (prefixes, credentials, cache, filter).

    Like MONAI Label's ``MONAILabelApp._init_dicomweb_datastore`` without its Google Cloud branch
    and without downloading dcmqi (the SEG is written here).
    """
    session = None
    if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
        from dicomweb_client.session_utils import create_session_from_user_pass

        session = create_session_from_user_pass(
            settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD
        )
    client = DICOMwebClientX(
        url=url,
        session=session,
        qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
        wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
        stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX,
    )
    cache_path = (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip()
    return MedsegDICOMWebDatastore(
        client,
        naming,
        search_filter=settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER,
        cache_path=cache_path or None,
        fetch_by_frame=settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME,
        convert_to_nifti=settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI,
    )
