"""The real scans beside the project (``../shared/data``): where they are, what each holds, and how
their reference structure names meet a bundle's.

The folder is described by its own ``README.md``: four cases, each an image (NIfTI, NRRD or a DICOM
series) and a reference label map on its own grid. The three abdominal references are
TotalSegmentator's output (``labels.json`` maps label values to its structure names, e.g.
``kidney_right``, ``portal_vein_and_splenic_vein``); the brain case's reference is a binary tumour
mask with no ``labels.json``.

These scans are for evaluation only: nothing in medseg trains on them, tunes a threshold on them or
selects a checkpoint with them.

Library code reads no environment variables: :func:`shared_data_dir` is given the environment by
its caller (the script), as :func:`pipelines.bundles.trust.trust_store_path` is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "NAME_ALIASES",
    "REAL_CASES",
    "SHARED_DATA_ENV",
    "RealCase",
    "StructureMatch",
    "available_cases",
    "match_structures",
    "reference_labels",
    "shared_data_dir",
]

logger = logging.getLogger(__name__)

SHARED_DATA_ENV = "MEDSEG_SHARED_DATA"
"""Environment variable that overrides the data folder (the tests' ``shared_data`` fixture reads it too)."""


@dataclass(frozen=True)
class RealCase:
    """One real scan and its reference label.

    Attributes:
        name: the case folder's name under the data folder.
        image: the input, relative to the case folder (a file, or a folder holding a DICOM series).
        label: the reference label map, relative to the case folder.
        modality: ``CT`` or ``MR``; a bundle runs only on cases of its own modality.
        labels_json: the file mapping label values to structure names, or None for a binary mask.
        binary_name: the structure name of value 1 when ``labels_json`` is None.
    """

    name: str
    image: str
    label: str
    modality: str
    labels_json: str | None = "labels.json"
    binary_name: str | None = None

    def image_path(self, data_dir: Path) -> Path:
        return data_dir / self.name / self.image

    def label_path(self, data_dir: Path) -> Path:
        return data_dir / self.name / self.label


REAL_CASES: tuple[RealCase, ...] = (
    RealCase("ct_abdomen_3mm", "image.nii.gz", "label.nii.gz", "CT"),
    # the label is stored in LAS, the series in LPS: they match in physical space only
    RealCase("ct_dicom_series", "dicom", "label.nii.gz", "CT"),
    RealCase("mr_abdomen_3mm", "image.nii.gz", "label.nii.gz", "MR"),
    RealCase("mri_brain_tumor", "image.nrrd", "label.nrrd", "MR", labels_json=None, binary_name="tumor"),
)
"""The cases of ``../shared/data/README.md``, in its order."""

NAME_ALIASES: dict[str, str] = {
    # medseg's BTCV-style name (pipelines.data.phantoms.tissues.CT_STRUCTURES) -> TotalSegmentator's
    "portal_vein": "portal_vein_and_splenic_vein",  # BTCV's "portal and splenic veins" label
    "tumour": "tumor",  # British spelling of the binary brain tumour mask's name
}
"""A bundle's structure name -> the reference's name where the two spell the same structure differently.
Every other name is matched as it is."""


def shared_data_dir(environ: Mapping[str, str], project_root: Path) -> Path:
    """The data folder: ``$MEDSEG_SHARED_DATA`` when set, else ``<project_root>/../shared/data``."""
    override = environ.get(SHARED_DATA_ENV)
    return Path(override) if override else project_root.parent / "shared" / "data"


def available_cases(data_dir: Path, names: Sequence[str] | None = None) -> tuple[list[RealCase], dict[str, str]]:
    """The cases present under ``data_dir``, and for each one absent the reason it is skipped.

    Args:
        data_dir: the data folder (holds one folder per case).
        names: the cases wanted (default: all of :data:`REAL_CASES`).

    Returns:
        ``(present, skipped)``: the cases whose image and label exist, and ``{case name: reason}``
        for the others (the whole folder missing, or one of the case's files).

    Raises:
        ValueError: a name in ``names`` is not a known case.
    """
    known = {case.name: case for case in REAL_CASES}
    wanted = list(names) if names else list(known)
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ValueError(f"real scan case(s) {', '.join(unknown)}: expected some of {', '.join(known)}")
    present: list[RealCase] = []
    skipped: dict[str, str] = {}
    if not data_dir.is_dir():
        reason = f"data folder {data_dir} not found (set {SHARED_DATA_ENV} to the folder holding the real scans)"
        return present, dict.fromkeys(wanted, reason)
    for name in wanted:
        case = known[name]
        if not (data_dir / name).is_dir():
            skipped[name] = f"missing {data_dir / name}"
            continue
        needed = [case.image_path(data_dir), case.label_path(data_dir)]
        if case.labels_json:
            needed.append(data_dir / case.name / case.labels_json)
        missing = [str(path) for path in needed if not path.exists()]
        if missing:
            skipped[name] = f"missing {', '.join(missing)}"
        else:
            present.append(case)
    return present, skipped


def reference_labels(case: RealCase, data_dir: Path) -> dict[int, str]:
    """Label value -> structure name of the case's reference (``labels.json``, or the binary mask's name).

    Raises:
        FileNotFoundError: ``labels.json`` is missing.
        ValueError: it is not a JSON object of integer keys and string names.
    """
    if case.labels_json is None:
        return {1: case.binary_name or case.name}
    path = data_dir / case.name / case.labels_json
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected an object of label value -> structure name, got {type(raw).__name__}")
    labels: dict[int, str] = {}
    for key, name in raw.items():
        if not str(key).isdigit() or not isinstance(name, str) or not name:
            raise ValueError(f"{path}: entry {key!r}: {name!r}: expected a non-negative integer key and a name")
        labels[int(key)] = name
    labels.pop(0, None)  # background
    return labels


@dataclass(frozen=True)
class StructureMatch:
    """One of a bundle's structures and, when the reference has it, the reference's value for it.

    Attributes:
        name: the bundle's structure name.
        value: the bundle's label value.
        reference_name: the reference's name for it (``name`` or its alias), None when not in the reference.
        reference_value: the reference's label value, None when not in the reference.
    """

    name: str
    value: int
    reference_name: str | None = None
    reference_value: int | None = None

    @property
    def in_reference(self) -> bool:
        return self.reference_value is not None


def match_structures(bundle_labels: Mapping[int, str], reference: Mapping[int, str]) -> list[StructureMatch]:
    """Pair each structure a bundle predicts with the reference's structure of the same name.

    Names match exactly or through :data:`NAME_ALIASES`; background (value 0, or named
    ``background``) is left out. A structure the reference lacks is returned with
    ``reference_value=None``: it is reported "not in reference", never scored as 0.

    Args:
        bundle_labels: the bundle's label value -> name (``Bundle.labels``).
        reference: the reference's label value -> name (:func:`reference_labels`).

    Returns:
        One :class:`StructureMatch` per bundle structure, in label value order.

    Raises:
        ValueError: two bundle structures map to the same reference structure.
    """
    by_name = {name: value for value, name in reference.items() if value != 0}
    matches: list[StructureMatch] = []
    taken: dict[str, str] = {}
    for value, name in sorted(bundle_labels.items()):
        if value == 0 or name == "background":
            continue
        target = name if name in by_name else NAME_ALIASES.get(name, name)
        if target not in by_name:
            matches.append(StructureMatch(name, int(value)))
            continue
        if target in taken:
            raise ValueError(f"bundle structures {taken[target]!r} and {name!r} both map to reference {target!r}")
        taken[target] = name
        matches.append(StructureMatch(name, int(value), target, by_name[target]))
    return matches
