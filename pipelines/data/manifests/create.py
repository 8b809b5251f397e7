"""Build a manifest from a folder of images and labels, by a known layout or a path template.

Layouts recognised without a template: the Medical Segmentation Decathlon's ``imagesTr/`` +
``labelsTr/`` (+ ``imagesTs/``), one subfolder per case (``<case>/image.nii.gz`` +
``<case>/label.nii.gz``, or a ``<case>/dicom/`` series folder), and ``<case>_image.nii.gz`` beside
``<case>_label.nii.gz``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.data.manifests.model import CHANNEL_SUFFIX

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "create_manifest"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
"""File name endings recognised as image files (longest first where one ends another)."""


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
        base = CHANNEL_SUFFIX.sub("", name)
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


def _label_map(folder: Path, labels: Mapping[int | str, str] | None) -> dict[int, str]:
    """``labels`` (or ``folder/labels.json`` when None) as value -> name, with ``0: "background"``."""
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
    return label_map


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
        The manifest as a dict, ready for :func:`~pipelines.data.manifests.model.write_manifest`.

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

    label_map = _label_map(folder, labels)

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
