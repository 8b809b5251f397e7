"""Multi-channel input: one image per channel, in the order the bundle declares, on one voxel grid.

A bundle's ``configs/metadata.json`` declares its input channels the Model Zoo way:
``network_data_format.inputs.image.num_channels`` and, optionally, ``channel_def`` (channel index
-> name, e.g. BraTS-style ``{"0": "T1c", "1": "T1", "2": "T2", "3": "FLAIR"}``). For such a
bundle medseg reads one image per channel, given

- **by name**: ``--image T1c=a.nii.gz --image FLAIR=b.nii.gz`` in any order; every name is checked
  against ``channel_def`` (case and ``-``/``_``/space ignored) and the images are put in its order;
- **by position**: ``--image a.nii.gz --image b.nii.gz`` (or a manifest case's ``image`` list):
  taken as channel 0, 1, ... as given; only the count can be checked, and run.json says so;
- **as a case folder**: one folder holding one file per channel whose name ends with the channel
  name (``case_t1c.nii.gz``, ``BraTS-0001-flair.nii.gz``); each channel must match exactly one file.

All channels must lie on the first channel's voxel grid (:func:`pipelines.geometry.grids_match`).
The same voxels stored in another axis order are put in the first channel's order (lossless).
A different grid is refused, unless the caller asks (``channel_grids="resample"``) to resample it
onto the first channel's grid (linear, SimpleITK), which is logged and recorded in run.json.
The label map is always written on the first channel's grid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.geometry import Grid, grids_match, sitk_image
from pipelines.io.hashing import add_member, input_sha256
from pipelines.io.readers import Volume, case_id_from_path, check_readable
from pipelines.io.values import check_finite

logger = logging.getLogger(__name__)

__all__ = [
    "CHANNEL_GRID_POLICIES",
    "ChannelInputs",
    "ChannelSpec",
    "InputArg",
    "channel_corrections",
    "channel_inputs",
    "channel_spec",
    "check_inputs_exist",
    "read_input",
]

CHANNEL_GRID_POLICIES = ("refuse", "resample")
"""What to do with a channel image on another grid than the first: refuse it, or resample it onto the first."""

MIN_RESAMPLED_COVERAGE = 0.5
"""A resampled channel must cover at least this fraction of the first channel's voxels; less is refused."""

_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh", ".nrrd", ".nhdr", ".mha", ".mhd")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$")


@dataclass(frozen=True)
class ChannelSpec:
    """The input channels a bundle declares.

    Attributes:
        count: ``num_channels`` (1 when not declared).
        names: channel names in index order (from ``channel_def``), or None when not all are named.
        source: the metadata file, for messages.
    """

    count: int
    names: tuple[str, ...] | None
    source: str

    def describe(self) -> str:
        """``2 channels (0 T1c, 1 FLAIR)`` or ``2 channels (unnamed)``, for messages."""
        named = ", ".join(f"{i} {n}" for i, n in enumerate(self.names)) if self.names else "unnamed"
        return f"{self.count} channel{'s' if self.count != 1 else ''} ({named})"


@dataclass(frozen=True)
class ChannelInputs:
    """One case's channel images, resolved against a :class:`ChannelSpec` (nothing read yet).

    Attributes:
        paths: one path per channel, in the bundle's channel order.
        given: the paths in the order the caller gave them (their checksum is the case's input sha256,
            the same value :func:`pipelines.io.hashing.input_sha256` gives a batch ledger).
        order: how the order was decided: ``single``, ``name``, ``position`` or ``case-folder``.
        case_id: default case id: the input's name (a case folder's name, else the first image's).
    """

    paths: tuple[Path, ...]
    given: tuple[Path, ...]
    order: str
    case_id: str

    @property
    def single(self) -> bool:
        return self.order == "single"


InputArg = str | Path | Sequence[str | Path] | ChannelInputs
"""What a caller passes as a case's input: one path, one ``[NAME=]PATH`` per channel, or resolved inputs."""


def channel_spec(metadata: dict[str, Any], source: str) -> ChannelSpec:
    """Read ``network_data_format.inputs.image`` (``num_channels``, ``channel_def``) of a bundle's metadata.

    Raises:
        ValueError: ``num_channels`` that is not a positive whole number, or a ``channel_def`` whose
            keys are not the indices ``0 .. num_channels - 1`` or whose names repeat.
    """
    image = (((metadata or {}).get("network_data_format") or {}).get("inputs") or {}).get("image") or {}
    count = image.get("num_channels", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(
            f"{source}: network_data_format.inputs.image.num_channels is {count!r}; expected a positive whole number"
        )
    channel_def = image.get("channel_def")
    if count == 1 or not isinstance(channel_def, dict) or not channel_def:
        return ChannelSpec(count, None, source)
    expected = {str(i) for i in range(count)}
    if set(map(str, channel_def)) != expected:
        raise ValueError(
            f"{source}: network_data_format.inputs.image.channel_def has keys {sorted(map(str, channel_def))}; "
            f"expected one per channel, {sorted(expected)} (num_channels {count})"
        )
    names = tuple(str(channel_def.get(str(i), channel_def.get(i))) for i in range(count))  # type: ignore[call-overload]
    if len({_norm(n) for n in names}) != count:
        raise ValueError(f"{source}: channel_def names {list(names)} repeat; expected one distinct name per channel")
    return ChannelSpec(count, names, source)


def _norm(name: str) -> str:
    """A channel name compared without case, spaces, ``-`` and ``_``: ``T1-c`` == ``t1c``."""
    return re.sub(r"[\s_\-]", "", name).lower()


def _split_named(value: str | Path) -> tuple[str | None, Path]:
    """``NAME=PATH`` -> (NAME, PATH); a plain path (or an existing file whose name holds ``=``) -> (None, path)."""
    if isinstance(value, Path):
        return None, value
    name, sep, rest = value.partition("=")
    if sep and rest and _NAME.match(name) and not Path(value).exists():
        return name.strip(), Path(rest)
    return None, Path(value)


def check_inputs_exist(source: InputArg) -> None:
    """Fail fast (before a bundle is set up) when an input path is missing or unreadable.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: no input at all.
    """
    if isinstance(source, ChannelInputs):
        values: list[str | Path] = list(source.paths)
    else:
        values = [source] if isinstance(source, str | Path) else list(source)
    if not values:
        raise ValueError("no input image given; expected an image file, a DICOM folder or one --image per channel")
    for value in values:
        check_readable(_split_named(value)[1])


def channel_inputs(source: InputArg, spec: ChannelSpec, *, series_uid: str | None = None) -> ChannelInputs:
    """Put a case's images in the bundle's channel order; cheap checks only (nothing is read).

    Args:
        source: one path (an image, a DICOM folder or, for a multi-channel bundle, a case folder), or
            one ``[NAME=]PATH`` per channel.
        spec: the bundle's channels (:func:`channel_spec`).
        series_uid: a DICOM SeriesInstanceUID asked for; only meaningful for one input.

    Raises:
        ValueError: the number of images is not the bundle's channel count; names that are unknown,
            repeated, missing or mixed with unnamed images; a case folder without one file per channel.
    """
    if isinstance(source, ChannelInputs):
        return source
    values = [source] if isinstance(source, str | Path) else list(source)
    split = [_split_named(v) for v in values]
    if spec.count == 1:
        if len(split) != 1 or split[0][0] is not None:
            given = ", ".join(str(v) for v in values)
            got = "a channel name" if len(split) == 1 else f"{len(values)} images"
            raise ValueError(f"{given}: bundle takes 1 input channel ({spec.source}); expected one image, got {got}")
        path = split[0][1]
        return ChannelInputs((path,), (path,), "single", case_id_from_path(path))
    if series_uid:
        raise ValueError(
            f"series UID {series_uid}: a multi-channel input reads one series per channel image; give each channel's "
            "DICOM series as its own folder instead of --series-uid"
        )
    if len(split) == 1 and split[0][0] is None and split[0][1].is_dir() and _image_files(split[0][1]):
        return _case_folder(split[0][1], spec)
    paths = tuple(p for _, p in split)
    listed = ", ".join(str(v) for v in values)
    if len(split) != spec.count:
        raise ValueError(
            f"{listed}: bundle takes {spec.describe()} ({spec.source}); got {len(split)} image(s). Give one "
            "--image [NAME=]PATH per channel" + (" or a case folder with one file per channel" if spec.names else "")
        )
    names = [n for n, _ in split]
    if all(n is None for n in names):
        return ChannelInputs(paths, paths, "position", case_id_from_path(paths[0]))
    if any(n is None for n in names):
        raise ValueError(f"{listed}: name every channel image (NAME=PATH) or none; some are named, some not")
    if spec.names is None:
        raise ValueError(
            f"{listed}: channel names given, but the bundle names no channels ({spec.source} has no "
            "network_data_format.inputs.image.channel_def); give the images in channel order without names"
        )
    index = {_norm(n): i for i, n in enumerate(spec.names)}
    ordered: list[Path | None] = [None] * spec.count
    for name, path in split:
        i = index.get(_norm(str(name)))
        if i is None:
            raise ValueError(
                f"{name}={path}: unknown channel name {name!r}; bundle expects {', '.join(spec.names)} ({spec.source})"
            )
        if ordered[i] is not None:
            raise ValueError(f"{name}={path}: channel {spec.names[i]!r} given twice ({ordered[i]} and {path})")
        ordered[i] = path
    resolved = tuple(p for p in ordered if p is not None)
    return ChannelInputs(resolved, paths, "name", case_id_from_path(resolved[0]))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(_IMAGE_SUFFIXES))


def _case_folder(folder: Path, spec: ChannelSpec) -> ChannelInputs:
    """A folder with one image file per channel, matched by the channel name ending the file name."""
    if spec.names is None:
        raise ValueError(
            f"{folder}: a case folder needs channel names to match files to channels, and the bundle names none "
            f"({spec.source} has no channel_def); give the {spec.count} images in channel order with --image"
        )
    files = _image_files(folder)
    matched: list[Path] = []
    for name in spec.names:
        hits = [f for f in files if re.split(r"[_\-. ]", case_id_from_path(f).lower())[-1] == _norm(name)]
        hits = hits or [f for f in files if _norm(case_id_from_path(f)) == _norm(name)]
        if len(hits) != 1:
            found = ", ".join(f.name for f in files)
            problem = "no file" if not hits else f"{len(hits)} files ({', '.join(h.name for h in hits)})"
            raise ValueError(
                f"{folder}: {problem} for channel {name!r}; expected one image per channel whose name ends with the "
                f"channel name ({', '.join(spec.names)}), e.g. case_{_norm(spec.names[0])}.nii.gz; found {found}"
            )
        matched.append(hits[0])
    paths = tuple(matched)
    return ChannelInputs(paths, paths, "case-folder", folder.name)


def read_input(
    inputs: ChannelInputs,
    spec: ChannelSpec,
    read: Callable[[Path], Volume],
    *,
    channel_grids: str = "refuse",
    nan_policy: str = "refuse",
) -> Volume:
    """Read a case: one volume, or every channel stacked on the first channel's grid.

    Args:
        inputs: from :func:`channel_inputs`.
        spec: the bundle's channels.
        read: reads one image (``pipelines.io.readers.read_volume`` with the run's DICOM settings).
        channel_grids: ``refuse`` a channel on another grid, or ``resample`` it onto channel 0's.
        nan_policy: applied to every channel (:func:`pipelines.io.values.check_finite`).

    Returns:
        For one channel, ``read``'s volume unchanged. For several, channel 0's volume with
        ``channels`` the stack ``(C, I, J, K)`` (``array`` is its channel 0), ``sha256`` the checksum
        of all images in the order given, and ``channel_record`` what run.json records.

    Raises:
        ValueError: a channel on another grid (under ``refuse``, or covering too little of channel 0's
            field of view under ``resample``); any reader error, naming the file.
    """
    if channel_grids not in CHANNEL_GRID_POLICIES:
        raise ValueError(f"channel grid policy {channel_grids!r}: expected one of {', '.join(CHANNEL_GRID_POLICIES)}")
    if inputs.single:
        return read(inputs.paths[0])
    volumes: list[Volume] = []
    records: list[dict[str, Any]] = []
    corrections: list[dict[str, Any]] = []
    for i, path in enumerate(inputs.paths):
        name = spec.names[i] if spec.names else None
        volume, filled = check_finite(read(path), nan_policy)
        record: dict[str, Any] = {
            "index": i,
            "name": name,
            "path": str(path.resolve()),
            "sha256": volume.sha256 or input_sha256(path),
            "format": volume.format,
            "shape": list(volume.shape),
            "spacing_mm": [round(s, 6) for s in volume.spacing_mm],
            "grid": "reference" if i == 0 else "same",
        }
        if filled:
            corrections.append({**filled, "channel": i, "path": record["path"]})
        if i > 0:
            volume, change = _onto_grid(volume, volumes[0], i, name, channel_grids)
            if change:
                record["grid"] = change["kind"].removeprefix("channel_")
                corrections.append({**change, "path": record["path"]})
        volumes.append(volume)
        records.append(record)
        logger.info("channel %d%s <- %s (%s, %s)", i, f" ({name})" if name else "", path, inputs.order, record["grid"])
    if inputs.order == "position" and spec.names:
        logger.info(
            "channels taken by position as %s; name them (--image %s=PATH ...) to have the order checked",
            ", ".join(spec.names), spec.names[0],
        )  # fmt: skip
    stack = np.stack([v.array for v in volumes])
    first = volumes[0]
    record = {
        "order": inputs.order,
        "channel_grids": channel_grids,
        "channels": records,
        "corrections": corrections,
    }
    return dataclasses.replace(
        first, array=stack[0], channels=stack, sha256=_given_sha256(inputs, records), channel_record=record
    )


def channel_corrections(volume: Volume) -> list[dict[str, Any]]:
    """The corrections made to a multi-channel input's channels (resampled, reordered, NaN filled), for run.json."""
    return list((volume.channel_record or {}).get("corrections", []))


def _given_sha256(inputs: ChannelInputs, records: list[dict[str, Any]]) -> str:
    """The checksum :func:`~pipelines.io.hashing.input_sha256` gives the paths in the order given, from the
    per-file hashes the readers computed (folders are walked again, as input_sha256 would)."""
    by_path = {Path(r["path"]): r["sha256"] for r in records}
    if not all(p.is_file() for p in inputs.given):
        return input_sha256(inputs.given)
    digest = hashlib.sha256()
    for path in inputs.given:
        add_member(digest, path.name, bytes.fromhex(by_path[path.resolve()]))
    return digest.hexdigest()


def _onto_grid(
    volume: Volume, reference: Volume, index: int, name: str | None, policy: str
) -> tuple[Volume, dict[str, Any] | None]:
    """Channel ``index`` on the reference's grid: as is, reordered (lossless) or resampled (``policy``)."""
    grid, ref = Grid(volume.shape, volume.affine), Grid(reference.shape, reference.affine)
    label = f"channel {index}" + (f" ({name})" if name else "")
    if grids_match(ref, grid, allow_reorder=False):
        return volume, None
    if grids_match(ref, grid):
        array = _reorder(volume.array, volume.affine, reference.affine)
        logger.info("%s %s: same voxels stored in another axis order; reordered like channel 0", label, volume.path)
        change = {"kind": "channel_reordered", "channel": index, "from_grid": grid.describe(), "lossless": True}
        return dataclasses.replace(volume, array=array, affine=reference.affine), change
    if policy == "refuse":
        raise ValueError(
            f"{volume.path}: {label} is on another voxel grid ({grid.describe()}) than channel 0 {reference.path} "
            f"({ref.describe()}); expected all channel images on one grid. Resample them beforehand, or pass "
            "--channel-grids resample to resample them onto channel 0's grid (linear; recorded in run.json)"
        )
    array, coverage = _resample(volume, reference)
    if coverage < MIN_RESAMPLED_COVERAGE:
        raise ValueError(
            f"{volume.path}: {label} covers {coverage:.0%} of channel 0's field of view ({ref.describe()}) after "
            f"resampling; expected at least {MIN_RESAMPLED_COVERAGE:.0%}. Are the images of one patient and "
            "registered to each other?"
        )
    logger.warning(
        "%s %s: on another grid (%s); resampled (linear) onto channel 0's grid (%s), covering %.1f%% of it",
        label, volume.path, grid.describe(), ref.describe(), 100 * coverage,
    )  # fmt: skip
    change = {
        "kind": "channel_resampled",
        "channel": index,
        "from_grid": grid.describe(),
        "to_grid": ref.describe(),
        "interpolation": "linear",
        "coverage_fraction": round(coverage, 4),
    }
    return dataclasses.replace(volume, array=array, affine=reference.affine), change


def _reorder(array: np.ndarray, affine: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The same voxels in the target affine's axis order and directions (nibabel's orientation tools)."""
    import nibabel.orientations as nio

    transform = nio.ornt_transform(nio.io_orientation(affine), nio.io_orientation(target))
    return nio.apply_orientation(array, transform)


def _resample(volume: Volume, reference: Volume) -> tuple[np.ndarray, float]:
    """``volume`` resampled (linear, 0 outside) onto ``reference``'s grid, and the fraction of it covered.

    SimpleITK does the resampling in world (LPS) coordinates, so any direction, spacing and origin work.
    """
    import SimpleITK as sitk

    ref = sitk_image(np.zeros(reference.shape, dtype=np.uint8), reference.affine)
    moving = sitk_image(volume.array.astype(np.float32, copy=False), volume.affine)
    out = sitk.Resample(moving, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    ones = sitk_image(np.ones(volume.shape, dtype=np.uint8), volume.affine)
    inside = sitk.Resample(ones, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    coverage = float(sitk.GetArrayViewFromImage(inside).mean())
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0), coverage
