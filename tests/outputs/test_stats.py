"""Tests of pipelines.outputs.stats: per-structure statistics, stats.json and stats.csv."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipelines.outputs.stats import STATS_CSV_COLUMNS, compute_stats, present_structures, write_stats
from tests.helpers import read_labels_json


def test_stats_synthetic_values_and_components() -> None:
    labels = np.zeros((12, 10, 8), dtype=np.uint8)
    labels[1:4, 1:3, 1:2] = 1  # 6 voxels
    labels[6, 6, 6] = 2
    labels[7, 7, 7] = 2  # touches the first at a corner: one component with 26-connectivity
    labels[10, 0, 0] = 2  # a second component
    labels[11, 9, 7] = 9  # id without a name
    rng = np.random.default_rng(0)
    image = rng.integers(-100, 100, size=labels.shape).astype(np.int16)
    affine = np.diag([-2.0, -1.5, 3.0, 1.0])  # LPS-like flips, 9 mm³ voxels
    affine[:3, 3] = [10.0, 20.0, -5.0]

    stats = compute_stats(labels, image, affine, {1: "liver", 2: "spleen", 3: "absent"})

    assert [s["label"] for s in stats] == [1, 2, 9]
    assert [s["name"] for s in stats] == ["liver", "spleen", "label_9"]
    liver, spleen, unnamed = stats
    values = image[labels == 1].astype(float)
    assert liver["voxels"] == 6 and liver["volume_ml"] == pytest.approx(6 * 9.0 / 1000)
    assert liver["mean"] == pytest.approx(values.mean())
    assert liver["median"] == pytest.approx(np.median(values))
    assert liver["std"] == pytest.approx(values.std())
    assert liver["bbox_voxels"] == [[1, 3], [1, 2], [1, 1]]
    assert liver["components"] == 1 and spleen["components"] == 2 and unnamed["components"] == 1
    # World box: voxel faces at i0 - 0.5 .. i1 + 0.5 through the flipped affine.
    expected = [[10 - 2 * 3.5, 10 - 2 * 0.5], [20 - 1.5 * 2.5, 20 - 1.5 * 0.5], [-5 + 3 * 0.5, -5 + 3 * 1.5]]
    np.testing.assert_allclose(liver["bbox_mm"], expected)


def test_present_structures_lists_ids_in_order_with_their_boxes() -> None:
    labels = np.zeros((5, 4, 3), dtype=np.uint16)
    labels[4, 0:2, 1] = 7
    labels[1, 3, 0:3] = 2
    assert present_structures(labels) == [
        (2, (slice(1, 2), slice(3, 4), slice(0, 3))),
        (7, (slice(4, 5), slice(0, 2), slice(1, 2))),
    ]
    assert present_structures(np.zeros((2, 2, 2), np.uint8)) == []


@pytest.mark.parametrize(
    ("labels", "image", "affine", "error", "match"),
    [
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4)), np.eye(4), ValueError, r"expected a 3D label map"),
        (np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4)), np.eye(4), TypeError, r"integer dtype, got float32"),
        (np.full((4, 4, 4), -1, np.int16), np.zeros((4, 4, 4)), np.eye(4), ValueError, r"negative values \(min -1\)"),
        (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 5)), np.eye(4), ValueError, r"shape \(4, 4, 5\) differs"),
        (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4)), np.eye(3), ValueError, r"expected a 4x4 affine"),
        (np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4)), np.zeros((4, 4)), ValueError, r"singular"),
    ],
)
def test_stats_bad_inputs(labels, image, affine, error, match) -> None:
    with pytest.raises(error, match=match):
        compute_stats(labels, image, affine, {})


def test_stats_label_names_with_bad_keys() -> None:
    with pytest.raises(TypeError, match=r"keys must be integer label ids"):
        compute_stats(np.ones((2, 2, 2), np.uint8), np.zeros((2, 2, 2)), np.eye(4), {"liver": "x"})


def test_write_stats_returns_the_checksums_of_the_files_on_disk(tmp_path: Path) -> None:
    labels = np.zeros((6, 5, 4), dtype=np.uint8)
    labels[1:3, 1:4, 0:2] = 3
    labels[5, 4, 3] = 1
    stats = compute_stats(labels, np.arange(labels.size).reshape(labels.shape), np.eye(4), {"3": "liver"})

    json_written, csv_written = write_stats(stats, tmp_path / "case")

    assert (json_written.path, csv_written.path) == (tmp_path / "case" / "stats.json", tmp_path / "case" / "stats.csv")
    for written in (json_written, csv_written):
        assert written.sha256 == hashlib.sha256(written.path.read_bytes()).hexdigest()
    assert json.loads(json_written.path.read_text()) == stats
    csv_bytes = csv_written.path.read_bytes()
    assert csv_bytes.startswith(b"label,name,voxels,") and b"\r\n3,liver," in csv_bytes


def test_write_stats_accepts_numpy_values(tmp_path: Path) -> None:
    entry = {
        "label": np.int64(2), "name": "spleen", "voxels": np.int32(4), "volume_ml": np.float32(0.5),
        "mean": 1.0, "median": 1.0, "std": 0.0, "components": 1,
        "bbox_voxels": np.array([[0, 1], [0, 1], [0, 0]]), "bbox_mm": [[0.0, 1.0], [0.0, 1.0], [0.0, 0.5]],
    }  # fmt: skip
    json_written, _ = write_stats([entry], tmp_path)
    assert json.loads(json_written.path.read_text())[0]["bbox_voxels"] == [[0, 1], [0, 1], [0, 0]]
    with pytest.raises(TypeError, match=r"cannot write object to JSON"):
        write_stats([{**entry, "name": object()}], tmp_path / "bad")


@pytest.mark.shared_data
def test_stats_real_ct_liver_and_files_agree(shared_data: Path, tmp_path: Path) -> None:
    case = shared_data / "ct_abdomen_3mm"
    label_img, image_img = nib.load(case / "label.nii.gz"), nib.load(case / "image.nii.gz")
    labels, image = np.asarray(label_img.dataobj), np.asarray(image_img.dataobj)
    names = read_labels_json(case / "labels.json")

    stats = compute_stats(labels, image, label_img.affine, names)

    assert [s["label"] for s in stats] == sorted(int(v) for v in np.unique(labels) if v)
    liver = next(s for s in stats if s["label"] == 5)
    assert liver["name"] == "liver"
    assert liver["voxels"] == int(np.count_nonzero(labels == 5))
    assert liver["volume_ml"] == pytest.approx(liver["voxels"] * 27.0 / 1000.0)
    assert 0.0 < liver["mean"] < 200.0 and 0.0 < liver["median"] < 200.0
    assert liver["components"] >= 1
    nonzero = np.nonzero(labels == 5)
    assert liver["bbox_voxels"] == [[int(ax.min()), int(ax.max())] for ax in nonzero]
    corners = np.array(liver["bbox_voxels"], dtype=float) + np.array([-0.5, 0.5])
    expected_mm = label_img.affine[:3, :3] @ corners + label_img.affine[:3, 3:4]  # RAS, diagonal affine
    np.testing.assert_allclose(liver["bbox_mm"], np.sort(expected_mm, axis=1))

    json_written, csv_written = write_stats(stats, tmp_path)
    json_path, csv_path = json_written.path, csv_written.path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.csv", "stats.json"]  # no temporaries left
    assert json.loads(json_path.read_text()) == stats
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == STATS_CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == len(stats)
    for row, entry in zip(rows, stats, strict=True):
        assert int(row["label"]) == entry["label"] and row["name"] == entry["name"]
        assert int(row["voxels"]) == entry["voxels"] and int(row["components"]) == entry["components"]
        for key in ("volume_ml", "mean", "median", "std"):
            assert float(row[key]) == entry[key]
        box = [int(row[f"bbox_{a}{e}"]) for a in "ijk" for e in "01"]
        assert box == [v for pair in entry["bbox_voxels"] for v in pair]
        box_mm = [float(row[f"bbox_{a}{e}_mm"]) for a in "xyz" for e in "01"]
        assert box_mm == [v for pair in entry["bbox_mm"] for v in pair]
