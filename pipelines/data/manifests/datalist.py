"""MONAI Model Zoo datalists as manifests: ``{"testing": [{"image": ...}, ...]}`` and a ``dataset_dir``.

A Zoo bundle's configs read their cases from a *datalist*, the JSON that
:func:`monai.data.load_decathlon_datalist` reads::

    {
      "training":   [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}, ...],
      "validation": [...],
      "testing":    [{"image": "imagesTs/c.nii.gz"}, "imagesTs/d.nii.gz", ...]
    }

Its relative paths are resolved against the config's ``dataset_dir`` (``base_dir=@dataset_dir``),
which defaults, as in ``load_decathlon_datalist``, to the datalist's own folder. It has no
``name``, ``modality`` or ``labels``: those come from the bundle.

:func:`load_datalist` turns such a document into a :class:`~pipelines.data.manifests.model.Manifest`
through :func:`~pipelines.data.manifests.model.parse_manifest_data`, so a datalist gets exactly the
checks and the path policy of a medseg manifest (schema of each entry, unique case ids, every path
inside ``dataset_dir`` unless ``allow_outside_paths``), with ``dataset_dir`` in the role of the
manifest's folder. ``testing`` (and the Decathlon's ``test``) becomes the ``test`` split.

:func:`load_cases_file` reads a file once and dispatches: a Zoo datalist, or a medseg manifest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from pipelines.data.manifests.model import Manifest, ManifestError, Problem, parse_manifest_data

logger = logging.getLogger(__name__)

__all__ = ["DATALIST_SPLITS", "MANIFEST_KEYS", "is_zoo_datalist", "load_cases_file", "load_datalist"]

DATALIST_SPLITS: dict[str, str] = {
    "training": "training",
    "validation": "validation",
    "testing": "test",
    "test": "test",
}
"""Datalist key -> manifest split (the Zoo writes ``testing``; the Decathlon's ``dataset.json`` ``test``)."""

_TEST_ENTRY = re.compile(r"\btest\[")

MANIFEST_KEYS: tuple[str, ...] = ("name", "modality", "labels")
"""Keys a medseg manifest must hold and a Zoo datalist does not."""


def is_zoo_datalist(document: Any) -> bool:
    """Whether a JSON document is a Zoo datalist rather than a medseg manifest.

    A datalist has a ``testing`` list (a manifest has no such key, and would ignore it), or has
    none of the manifest's required keys (:data:`MANIFEST_KEYS`) and at least one case list.
    """
    if not isinstance(document, dict):
        return False
    if "testing" in document:
        return True
    return not any(k in document for k in MANIFEST_KEYS) and any(k in document for k in DATALIST_SPLITS)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ManifestError(
            [Problem(None, path, f"not valid JSON: line {err.lineno} column {err.colno}: {err.msg}")]
        ) from err
    except UnicodeDecodeError as err:
        raise ManifestError([Problem(None, path, f"not valid JSON: not UTF-8 text ({err.reason})")]) from err


def load_datalist(
    path: str | os.PathLike[str],
    *,
    dataset_dir: str | os.PathLike[str] | None = None,
    allow_outside_paths: bool = False,
    document: Any = None,
) -> Manifest:
    """Load a Zoo datalist as a manifest; no image is opened.

    Args:
        path: the datalist JSON file.
        dataset_dir: the folder relative paths are resolved against and must stay inside (the
            Zoo configs' ``dataset_dir``); None: the datalist's folder, as ``load_decathlon_datalist``.
        allow_outside_paths: accept paths outside ``dataset_dir`` (absolute ones included).
        document: the file's JSON when the caller has read it already (it is not read again).

    Returns:
        A :class:`~pipelines.data.manifests.model.Manifest` (``path`` the datalist, ``name`` its file
        stem, no modality or labels: the bundle names them), paths resolved against ``dataset_dir``.

    Raises:
        FileNotFoundError: no such datalist, or ``dataset_dir`` is not a folder.
        ManifestError: (a ``ValueError``) every structural problem at once, each naming the
            datalist and the entry (``testing[2].image``): not JSON, no case list, an entry without
            ``image``, duplicate case ids, a path outside ``dataset_dir``.
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: datalist file not found")
    base = Path(dataset_dir).expanduser().absolute() if dataset_dir is not None else path.parent
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: dataset_dir of datalist {path} is not a folder")
    data = _read_json(path) if document is None else document
    if not isinstance(data, dict):
        raise ManifestError(
            [Problem(None, path, f"expected a JSON object with a 'testing' list, got {type(data).__name__}")]
        )
    lists = [k for k in DATALIST_SPLITS if k in data]
    if not lists:
        raise ManifestError(
            [Problem(None, path, f"no case list: expected at least one of {', '.join(map(repr, DATALIST_SPLITS))}")]
        )
    if "testing" in data and "test" in data:
        raise ManifestError([Problem(None, path, "holds both 'testing' and 'test': expected one list of test cases")])
    # The datalist in manifest form; name, modality and labels are stand-ins the schema needs (cleared below).
    converted: dict[str, Any] = {"name": path.stem or "datalist", "modality": "unspecified", "labels": {"0": "-"}}
    for key in lists:
        converted[DATALIST_SPLITS[key]] = data[key]
    parsed = parse_manifest_data(converted, path, base_folder=base, allow_outside_paths=allow_outside_paths)
    renamed = "testing" if "testing" in data else None
    structural = [_as_written(p, renamed) for p in parsed.structural]
    if structural or parsed.manifest is None:
        raise ManifestError(structural)
    manifest = dataclasses.replace(parsed.manifest, modality="", labels={})
    logger.info(
        "datalist %s: %d case(s) (%s), paths relative to %s",
        path, len(manifest.cases), ", ".join(f"{k} {len(data[k])}" for k in lists), base,
    )  # fmt: skip
    return manifest


def _as_written(problem: Problem, renamed: str | None) -> Problem:
    """A problem of the converted document, named as in the datalist (``testing[0]``, ``dataset_dir``)."""
    message = problem.message.replace("the manifest's folder", "the dataset_dir")
    if renamed:
        message = _TEST_ENTRY.sub(f"{renamed}[", message)
    return Problem(problem.case_id, problem.file, message)


def load_cases_file(
    path: str | os.PathLike[str],
    *,
    dataset_dir: str | os.PathLike[str] | None = None,
    allow_outside_paths: bool = False,
) -> Manifest:
    """A medseg manifest or a Zoo datalist (see :func:`is_zoo_datalist`), read once.

    Args:
        path: the JSON file.
        dataset_dir: for a Zoo datalist, the folder its relative paths are resolved against (None:
            the datalist's folder). Refused for a medseg manifest, whose paths are relative to its
            own folder.
        allow_outside_paths: accept paths outside the manifest's folder / ``dataset_dir``.

    Raises:
        FileNotFoundError: no such file (or ``dataset_dir`` is not a folder).
        ValueError: ``dataset_dir`` given for a medseg manifest.
        ManifestError: (a ``ValueError``) the structural problems of the manifest or datalist.
    """
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest file not found")
    data = _read_json(path)
    if is_zoo_datalist(data):
        return load_datalist(path, dataset_dir=dataset_dir, allow_outside_paths=allow_outside_paths, document=data)
    if dataset_dir is not None:
        has = ", ".join(k for k in MANIFEST_KEYS if isinstance(data, dict) and k in data) or "no 'testing' list"
        raise ValueError(
            f"{path}: a medseg manifest (it has {has}); dataset_dir applies to Zoo datalists "
            "({'testing': [...]}) only: a manifest's paths are relative to its own folder"
        )
    parsed = parse_manifest_data(data, path, allow_outside_paths=allow_outside_paths)
    if parsed.structural or parsed.manifest is None:
        raise ManifestError(parsed.structural)
    return parsed.manifest
