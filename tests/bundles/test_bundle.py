"""Opening a bundle and parsing its configs: metadata read once, overrides, errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.bundles.bundle import Bundle, config_parser, load_bundle, parse_config
from tests.helpers import BUNDLES, edit_json


def test_load_bundle_reads_name_version_labels_and_modality() -> None:
    bundle = load_bundle(BUNDLES / "mri_brain_tumor")
    assert isinstance(bundle, Bundle) and bundle.root == (BUNDLES / "mri_brain_tumor").resolve()
    assert bundle.labels == {0: "background", 1: "tumor"} and bundle.modality == "MR"
    assert bundle.version == bundle.metadata["version"] and bundle.name == bundle.metadata["name"]
    assert bundle.weights == bundle.root / "models" / "model.pt"
    assert bundle.config_path("train") == bundle.root / "configs" / "train.json"


def test_parse_config_uses_the_metadata_already_read(mri_bundle: Path) -> None:
    """metadata.json is read once, by load_bundle; parse_config hands MONAI that copy."""
    bundle = load_bundle(mri_bundle)
    (mri_bundle / "configs" / "metadata.json").write_text('{"name": "changed on disk"}')
    parser = parse_config(bundle, "inference", {"inferer#sw_batch_size": 3})
    assert parser["_meta_"] == bundle.metadata and parser["_meta_"]["name"] != "changed on disk"
    assert parser["bundle_root"] == str(bundle.root) and parser["inferer#sw_batch_size"] == 3
    parser["_meta_#name"] = "changed in the parser"
    assert bundle.metadata["name"] != "changed in the parser", "the bundle's metadata must not be shared"


def test_a_bundle_without_metadata_gets_its_folder_name(mri_bundle: Path) -> None:
    (mri_bundle / "configs" / "metadata.json").unlink()
    bundle = load_bundle(mri_bundle)
    assert (bundle.name, bundle.version, bundle.labels, bundle.modality) == ("mri_brain_tumor", "0.0.0", {}, "")
    assert parse_config(bundle)["_meta_"] == {}


def test_config_parser_layers_configs_as_monai_does(mri_bundle: Path) -> None:
    root = mri_bundle
    parser = config_parser(root, [root / "configs" / "train.json", root / "configs" / "evaluate.json"])
    evaluate = json.loads((root / "configs" / "evaluate.json").read_text())
    assert parser["validate#datalist"] == evaluate["validate#datalist"]  # an id-path key of evaluate.json
    assert parser["max_epochs"] == json.loads((root / "configs" / "train.json").read_text())["max_epochs"]


def test_train_config_needs_the_manifest_given() -> None:
    """train.json holds no path out of the bundle: without a --manifest the datalist fails and says why."""
    parser = parse_config(load_bundle(BUNDLES / "ct_abdomen_unet"), "train")
    assert parser["manifest"].startswith("MANIFEST-NOT-SET: pass --manifest FILE")
    with pytest.raises(RuntimeError, match="Failed to evaluate") as caught:  # MONAI wraps the error
        parser.get_parsed_content("train_datalist")
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert "MANIFEST-NOT-SET: pass --manifest FILE" in str(caught.value.__cause__)


def test_load_bundle_errors(tmp_path: Path, mri_bundle: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere: bundle folder does not exist"):
        load_bundle(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/configs/inference.json: bundle has no inference config"):
        load_bundle(tmp_path / "empty")
    meta = mri_bundle / "configs" / "metadata.json"
    edit_json(meta, lambda d: d["network_data_format"]["outputs"]["pred"].update(channel_def={"x": "tumor"}))
    with pytest.raises(ValueError, match=r"metadata.json: channel_def key 'x' is not an integer label id"):
        load_bundle(mri_bundle)
    meta.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"metadata.json: expected a JSON object, got list"):
        load_bundle(mri_bundle)
    meta.write_text('{"name": "x",\n oops}')
    with pytest.raises(ValueError, match=r"metadata.json: not valid JSON: line 2 column 2"):
        load_bundle(mri_bundle)


def test_parse_config_errors(mri_bundle: Path) -> None:
    bundle = load_bundle(mri_bundle)
    with pytest.raises(FileNotFoundError, match=r"configs/nothing.json: bundle .* has no configs/nothing.json"):
        parse_config(bundle, "nothing")
    (mri_bundle / "configs" / "evaluate.json").write_text('{\n "a": 1,\n oops\n}')
    with pytest.raises(ValueError, match=r"configs/evaluate.json: not valid JSON: line 3 column 2"):
        parse_config(bundle, "evaluate")
    root = mri_bundle
    with pytest.raises(ValueError, match=r"configs/evaluate.json: not valid JSON: line 3"):
        config_parser(root, [root / "configs" / "train.json", root / "configs" / "evaluate.json"])


# -- bundle forms and overrides (issue 13) ---------------------------------------------------------


def _yaml_bundle(tmp_path: Path) -> Path:
    """The threshold bundle with its configs in YAML (as 6 Zoo bundles ship inference.yaml)."""
    import yaml

    from tests.helpers import trust_test_bundle, write_threshold_bundle

    bundle = write_threshold_bundle(tmp_path / "zoo_yaml")
    for name in ("inference", "metadata"):
        json_path = bundle / "configs" / f"{name}.json"
        (bundle / "configs" / f"{name}.yaml").write_text(yaml.safe_dump(json.loads(json_path.read_text())))
        json_path.unlink()
    return trust_test_bundle(bundle)


def test_yaml_bundle_segments_like_its_json_twin(tmp_path: Path) -> None:
    import nibabel as nib
    import numpy as np

    from pipelines.cli.main import main
    from tests.helpers import cube_scan, write_nifti, write_threshold_bundle

    yaml_bundle = _yaml_bundle(tmp_path)
    assert load_bundle(yaml_bundle).name == "zoo_threshold"
    image, affine, _ = cube_scan("RAS")
    scan = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    results = []
    for bundle in (yaml_bundle, write_threshold_bundle(tmp_path / "zoo_json")):
        out = tmp_path / f"out_{bundle.name}"
        assert main(["segment", str(scan), "--bundle", str(bundle), "-o", str(out), "--device", "cpu"]) == 0
        results.append(np.asarray(nib.load(out / "scan" / "labels.nii.gz").dataobj))
    assert np.array_equal(*results) and results[0].any()


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    bundle = _yaml_bundle(tmp_path)
    (bundle / "configs" / "inference.yaml").write_text("network_def:\n  a: [1, 2\n")
    with pytest.raises(ValueError, match=r"inference.yaml: not valid YAML: line \d+ column \d+"):
        parse_config(load_bundle(bundle))


def test_overrides_apply_before_references_and_unknown_ids_are_refused(tmp_path: Path) -> None:
    from pipelines.bundles.overrides import parse_override, parse_overrides
    from tests.helpers import write_threshold_bundle

    overrides = parse_overrides(["inferer#overlap=0.75", "inferer#roi_size=[16,16,16]", "output_dir=$'x'"])
    assert overrides == {"inferer#overlap": 0.75, "inferer#roi_size": [16, 16, 16], "output_dir": "$'x'"}
    bundle = load_bundle(write_threshold_bundle(tmp_path / "b"))
    inferer = parse_config(bundle, user_overrides=overrides).get_parsed_content("inferer")
    assert inferer.overlap == 0.75 and list(inferer.roi_size) == [16, 16, 16]
    with pytest.raises(
        ValueError, match=r"override 'infere#overlap': .*inference.json has no such id.*did you mean inferer"
    ):
        parse_config(bundle, user_overrides={"infere#overlap": 0.5})
    for text, message in [
        ("overlap", r"expected KEY=VALUE"),
        ("a##b=1", r"is not a config id"),
        ("device=cpu", r"'device' cannot be overridden here; use --device"),
        ("bundle_root=/x", r"'bundle_root' cannot be overridden here"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_override(text)


def test_cli_override_is_recorded_in_run_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.cli.main import main
    from tests.helpers import cube_scan, write_nifti, write_threshold_bundle

    bundle = write_threshold_bundle(tmp_path / "b")
    image, affine, _ = cube_scan("RAS")
    scan = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    args = ["segment", str(scan), "--bundle", str(bundle), "-o", str(tmp_path / "o"), "--device", "cpu"]
    assert main([*args, "--override", "inferer#overlap=0", "--override", "inferer#sw_batch_size=3"]) == 0
    run = json.loads((tmp_path / "o" / "scan" / "run.json").read_text())
    assert run["options"]["overrides"] == {"inferer#overlap": 0, "inferer#sw_batch_size": 3}
    assert run["sw_batch_size"] == 3  # the override wins over the one-window CPU default
    capsys.readouterr()
    assert main([*args, "--override", "inferer#overlapp=0"]) == 1
    err = capsys.readouterr().err
    assert "override 'inferer#overlapp'" in err and "no such id" in err
