"""Check a manifest and the files it lists, reporting every problem at once.

Images are opened header only (nibabel for NIfTI, SimpleITK for NRRD/MetaImage, pydicom for DICOM); label
maps are read in full to check their values. Grids are compared with
:func:`pipelines.geometry.grids_match`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from pipelines.data.manifests.model import (
    Case,
    Manifest,
    Problem,
    contained_problems,
    parse_manifest,
    unlabelled_problems,
)
from pipelines.geometry import Grid, affine_from_itk, grids_match
from pipelines.io.dicom_grid import dicom_grid
from pipelines.io.dicom_tree import is_dicom_container
from pipelines.io.readers import read_volume

if TYPE_CHECKING:
    import SimpleITK as sitk

logger = logging.getLogger(__name__)

__all__ = ["validate_manifest"]

_NIFTI_EXTENSIONS = (".nii.gz", ".nii")


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_EXTENSIONS)


def _itk_header(path: Path) -> sitk.ImageFileReader:
    """A SimpleITK reader that has read the header of ``path`` (no pixels)."""
    import SimpleITK as sitk  # imported here: NIfTI-only manifests never need it

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _image_grid(path: Path, series_uid: str | None = None) -> Grid:
    """Read the grid of an image from its header only (nibabel for NIfTI, SimpleITK otherwise).

    DICOM (a folder searched recursively, a DICOMDIR, a ``.zip``, as a manifest made by ``manifest
    create --dicom`` names them): the series ``series_uid`` (checked present), else the one the
    reader's default rules choose, from the headers (:func:`pipelines.io.dicom_grid.dicom_grid`).
    """
    if path.is_dir() or is_dicom_container(path):
        return dicom_grid(path, series_uid)
    if _is_nifti(path):
        image = nib.load(path)
        shape = tuple(int(s) for s in image.shape)
        if len(shape) < 3:
            raise ValueError(f"expected a 3D image, got shape {shape}")
        return Grid(shape[:3], np.asarray(image.affine, dtype=np.float64))
    reader = _itk_header(path)
    size = tuple(int(s) for s in reader.GetSize())
    if len(size) < 3:
        raise ValueError(f"expected a 3D image, got size {size}")
    return Grid(size[:3], affine_from_itk(reader.GetOrigin(), reader.GetSpacing(), reader.GetDirection()))


def _read_label(path: Path) -> tuple[Grid, np.ndarray]:
    """Read a label map fully: its grid and its voxel values (I, J, K)."""
    if path.is_dir():
        raise ValueError("expected a label image file, got a folder")
    volume = read_volume(path)
    return Grid(volume.shape, volume.affine), volume.array


def _label_values(data: np.ndarray) -> np.ndarray:
    """Distinct values of a label map; bincount for small non-negative integers (much faster
    than np.unique's sort on large volumes)."""
    if np.issubdtype(data.dtype, np.integer) and data.size:
        low, high = int(data.min()), int(data.max())
        if low >= 0 and high < 65536:
            return np.flatnonzero(np.bincount(data.ravel(), minlength=high + 1))
    return np.unique(data)


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


def _value_problems(case: Case, label: Path, data: np.ndarray, labels: Mapping[int, str]) -> list[Problem]:
    """Label values that are not integers, or not keys of ``labels``."""
    problems: list[Problem] = []
    values = _label_values(data)
    if values.dtype.kind == "f":
        integral = np.isfinite(values) & (values == np.round(values))
        if not integral.all():
            shown = ", ".join(f"{v:g}" for v in values[~integral][:10])
            problems.append(Problem(case.case_id, label, f"label values are not integers: {shown}"))
        values = values[integral]
    if labels:
        unexpected = sorted({int(v) for v in values.tolist()} - set(labels))
        if unexpected:
            problems.append(
                Problem(
                    case.case_id,
                    label,
                    f"label values not in labels: {_ranges(unexpected)} (labels has {_ranges(labels)})",
                )
            )
    return problems


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

    grids: list[tuple[Path, Grid]] = []
    for image in present_images:
        try:
            grids.append((image, _image_grid(image, case.series_uid if len(present_images) == 1 else None)))
        except Exception as err:  # any reader failure is reported, not raised
            problems.append(Problem(case.case_id, image, f"cannot read image: {_reason(err, image)}"))
    for image, grid in grids[1:]:
        if not grids_match(grids[0][1], grid):
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

    problems += _value_problems(case, case.label, data, labels)
    if grids and not grids_match(grids[0][1], label_grid):
        image, grid = grids[0]
        problems.append(
            Problem(
                case.case_id,
                case.label,
                f"label grid {label_grid.describe()} differs from image {image.name} {grid.describe()}",
            )
        )
    return problems


def _loaded_problems(manifest: Manifest) -> list[Problem]:
    """The structural and content problems of a manifest built in code rather than read from a file."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for case in manifest.cases:
        seen[case.case_id] = seen.get(case.case_id, 0) + 1
    problems += [Problem(c, manifest.path, f"duplicate case id, used by {n} entries") for c, n in seen.items() if n > 1]
    if manifest.labels and 0 not in manifest.labels:
        problems.append(Problem(None, manifest.path, "labels has no '0' (background) entry"))
    problems += unlabelled_problems(manifest.cases)
    return problems


def validate_manifest(
    path_or_manifest: str | os.PathLike[str] | Manifest,
    *,
    check_images: bool = True,
    workers: int = 1,
    allow_outside_paths: bool = False,
) -> list[Problem]:
    """Check a manifest and its files, reporting every problem at once.

    Reports: invalid JSON or structure, duplicate case ids, ``labels`` without ``"0"``, training
    or validation cases without a label, missing image or label files and, with ``check_images``,
    images that cannot be read (header only), label maps with values not in ``labels`` (a full
    read) and image/label or channel grids that disagree (shape and affine within
    :data:`~pipelines.geometry.GRID_TOLERANCE_MM`; a label stored with another axis order or
    direction over the same voxels is accepted, as MONAI's ``Orientationd`` brings both to the
    same orientation).

    Paths outside the manifest's folder (absolute ones included; see
    :func:`~pipelines.data.manifests.model.resolve_path`) are reported without being opened, and
    their cases are not checked further, unless ``allow_outside_paths``.

    Args:
        path_or_manifest: A manifest file or an already loaded :class:`Manifest`.
        check_images: Open the files; False checks only that they exist.
        workers: Cases checked in parallel threads (readers release the GIL while decompressing).
        allow_outside_paths: Accept (and check) paths outside the manifest's folder.

    Returns:
        The problems in manifest order; empty when the manifest is fine.

    Raises:
        FileNotFoundError: if the manifest file does not exist.
    """
    if isinstance(path_or_manifest, Manifest):
        manifest = path_or_manifest
        problems = _loaded_problems(manifest)
        if not allow_outside_paths:
            outside = contained_problems(manifest)
            if outside:
                problems += outside
                refused = {p.case_id for p in outside}
                manifest = replace(manifest, cases=tuple(c for c in manifest.cases if c.case_id not in refused))
    else:
        parsed = parse_manifest(path_or_manifest, allow_outside_paths=allow_outside_paths)
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
