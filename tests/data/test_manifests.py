"""Tests of pipelines.data.manifests: schema, loading, validation messages, creation, splits, writing."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.data.manifests.create import create_manifest
from pipelines.data.manifests.model import (
    Case,
    Manifest,
    ManifestError,
    Problem,
    load_manifest,
    resolve_path,
    write_manifest,
)
from pipelines.data.manifests.schema import MANIFEST_SCHEMA, SCHEMA_PATH
from pipelines.data.manifests.split import split_manifest
from pipelines.data.manifests.validate import validate_manifest
from tests.helpers import REPO

SHAPE = (8, 7, 6)
AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])
LABELS = {"0": "background", "1": "liver", "2": "spleen"}


def _nifti(path: Path, array: np.ndarray | None = None, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        array = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    nib.Nifti1Image(array, affine).to_filename(path)
    return path


def _label(values: tuple[int, ...] = (0, 1, 2), shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    for index, value in enumerate(values):
        label[index % shape[0], :2, :2] = value
    return label


def _pair(folder: Path, case: str, **label_kwargs: Any) -> dict[str, str]:
    """Write ``<case>_image.nii.gz`` and ``<case>_label.nii.gz``; return the relative entry."""
    _nifti(folder / f"{case}_image.nii.gz")
    affine = label_kwargs.pop("affine", AFFINE)
    _nifti(folder / f"{case}_label.nii.gz", _label(**label_kwargs), affine)
    return {"image": f"{case}_image.nii.gz", "label": f"{case}_label.nii.gz"}


def _manifest(folder: Path, training: list[Any], **extra: Any) -> Path:
    data = {"name": "test", "modality": {"0": "CT"}, "labels": LABELS, "training": training, **extra}
    path = folder / "dataset.json"
    path.write_text(json.dumps(data))
    return path


def _messages(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


# ------------------------------------------------------------------------------------ loading


def test_load_resolves_paths_against_manifest_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _pair(data, "a")
    absolute = _nifti(tmp_path / "elsewhere" / "c.nii.gz")
    manifest_folder = tmp_path / "manifests"
    manifest_folder.mkdir()
    path = _manifest(
        manifest_folder,
        [{"image": "../data/a_image.nii.gz", "label": "../data/a_label.nii.gz"}],
        validation=[{"image": ["../data/a_image.nii.gz", "../data/a_image.nii.gz"], "case_id": "two"}],
        test=[str(absolute), "../data/b_0000.nrrd"],
    )
    manifest = load_manifest(path, allow_outside_paths=True)  # every path here lies outside manifests/
    assert manifest.path == path and manifest.name == "test" and manifest.modality == "CT"
    assert manifest.labels == {0: "background", 1: "liver", 2: "spleen"}
    assert manifest.split("training") == (
        Case("a_image", data / "a_image.nii.gz", data / "a_label.nii.gz", "training"),
    )
    (two,) = manifest.split("validation")
    assert two.case_id == "two" and two.image == (data / "a_image.nii.gz", data / "a_image.nii.gz")
    assert [(c.case_id, c.image, c.label) for c in manifest.split("test")] == [
        ("c", absolute, None),
        ("b_0000", data / "b_0000.nrrd", None),
    ]
    assert len(manifest.split("all")) == 4
    assert manifest.datalist("training") == [
        {"image": str(data / "a_image.nii.gz"), "label": str(data / "a_label.nii.gz"), "case_id": "a_image"}
    ]
    with pytest.raises(ValueError, match=r"unknown split 'train'; expected one of training, validation, test"):
        manifest.split("train")


def test_plain_string_modality_and_channel_case_id(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(
        json.dumps(
            {
                "name": "mr",
                "modality": "MR",
                "labels": {"0": "background"},
                "test": [{"image": ["p7_0000.nii.gz", "p7_0001.nii.gz"]}, "dicom_case/"],
            }
        )
    )
    manifest = load_manifest(path)
    assert manifest.modality == "MR"
    assert [c.case_id for c in manifest.cases] == ["p7", "dicom_case"]


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text('{\n  "name": "x",\n  "labels": {"0": "background"\n}')
    expected = rf"^{re.escape(str(path))}: not valid JSON: line 4 column 2: Expecting ',' delimiter$"
    with pytest.raises(ManifestError, match=expected):
        load_manifest(path)
    assert _messages(validate_manifest(path))[0].startswith(f"{path}: not valid JSON: line 4")


def test_missing_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.json: manifest file not found"):
        load_manifest(tmp_path / "nope.json")


@pytest.mark.parametrize("key", ["name", "modality", "labels"])
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    data = {"name": "x", "modality": "CT", "labels": LABELS, "test": ["a.nii.gz"]}
    del data[key]
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=rf"^{re.escape(str(path))}: missing required key '{key}'$"):
        load_manifest(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"training": None, "labels": LABELS},
            "missing required key: expected at least one of 'training', 'validation', 'test'",
        ),
        ({"training": [{"label": "a.nii.gz"}]}, "missing required key 'image' in training[0]"),
        ({"training": [5]}, "training[0]: 5 is not of type 'string', 'object'"),
        ({"training": [{"image": []}]}, "training[0].image: [] should be non-empty"),
        ({"labels": {"one": "liver"}}, "labels: 'one' does not match '^[0-9]+$'"),
        ({"labels": {"0": 1}}, "labels.0: 1 is not of type 'string'"),
        ({"test": [{"image": "a.nii.gz", "case_id": "x/y"}]}, "test[0].case_id: case_id 'x/y' must not contain"),
    ],
)
def test_schema_violations_name_the_key(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    data: dict[str, Any] = {"name": "x", "modality": "CT", "labels": LABELS, "training": []}
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert any(str(p).startswith(f"{path}: {message}") for p in caught.value.problems), str(caught.value)


def test_duplicate_case_ids(tmp_path: Path) -> None:
    path = _manifest(
        tmp_path,
        [{"image": "a.nii.gz", "label": "a_seg.nii.gz"}],
        test=["other/a.nii.gz", {"image": "b.nii.gz", "case_id": "a"}],
    )
    expected = f"case a: {path}: duplicate case id, used by 3 entries: training[0], test[0], test[1]"
    with pytest.raises(ManifestError, match=f"^{re.escape(expected)}$"):
        load_manifest(path)
    assert expected in _messages(validate_manifest(path, check_images=False))


# --------------------------------------------------------------------------------- validation


def test_valid_manifest_has_no_problems(tmp_path: Path) -> None:
    path = _manifest(tmp_path, [_pair(tmp_path, "a"), _pair(tmp_path, "b")])
    assert validate_manifest(path) == []
    assert validate_manifest(load_manifest(path), workers=2) == []


def test_missing_files(tmp_path: Path) -> None:
    path = _manifest(tmp_path, [{"image": "gone.nii.gz", "label": "gone_seg.nii.gz"}])
    assert _messages(validate_manifest(path)) == [
        f"case gone: {tmp_path / 'gone.nii.gz'}: image file not found",
        f"case gone: {tmp_path / 'gone_seg.nii.gz'}: label file not found",
    ]


def test_label_values_not_in_labels(tmp_path: Path) -> None:
    path = _manifest(tmp_path, [_pair(tmp_path, "a", values=(0, 1, 7, 3, 4, 5))])
    assert _messages(validate_manifest(path)) == [
        f"case a_image: {tmp_path / 'a_label.nii.gz'}: label values not in labels: 3-5, 7 (labels has 0-2)"
    ]


def test_non_integer_label_values(tmp_path: Path) -> None:
    entry = _pair(tmp_path, "a")
    values = np.full(SHAPE, 0.5, np.float32)
    values[0, 0, 0], values[1, 0, 0], values[2, 0, 0] = np.nan, 1.0, 9.0
    _nifti(tmp_path / "a_label.nii.gz", values)
    assert [p.message for p in validate_manifest(_manifest(tmp_path, [entry]))] == [
        "label values are not integers: 0.5, nan",
        "label values not in labels: 9 (labels has 0-2)",
    ]


@pytest.mark.parametrize(
    ("label_shape", "label_affine", "expected"),
    [
        ((8, 7, 5), AFFINE, "shape (8, 7, 5) spacing 1.5x1.5x3 mm"),
        (SHAPE, np.diag([1.5, 1.5, 2.5, 1.0]), "shape (8, 7, 6) spacing 1.5x1.5x2.5 mm"),
        (
            SHAPE,
            AFFINE + np.array([[0, 0, 0, 0.01], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
            "shape (8, 7, 6) spacing 1.5x1.5x3 mm origin (0.01, 0, 0) mm",
        ),
    ],
)
def test_grid_mismatch_reports_both_grids(
    tmp_path: Path, label_shape: tuple[int, int, int], label_affine: np.ndarray, expected: str
) -> None:
    entry = _pair(tmp_path, "a", shape=label_shape, affine=label_affine)
    (problem,) = validate_manifest(_manifest(tmp_path, [entry]))
    assert problem.case_id == "a_image" and problem.file == tmp_path / "a_label.nii.gz"
    assert problem.message.startswith(f"label grid {expected}")
    assert "differs from image a_image.nii.gz shape (8, 7, 6) spacing 1.5x1.5x3 mm origin (0, 0, 0) mm" in (
        problem.message
    )


def test_grid_within_tolerance_or_stored_flipped_is_accepted(tmp_path: Path) -> None:
    near = AFFINE.copy()
    near[0, 3] += 4e-4
    entry_near = _pair(tmp_path, "near", affine=near)
    # the same voxels stored with the j axis reversed (LAS instead of RAS): the same physical grid
    flipped = AFFINE.copy()
    flipped[1, 1] = -1.5
    flipped[1, 3] = 1.5 * (SHAPE[1] - 1)
    entry_flipped = _pair(tmp_path, "flipped", affine=flipped)
    assert validate_manifest(_manifest(tmp_path, [entry_near, entry_flipped])) == []


def test_unreadable_image_and_check_images_off(tmp_path: Path) -> None:
    entry = _pair(tmp_path, "a")
    (tmp_path / "a_image.nii.gz").write_bytes(b"not an image at all")
    path = _manifest(tmp_path, [entry])
    (problem,) = validate_manifest(path)
    assert str(problem).startswith(f"case a_image: {tmp_path / 'a_image.nii.gz'}: cannot read image: ")
    assert validate_manifest(path, check_images=False) == []


def test_nrrd_header_and_channel_grids(tmp_path: Path) -> None:
    def nrrd(name: str, array: np.ndarray, spacing: tuple[float, float, float]) -> str:
        image = sitk.GetImageFromArray(array.transpose(2, 1, 0))  # SimpleITK takes (k, j, i)
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(tmp_path / name))
        return name

    t1 = nrrd("t1.nrrd", np.zeros(SHAPE, np.int16), (1.0, 1.0, 2.0))
    t2 = nrrd("t2.nrrd", np.zeros(SHAPE, np.int16), (1.0, 1.0, 2.5))
    label = nrrd("seg.nrrd", _label((0, 1)), (1.0, 1.0, 2.0))
    good = {"image": [t1, t1], "label": label, "case_id": "good"}
    bad = {"image": [t1, t2], "label": label, "case_id": "bad"}
    messages = _messages(validate_manifest(_manifest(tmp_path, [good, bad])))
    assert messages == [
        f"case bad: {tmp_path / 't2.nrrd'}: channel grid shape (8, 7, 6) spacing 1x1x2.5 mm origin (0, 0, 0) mm "
        "differs from first channel t1.nrrd shape (8, 7, 6) spacing 1x1x2 mm origin (0, 0, 0) mm"
    ]


def test_labels_without_background_and_training_without_label(tmp_path: Path) -> None:
    _nifti(tmp_path / "a.nii.gz")
    _nifti(tmp_path / "b.nii.gz")
    path = _manifest(tmp_path, ["a.nii.gz"], labels={"1": "liver"}, validation=["b.nii.gz"], test=["b.nii.gz"])
    assert _messages(validate_manifest(path)) == [
        f"case b: {path}: duplicate case id, used by 2 entries: validation[0], test[0]",
        f"{path}: labels has no '0' (background) entry; keys seen: 1",
        f"case a: {tmp_path / 'a.nii.gz'}: training case has no label",
        f"case b: {tmp_path / 'b.nii.gz'}: validation case has no label",
    ]
    path = _manifest(tmp_path, ["a.nii.gz"], labels={"1": "liver"}, validation=["b.nii.gz"])
    load_manifest(path)  # neither is a structural error: batch inference can still use the manifest


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    training = [
        _pair(tmp_path, "good"),
        {"image": "missing.nii.gz", "label": "good_label.nii.gz"},
        _pair(tmp_path, "values", values=(0, 5)),
        _pair(tmp_path, "grid", shape=(8, 7, 5)),
        {"image": "good_image.nii.gz", "label": "good_label.nii.gz", "case_id": "grid_image"},
        {"image": "good_image.nii.gz"},
        {"label": "no_image.nii.gz"},
    ]
    path = _manifest(tmp_path, training)
    messages = _messages(validate_manifest(path))
    expected = [
        f"{path}: missing required key 'image' in training[6]",
        f"case grid_image: {path}: duplicate case id, used by 2 entries: training[3], training[4]",
        f"case good_image: {path}: duplicate case id, used by 2 entries: training[0], training[5]",
        f"case good_image: {tmp_path / 'good_image.nii.gz'}: training case has no label",
        f"case missing: {tmp_path / 'missing.nii.gz'}: image file not found",
        f"case values_image: {tmp_path / 'values_label.nii.gz'}: label values not in labels: 5",
        f"case grid_image: {tmp_path / 'grid_label.nii.gz'}: label grid shape (8, 7, 5)",
    ]
    assert len(messages) == len(expected), "\n".join(messages)
    for want in expected:
        assert any(m.startswith(want) for m in messages), f"{want!r} not in:\n" + "\n".join(messages)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert len(str(caught.value).splitlines()) == 3  # the three structural problems, one per line


# ----------------------------------------------------------------------------------- creation


@pytest.mark.parametrize(
    ("layout", "image", "label"),
    [
        ("msd", "imagesTr/{case}.nii.gz", "labelsTr/{case}.nii.gz"),
        ("subfolders", "{case}/image.nii.gz", "{case}/label.nii.gz"),
        ("flat", "{case}_image.nii.gz", "{case}_label.nii.gz"),
    ],
)
def test_create_manifest_finds_pairs(tmp_path: Path, layout: str, image: str, label: str) -> None:
    data = tmp_path / layout
    for case in ("c1", "c2", "c3"):
        _nifti(data / image.format(case=case))
        _nifti(data / label.format(case=case), _label())
    unlabelled = "imagesTs/u1.nii.gz" if layout == "msd" else image.format(case="u1")
    _nifti(data / unlabelled)
    (data / "labels.json").write_text(json.dumps({"1": "liver", "2": "spleen"}))

    manifest = create_manifest(data, modality="CT")
    assert manifest["name"] == layout and manifest["modality"] == {"0": "CT"}
    assert manifest["labels"] == {"0": "background", "1": "liver", "2": "spleen"}
    assert manifest["training"] == [
        {"case_id": c, "image": image.format(case=c), "label": label.format(case=c)} for c in ("c1", "c2", "c3")
    ]
    assert manifest["test"] == [{"case_id": "u1", "image": unlabelled}]
    written = write_manifest(manifest, data / "dataset.json")
    assert validate_manifest(written) == []


def test_create_manifest_channels_patterns_and_manifest_dir(tmp_path: Path) -> None:
    data = tmp_path / "nnunet"
    for channel in ("0000", "0001"):
        _nifti(data / "imagesTr" / f"p1_{channel}.nii.gz")
    _nifti(data / "labelsTr" / "p1.nii.gz", _label())
    manifest = create_manifest(data, modality=["T1", "T2"], labels={1: "tumour"}, manifest_dir=tmp_path / "m")
    assert manifest["modality"] == {"0": "T1", "1": "T2"}
    assert manifest["labels"] == {"0": "background", "1": "tumour"}
    assert manifest["training"] == [
        {
            "case_id": "p1",
            "image": ["../nnunet/imagesTr/p1_0000.nii.gz", "../nnunet/imagesTr/p1_0001.nii.gz"],
            "label": "../nnunet/labelsTr/p1.nii.gz",
        }
    ]
    path = write_manifest(manifest, tmp_path / "m" / "dataset.json")
    assert load_manifest(path, allow_outside_paths=True).cases[0].image == (
        data / "imagesTr" / "p1_0000.nii.gz",
        data / "imagesTr" / "p1_0001.nii.gz",
    )

    custom = tmp_path / "custom"
    _nifti(custom / "scans" / "x.nii.gz")
    _nifti(custom / "masks" / "x_seg.nii.gz", _label())
    manifest = create_manifest(custom, image_pattern="scans/{case}.nii.gz", label_pattern="masks/{case}_seg.nii.gz")
    assert manifest["training"] == [{"case_id": "x", "image": "scans/x.nii.gz", "label": "masks/x_seg.nii.gz"}]
    assert manifest["labels"] == {"0": "background"}


def test_create_manifest_mixed_extensions(tmp_path: Path) -> None:
    _nifti(tmp_path / "c1" / "label.nii.gz", _label())
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros(SHAPE[::-1], np.int16)), str(tmp_path / "c1" / "image.nrrd"))
    manifest = create_manifest(tmp_path, labels={1: "liver"})
    assert manifest["training"] == [{"case_id": "c1", "image": "c1/image.nrrd", "label": "c1/label.nii.gz"}]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, r"empty: no images found; layouts tried: \{case\}/image\.\*; \{case\}_image\.\*"),
        (
            {"image_pattern": "s/{case}.nii.gz", "label_pattern": "{case}_l.nii.gz"},
            ValueError,
            r"no images found; layouts tried: s/\{case\}\.nii\.gz$",
        ),
        ({"image_pattern": "{case}.nii.gz"}, ValueError, r"give image_pattern and label_pattern together"),
        (
            {"image_pattern": "a.nii.gz", "label_pattern": "b.nii.gz"},
            ValueError,
            r"pattern 'a.nii.gz' must contain '\{case\}' exactly once",
        ),
        ({"labels": {"one": "liver"}}, ValueError, r"labels: key 'one' is not a non-negative integer"),
    ],
)
def test_create_manifest_bad_input(tmp_path: Path, kwargs: dict[str, Any], error: type, match: str) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    if "labels" in kwargs:
        _nifti(folder / "a_image.nii.gz")
    with pytest.raises(error, match=match):
        create_manifest(folder, **kwargs)


def test_create_manifest_missing_folder_and_bad_labels_json(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere: data folder not found"):
        create_manifest(tmp_path / "nowhere")
    _nifti(tmp_path / "a_image.nii.gz")
    (tmp_path / "labels.json").write_text("{1: liver}")
    with pytest.raises(ValueError, match=r"labels\.json: not valid JSON: line 1 column 2"):
        create_manifest(tmp_path)


# --------------------------------------------------------------------------- splits and write


def _split_fixture(tmp_path: Path, n: int = 11) -> Path:
    training = [{"image": f"c{i:02d}.nii.gz", "label": f"c{i:02d}_seg.nii.gz"} for i in range(n - 2)]
    validation = [{"image": f"c{i:02d}.nii.gz", "label": f"c{i:02d}_seg.nii.gz"} for i in range(n - 2, n)]
    return _manifest(tmp_path, training, validation=validation, test=["t.nii.gz"], description="d")


def test_split_is_deterministic_and_covers_every_case(tmp_path: Path) -> None:
    path = _split_fixture(tmp_path)
    folds = split_manifest(path, folds=3, seed=7)
    assert folds == split_manifest(path, folds=3, seed=7)
    assert folds != split_manifest(path, folds=3, seed=8)
    all_images = {f"c{i:02d}.nii.gz" for i in range(11)}
    validated: list[str] = []
    for index, fold in enumerate(folds):
        assert fold["fold"] == {"index": index, "count": 3, "seed": 7}
        assert fold["test"] == ["t.nii.gz"] and fold["description"] == "d" and fold["labels"] == LABELS
        val = [e["image"] for e in fold["validation"]]
        train = [e["image"] for e in fold["training"]]
        assert len(val) in (3, 4) and set(val).isdisjoint(train) and set(val) | set(train) == all_images
        validated += val
    assert sorted(validated) == sorted(all_images)  # each case validated in exactly one fold
    written = write_manifest(folds[0], tmp_path / "fold0.json")
    assert len(load_manifest(written).split("validation")) == len(folds[0]["validation"])


@pytest.mark.parametrize("folds", [1, 12, 2.5])
def test_split_bad_fold_count(tmp_path: Path, folds: Any) -> None:
    with pytest.raises(
        ValueError,
        match=r"folds must be an integer from 2 to the number of training and validation "
        rf"cases \(11\), got {folds}",
    ):
        split_manifest(_split_fixture(tmp_path), folds=folds, seed=0)


def test_write_manifest_is_atomic_and_checked(tmp_path: Path) -> None:
    good = {"name": "x", "modality": "CT", "labels": {"0": "background"}, "test": ["a.nii.gz"]}
    path = write_manifest(good, tmp_path / "sub" / "dataset.json")
    assert json.loads(path.read_text()) == good
    assert [p.name for p in path.parent.iterdir()] == ["dataset.json"]
    with pytest.raises(ManifestError, match=r"missing required key 'labels'"):
        write_manifest({"name": "x", "modality": "CT", "test": []}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_schema_file_matches_module_schema() -> None:
    schema = json.loads((REPO / "data_manifests" / "schema.json").read_text())
    assert schema == MANIFEST_SCHEMA
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_is_one_file_linked_from_data_manifests() -> None:
    linked = REPO / "data_manifests" / "schema.json"
    assert linked.is_symlink() and linked.resolve() == SCHEMA_PATH.resolve()


def test_schema_validates_example_manifests() -> None:
    examples = sorted(p for p in (REPO / "data_manifests").glob("*.json") if p.name != "schema.json")
    assert len(examples) >= 3
    validator = jsonschema.Draft202012Validator(MANIFEST_SCHEMA)
    for path in examples:
        validator.validate(json.loads(path.read_text()))
        # structure only: the training scripts make the example data, in ../data (outside data_manifests/)
        manifest = load_manifest(path, allow_outside_paths=True)
        assert manifest.cases and all(case.label is not None for case in manifest.split("training")), path


def test_validate_accepts_loaded_manifest_with_duplicates(tmp_path: Path) -> None:
    case = Case("a", tmp_path / "a.nii.gz", None, "test")
    manifest = Manifest(tmp_path / "m.json", "x", "CT", {1: "liver"}, (case, case))
    assert _messages(validate_manifest(manifest, check_images=False)) == [
        f"case a: {tmp_path / 'm.json'}: duplicate case id, used by 2 entries",
        f"{tmp_path / 'm.json'}: labels has no '0' (background) entry",
        f"case a: {tmp_path / 'a.nii.gz'}: image file not found",
        f"case a: {tmp_path / 'a.nii.gz'}: image file not found",
    ]


# ------------------------------------------------------------------------------ real data


@pytest.mark.shared_data
def test_real_cases_validate(shared_data: Path, tmp_path: Path) -> None:
    entries = []
    for case in ("ct_abdomen_3mm", "ct_dicom_series", "mri_brain_tumor"):
        folder = shared_data / case
        image = folder / ("dicom" if case == "ct_dicom_series" else "image.nii.gz")
        if case == "mri_brain_tumor":
            image, label = folder / "image.nrrd", folder / "label.nrrd"
        else:
            label = folder / "label.nii.gz"
        entries.append({"image": str(image), "label": str(label), "case_id": case})
    labels = {"0": "background", **{str(v): f"s{v}" for v in range(1, 120)}}
    path = _manifest(tmp_path, entries, labels=labels)
    # the DICOM series is LPS and its label LAS: the same voxels, so no grid problem
    assert validate_manifest(path, allow_outside_paths=True) == []  # absolute paths into shared_data


@pytest.mark.shared_data
def test_create_manifest_on_real_folder(shared_data: Path, tmp_path: Path) -> None:
    manifest = create_manifest(shared_data, labels={v: f"s{v}" for v in range(1, 120)}, manifest_dir=tmp_path)
    cases = {entry["case_id"]: entry for entry in manifest["training"]}
    assert sorted(cases) == ["ct_abdomen_3mm", "ct_dicom_series", "mr_abdomen_3mm", "mri_brain_tumor"]
    assert cases["ct_dicom_series"]["image"].endswith("ct_dicom_series/dicom")
    assert cases["mri_brain_tumor"]["label"].endswith("mri_brain_tumor/label.nrrd")
    path = write_manifest(manifest, tmp_path / "dataset.json")
    assert validate_manifest(path, check_images=False, allow_outside_paths=True) == []  # ../ into shared_data


# ------------------------------------------------------------------------------ path policy


@pytest.fixture()
def folders(tmp_path: Path) -> Path:
    """``study/`` (the manifest's folder) with ``sub/``, and ``outside/`` beside it, with links between them."""
    (tmp_path / "study" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "study" / "out_link").symlink_to(tmp_path / "outside")
    (tmp_path / "study" / "in_link").symlink_to(tmp_path / "study" / "sub")
    (tmp_path / "study" / "file_link.nii.gz").symlink_to(tmp_path / "outside" / "x.nii.gz")
    return tmp_path


@pytest.mark.parametrize(
    ("value", "resolved"),
    [
        ("a.nii.gz", "study/a.nii.gz"),
        ("./sub/a.nii.gz", "study/sub/a.nii.gz"),
        ("sub/../a.nii.gz", "study/a.nii.gz"),  # '..' that stays inside
        ("sub/x/../../b.nii.gz", "study/b.nii.gz"),
        ("in_link/c.nii.gz", "study/in_link/c.nii.gz"),  # a link that stays inside; kept in the path
        ("missing/dir/d.nii.gz", "study/missing/dir/d.nii.gz"),
    ],
)
def test_paths_inside_the_manifest_folder_are_accepted(folders: Path, value: str, resolved: str) -> None:
    assert resolve_path(folders / "study", value) == folders / resolved


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("../outside/x.nii.gz", "resolves to {root}/outside/x.nii.gz"),
        ("sub/../../outside/x.nii.gz", "resolves to {root}/outside/x.nii.gz"),
        ("../" * 40 + "etc/passwd", "resolves to /etc/passwd"),
        ("{root}/study/a.nii.gz", "is absolute"),  # absolute counts as outside, even pointing inside
        ("/etc/passwd", "is absolute"),
        ("~/scan.nii.gz", "is absolute"),
        ("out_link/x.nii.gz", "leads through a symbolic link to {root}/outside/x.nii.gz"),
        ("file_link.nii.gz", "leads through a symbolic link to {root}/outside/x.nii.gz"),
        ("in_link/../out_link/y", "leads through a symbolic link to {root}/outside/y"),
    ],
)
def test_paths_leaving_the_manifest_folder_are_refused(folders: Path, value: str, reason: str) -> None:
    study = folders / "study"
    value = value.format(root=folders)
    expected = (
        f"path {value!r} {reason.format(root=folders)}, outside the manifest's folder {study} "
        "(manifest paths stay inside it unless allowed with --allow-outside-paths)"
    )
    with pytest.raises(ValueError) as refused:
        resolve_path(study, value)
    assert str(refused.value) == expected
    lexical = Path(os.path.normpath(study / Path(value).expanduser()))
    assert resolve_path(study, value, allow_outside_paths=True) == lexical


def test_a_manifest_folder_reached_through_a_link_is_its_real_folder(folders: Path) -> None:
    (folders / "alias").symlink_to(folders / "study")
    assert resolve_path(folders / "alias", "sub/a.nii.gz") == folders / "alias" / "sub" / "a.nii.gz"
    with pytest.raises(ValueError, match="resolves to"):
        resolve_path(folders / "alias", "../study/a.nii.gz")  # lexically out of alias/, though the same folder


@pytest.fixture()
def opened() -> Iterator[list[str]]:
    """Every file Python opens while the test runs (an audit hook; C libraries' own opens are not seen)."""
    seen: list[str] = []
    active = [True]

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if active[0] and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            seen.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)  # hooks cannot be removed: this one goes quiet after the test
    yield seen
    active[0] = False


def _outside_manifest(tmp_path: Path) -> tuple[Path, Path]:
    """A manifest in ``a/b/`` listing a FIFO in ``etc/`` (``../../etc/passwd`` and absolute), and a real case."""
    secret = tmp_path / "etc" / "passwd"
    secret.parent.mkdir()
    os.mkfifo(secret)  # opening it to read would block: nothing may open it
    study = tmp_path / "a" / "b"
    _pair(study, "ok")
    path = _manifest(
        study,
        [{"image": "ok_image.nii.gz", "label": "ok_label.nii.gz"}],
        test=["../../etc/passwd", {"image": ["ok_image.nii.gz", str(secret)], "case_id": "two"}],
    )
    return path, secret


def test_load_refuses_outside_paths_naming_manifest_entry_and_path(tmp_path: Path, opened: list[str]) -> None:
    path, secret = _outside_manifest(tmp_path)
    folder = path.parent
    opened.clear()
    with pytest.raises(ManifestError) as refused:
        load_manifest(path)
    assert [str(p) for p in refused.value.problems] == [
        f"case passwd: {path}: test[0]: path '../../etc/passwd' resolves to {secret}, outside the manifest's "
        f"folder {folder} (manifest paths stay inside it unless allowed with --allow-outside-paths)",
        f"case two: {path}: test[1].image[1]: path '{secret}' is absolute, outside the manifest's folder {folder} "
        "(manifest paths stay inside it unless allowed with --allow-outside-paths)",
    ]
    assert opened == [str(path)]  # the manifest itself, nothing else

    manifest = load_manifest(path, allow_outside_paths=True)
    assert [c.image for c in manifest.split("test")] == [secret, (folder / "ok_image.nii.gz", secret)]


def test_validate_reports_outside_paths_without_opening_them(
    tmp_path: Path, opened: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.cli.main import main

    path, secret = _outside_manifest(tmp_path)
    opened.clear()
    problems = validate_manifest(path)  # opens the inside case's files, never the FIFO
    assert [(p.case_id, p.file) for p in problems] == [("passwd", path), ("two", path)]
    assert "test[0]: path '../../etc/passwd' resolves to" in problems[0].message
    assert str(secret) not in opened and str(path.parent / "ok_label.nii.gz") in opened
    assert validate_manifest(path, check_images=False, allow_outside_paths=True) == []

    assert main(["manifest", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "test[1].image[1]: path" in out and out.rstrip().endswith(f"{path}: 2 problem(s)")
    secret.unlink()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")  # a plain file now: the flag lets it be opened
    assert main(["manifest", "validate", str(path), "--allow-outside-paths"]) == 1
    out = capsys.readouterr().out
    assert f"case passwd: {secret}: cannot read image" in out and "outside the manifest's folder" not in out


def test_split_and_built_manifests_follow_the_path_policy(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    path = _manifest(tmp_path / "m", [{"image": f"../d/{c}.nii.gz", "label": f"../d/{c}_l.nii.gz"} for c in "abc"])
    with pytest.raises(ManifestError, match=r"training\[0\].image: path '../d/a.nii.gz' resolves to"):
        split_manifest(path, folds=3, seed=0)
    assert len(split_manifest(path, folds=3, seed=0, allow_outside_paths=True)) == 3

    inside = Case("in", tmp_path / "m" / "x.nii.gz", None, "test")
    outside = Case("out", tmp_path / "d" / "x.nii.gz", None, "test")
    manifest = Manifest(tmp_path / "m" / "m.json", "x", "CT", {0: "background"}, (inside, outside))
    assert _messages(validate_manifest(manifest, check_images=False)) == [
        f"case out: {manifest.path}: image {outside.image} is outside the manifest's folder {tmp_path / 'm'} "
        f"(resolves to {outside.image}; allow it with --allow-outside-paths)",
        f"case in: {inside.image}: image file not found",
    ]
    assert len(validate_manifest(manifest, check_images=False, allow_outside_paths=True)) == 2  # both not found
