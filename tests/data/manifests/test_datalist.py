"""Model Zoo datalists (``{"testing": [...]}``) read as manifests, with ``dataset_dir`` and the manifest path policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.data.manifests.datalist import is_zoo_datalist, load_cases_file, load_datalist
from pipelines.data.manifests.model import ManifestError


def _write(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"testing": [{"image": "a.nii.gz"}]}, True),
        ({"training": [{"image": "a.nii.gz", "label": "b.nii.gz"}]}, True),
        ({"name": "x", "modality": "CT", "labels": {"0": "bg"}, "test": ["a.nii.gz"]}, False),
        ({"name": "x", "modality": "CT", "labels": {"0": "bg"}, "testing": ["a.nii.gz"]}, True),  # not ignored
        ([{"image": "a.nii.gz"}], False),
    ],
)
def test_a_datalist_is_told_from_a_manifest(document: Any, expected: bool) -> None:
    assert is_zoo_datalist(document) is expected


def test_relative_paths_start_at_dataset_dir_and_testing_is_the_test_split(tmp_path: Path) -> None:
    data = tmp_path / "Task09_Spleen"
    datalist = _write(
        tmp_path / "lists" / "datalist.json",
        {
            "training": [{"image": "imagesTr/s1.nii.gz", "label": "labelsTr/s1.nii.gz", "fold": 0}],
            "testing": [{"image": "imagesTs/s2.nii.gz"}, "imagesTs/s3.nii.gz"],
        },
    )
    data.mkdir()
    manifest = load_datalist(datalist, dataset_dir=data)
    assert manifest.path == datalist and manifest.name == "datalist"
    assert manifest.modality == "" and manifest.labels == {}
    assert [(c.case_id, c.split) for c in manifest.cases] == [("s1", "training"), ("s2", "test"), ("s3", "test")]
    assert [c.image for c in manifest.split("test")] == [data / "imagesTs/s2.nii.gz", data / "imagesTs/s3.nii.gz"]
    assert manifest.split("training")[0].label == data / "labelsTr/s1.nii.gz"
    # without dataset_dir: the datalist's folder, as monai.data.load_decathlon_datalist
    assert load_datalist(datalist).split("test")[0].image == tmp_path / "lists" / "imagesTs/s2.nii.gz"


def test_paths_stay_inside_dataset_dir_unless_allowed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    datalist = _write(
        tmp_path / "datalist.json",
        {"testing": [{"image": "ok.nii.gz"}, {"image": "../secret.nii.gz"}, {"image": "/etc/passwd"}]},
    )
    with pytest.raises(ManifestError) as caught:
        load_datalist(datalist, dataset_dir=data)
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"case secret: {datalist}: testing[1].image: path '../secret.nii.gz' resolves to ")
    assert "outside the dataset_dir" in lines[0] and "--allow-outside-paths" in lines[0]
    assert lines[1].startswith(f"case passwd: {datalist}: testing[2].image: path '/etc/passwd' is absolute")
    allowed = load_datalist(datalist, dataset_dir=data, allow_outside_paths=True)
    assert [c.image for c in allowed.cases] == [data / "ok.nii.gz", tmp_path / "secret.nii.gz", Path("/etc/passwd")]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"testing": [{"label": "x.nii.gz"}]}, "missing required key 'image' in testing[0]"),
        ({"testing": [{"image": "a/x.nii.gz"}, {"image": "b/x.nii.gz"}]}, "duplicate case id, used by 2 entries"),
        ({"testing": [], "test": []}, "holds both 'testing' and 'test'"),
        ({"validation": 3}, "validation: 3 is not of type 'array'"),
        ({"numTraining": 3}, "no case list: expected at least one of 'training', 'validation', 'testing', 'test'"),
    ],
)
def test_bad_datalists_name_the_file_and_the_entry(tmp_path: Path, document: Any, message: str) -> None:
    datalist = _write(tmp_path / "datalist.json", document)
    with pytest.raises(ManifestError, match=str(datalist)) as caught:
        load_datalist(datalist)
    assert message in str(caught.value)


def test_load_cases_file_dispatches_and_refuses_dataset_dir_for_a_manifest(tmp_path: Path) -> None:
    manifest = _write(
        tmp_path / "manifest.json", {"name": "x", "modality": "CT", "labels": {"0": "bg"}, "test": ["a.nii.gz"]}
    )
    datalist = _write(tmp_path / "datalist.json", {"testing": [{"image": "a.nii.gz"}]})
    assert load_cases_file(manifest).modality == "CT"
    assert load_cases_file(datalist, dataset_dir=tmp_path).split("test")[0].image == tmp_path / "a.nii.gz"
    with pytest.raises(ValueError, match=r"manifest.json: a medseg manifest .*dataset_dir applies to Zoo datalists"):
        load_cases_file(manifest, dataset_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nowhere: dataset_dir of datalist .*datalist.json is not a folder"):
        load_cases_file(datalist, dataset_dir=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"missing\.json: manifest file not found"):
        load_cases_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"testing": [')
    with pytest.raises(ManifestError, match=r"bad.json: not valid JSON: line 1 column 14"):
        load_cases_file(tmp_path / "bad.json")
