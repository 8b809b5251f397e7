"""What the MONAI Label app accepts as an image id and a train request (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.label_app.checks import ImageRefused, check_image_id, check_max_epochs

KNOWN = {"ct_0", "mr_0"}


@pytest.mark.parametrize(
    ("image", "status", "message"),
    [
        ("../../etc/passwd", 400, "not a path"),
        ("/etc/passwd", 400, "not a path"),
        ("..", 400, "not a path"),
        ("a\\b", 400, "not a path"),
        ("", 400, "empty id"),
        ("no_such", 404, "no such image in the datastore"),
    ],
)
def test_bad_image_ids_are_refused(image: str, status: int, message: str) -> None:
    with pytest.raises(ImageRefused, match=message) as refused:
        check_image_id(image, known=KNOWN.__contains__, upload_dir=None)
    assert refused.value.status == status


def test_datastore_ids_are_accepted() -> None:
    check_image_id("ct_0", known=KNOWN.__contains__, upload_dir=None)


def test_uploads_are_accepted_only_inside_the_upload_folder(tmp_path: Path) -> None:
    uploads = tmp_path / "tmp"
    uploads.mkdir()
    upload = uploads / "tmpabc.nii.gz"
    upload.write_bytes(b"x")
    check_image_id(str(upload), known=KNOWN.__contains__, upload_dir=uploads)
    outside = tmp_path / "other.nii.gz"
    outside.write_bytes(b"x")
    with pytest.raises(ImageRefused, match="not a path"):
        check_image_id(str(outside), known=KNOWN.__contains__, upload_dir=uploads)
    with pytest.raises(ImageRefused, match="not a path"):
        check_image_id(str(uploads / ".." / "other.nii.gz"), known=KNOWN.__contains__, upload_dir=uploads)


def test_dicomweb_ids_must_be_uids() -> None:
    check_image_id("1.2.826.0.1.3680043.8.498.1", known=lambda _: False, upload_dir=None, dicomweb=True)
    with pytest.raises(ImageRefused, match="SeriesInstanceUID") as refused:
        check_image_id("series-1", known=lambda _: True, upload_dir=None, dicomweb=True)
    assert refused.value.status == 400


@pytest.mark.parametrize(("value", "expected"), [(None, 3), ("", 3), (2, 2), ("5", 5)])
def test_max_epochs(value: object, expected: int) -> None:
    assert check_max_epochs(value, 3) == expected


@pytest.mark.parametrize("value", [0, -1, "1.5", "many"])
def test_bad_max_epochs_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="expected a whole number of epochs"):
        check_max_epochs(value, 1)
