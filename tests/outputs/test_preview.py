"""Tests of pipelines.outputs.preview: size, content, radiological orientation, display window."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from matplotlib.image import imread

from pipelines.io.readers import read_volume
from pipelines.outputs.names import label_colour
from pipelines.outputs.preview import PREVIEW_SIZE_PX, display_window, write_preview
from tests.helpers import read_labels_json

# Panel columns in the PNG (axes at 0.005 + n * 0.222 of the width, 0.215 wide), and the panels'
# vertical centre (axes from 0.03 to 0.88 of the height, measured from the bottom).
_W, _H = PREVIEW_SIZE_PX
_PANEL_COLUMNS = [(round((0.005 + n * 0.222) * _W), round((0.005 + n * 0.222 + 0.215) * _W)) for n in range(3)]
_PANEL_MIDDLE_ROW = round(_H * (1 - (0.03 + 0.88) / 2))


def reorient(array: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same physical volume stored in another orientation (array and affine)."""
    current = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(tuple(axcodes)))
    moved = nib.orientations.apply_orientation(array, transform)
    return np.ascontiguousarray(moved), affine @ nib.orientations.inv_ornt_aff(transform, array.shape)


def marker_volume() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
    """A RAS volume: a large central body (1) and three thin bars at known sides.

    2: along z at the patient's right and anterior (axial panel: left, top).
    3: along y at the right and superior (coronal panel: left, top).
    4: along x at anterior and superior (sagittal panel: left, top).
    """
    shape = (40, 32, 24)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[8:32, 6:26, 5:19] = 1
    labels[34:37, 27:30, :] = 2
    labels[34:37, :, 20:23] = 3
    labels[:, 27:30, 20:23] = 4
    image = np.full(shape, 40, dtype=np.int16)  # uniform: mid grey in the W400/L40 window
    image[:2] = -1000  # a little structure in the picture
    affine = np.diag([1.5, 1.0, 2.5, 1.0])
    affine[:3, 3] = [-30.0, -16.0, 50.0]
    return image, labels, affine, {1: "body", 2: "marker_axial", 3: "marker_coronal", 4: "marker_sagittal"}


def overlay_pixels(png: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pixels showing ``label``'s colour blended at alpha 0.4 over mid grey."""
    expected = 0.6 * 0.5 + 0.4 * np.asarray(label_colour(label))
    close = np.all(np.abs(png[..., :3] - expected) < 3.5 / 255, axis=-1)
    return np.nonzero(close)


def test_preview_size_content_and_radiological_orientation(tmp_path: Path) -> None:
    image, labels, affine, names = marker_volume()
    written = write_preview(image, labels, affine, names, tmp_path / "preview.png", title="synthetic")
    assert written.path == tmp_path / "preview.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.png"]

    png = imread(written.path)
    assert png.shape[:2] == (PREVIEW_SIZE_PX[1], PREVIEW_SIZE_PX[0])
    assert float(png[..., :3].std()) > 0.05
    for label in names:
        rows, cols = overlay_pixels(png, label)
        assert rows.size > 50, f"colour of label {label} not found"
    # Each marker sits at the left and top of its own panel (patient's right / anterior / superior).
    for panel, label in enumerate((2, 3, 4)):
        rows, cols = overlay_pixels(png, label)
        left, right = _PANEL_COLUMNS[panel]
        inside = (cols >= left) & (cols < right)
        assert inside.sum() > 10, f"label {label} not visible in panel {panel}"
        assert cols[inside].mean() < (left + right) / 2
        assert rows[inside].mean() < _PANEL_MIDDLE_ROW


def test_preview_returns_the_checksum_of_the_file_on_disk(tmp_path: Path) -> None:
    image, labels, affine, names = marker_volume()
    written = write_preview(image, labels, affine, names, tmp_path / "sub" / "preview.png")
    data = written.path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert written.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("axcodes", ["LPS", "LAS", "SRA", "PIL"])
def test_preview_is_the_same_in_any_stored_orientation(tmp_path: Path, axcodes: str) -> None:
    image, labels, affine, names = marker_volume()
    reference = imread(write_preview(image, labels, affine, names, tmp_path / "ras.png").path)
    moved_image, moved_affine = reorient(image, affine, axcodes)
    moved_labels, _ = reorient(labels, affine, axcodes)
    assert nib.aff2axcodes(moved_affine) == tuple(axcodes)
    other = imread(write_preview(moved_image, moved_labels, moved_affine, names, tmp_path / f"{axcodes}.png").path)
    np.testing.assert_array_equal(other, reference)


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_preview_without_structures(tmp_path: Path, modality: str) -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(100, 50, size=(20, 18, 10)).astype(np.float32)
    written = write_preview(
        image, np.zeros(image.shape, np.uint8), np.eye(4), {}, tmp_path / "p.png", modality=modality
    )
    png = imread(written.path)
    assert png.shape[:2] == (PREVIEW_SIZE_PX[1], PREVIEW_SIZE_PX[0])
    assert float(png[..., :3].std()) > 0.02


def test_preview_rejects_mismatched_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"image: shape \(4, 4, 3\) differs from the label map's \(4, 4, 4\)"):
        write_preview(np.zeros((4, 4, 3)), np.zeros((4, 4, 4), np.uint8), np.eye(4), {}, tmp_path / "p.png")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("image", "modality", "expected"),
    [
        (np.zeros((2, 2, 2)), "CT", (-160.0, 240.0)),
        (np.zeros((2, 2, 2)), "ct", (-160.0, 240.0)),
        (np.arange(101.0).reshape(101, 1, 1), "MR", (1.0, 99.0)),
        (np.full((3, 3, 3), 7.0), "MR", (7.0, 8.0)),
        (np.full((3, 3, 3), np.nan), "MR", (0.0, 1.0)),
    ],
)
def test_display_window(image: np.ndarray, modality: str, expected: tuple[float, float]) -> None:
    assert display_window(image, modality) == pytest.approx(expected)


@pytest.mark.shared_data
def test_preview_real_mr(shared_data: Path, tmp_path: Path) -> None:
    volume = read_volume(shared_data / "mr_abdomen_3mm" / "image.nii.gz")
    labels = np.asarray(nib.load(shared_data / "mr_abdomen_3mm" / "label.nii.gz").dataobj)
    names = read_labels_json(shared_data / "mr_abdomen_3mm" / "labels.json")
    written = write_preview(volume.array, labels, volume.affine, names, tmp_path / "mr.png", modality="MR")
    png = imread(written.path)
    assert png.shape[:2] == (PREVIEW_SIZE_PX[1], PREVIEW_SIZE_PX[0])
    colours = np.unique(np.round(png[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 100
