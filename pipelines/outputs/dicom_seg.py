"""DICOM Segmentation (highdicom) of a label map, referencing the source series, for PACS viewers.

The label map is on the DICOM input's own grid: ``(i, j, k)`` with i along the columns, j along the
rows and k across the series' instances in slice order. The source headers come from the reader
(:attr:`pipelines.io.readers.Volume.dicom_headers`, read once with the pixels); only when a caller has
none are they read here, without pixel data. Real-world series often lack Type 2 patient/study
attributes that highdicom copies from them (:data:`TYPE2_FROM_SOURCE`); those are filled empty on
copies of the headers, and the writer returns which (:attr:`SegWritten.filled_type2`).
"""

from __future__ import annotations

import copy
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from pipelines import __version__
from pipelines.geometry import check_label_map, lps_to_ras
from pipelines.io.readers import Volume
from pipelines.io.writers import Written, write_bytes
from pipelines.outputs.names import LATERALITY, SNOMED, TUMOUR_ORGANS, label_colour, name_of, names_by_id
from pipelines.outputs.stats import present_structures

logger = logging.getLogger(__name__)

__all__ = ["TYPE2_FROM_SOURCE", "SegWritten", "write_dicom_seg"]

TYPE2_FROM_SOURCE: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
"""Type 2 attributes (Patient and General Study modules) that a Segmentation takes from its source.

A Type 2 attribute must be present but may be empty; many series (a GE CT without
PatientBirthDate, anonymised exports) leave some out. highdicom 0.28's ``Segmentation`` reads all
but ReferringPhysicianName as attributes of the first source image and stops on an absent one
(``AttributeError``); ReferringPhysicianName it takes with a default, and it is filled here too so
that the sources and the SEG agree. Type 1 attributes (UIDs, geometry) are never invented here.
"""


@dataclass(frozen=True)
class SegWritten(Written):
    """The DICOM-SEG file written, its sha256, and the Type 2 attributes filled empty to write it."""

    filled_type2: tuple[str, ...] = ()
    """Attributes of :data:`TYPE2_FROM_SOURCE` absent from at least one source header, in that order."""


def write_dicom_seg(
    labels: np.ndarray,
    volume: Volume,
    label_names: Mapping[int, str],
    path: str | Path,
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_description: str = "medseg segmentation",
    series_number: int = 100,
    source_headers: Sequence[pydicom.Dataset] | None = None,
) -> SegWritten:
    """Write the label map as a DICOM Segmentation (BINARY) that references the source series.

    One segment per present label, numbered 1..N in increasing label id (DICOM needs contiguous
    segment numbers). Each segment's label is the structure name, its SegmentDescription is
    ``"label <id>: <name>"`` (the original id), its property type the SNOMED CT code of
    :data:`~pipelines.outputs.names.SNOMED` (category "Anatomical Structure"; tumours: category
    "Morphologically Abnormal Structure", type "Neoplasm"), or "Tissue" for names without a code.
    Frames hold no empty slices; frame k references source instance k. The content is marked
    RESEARCH (ContentQualification). Identifying UIDs that an anonymiser blanked are restored, and
    Type 2 attributes of :data:`TYPE2_FROM_SOURCE` that the source lacks are added empty (logged at
    INFO), on copies of the headers (see :func:`_prepare_headers`); neither the files nor the given
    headers are modified. The object is encoded in memory, written atomically and hashed from those bytes.

    Args:
        labels: integer label map ``(i, j, k)`` on ``volume``'s grid: i along the columns, j along
            the rows, k across the slices in the order of ``volume.dicom_files``.
        volume: the DICOM input as read by :func:`pipelines.io.readers.read_volume`.
        label_names: label id -> structure name.
        path: destination file (``.dcm``).
        algorithm_name: the bundle's name (AlgorithmIdentificationSequence).
        algorithm_version: the bundle's version.
        series_description: SeriesDescription of the new series.
        series_number: SeriesNumber of the new series.
        source_headers: the series' headers (pixel data not needed), one per slice in k order, as
            the reader keeps them; then no file is read. ``None``: read them from
            ``volume.dicom_files`` without pixel data.

    Returns:
        ``path``, the sha256 of the file written there and the Type 2 attributes that were filled
        empty because a source header lacked them (:attr:`SegWritten.filled_type2`).

    Raises:
        ValueError: the input is not a DICOM series, the label map's shape differs from the
            volume's, has negative ids or holds no structure (a Segmentation needs at least one
            segment), the headers are not one per slice in the volume's slice order, a source
            instance has no SOP Instance UID anywhere, or the instances disagree on their study or series.
        TypeError: the label map is not integer, or a name's key is not a label id.
    """
    path = Path(path)
    if volume.format != "dicom" or not (volume.dicom_files or source_headers):
        raise ValueError(
            f"{volume.path}: DICOM-SEG needs a DICOM series as input; this input is {volume.format} "
            "(choose --outputs without dicom-seg for non-DICOM inputs)"
        )
    labels = check_label_map(labels, "labels")
    if labels.shape != volume.shape:
        raise ValueError(f"{volume.path}: label map shape {labels.shape} differs from the series' {volume.shape}")
    names = names_by_id(label_names)
    present = [label for label, _ in present_structures(labels)]
    if not present:
        raise ValueError(f"{path}: the label map holds no structures; a DICOM-SEG needs at least one segment")

    if source_headers is None:
        read = [pydicom.dcmread(f, stop_before_pixels=True) for f in volume.dicom_files]
        sources, filled = _prepare_headers(read, volume, copy_before_change=False)  # ours: changed in place
    else:
        sources, filled = _prepare_headers(source_headers, volume, copy_before_change=True)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=algorithm_version
    )
    descriptions = [
        _segment_description(number, label, name_of(label, names), algorithm)
        for number, label in enumerate(present, start=1)
    ]
    lut = np.zeros(int(present[-1]) + 1, dtype=np.uint8 if len(present) < 256 else np.uint16)
    lut[present] = np.arange(1, len(present) + 1)
    # (i, j, k) -> (frames, rows, columns) = (k, j, i), one frame per source instance in k order.
    pixel_array = np.ascontiguousarray(lut[labels].transpose(2, 1, 0))

    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medseg",
        manufacturer_model_name=algorithm_name[:64],
        software_versions=f"medseg {__version__}",
        device_serial_number="medseg",
        series_description=series_description[:64],
        content_label="MEDSEG",
        content_description=f"{algorithm_name} {algorithm_version}"[:64],
        content_qualification=hd.ContentQualificationValues.RESEARCH,
        omit_empty_frames=True,
    )
    encoded = io.BytesIO()
    seg.save_as(encoded)
    written = write_bytes(encoded.getvalue(), path)
    logger.info("wrote DICOM-SEG %s: %d segments over %d slices", path, len(present), len(sources))
    return SegWritten(written.path, written.sha256, filled)


def _where(header: pydicom.Dataset, k: int, volume: Volume) -> str:
    """The file a header came from, for messages: its own filename, the volume's k-th file, or the slice."""
    filename = getattr(header, "filename", None)
    if isinstance(filename, str | Path) and str(filename):
        return str(filename)
    if k < len(volume.dicom_files):
        return str(volume.dicom_files[k])
    return f"{volume.path} (slice {k})"


def _prepare_headers(
    headers: Sequence[pydicom.Dataset], volume: Volume, *, copy_before_change: bool
) -> tuple[list[pydicom.Dataset], tuple[str, ...]]:
    """The source headers in k order, checked, with blanked UIDs restored and absent Type 2 attributes filled.

    One header per slice, in the volume's slice order: when every header has an
    ImagePositionPatient, their positions along the volume's k axis must increase, else frames
    would reference the wrong instances. A Segmentation references its source instances by SOP
    Class/Instance UID and joins their study and series. Some anonymisers empty these attributes in
    the data set while the file meta keeps the instance's identity (Media Storage SOP Class/Instance
    UID): take them from there. An empty StudyInstanceUID or SeriesInstanceUID is replaced by one
    UID derived from the instance UIDs (the same on every run), and a warning says the SEG cannot
    join the original study. Each attribute of :data:`TYPE2_FROM_SOURCE` that a header lacks is
    added to it with an empty value (Type 2: present, value unknown). With ``copy_before_change`` a
    header is deep-copied before its first change, so that the caller's headers stay as they are.

    Returns:
        The headers to give highdicom, and the Type 2 attributes filled (in the order of
        :data:`TYPE2_FROM_SOURCE`; empty when none was missing).
    """
    slices = volume.shape[2]
    if len(headers) != slices:
        raise ValueError(
            f"{volume.path}: {len(headers)} source headers for a series of {slices} slices; "
            "expected one header per slice, in slice order"
        )
    _check_slice_order(headers, volume)
    prepared = list(headers)
    copied = [not copy_before_change] * len(prepared)

    def writable(k: int) -> pydicom.Dataset:
        if not copied[k]:
            prepared[k], copied[k] = copy.deepcopy(prepared[k]), True
        return prepared[k]

    for k, header in enumerate(headers):
        meta = getattr(header, "file_meta", None)
        for attribute, meta_attribute in (
            ("SOPClassUID", "MediaStorageSOPClassUID"),
            ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ):
            if not header.get(attribute):
                value = meta.get(meta_attribute) if meta is not None else None
                if not value:
                    where = _where(header, k, volume)
                    raise ValueError(f"{where}: no {attribute} in the data set or its file meta; cannot reference it")
                setattr(writable(k), attribute, value)
    instance_uids = [str(h.SOPInstanceUID) for h in prepared]
    for attribute in ("StudyInstanceUID", "SeriesInstanceUID"):
        values = {str(h.get(attribute) or "") for h in prepared}
        if len(values) > 1:
            raise ValueError(f"{volume.path}: the instances disagree on {attribute}: {sorted(values)}")
        if values == {""}:
            uid = pydicom.uid.generate_uid(entropy_srcs=[attribute, *instance_uids])
            logger.warning(
                "%s: the series has no %s (anonymised?); the DICOM-SEG uses %s and will not join the original study",
                volume.path, attribute, uid,
            )  # fmt: skip
            for k in range(len(prepared)):
                setattr(writable(k), attribute, uid)
    filled = tuple(a for a in TYPE2_FROM_SOURCE if any(a not in h for h in prepared))
    for attribute in filled:
        for k in range(len(prepared)):
            if attribute not in prepared[k]:
                setattr(writable(k), attribute, "")  # an element with an empty value
    if filled:
        logger.info(
            "%s: the series lacks the Type 2 attribute(s) %s; filled empty for the DICOM-SEG",
            volume.path, ", ".join(filled),
        )  # fmt: skip
    return prepared, filled


def _check_slice_order(headers: Sequence[pydicom.Dataset], volume: Volume) -> None:
    """Refuse headers whose ImagePositionPatient does not advance along the volume's k axis.

    Headers without a position (rare; such a series could not have been stacked by position) are
    taken in the order given.
    """
    positions = [h.get("ImagePositionPatient") for h in headers]
    if any(p is None or len(p) != 3 for p in positions):
        return
    k_axis = np.asarray(volume.affine, dtype=np.float64)[:3, 2]  # RAS mm per slice
    along = np.array([float(lps_to_ras([float(v) for v in p]) @ k_axis) for p in positions])
    steps = np.diff(along)
    if steps.size and not np.all(steps > 0):
        first_bad = int(np.argmax(steps <= 0)) + 1
        raise ValueError(
            f"{volume.path}: source header {first_bad} ({_where(headers[first_bad], first_bad, volume)}) is not "
            f"after header {first_bad - 1} along the series' slice axis; expected the headers in the volume's "
            "slice order (as Volume.dicom_headers keeps them)"
        )


def _segment_description(
    number: int, label: int, name: str, algorithm: hd.AlgorithmIdentificationSequence
) -> hd.seg.SegmentDescription:
    key = name.lower()
    anatomic_regions = None
    if key in TUMOUR_ORGANS:
        category = codes.cid7150.MorphologicallyAbnormalStructure
        prop_type: Any = codes.SCT.Neoplasm
        organ = TUMOUR_ORGANS[key]
        if organ is not None:
            anatomic_regions = [hd.sr.CodedConcept(SNOMED[organ][0], "SCT", SNOMED[organ][1])]
    elif key in SNOMED:
        category = codes.cid7150.AnatomicalStructure
        value, meaning = SNOMED[key]
        prop_type = hd.sr.CodedConcept(value, "SCT", meaning)
    else:
        category = codes.cid7150.Tissue
        prop_type = codes.SCT.Tissue
    r, g, b = (round(255 * c) for c in label_colour(label))
    # highdicom 0.22 (the newest beside pydicom 2, in .venv-label) has no display_color: no colour there (Type 3).
    colour = (
        {"display_color": hd.color.CIELabColor.from_rgb(r, g, b)} if hasattr(hd.color.CIELabColor, "from_rgb") else {}
    )
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=category,
        segmented_property_type=prop_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=anatomic_regions,
        **colour,
    )
    description.SegmentDescription = f"label {label}: {name}"[:64]
    if key in LATERALITY:
        value, scheme, meaning = LATERALITY[key]
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept(value, scheme, meaning)
        ]
    return description
