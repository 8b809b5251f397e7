"""Tests of pipelines.data.datasets: seeded case geometry, dataset generation, manifests and relocation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipelines.bundles.bundle import load_bundle
from pipelines.data import datasets
from pipelines.data.datasets import (
    PhantomCase,
    brain_case_geometry,
    bundle_label_ids,
    ct_case_geometry,
    make_brain_dataset,
    make_ct_dataset,
    make_phantom_dataset,
    merged_manifest,
    relocated,
    scale_geometry,
)
from pipelines.data.manifests.model import load_manifest
from pipelines.data.manifests.validate import validate_manifest
from pipelines.data.phantoms.make import make_brain_tumor_phantom, make_ct_phantom
from pipelines.data.phantoms.tissues import MR_CONTRASTS
from tests.helpers import BUNDLES

CT_BUNDLE = BUNDLES / "ct_abdomen_unet"
BRAIN_BUNDLE = BUNDLES / "mri_brain_tumor"


def _fov_mm(case: PhantomCase) -> np.ndarray:
    return np.array(case.shape) * np.array(case.spacing_mm)


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------


def test_ct_case_geometry_is_seeded_and_realistic() -> None:
    cases = [ct_case_geometry(seed) for seed in range(200)]
    assert ct_case_geometry(17) == ct_case_geometry(17)
    assert len({c.spacing_mm for c in cases}) == len(cases)  # every seed its own acquisition
    wide = 0
    for case in cases:
        inplane, _, slices = case.spacing_mm
        assert case.spacing_mm[0] == case.spacing_mm[1] and 1.2 <= inplane <= 1.8 and 1.5 <= slices <= 3.0
        assert case.orientation in ("RAS", "LPS", "LAS")
        fov = _fov_mm(case)
        nominal = np.array(datasets.ABDOMEN_FOV_MM)
        if np.all(np.abs(fov - nominal) <= 0.08 * nominal + case.spacing_mm):
            continue
        wide += 1  # a torso scan: square in-plane 330-420 mm, 250-400 mm long
        assert case.shape[0] == case.shape[1]
        assert 330 - inplane <= fov[0] <= 420 + inplane and 250 - slices <= fov[2] <= 400 + slices
    assert 0.25 <= wide / len(cases) <= 0.55  # about WIDE_FOV_FRACTION
    assert {c.orientation for c in cases} == {"RAS", "LPS", "LAS"}


def test_brain_case_geometry_is_seeded_and_realistic() -> None:
    for seed in range(50):
        case = brain_case_geometry(seed)
        assert case == brain_case_geometry(seed)
        assert 0.7 <= case.spacing_mm[0] == case.spacing_mm[1] <= 1.2 and 2.0 <= case.spacing_mm[2] <= 6.5
        nominal = np.array(datasets.HEAD_FOV_MM)
        assert np.all(np.abs(_fov_mm(case) - nominal) <= 0.08 * nominal + np.array(case.spacing_mm))


def test_scale_geometry_shrinks_the_field_of_view_only() -> None:
    case = ct_case_geometry(3)
    assert scale_geometry(case, 1) is case
    half = scale_geometry(case, 0.5)
    assert (half.seed, half.spacing_mm, half.orientation) == (case.seed, case.spacing_mm, case.orientation)
    assert half.shape == tuple(round(n * 0.5) for n in case.shape)
    assert min(scale_geometry(case, 0.01).shape) == 8  # never below the phantoms' minimum


@pytest.mark.parametrize("fov_scale", [0, -0.5, 1.5, True, "0.5", float("nan")])
def test_scale_geometry_rejects_bad_scales(fov_scale: object) -> None:
    with pytest.raises(ValueError, match=r"fov_scale: expected a number in \(0, 1\], got "):
        scale_geometry(ct_case_geometry(0), fov_scale)  # type: ignore[arg-type]


def test_bundle_label_ids_leave_out_the_background() -> None:
    assert bundle_label_ids(load_bundle(CT_BUNDLE)) == {
        "spleen": 1,
        "kidney_right": 2,
        "kidney_left": 3,
        "liver": 4,
        "liver_tumor": 5,
    }


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------


def test_ct_dataset_holds_the_seeded_phantoms_labelled_for_the_bundle(tmp_path: Path) -> None:
    counts = {"training": 2, "validation": 1, "test": 1}
    manifest_path = make_phantom_dataset(tmp_path, CT_BUNDLE, counts=counts, kind="ct", fov_scale=0.12)
    assert manifest_path == tmp_path / "ct_phantoms.json"
    assert validate_manifest(manifest_path) == []
    data = json.loads(manifest_path.read_text())
    assert data["modality"] == {"0": "CT"}
    assert data["labels"] == {str(k): v for k, v in load_bundle(CT_BUNDLE).labels.items()}
    ids = {split: [entry["case_id"] for entry in data[split]] for split in counts}
    assert ids == {"training": ["ct_00000", "ct_00001"], "validation": ["ct_10000"], "test": ["ct_50000"]}
    # each case is the phantom of its seed, on its seeded (scaled) grid, with the bundle's label ids
    entry = data["validation"][0]
    geometry = scale_geometry(ct_case_geometry(10_000), 0.12)
    expected = make_ct_phantom(
        10_000,
        shape=geometry.shape,
        spacing_mm=geometry.spacing_mm,
        orientation=geometry.orientation,
        label_ids=bundle_label_ids(load_bundle(CT_BUNDLE)),
    )
    image, label = nib.load(tmp_path / entry["image"]), nib.load(tmp_path / entry["label"])
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), expected.image)
    np.testing.assert_array_equal(np.asanyarray(label.dataobj), expected.label)
    np.testing.assert_allclose(image.affine, expected.affine, atol=1e-5)
    assert "".join(nib.aff2axcodes(image.affine)) == geometry.orientation


def test_ct_dataset_with_perirenal_fat_holds_those_phantoms(tmp_path: Path) -> None:
    """``perirenal_fat`` reaches the phantoms: each case is its seed's phantom made with the option."""
    manifest = make_phantom_dataset(tmp_path, CT_BUNDLE, counts={"test": 1}, fov_scale=0.2, perirenal_fat=True)
    entry = json.loads(manifest.read_text())["test"][0]
    geometry = scale_geometry(ct_case_geometry(50_000), 0.2)
    grid = {"shape": geometry.shape, "spacing_mm": geometry.spacing_mm, "orientation": geometry.orientation}
    ids = bundle_label_ids(load_bundle(CT_BUNDLE))
    expected = make_ct_phantom(50_000, label_ids=ids, perirenal_fat=True, **grid)
    assert not np.array_equal(expected.image, make_ct_phantom(50_000, label_ids=ids, **grid).image)
    np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / entry["image"]).dataobj), expected.image)


def test_existing_cases_are_kept_and_changed_ones_regenerated(tmp_path: Path) -> None:
    make_phantom_dataset(tmp_path, CT_BUNDLE, counts={"test": 1}, fov_scale=0.12)
    image = tmp_path / "test" / "ct_50000" / "image.nii.gz"
    first = image.stat().st_mtime_ns
    os.utime(image, ns=(first - 10**9, first - 10**9))  # a second older: a rewrite would move it on
    make_phantom_dataset(tmp_path, CT_BUNDLE, counts={"test": 1}, fov_scale=0.12)
    assert image.stat().st_mtime_ns == first - 10**9
    (tmp_path / "test" / "ct_50000" / "label.nii.gz").unlink()  # a half-finished case is generated again
    make_phantom_dataset(tmp_path, CT_BUNDLE, counts={"test": 1}, fov_scale=0.12)
    assert (tmp_path / "test" / "ct_50000" / "label.nii.gz").is_file()
    assert image.stat().st_mtime_ns != first - 10**9


def test_make_ct_dataset_is_the_full_size_ct_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []

    def record(folder, bundle, **kwargs):
        calls.append({"folder": folder, "bundle": bundle, **kwargs})
        return Path(folder) / "m.json"

    monkeypatch.setattr(datasets, "make_phantom_dataset", record)
    assert make_ct_dataset(tmp_path, CT_BUNDLE, counts={"test": 3}) == tmp_path / "m.json"
    assert calls == [
        {"folder": tmp_path, "bundle": CT_BUNDLE, "counts": {"test": 3}, "kind": "ct", "name": "ct_phantoms"}
    ]


def test_multichannel_brain_dataset_lists_one_file_per_contrast(tmp_path: Path) -> None:
    manifest_path = make_phantom_dataset(
        tmp_path, BRAIN_BUNDLE, counts={"training": 1}, kind="brain", channels=2, fov_scale=0.2, name="two"
    )
    manifest = load_manifest(manifest_path)
    assert manifest.modality == ",".join(MR_CONTRASTS[:2])
    entry = json.loads(manifest_path.read_text())["training"][0]
    assert entry["image"] == ["training/brain_00000/image_t1c.nii.gz", "training/brain_00000/image_t1.nii.gz"]
    geometry = scale_geometry(brain_case_geometry(0), 0.2)
    expected = make_brain_tumor_phantom(
        0, shape=geometry.shape, spacing_mm=geometry.spacing_mm, orientation=geometry.orientation, channels=2
    )
    for channel, path in enumerate(entry["image"]):
        np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / path).dataobj), expected.image[channel])
    np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / entry["label"]).dataobj), expected.label)


# ---------------------------------------------------------------------------------------------
# relocation
# ---------------------------------------------------------------------------------------------


def test_relocated_paths_name_the_same_files_from_the_new_folder(tmp_path: Path) -> None:
    source = tmp_path / "data" / "study"
    source.mkdir(parents=True)
    manifest = {
        "name": "m",
        "training": [
            {"case_id": "a", "image": "a/image.nii.gz", "label": "a/label.nii.gz"},
            {"case_id": "b", "image": ["b/t1.nii.gz", "b/t2.nii.gz"], "label": "b/label.nii.gz"},
        ],
        "test": ["c/image.nii.gz"],
    }
    (source / "m.json").write_text(json.dumps(manifest))
    target = tmp_path / "manifests"
    target.mkdir()
    moved = relocated(source / "m.json", target)
    assert moved["name"] == "m" and moved["training"][0]["case_id"] == "a"
    assert moved["training"][0]["image"] == "../data/study/a/image.nii.gz"
    assert moved["training"][1]["image"] == ["../data/study/b/t1.nii.gz", "../data/study/b/t2.nii.gz"]
    assert moved["test"] == ["../data/study/c/image.nii.gz"]
    for original, new in (
        (manifest["training"][0]["label"], moved["training"][0]["label"]),
        (manifest["test"][0], moved["test"][0]),
    ):
        assert (target / new).resolve() == (source / original).resolve()


def test_datasets_module_logs_under_its_own_name() -> None:
    assert datasets.logger.name == "pipelines.data.datasets"
    assert not datasets.logger.handlers


# -- brain datasets and bad arguments -----------------------------------------------------------------------------


def test_brain_dataset_geometry_is_seeded_and_regenerated_when_it_changes(tmp_path: Path) -> None:
    assert brain_case_geometry(7) == brain_case_geometry(7)
    g = brain_case_geometry(7)
    assert 0.7 <= g.spacing_mm[0] <= 1.2 and 2.0 <= g.spacing_mm[2] <= 6.5 and g.orientation in ("RAS", "LPS", "LAS")
    bundle = BUNDLES / "mri_brain_tumor"
    manifest = make_brain_dataset(tmp_path, bundle, counts={"validation": 1}, fov_scale=0.25)
    image = tmp_path / "validation" / "brain_10000" / "image.nii.gz"
    small = nib.load(image).shape
    make_brain_dataset(tmp_path, bundle, counts={"validation": 1}, fov_scale=0.3)
    assert nib.load(image).shape != small
    entry = json.loads(manifest.read_text())["validation"][0]
    assert entry == {
        "case_id": "brain_10000",
        "image": "validation/brain_10000/image.nii.gz",
        "label": "validation/brain_10000/label.nii.gz",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "pet"}, "kind 'pet': expected one of ct, brain"),
        ({"kind": "ct", "channels": 2}, "channels: CT phantoms have one channel, got 2"),
        ({"kind": "brain", "channels": 5}, r"channels: expected an int in 1..4, got 5"),
        ({"kind": "brain", "fov_scale": 1.5}, r"fov_scale: expected a number in \(0, 1\], got 1.5"),
        ({"kind": "brain", "counts": {"holdout": 1}}, "split 'holdout': expected one of training"),
        ({"kind": "brain", "perirenal_fat": True}, "perirenal_fat: only CT phantoms have kidneys"),
        ({"kind": "ct", "varied": True}, "varied: only brain phantoms have it"),
    ],
)
def test_phantom_dataset_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    kwargs = {"counts": {"training": 1}, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_phantom_dataset(tmp_path, BUNDLES / "mri_brain_tumor", **kwargs)


def test_brain_dataset_needs_a_tumour_bundle(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"brain tumour phantoms label \{1: 'tumor'\}; the bundle's channel_def has"):
        make_brain_dataset(tmp_path, BUNDLES / "ct_abdomen_unet", counts={"training": 1})


def test_merged_manifest_keeps_both_kinds_of_the_same_seeds_apart(tmp_path: Path) -> None:
    """The default and the varied heads of one seed share a case id; merged, each keeps its own files."""
    counts = {"training": 1, "validation": 1, "test": 0}
    parts = {
        kind: make_brain_dataset(tmp_path / kind, BRAIN_BUNDLE, counts=counts, fov_scale=0.3, varied=kind == "varied")
        for kind in ("classic", "varied")
    }
    merged = merged_manifest(parts, tmp_path / "m.json")  # beside the parts: manifest paths stay inside its folder
    manifest = load_manifest(merged)
    training = {case.case_id: case for case in manifest.cases if case.split == "training"}
    assert sorted(training) == ["classic_brain_00000", "varied_brain_00000"]
    validation = [case.case_id for case in manifest.cases if case.split == "validation"]
    assert validation == ["classic_brain_10000", "varied_brain_10000"]
    classic, varied = training["classic_brain_00000"], training["varied_brain_00000"]
    assert classic.image == (tmp_path / "classic" / "training" / "brain_00000" / "image.nii.gz").resolve()
    assert varied.image == (tmp_path / "varied" / "training" / "brain_00000" / "image.nii.gz").resolve()
    # the same seed's head, drawn two ways: the varied one has its scalp fat, so the images differ
    a, b = (np.asarray(nib.load(c.image).dataobj) for c in (classic, varied))
    assert a.shape == b.shape and not np.array_equal(a, b)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(parts["varied"].read_text()), "labels": {"0": "background", "1": "x"}}))
    with pytest.raises(ValueError, match="labels"):
        merged_manifest({"classic": parts["classic"], "other": bad}, tmp_path / "n.json")
