"""What the MONAI Label app accepts from a request, checked before any work (no MONAI Label import).

MONAI Label 0.8.5 passes an ``image`` query value that names an existing path straight to the
infer task (``MONAILabelApp.infer``: ``if os.path.exists(image_id)``), so ``../../etc/passwd`` would
be read as an image. The app refuses every image that is not an id of its datastore, or a file
the server itself received as an upload.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["DICOM_UID", "ImageRefused", "check_image_id", "check_max_epochs", "overrides_setting"]

DICOM_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
"""A DICOM UID (PS3.5 9.1): digits and dots, the only image ids of a DICOMweb datastore."""


class ImageRefused(ValueError):
    """A request named an image the app will not read; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def check_image_id(
    image: str,
    *,
    known: Callable[[str], bool],
    upload_dir: str | Path | None,
    dicomweb: bool = False,
) -> None:
    """Refuse an image id that is not one of the datastore's images nor a server-side upload.

    Args:
        image: the request's ``image`` value.
        known: tells whether an id names an image of the local datastore (not called for DICOMweb).
        upload_dir: the folder where the server stores uploaded images (its temporary folder);
            a path directly inside it is accepted. None: uploads are not accepted.
        dicomweb: the datastore is a DICOMweb server, whose image ids are series UIDs.

    Raises:
        ImageRefused: 400 for an id with a path in it (``/``, ``..``) or not a UID on DICOMweb,
            404 for a well-formed id the datastore does not have.
    """
    if not image:
        raise ImageRefused("image: empty id; expected an image id of the datastore (see /datastore/)", 400)
    if upload_dir is not None and Path(image).is_absolute():
        path = Path(image)
        if path.parent == Path(upload_dir) and ".." not in path.parts and path.is_file():
            return
    if "/" in image or "\\" in image or image in (".", "..") or "\x00" in image:
        raise ImageRefused(f"image {image!r}: expected an image id of the datastore, not a path", 400)
    if dicomweb:
        if not DICOM_UID.match(image) or len(image) > 64:
            raise ImageRefused(f"image {image!r}: expected a DICOM SeriesInstanceUID (digits and dots)", 400)
        return
    if not known(image):
        raise ImageRefused(f"image {image!r}: no such image in the datastore (see /datastore/?output=all)", 404)


def check_max_epochs(value: object, default: int) -> int:
    """The ``max_epochs`` of a train request: a positive integer (``default`` when absent).

    Raises:
        ValueError: not a whole number of at least 1.
    """
    if value is None or value == "":
        return default
    try:
        epochs = int(str(value))
    except ValueError:
        raise ValueError(f"max_epochs {value!r}: expected a whole number of epochs, at least 1") from None
    if epochs < 1:
        raise ValueError(f"max_epochs {value!r}: expected a whole number of epochs, at least 1")
    return epochs


def overrides_setting(value: object) -> dict[str, Any]:
    """The ``overrides`` app setting (``medseg serve --override``): a JSON object of config ids and values.

    Raises:
        ValueError: not a JSON object.
    """
    if value is None or value == "":
        return {}
    try:
        overrides = json.loads(str(value))
    except json.JSONDecodeError as err:
        raise ValueError(f"overrides setting {value!r}: expected a JSON object of config ids ({err})") from None
    if not isinstance(overrides, dict):
        raise ValueError(
            f"overrides setting {value!r}: expected a JSON object of config ids, not {type(overrides).__name__}"
        )
    return overrides
