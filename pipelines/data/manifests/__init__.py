"""Data manifests: schema, loading, validation, creation and cross-validation splits.

A manifest is a JSON file in the shape of a Medical Segmentation Decathlon ``dataset.json``::

    {
      "name": "liver phantoms",
      "modality": {"0": "CT"},                 # or a plain string "CT"
      "labels": {"0": "background", "1": "liver"},
      "description": "optional free text",
      "training":   [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}, ...],
      "validation": [...],
      "test":       ["imagesTs/c.nii.gz", {"image": ["c_t1.nii.gz", "c_t2.nii.gz"]}, ...]
    }

Each entry is either an image path or an object with ``image`` (one path, or a list of paths
stacked as channels), an optional ``label`` and an optional ``case_id``. Paths are relative to the
folder that holds the manifest (absolute paths are allowed). An image path may also name a folder
holding one DICOM series.

The structural rules live in :data:`MANIFEST_SCHEMA` (JSON Schema draft 2020-12), which is also
shipped as ``data_manifests/schema.json``. :func:`load_manifest` checks structure only;
:func:`validate_manifest` also opens the files and reports every problem it finds at once.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import nibabel as nib
import numpy as np

from pipelines import keys
from pipelines.io.dicom import find_dicom_series, select_series
from pipelines.io.readers import case_id_from_path, read_volume
from pipelines.io.writers import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MANIFEST_SCHEMA",
    "SPLITS",
    "Case",
    "Manifest",
    "ManifestError",
    "Problem",
    "create_manifest",
    "load_manifest",
    "manifest_schema",
    "split_manifest",
    "validate_manifest",
    "write_manifest",
]

SPLITS: tuple[str, ...] = ("training", "validation", "test")
"""The case lists a manifest may hold, in the order they are read."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
"""File name endings recognised as image files (longest first where one ends another)."""

GRID_TOLERANCE_MM = 1e-3
"""Largest difference, in mm, allowed between matching entries of an image and a label affine."""

_NIFTI_EXTENSIONS = (".nii.gz", ".nii")
_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")

_PATH = {"type": "string", "minLength": 1}
_ENTRY = {
    # One type list instead of oneOf: the validator then reports the precise failing rule
    # ("'image' is a required property") rather than "not valid under any of the schemas".
    "type": ["string", "object"],
    "minLength": 1,
    "required": ["image"],
    "properties": {
        "image": {
            "type": ["string", "array"],
            "minLength": 1,
            "minItems": 1,
            "items": _PATH,
        },
        "label": {"type": ["string", "null"], "minLength": 1},
        "case_id": {"type": "string", "minLength": 1, "pattern": r"^[^/\\]+$"},
    },
}

MANIFEST_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "medseg data manifest",
    "description": (
        "A Medical Segmentation Decathlon style dataset.json. Paths are relative to the folder "
        "that holds the manifest; absolute paths are allowed. An image is one path or a list of "
        "paths stacked as channels; a path may name a folder holding one DICOM series."
    ),
    "type": "object",
    "required": ["name", "modality", "labels"],
    "anyOf": [{"required": ["training"]}, {"required": ["validation"]}, {"required": ["test"]}],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "modality": {
            "description": 'One modality ("CT") or channel index to modality ({"0": "CT"}).',
            "type": ["string", "object"],
            "minLength": 1,
            "minProperties": 1,
            "propertyNames": {"pattern": "^[0-9]+$"},
            "additionalProperties": {"type": "string", "minLength": 1},
        },
        "labels": {
            "description": 'Label value (a decimal string) to structure name, "0" the background.',
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": "^[0-9]+$"},
            "additionalProperties": {"type": "string", "minLength": 1},
        },
        "training": {"type": "array", "items": {"$ref": "#/$defs/entry"}},
        "validation": {"type": "array", "items": {"$ref": "#/$defs/entry"}},
        "test": {"type": "array", "items": {"$ref": "#/$defs/entry"}},
    },
    "$defs": {"entry": _ENTRY},
}
"""JSON Schema (draft 2020-12) of a manifest. Other top-level keys (``numTraining``...) pass."""


def manifest_schema() -> dict[str, Any]:
    """Return a copy of the manifest JSON Schema (the content of ``data_manifests/schema.json``)."""
    return copy.deepcopy(MANIFEST_SCHEMA)


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One case of a manifest, paths resolved against the manifest folder.

    Attributes:
        case_id: Unique identifier, from the entry's ``case_id`` or the image file name.
        image: The image path, or a tuple of paths (one per channel) when the entry lists several.
        label: The reference label map, or None.
        split: ``"training"``, ``"validation"`` or ``"test"``.
    """

    case_id: str
    image: Path | tuple[Path, ...]
    label: Path | None
    split: str

    @property
    def image_paths(self) -> tuple[Path, ...]:
        """The image path(s) as a tuple, one per channel."""
        return self.image if isinstance(self.image, tuple) else (self.image,)

    def as_dict(self) -> dict[str, Any]:
        """Return the case as a MONAI datalist item (keys from :mod:`pipelines.keys`).

        Returns:
            ``{"image": str | list[str], "label": str (only when present), "case_id": str}``.
        """
        image: str | list[str] = [str(p) for p in self.image] if isinstance(self.image, tuple) else str(self.image)
        item: dict[str, Any] = {keys.IMAGE: image, keys.CASE_ID: self.case_id}
        if self.label is not None:
            item[keys.LABEL] = str(self.label)
        return item


@dataclass(frozen=True)
class Manifest:
    """A loaded manifest.

    Attributes:
        path: The manifest file (absolute).
        name: Dataset name.
        modality: The modality; for a channel mapping ({"0": "T1", "1": "T2"}) the names in
            channel order joined by ``","``.
        labels: Label value to structure name; 0 is the background.
        cases: Every case, training first, then validation, then test, in file order.
        description: Free text, empty when absent.
    """

    path: Path
    name: str
    modality: str
    labels: dict[int, str]
    cases: tuple[Case, ...]
    description: str = ""

    def split(self, name: str) -> tuple[Case, ...]:
        """Return the cases of one split.

        Args:
            name: ``"training"``, ``"validation"``, ``"test"`` or ``"all"``.

        Raises:
            ValueError: for any other name.
        """
        if name == "all":
            return self.cases
        if name not in SPLITS:
            raise ValueError(f"{self.path}: unknown split {name!r}; expected one of {', '.join(SPLITS)} or 'all'")
        return tuple(case for case in self.cases if case.split == name)

    def datalist(self, name: str = "all") -> list[dict[str, Any]]:
        """Return the cases of a split as a MONAI datalist (see :meth:`Case.as_dict`)."""
        return [case.as_dict() for case in self.split(name)]


@dataclass(frozen=True)
class Problem:
    """One problem found in a manifest.

    Attributes:
        case_id: The case concerned, or None for a manifest-wide problem.
        file: The file concerned (the manifest itself for structural problems), or None.
        message: What is wrong, with the value seen and what was expected.
    """

    case_id: str | None
    file: Path | None
    message: str

    def __str__(self) -> str:
        parts = []
        if self.case_id is not None:
            parts.append(f"case {self.case_id}")
        if self.file is not None:
            parts.append(str(self.file))
        parts.append(self.message)
        return ": ".join(parts)


class ManifestError(ValueError):
    """A manifest failed its checks; ``problems`` lists them all, ``str()`` one per line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _default_case_id(images: Sequence[str]) -> str:
    """Case id for an entry without one: the first image's id; for several channel files named
    ``<case>_0000``, ``<case>_0001``... (the nnU-Net convention) the shared ``<case>``."""
    ids = [case_id_from_path(p) for p in images]
    if len(ids) > 1 and all(_CHANNEL_SUFFIX.search(i) for i in ids):
        stripped = {_CHANNEL_SUFFIX.sub("", i) for i in ids}
        if len(stripped) == 1:
            return stripped.pop()
    return ids[0]


def _location(path: Iterable[Any]) -> str:
    """Format a JSON location such as ``training[3].label``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _schema_errors(data: Any, manifest_path: Path) -> list[tuple[tuple[Any, ...], Problem]]:
    """Every schema violation as (JSON location, problem naming the manifest file)."""
    validator = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
    found = []
    for error in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        location = tuple(error.absolute_path)
        where = _location(location)
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else error.message
            inside = f" in {where}" if where else ""
            message = f"missing required key {missing!r}{inside}"
        elif error.validator == "anyOf" and not where:
            message = "missing required key: expected at least one of 'training', 'validation', 'test'"
        elif error.validator == "pattern" and where.endswith("case_id"):
            message = f"{where}: case_id {error.instance!r} must not contain '/' or '\\'"
        else:
            message = f"{where or 'manifest'}: {error.message}"
        found.append((location, Problem(None, manifest_path, message)))
    return found


def _schema_problems(data: Any, manifest_path: Path) -> list[Problem]:
    return [problem for _, problem in _schema_errors(data, manifest_path)]


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    # lexical normalisation: "../data/x.nii.gz" reads better in messages than "man/../data/x.nii.gz"
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


@dataclass
class _Parsed:
    """What could be read from a manifest file, with the problems found on the way."""

    manifest: Manifest | None
    structural: list[Problem] = field(default_factory=list)  # load_manifest raises on these
    content: list[Problem] = field(default_factory=list)  # validate_manifest reports these too


def _parse(path: Path) -> _Parsed:
    """Read a manifest, collecting structural problems instead of stopping at the first."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        problem = Problem(None, path, f"not valid JSON: line {err.lineno} column {err.colno}: {err.msg}")
        return _Parsed(None, [problem])
    except UnicodeDecodeError as err:
        return _Parsed(None, [Problem(None, path, f"not valid JSON: not UTF-8 text ({err.reason})")])

    errors = _schema_errors(data, path)
    structural = [problem for _, problem in errors]
    if not isinstance(data, dict):
        return _Parsed(None, structural)
    # Entries that failed the schema are skipped; every other entry still gets checked.
    bad_entries = {location[:2] for location, _ in errors if len(location) >= 2}

    base = path.parent
    cases: list[Case] = []
    where_of: dict[str, list[str]] = {}
    for split in SPLITS:
        entries = data.get(split)
        if not isinstance(entries, list):
            continue
        for index, entry in enumerate(entries):
            if (split, index) in bad_entries:
                continue
            if isinstance(entry, str):
                images: list[str] = [entry]
                image_value: Any = entry
                label_value = None
                case_id = None
            else:
                image_value = entry["image"]
                images = [image_value] if isinstance(image_value, str) else list(image_value)
                label_value = entry.get("label")
                case_id = entry.get("case_id")
            resolved = tuple(_resolve(base, p) for p in images)
            case = Case(
                case_id=case_id or _default_case_id(images),
                image=resolved if isinstance(image_value, list) else resolved[0],
                label=_resolve(base, label_value) if label_value else None,
                split=split,
            )
            cases.append(case)
            where_of.setdefault(case.case_id, []).append(f"{split}[{index}]")

    for case_id, places in where_of.items():
        if len(places) > 1:
            structural.append(
                Problem(case_id, path, f"duplicate case id, used by {len(places)} entries: {', '.join(places)}")
            )

    labels: dict[int, str] = {}
    raw_labels = data.get("labels")
    if isinstance(raw_labels, dict) and all(str(k).isdigit() for k in raw_labels):
        labels = {int(k): str(v) for k, v in sorted(raw_labels.items(), key=lambda kv: int(kv[0]))}
    content: list[Problem] = []
    if isinstance(raw_labels, dict) and labels and 0 not in labels:
        content.append(
            Problem(None, path, f"labels has no '0' (background) entry; keys seen: {', '.join(map(str, labels))}")
        )
    content += _unlabelled(cases)

    modality = data.get("modality")
    if isinstance(modality, dict):
        ordered = sorted(modality.items(), key=lambda kv: (len(str(kv[0])), str(kv[0])))
        modality = ",".join(str(value) for _, value in ordered)
    manifest = Manifest(
        path=path,
        name=str(data.get("name", "")),
        modality=str(modality or ""),
        labels=labels,
        cases=tuple(cases),
        description=str(data.get("description", "")),
    )
    return _Parsed(manifest, structural, content)


def _unlabelled(cases: Iterable[Case]) -> list[Problem]:
    """Training and validation cases need a reference label; test cases need not."""
    return [
        Problem(case.case_id, case.image_paths[0], f"{case.split} case has no label")
        for case in cases
        if case.split in ("training", "validation") and case.label is None
    ]


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Load a manifest and check its structure (no image is opened).

    Checks: the file is JSON, it follows :data:`MANIFEST_SCHEMA`, and case ids are unique across
    all splits. Use :func:`validate_manifest` to check the files as well.

    Args:
        path: The manifest JSON file.

    Returns:
        The manifest with every path resolved against the manifest's folder.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ManifestError: listing every structural problem, each naming the manifest file.
    """
    parsed = _parse(Path(path))
    if parsed.structural or parsed.manifest is None:
        raise ManifestError(parsed.structural)
    return parsed.manifest


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """The voxel grid of an image: spatial shape (I, J, K) and 4x4 RAS affine in mm."""

    shape: tuple[int, ...]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    def describe(self) -> str:
        spacing = "x".join(f"{s:.4g}" for s in self.spacing)
        origin = ", ".join(f"{o + 0.0:.4g}" for o in self.affine[:3, 3])  # + 0.0 turns -0.0 into 0
        return f"shape {self.shape} spacing {spacing} mm origin ({origin}) mm"


def _sitk_affine(
    size: Sequence[int], spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]
) -> np.ndarray:
    """4x4 RAS affine from ITK geometry (LPS world, direction row-major, axes in i, j, k order)."""
    dim = len(size)
    direction_matrix = np.asarray(direction, dtype=np.float64).reshape(dim, dim)[:3, :3]
    lps = np.eye(4)
    lps[:3, :3] = direction_matrix @ np.diag(np.asarray(spacing, dtype=np.float64)[:3])
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)[:3]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_EXTENSIONS)


def _dicom_grid(folder: Path) -> _Grid:
    """Grid of the DICOM series in a folder from the headers of its first and last slices.

    The series is the one :func:`pipelines.io.read_volume` would read. Only headers are read (no
    pixel decoding): i runs along the first ImageOrientationPatient vector, j along the second,
    k across the slices in their sorted order.
    """
    import SimpleITK as sitk  # imported here: NIfTI-only manifests never need it

    files = select_series(find_dicom_series(folder), folder).files

    def header(name: Path) -> sitk.ImageFileReader:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(name))
        reader.ReadImageInformation()
        return reader

    first = header(files[0])
    affine = _sitk_affine(first.GetSize(), first.GetSpacing(), first.GetOrigin(), first.GetDirection())
    if len(files) > 1:
        last = header(files[-1])
        step_lps = (np.asarray(last.GetOrigin()) - np.asarray(first.GetOrigin())) / (len(files) - 1)
        affine[:3, 2] = np.array([-1.0, -1.0, 1.0]) * step_lps
    columns, rows = first.GetSize()[:2]
    return _Grid((int(columns), int(rows), len(files)), affine)


def _image_grid(path: Path) -> _Grid:
    """Read the grid of an image from its header only (nibabel for NIfTI, SimpleITK otherwise)."""
    if path.is_dir():
        return _dicom_grid(path)
    if _is_nifti(path):
        image = nib.load(path)
        shape = tuple(int(s) for s in image.shape)
        if len(shape) < 3:
            raise ValueError(f"expected a 3D image, got shape {shape}")
        return _Grid(shape[:3], np.asarray(image.affine, dtype=np.float64))
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = tuple(int(s) for s in reader.GetSize())
    if len(size) < 3:
        raise ValueError(f"expected a 3D image, got size {size}")
    return _Grid(size[:3], _sitk_affine(size, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()))


def _read_label(path: Path) -> tuple[_Grid, np.ndarray]:
    """Read a label map fully: its grid and its voxel values (I, J, K)."""
    if path.is_dir():
        raise ValueError("expected a label image file, got a folder")
    volume = read_volume(path)
    return _Grid(volume.shape, volume.affine), volume.array


def _label_values(data: np.ndarray) -> np.ndarray:
    """Distinct values of a label map; bincount for small non-negative integers (much faster
    than np.unique's sort on large volumes)."""
    if np.issubdtype(data.dtype, np.integer) and data.size:
        low, high = int(data.min()), int(data.max())
        if low >= 0 and high < 65536:
            return np.flatnonzero(np.bincount(data.ravel(), minlength=high + 1))
    return np.unique(data)


def _grids_match(a: _Grid, b: _Grid, tolerance_mm: float = GRID_TOLERANCE_MM) -> bool:
    """True when two grids hold the same voxel centres, allowing a different axis order or
    direction in storage (a label saved LAS for an LPS image); affine entries within tolerance."""
    if a.shape == b.shape and np.allclose(a.affine, b.affine, atol=tolerance_mm, rtol=0):
        return True
    # index_b -> index_a; a pure axis permutation/flip has one +-1 per row and column.
    transform = np.linalg.solve(a.affine, b.affine)
    rotation = np.rint(transform[:3, :3])
    if not (np.abs(rotation).sum(axis=0) == 1).all() or not (np.abs(rotation).sum(axis=1) == 1).all():
        return False
    permuted_shape = tuple(int(abs(rotation[r]) @ np.asarray(b.shape)) for r in range(3))
    if permuted_shape != a.shape:
        return False
    exact = np.eye(4)
    exact[:3, :3] = rotation
    # a flipped axis starts at the far end of a's index range
    exact[:3, 3] = [(a.shape[r] - 1) if rotation[r].sum() < 0 else 0 for r in range(3)]
    return bool(np.allclose(a.affine @ exact, b.affine, atol=tolerance_mm, rtol=0))


def _reason(err: Exception, path: Path) -> str:
    """An exception's message without the leading file name the Problem already carries."""
    text = str(err).strip() or type(err).__name__
    for prefix in (f"{path}: ", f"{path.absolute()}: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _ranges(values: Iterable[int]) -> str:
    """Integers as compact ranges: ``0-5, 7, 9-11``."""
    ordered = sorted(set(values))
    parts: list[str] = []
    start = previous = None
    for value in [*ordered, None]:
        if value is not None and previous is not None and value == previous + 1:
            previous = value
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = value
    return ", ".join(parts)


def _check_case(case: Case, labels: Mapping[int, str], check_images: bool) -> list[Problem]:
    problems: list[Problem] = []
    present_images = []
    for image in case.image_paths:
        if not image.exists():
            problems.append(Problem(case.case_id, image, "image file not found"))
        else:
            present_images.append(image)
    label_exists = case.label is not None and case.label.exists()
    if case.label is not None and not label_exists:
        problems.append(Problem(case.case_id, case.label, "label file not found"))
    if not check_images:
        return problems

    grids: list[tuple[Path, _Grid]] = []
    for image in present_images:
        try:
            grids.append((image, _image_grid(image)))
        except Exception as err:  # any reader failure is reported, not raised
            problems.append(Problem(case.case_id, image, f"cannot read image: {_reason(err, image)}"))
    for image, grid in grids[1:]:
        if not _grids_match(grids[0][1], grid):
            problems.append(
                Problem(
                    case.case_id,
                    image,
                    f"channel grid {grid.describe()} differs from first channel {grids[0][0].name} "
                    f"{grids[0][1].describe()}",
                )
            )

    if case.label is None or not label_exists:
        return problems
    try:
        label_grid, data = _read_label(case.label)
    except Exception as err:  # any reader failure is reported, not raised
        problems.append(Problem(case.case_id, case.label, f"cannot read label: {_reason(err, case.label)}"))
        return problems

    values = _label_values(data)
    if values.dtype.kind == "f":
        integral = np.isfinite(values) & (values == np.round(values))
        if not integral.all():
            shown = ", ".join(f"{v:g}" for v in values[~integral][:10])
            problems.append(Problem(case.case_id, case.label, f"label values are not integers: {shown}"))
        values = values[integral]
    if labels:
        unexpected = sorted({int(v) for v in values.tolist()} - set(labels))
        if unexpected:
            problems.append(
                Problem(
                    case.case_id,
                    case.label,
                    f"label values not in labels: {_ranges(unexpected)} (labels has {_ranges(labels)})",
                )
            )
    if grids and not _grids_match(grids[0][1], label_grid):
        image, grid = grids[0]
        problems.append(
            Problem(
                case.case_id,
                case.label,
                f"label grid {label_grid.describe()} differs from image {image.name} {grid.describe()}",
            )
        )
    return problems


def validate_manifest(
    path_or_manifest: str | os.PathLike[str] | Manifest,
    *,
    check_images: bool = True,
    workers: int = 1,
) -> list[Problem]:
    """Check a manifest and its files, reporting every problem at once.

    Reports: invalid JSON or structure, duplicate case ids, ``labels`` without ``"0"``, training
    or validation cases without a label, missing image or label files and, with ``check_images``,
    images that cannot be read (header only), label maps with values not in ``labels`` (a full
    read) and image/label or channel grids that disagree (shape and affine within 1e-3 mm; a label
    stored with another axis order or direction over the same voxels is accepted, as MONAI's
    ``Orientationd`` brings both to the same orientation).

    Args:
        path_or_manifest: A manifest file or an already loaded :class:`Manifest`.
        check_images: Open the files; False checks only that they exist.
        workers: Cases checked in parallel threads (readers release the GIL while decompressing).

    Returns:
        The problems in manifest order; empty when the manifest is fine.

    Raises:
        FileNotFoundError: if the manifest file does not exist.
    """
    if isinstance(path_or_manifest, Manifest):
        manifest = path_or_manifest
        problems: list[Problem] = []
        seen: dict[str, int] = {}
        for case in manifest.cases:
            seen[case.case_id] = seen.get(case.case_id, 0) + 1
        problems += [
            Problem(c, manifest.path, f"duplicate case id, used by {n} entries") for c, n in seen.items() if n > 1
        ]
        if manifest.labels and 0 not in manifest.labels:
            problems.append(Problem(None, manifest.path, "labels has no '0' (background) entry"))
        problems += _unlabelled(manifest.cases)
    else:
        parsed = _parse(Path(path_or_manifest))
        problems = parsed.structural + parsed.content
        if parsed.manifest is None:
            return problems
        manifest = parsed.manifest

    def check(case: Case) -> list[Problem]:
        return _check_case(case, manifest.labels, check_images)

    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            per_case = list(pool.map(check, manifest.cases))
    else:
        per_case = [check(case) for case in manifest.cases]
    for case_problems in per_case:
        problems.extend(case_problems)
    logger.info("%s: %d cases checked, %d problems", manifest.path, len(manifest.cases), len(problems))
    return problems


# --------------------------------------------------------------------------------------------
# Creation, splits, writing
# --------------------------------------------------------------------------------------------


def _template_regex(template: str) -> re.Pattern[str]:
    if template.count("{case}") != 1:
        raise ValueError(f"pattern {template!r} must contain '{{case}}' exactly once")
    if template.count("{channel}") > 1:
        raise ValueError(f"pattern {template!r} may contain '{{channel}}' at most once")
    text = re.escape(template)
    text = text.replace(re.escape("{case}"), r"(?P<case>[^/]+?)")
    text = text.replace(re.escape("{channel}"), r"(?P<channel>\d{4})")
    return re.compile(f"^{text}$")


def _match_template(folder: Path, template: str) -> dict[str, list[Path]]:
    """Files under ``folder`` matching a template such as ``imagesTr/{case}_{channel}.nii.gz``;
    returns case -> paths sorted by channel."""
    regex = _template_regex(template)
    pattern = template.replace("{case}", "*").replace("{channel}", "[0-9][0-9][0-9][0-9]")
    found: dict[str, list[tuple[str, Path]]] = {}
    for path in sorted(folder.glob(pattern)):
        match = regex.match(path.relative_to(folder).as_posix())
        if match is None:
            continue
        channel = match.groupdict().get("channel") or ""
        found.setdefault(match["case"], []).append((channel, path))
    return {case: [p for _, p in sorted(items)] for case, items in found.items()}


def _auto_layouts(folder: Path) -> list[tuple[list[str], list[str], bool]]:
    """The layouts to look for: (image templates, label templates, whether an unlabelled image
    is unexpected there). Each layout lists every extension, so image.nrrd pairs with label.nii.gz."""

    def each(template: str) -> list[str]:
        return [template.replace("{ext}", ext) for ext in IMAGE_EXTENSIONS]

    if (folder / "imagesTr").is_dir() or (folder / "imagesTs").is_dir():
        return [
            (each("imagesTr/{case}{ext}"), each("labelsTr/{case}{ext}"), True),
            (each("imagesTs/{case}{ext}"), each("labelsTs/{case}{ext}"), False),
        ]
    return [
        (each("{case}/image{ext}"), each("{case}/label{ext}"), False),
        (each("{case}_image{ext}"), each("{case}_label{ext}"), False),
    ]


def _match_templates(folder: Path, templates: Sequence[str]) -> dict[str, list[Path]]:
    """:func:`_match_template` over several templates; the first template that finds a case wins."""
    found: dict[str, list[Path]] = {}
    for template in templates:
        for case, paths in _match_template(folder, template).items():
            found.setdefault(case, paths)
    return found


def _group_channels(images: dict[str, list[Path]], labels: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Group ``<case>_0000``-style channel files (nnU-Net naming) under one case, but only where
    the label is named ``<case>`` and no label carries the full file name."""
    grouped: dict[str, list[Path]] = {}
    for name, paths in images.items():
        base = _CHANNEL_SUFFIX.sub("", name)
        if name not in labels and base != name and base in labels:
            grouped.setdefault(base, []).extend(paths)
        else:
            grouped.setdefault(name, []).extend(paths)
    return grouped


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _find_dicom_cases(folder: Path) -> dict[str, list[Path]]:
    """``<case>/dicom/`` folders as images of the subfolder layout."""
    return {p.parent.name: [p] for p in sorted(folder.glob("*/dicom")) if p.is_dir()}


def create_manifest(
    folder: str | os.PathLike[str],
    *,
    name: str | None = None,
    modality: str | Sequence[str] = "CT",
    labels: Mapping[int | str, str] | None = None,
    image_pattern: str | None = None,
    label_pattern: str | None = None,
    manifest_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Build a manifest from a folder of images and labels.

    Without patterns the layout is detected: ``imagesTr/`` + ``labelsTr/`` (+ ``imagesTs/``)
    as in the Decathlon (channel files ``<case>_0000.nii.gz`` grouped when the label is
    ``<case>.nii.gz``); ``<case>/image.nii.gz`` + ``<case>/label.nii.gz`` subfolders (or a
    ``<case>/dicom/`` series folder as the image); ``<case>_image.nii.gz`` + ``<case>_label.nii.gz``
    side by side. Any extension of :data:`IMAGE_EXTENSIONS` is recognised. Cases with a label go
    to ``training``, the others to ``test``.

    Args:
        folder: The data folder.
        name: Dataset name; defaults to the folder name.
        modality: One modality, or one per channel.
        labels: Label value to structure name. Defaults to ``labels.json`` in ``folder`` when it
            exists; ``0: "background"`` is added when missing.
        image_pattern: Image path template relative to ``folder`` with ``{case}`` (and optionally
            ``{channel}``, four digits), e.g. ``"scans/{case}.nrrd"``. Given together with
            ``label_pattern``.
        label_pattern: Label path template with ``{case}``, e.g. ``"masks/{case}_seg.nrrd"``.
        manifest_dir: Folder the manifest will be written to; paths are written relative to it.
            Defaults to ``folder``.

    Returns:
        The manifest as a dict, ready for :func:`write_manifest`.

    Raises:
        FileNotFoundError: if ``folder`` does not exist.
        ValueError: if no image is found, a pattern is malformed, or ``labels.json`` is invalid.
    """
    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: data folder not found")
    start = Path(manifest_dir).expanduser().absolute() if manifest_dir is not None else folder
    if (image_pattern is None) != (label_pattern is None):
        raise ValueError(
            f"give image_pattern and label_pattern together; got image_pattern={image_pattern!r}, "
            f"label_pattern={label_pattern!r}"
        )

    auto = image_pattern is None or label_pattern is None
    layouts = _auto_layouts(folder) if auto else [([str(image_pattern)], [str(label_pattern)], False)]
    training: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    seen: set[str] = set()
    for image_templates, label_templates, label_expected in layouts:
        images = _match_templates(folder, image_templates)
        label_files = _match_templates(folder, label_templates)
        if auto:
            if image_templates[0].startswith("{case}/image"):
                # a <case>/dicom/ series folder stands for the image of the subfolder layout
                images = {**_find_dicom_cases(folder), **images}
            images = _group_channels(images, label_files)
        for case_id in sorted(images):
            if case_id in seen:
                logger.warning("%s: case %s found in two layouts; keeping the first", folder, case_id)
                continue
            seen.add(case_id)
            paths = images[case_id]
            image_value: str | list[str] = (
                _relative(paths[0], start) if len(paths) == 1 else [_relative(p, start) for p in paths]
            )
            entry: dict[str, Any] = {"case_id": case_id, "image": image_value}
            if case_id in label_files:
                entry["label"] = _relative(label_files[case_id][0], start)
                training.append(entry)
            else:
                if label_expected:
                    logger.warning("%s: no label found for %s; listed under test", folder, paths[0])
                test.append(entry)
        orphans = sorted(set(label_files) - set(images))
        if orphans:
            logger.warning("%s: labels without an image, left out: %s", folder, ", ".join(orphans))
    if not training and not test:
        tried = "; ".join(
            templates[0].replace(IMAGE_EXTENSIONS[0], ".*") if auto else templates[0] for templates, _, _ in layouts
        )
        raise ValueError(f"{folder}: no images found; layouts tried: {tried}")

    if labels is None:
        labels_file = folder / "labels.json"
        if labels_file.is_file():
            try:
                labels = json.loads(labels_file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{labels_file}: not valid JSON: line {err.lineno} column {err.colno}: {err.msg}"
                ) from err
            if not isinstance(labels, dict):
                raise ValueError(
                    f"{labels_file}: expected an object of label value to name, got {type(labels).__name__}"
                )
        else:
            logger.warning("%s: no labels given and no labels.json; writing background only", folder)
            labels = {}
    label_map: dict[int, str] = {}
    for key, value in labels.items():
        if not str(key).strip().isdigit():
            raise ValueError(f"labels: key {key!r} is not a non-negative integer")
        label_map[int(key)] = str(value)
    label_map.setdefault(0, "background")

    modalities = [modality] if isinstance(modality, str) else list(modality)
    manifest: dict[str, Any] = {
        "name": name or folder.name,
        "modality": {str(i): m for i, m in enumerate(modalities)},
        "labels": {str(k): label_map[k] for k in sorted(label_map)},
    }
    if training:
        manifest["training"] = training
    if test:
        manifest["test"] = test
    logger.info("%s: %d training and %d test cases", folder, len(training), len(test))
    return manifest


def split_manifest(path: str | os.PathLike[str], *, folds: int, seed: int) -> list[dict[str, Any]]:
    """Make k-fold cross-validation manifests.

    The training and validation entries of the manifest are pooled, ordered by case id, shuffled
    with ``seed`` and cut into ``folds`` parts whose sizes differ by at most one. Manifest ``f``
    has part ``f`` as ``validation`` and the rest as ``training``; ``test`` is kept as is, so
    every labelled case is validated in exactly one fold. Entries are copied unchanged, so their
    relative paths hold when the results are written beside the original manifest.

    Args:
        path: The manifest file.
        folds: Number of folds, at least 2 and at most the number of cases.
        seed: Seed of the shuffle; the same seed gives the same folds.

    Returns:
        ``folds`` manifest dicts, each with a ``"fold"`` entry ``{"index", "count", "seed"}``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ManifestError: if the manifest is structurally invalid.
        ValueError: if ``folds`` is out of range.
    """
    manifest = load_manifest(path)
    data = json.loads(manifest.path.read_text(encoding="utf-8"))
    pool: list[tuple[str, Any]] = []
    entry_index = {"training": 0, "validation": 0}
    for case in manifest.cases:
        if case.split in entry_index:
            pool.append((case.case_id, data[case.split][entry_index[case.split]]))
            entry_index[case.split] += 1
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= len(pool):
        raise ValueError(
            f"{manifest.path}: folds must be an integer from 2 to the number of training and "
            f"validation cases ({len(pool)}), got {folds!r}"
        )
    pool.sort(key=lambda item: item[0])
    order = np.random.default_rng(seed).permutation(len(pool))
    parts = [[pool[i][1] for i in sorted(part)] for part in np.array_split(order, folds)]
    result = []
    for index in range(folds):
        fold = {key: value for key, value in data.items() if key not in ("training", "validation")}
        fold["training"] = [entry for other, part in enumerate(parts) if other != index for entry in part]
        fold["validation"] = list(parts[index])
        fold["fold"] = {"index": index, "count": folds, "seed": seed}
        result.append(fold)
    return result


def write_manifest(manifest: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a manifest as indented JSON, atomically (temporary file, then rename).

    Args:
        manifest: The manifest dict; it must follow :data:`MANIFEST_SCHEMA`.
        path: Destination file; its folder is created when missing.

    Returns:
        The path written.

    Raises:
        ManifestError: if the dict does not follow the schema (nothing is written).
    """
    path = Path(path).expanduser().absolute()
    problems = _schema_problems(manifest, path)
    if problems:
        raise ManifestError(problems)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("wrote %s", path)
    return path
