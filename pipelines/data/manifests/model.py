"""What a manifest holds (cases, splits, labels), how it is read from JSON and written back.

:func:`load_manifest` checks structure only (JSON, the schema, unique case ids); opening the
files is :func:`pipelines.data.manifests.validate.validate_manifest`'s job. Every path of a
manifest is resolved by :func:`resolve_path`, relative to the folder that holds the manifest.

Path policy: a manifest names files inside its own folder. A path that leaves it (``..`` beyond the
folder, an absolute or ``~`` path, or a symbolic link whose real target lies outside) is refused as a
structural problem before anything is opened, unless the caller passes ``allow_outside_paths=True``
(``--allow-outside-paths`` on the command line). This keeps a manifest received from elsewhere from
reading (and hashing, and copying into outputs) files such as ``../../../../etc/passwd``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines import keys
from pipelines.data.manifests.schema import schema_errors
from pipelines.io.readers import case_id_from_path
from pipelines.io.writers import write_bytes

logger = logging.getLogger(__name__)

__all__ = [
    "CHANNEL_SUFFIX",
    "SPLITS",
    "Case",
    "Manifest",
    "ManifestError",
    "ParsedManifest",
    "Problem",
    "contained_problems",
    "load_manifest",
    "load_manifest_document",
    "outside_reason",
    "parse_manifest",
    "parse_manifest_data",
    "resolve_path",
    "schema_problems",
    "unlabelled_problems",
    "write_manifest",
]

SPLITS: tuple[str, ...] = ("training", "validation", "test")
"""The case lists a manifest may hold, in the order they are read."""

CHANNEL_SUFFIX = re.compile(r"_\d{4}$")
"""The ``_0000``, ``_0001``... ending of a channel file name (the nnU-Net convention)."""


@dataclass(frozen=True)
class Case:
    """One case of a manifest, paths resolved against the manifest folder.

    Attributes:
        case_id: Unique identifier, from the entry's ``case_id`` or the image file name.
        image: The image path, or a tuple of paths (one per channel) when the entry lists several.
        label: The reference label map, or None.
        split: ``"training"``, ``"validation"`` or ``"test"``.
        series_uid: for DICOM holding several series (an export, a study folder, a ``.zip``), the
            SeriesInstanceUID to read (written by ``medseg manifest create --dicom``), else None.
        series_selection: how ``manifest create --dicom`` chose ``series_uid`` (rule, rules_source,
            skipped), recorded in run.json by ``medseg batch``; else None.
    """

    case_id: str
    image: Path | tuple[Path, ...]
    label: Path | None
    split: str
    series_uid: str | None = None
    series_selection: dict[str, Any] | None = field(default=None, compare=False)

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
        if self.series_uid is not None:
            item["series_uid"] = self.series_uid
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
        dicom: the ``medseg_dicom`` record of a manifest made by ``manifest create --dicom``
            (``identifiers_kept``...), else None.
    """

    path: Path
    name: str
    modality: str
    labels: dict[int, str]
    cases: tuple[Case, ...]
    description: str = ""
    dicom: dict[str, Any] | None = None

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
# Reading
# --------------------------------------------------------------------------------------------


def schema_problems(data: Any, manifest_path: Path) -> list[Problem]:
    """Every schema violation of ``data`` as a :class:`Problem` naming ``manifest_path``."""
    return [Problem(None, manifest_path, message) for _, message in schema_errors(data)]


def resolve_path(manifest_folder: Path, value: str, *, allow_outside_paths: bool = False) -> Path:
    """Resolve one path written in a manifest; every image and label path goes through here.

    Only names are looked at (``lstat``/``readlink`` of the path's parts to follow symbolic links);
    no file is opened.

    Args:
        manifest_folder: The folder that holds the manifest (absolute).
        value: The path as written: relative to ``manifest_folder``; absolute or ``~`` paths only
            with ``allow_outside_paths``.
        allow_outside_paths: Accept paths outside ``manifest_folder``.

    Returns:
        The absolute path, normalised lexically (``man/../data/x.nii.gz`` becomes ``data/x.nii.gz``,
        which reads better in messages); symbolic links are kept in the returned path.

    Raises:
        ValueError: without ``allow_outside_paths``, a path outside ``manifest_folder``: absolute
            (also when it points inside), ``..`` segments that climb above the folder, or a path whose
            real location (symbolic links followed, see :func:`outside_reason`) is outside it. ``..``
            segments that stay inside are fine.
    """
    path = Path(value).expanduser()
    resolved = Path(os.path.normpath(path if path.is_absolute() else manifest_folder / path))
    if not allow_outside_paths:
        reason = outside_reason(manifest_folder, value, resolved)
        if reason is not None:
            raise ValueError(
                f"path {value!r} {reason}, outside the manifest's folder {manifest_folder} "
                "(manifest paths stay inside it unless allowed with --allow-outside-paths)"
            )
    return resolved


def outside_reason(manifest_folder: Path, value: str, resolved: Path) -> str | None:
    """Why a manifest path lies outside the manifest's folder, or None when it lies inside.

    The policy: a path written absolute (or with ``~``) is outside, wherever it points. A relative
    path is inside when its lexical normal form stays under the folder *and* its real location does
    too: symbolic links along the path (and of the folder itself) are followed with
    :func:`os.path.realpath`, so a link inside the folder that points elsewhere is outside, while a
    manifest folder reached through a link is fine. A path that does not exist yet is judged by the
    part of it that exists.

    Args:
        manifest_folder: The folder that holds the manifest (absolute).
        value: The path as written in the manifest.
        resolved: ``value`` made absolute and normalised lexically (see :func:`resolve_path`).

    Returns:
        ``"is absolute"``, ``"resolves to <path>"`` or ``"leads through a symbolic link to <path>"``,
        or None.
    """
    if Path(value).expanduser().is_absolute():
        return "is absolute"
    folder = Path(os.path.normpath(manifest_folder))
    if not resolved.is_relative_to(folder):
        return f"resolves to {resolved}"
    real_folder = Path(os.path.realpath(folder))
    real = Path(os.path.realpath(resolved))
    if not real.is_relative_to(real_folder):
        return f"leads through a symbolic link to {real}"
    return None


def contained_problems(manifest: Manifest) -> list[Problem]:
    """The paths of a manifest built in code that lie outside its folder (the policy of :func:`resolve_path`).

    The paths of a :class:`Manifest` are absolute already, so only where they lie counts here.
    """
    folder = manifest.path.parent
    problems = []
    for case in manifest.cases:
        for kind, path in [*(("image", p) for p in case.image_paths), ("label", case.label)]:
            if path is None:
                continue
            reason = outside_reason(folder, os.path.relpath(path, folder), Path(os.path.normpath(path)))
            if reason is not None:
                problems.append(
                    Problem(case.case_id, manifest.path, f"{kind} {path} is outside the manifest's folder {folder} "
                            f"({reason}; allow it with --allow-outside-paths)")
                )  # fmt: skip
    return problems


def _default_case_id(images: Sequence[str]) -> str:
    """Case id for an entry without one: the first image's id; for several channel files named
    ``<case>_0000``, ``<case>_0001``... (the nnU-Net convention) the shared ``<case>``."""
    ids = [case_id_from_path(p) for p in images]
    if len(ids) > 1 and all(CHANNEL_SUFFIX.search(i) for i in ids):
        stripped = {CHANNEL_SUFFIX.sub("", i) for i in ids}
        if len(stripped) == 1:
            return stripped.pop()
    return ids[0]


def unlabelled_problems(cases: Iterable[Case]) -> list[Problem]:
    """Training and validation cases need a reference label; test cases need not."""
    return [
        Problem(case.case_id, case.image_paths[0], f"{case.split} case has no label")
        for case in cases
        if case.split in ("training", "validation") and case.label is None
    ]


@dataclass
class ParsedManifest:
    """What could be read from a manifest file, with the problems found on the way.

    Attributes:
        manifest: The manifest, or None when the file is not JSON or not an object.
        structural: Problems :func:`load_manifest` raises on (JSON, schema, duplicate case ids,
            paths outside the manifest's folder).
        content: Problems only :func:`~pipelines.data.manifests.validate.validate_manifest`
            reports (no background label, training or validation case without a label).
        document: The JSON document as read (None when the file is not JSON), so that callers
            needing the entries as written do not read the file again.
    """

    manifest: Manifest | None
    structural: list[Problem] = field(default_factory=list)
    content: list[Problem] = field(default_factory=list)
    document: Any = None


def _cases(
    data: dict[str, Any],
    manifest_path: Path,
    bad_entries: set[tuple[Any, ...]],
    allow_outside_paths: bool,
    base_folder: Path | None = None,
) -> tuple[list[tuple[Case, str]], list[Problem]]:
    """Every case with the place of its entry (``training[3]``), in file order, and the refused paths.

    Entries that failed the schema (their ``(split, index)`` in ``bad_entries``) are skipped, and so
    are entries with a path outside the manifest's folder (see :func:`resolve_path`): each such path
    is a :class:`Problem` naming the manifest, the entry (``test[0].image[1]``) and the path.
    """
    cases: list[tuple[Case, str]] = []
    refused: list[Problem] = []
    for split in SPLITS:
        entries = data.get(split)
        if not isinstance(entries, list):
            continue
        for index, entry in enumerate(entries):
            if (split, index) in bad_entries:
                continue
            place = f"{split}[{index}]"
            if isinstance(entry, str):
                images: list[str] = [entry]
                image_value: Any = entry
                label_value = None
                case_id = None
                image_places = [place]
            else:
                image_value = entry["image"]
                images = [image_value] if isinstance(image_value, str) else list(image_value)
                label_value = entry.get("label")
                case_id = entry.get("case_id")
                image_places = (
                    [f"{place}.image"]
                    if isinstance(image_value, str)
                    else [f"{place}.image[{i}]" for i in range(len(images))]
                )
            case_id = case_id or _default_case_id(images)
            written = list(zip(images, image_places, strict=True))
            if label_value:
                written.append((label_value, f"{place}.label"))
            paths, problems = _resolved(manifest_path, case_id, written, allow_outside_paths, base_folder)
            if problems:
                refused += problems
                continue
            case = Case(
                case_id=case_id,
                image=tuple(paths[: len(images)]) if isinstance(image_value, list) else paths[0],
                label=paths[len(images)] if label_value else None,
                split=split,
                series_uid=None if isinstance(entry, str) else entry.get("series_uid"),
                series_selection=None if isinstance(entry, str) else entry.get("series_selection"),
            )
            cases.append((case, place))
    return cases, refused


def _resolved(
    manifest_path: Path,
    case_id: str,
    written: Sequence[tuple[str, str]],
    allow_outside_paths: bool,
    base_folder: Path | None = None,
) -> tuple[list[Path], list[Problem]]:
    """Resolve an entry's ``(path as written, place)`` pairs; each refused path becomes a :class:`Problem`."""
    paths: list[Path] = []
    problems: list[Problem] = []
    base = base_folder or manifest_path.parent
    for value, place in written:
        try:
            paths.append(resolve_path(base, value, allow_outside_paths=allow_outside_paths))
        except ValueError as err:
            problems.append(Problem(case_id, manifest_path, f"{place}: {err}"))
    return paths, problems


def parse_manifest(path: str | os.PathLike[str], *, allow_outside_paths: bool = False) -> ParsedManifest:
    """Read a manifest, collecting structural problems instead of stopping at the first.

    Args:
        path: The manifest JSON file.
        allow_outside_paths: Accept paths outside the manifest's folder (see :func:`resolve_path`);
            without it each such path is a structural problem and its entry is left out.

    Returns:
        The manifest (None when the file is not JSON or not an object) and the problems found.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        problem = Problem(None, path, f"not valid JSON: line {err.lineno} column {err.colno}: {err.msg}")
        return ParsedManifest(None, [problem])
    except UnicodeDecodeError as err:
        return ParsedManifest(None, [Problem(None, path, f"not valid JSON: not UTF-8 text ({err.reason})")])
    return parse_manifest_data(data, path, allow_outside_paths=allow_outside_paths)


def parse_manifest_data(
    data: Any, path: Path, *, base_folder: Path | None = None, allow_outside_paths: bool = False
) -> ParsedManifest:
    """:func:`parse_manifest` of a document already read from ``path``.

    Args:
        data: the JSON document.
        path: the file it came from (absolute), named by every problem.
        base_folder: the folder relative paths are resolved against and must stay inside; None:
            ``path``'s folder (a manifest's rule). A Zoo datalist passes its ``dataset_dir``.
        allow_outside_paths: as :func:`parse_manifest`.
    """
    errors = schema_errors(data)
    structural = [Problem(None, path, message) for _, message in errors]
    if not isinstance(data, dict):
        return ParsedManifest(None, structural, document=data)
    # Entries that failed the schema are skipped; every other entry still gets checked.
    bad_entries = {location[:2] for location, _ in errors if len(location) >= 2}
    placed, refused = _cases(data, path, bad_entries, allow_outside_paths, base_folder)
    structural += refused
    cases = [case for case, _ in placed]

    where_of: dict[str, list[str]] = {}
    for case, place in placed:
        where_of.setdefault(case.case_id, []).append(place)
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
    content += unlabelled_problems(cases)

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
        dicom=data.get("medseg_dicom") if isinstance(data.get("medseg_dicom"), dict) else None,
    )
    return ParsedManifest(manifest, structural, content, data)


def load_manifest(path: str | os.PathLike[str], *, allow_outside_paths: bool = False) -> Manifest:
    """Load a manifest and check its structure (no image is opened).

    Checks: the file is JSON, it follows the schema (:data:`~pipelines.data.manifests.schema.MANIFEST_SCHEMA`),
    case ids are unique across all splits, and every path stays inside the manifest's folder (see
    :func:`resolve_path`). Use :func:`~pipelines.data.manifests.validate.validate_manifest` to check
    the files as well.

    Args:
        path: The manifest JSON file.
        allow_outside_paths: Accept paths outside the manifest's folder (absolute ones included).

    Returns:
        The manifest with every path resolved against the manifest's folder.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ManifestError: listing every structural problem, each naming the manifest file.
    """
    return _checked(parse_manifest(path, allow_outside_paths=allow_outside_paths))


def load_manifest_document(
    path: str | os.PathLike[str], *, allow_outside_paths: bool = False
) -> tuple[Manifest, dict[str, Any]]:
    """:func:`load_manifest`, also returning the JSON document as read (one read of the file)."""
    parsed = parse_manifest(path, allow_outside_paths=allow_outside_paths)
    return _checked(parsed), parsed.document


def _checked(parsed: ParsedManifest) -> Manifest:
    """The manifest of ``parsed``, or :class:`ManifestError` listing its structural problems."""
    if parsed.structural or parsed.manifest is None:
        raise ManifestError(parsed.structural)
    return parsed.manifest


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_manifest(manifest: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a manifest as indented JSON, atomically (temporary file, then rename).

    Args:
        manifest: The manifest dict; it must follow the schema.
        path: Destination file; its folder is created when missing.

    Returns:
        The path written.

    Raises:
        ManifestError: if the dict does not follow the schema (nothing is written).
    """
    path = Path(path).expanduser().absolute()
    problems = schema_problems(manifest, path)
    if problems:
        raise ManifestError(problems)
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    write_bytes(text.encode("utf-8"), path)
    logger.info("wrote %s", path)
    return path
