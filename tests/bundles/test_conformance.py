"""Bundle conformance: every shipped bundle passes; broken copies give messages naming bundle, file and key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.bundles.conformance import QUICK_CHECKS, SLOW_CHECKS, check_bundle, run_checks
from tests.helpers import BUNDLES, edit_json

SHIPPED = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir())


# -- the shipped bundles ------------------------------------------------------------------------


def test_every_bundle_folder_is_checked() -> None:
    assert {"ct_abdomen_unet", "ct_multiorgan_unetr", "mri_brain_tumor"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bundle_files_metadata_and_config_ids(name: str) -> None:
    assert (BUNDLES / name / "models" / "model.pt").is_file()  # every shipped bundle ships its weights
    assert check_bundle(BUNDLES / name, checks=QUICK_CHECKS) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bundle_network_export_and_plain_monai_run(name: str) -> None:
    result = run_checks(BUNDLES / name, checks=SLOW_CHECKS, device="cpu")
    assert result.problems == []
    assert set(result.seconds) == set(SLOW_CHECKS)
    assert not any("randomly initialised weights" in note for note in result.notes)


# -- broken copies ------------------------------------------------------------------------------


def _drop(*keys: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        node = data
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]

    return change


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data[key] = value

    return change


BROKEN: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "no numpy_version": ("metadata.json", _drop("numpy_version"), "configs/metadata.json: missing key 'numpy_version'"),
    "no inferer": ("inference.json", _drop("inferer"), "configs/inference.json: missing key 'inferer'"),
    "changelog behind version": (
        "metadata.json",
        _set("version", "0.2.0"),
        "configs/metadata.json: key 'changelog': no entry for the current version '0.2.0'",
    ),
    "no modality": (
        "metadata.json",
        _drop("network_data_format", "inputs", "image", "modality"),
        "configs/metadata.json: missing key 'network_data_format#inputs#image#modality' (medseg segment windows",
    ),
    "channel_def disagrees": (
        "metadata.json",
        lambda d: d["network_data_format"]["outputs"]["pred"].update(num_channels=3),
        "configs/metadata.json: key 'network_data_format#outputs#pred#channel_def': names 2 channel(s), "
        "num_channels is 3",
    ),
    "no copyright": ("metadata.json", _drop("copyright"), "configs/metadata.json: missing key 'copyright' (required"),
    "no dataset": (
        "inference.json",
        _drop("dataset"),
        "configs/inference.json: missing key 'dataset' (MONAI InferProperties",
    ),
    "no trainer": (
        "train.json",
        _drop("train", "trainer"),
        "configs/train.json: missing key 'train#trainer' (MONAI TrainProperties",
    ),
    "no max_epochs in trainer": (
        "train.json",
        _drop("train", "trainer", "max_epochs"),
        "configs/train.json: missing key 'train#trainer#max_epochs'",
    ),
    "fixed max_epochs": (
        "train.json",
        lambda d: d["train"]["trainer"].update(max_epochs=3),
        "configs/train.json: key 'train#trainer#max_epochs': expected '@max_epochs'",
    ),
    "no val_interval": ("train.json", _drop("val_interval"), "configs/train.json: missing key 'val_interval'"),
    "no eval_split": (
        "evaluate.json",
        _drop("eval_split"),
        "configs/evaluate.json: missing key 'eval_split' (medseg evaluate would fail: it sets the manifest split) "
        "(evaluate.json is layered over train.json)",
    ),
    "no Invertd": (
        "inference.json",
        lambda d: d["postprocessing"]["transforms"].pop(4),
        "configs/inference.json: key 'postprocessing': no Invertd",
    ),
    "evaluate.json scores another island size": (
        "evaluate.json",
        lambda d: [
            t.update(min_size_mm3=50) for t in d["validate#postprocessing"]["transforms"] if "Islands" in t["_target_"]
        ],
        "configs/evaluate.json: key 'validate#postprocessing': "
        "label clean-up [RemoveSmallIslandsd({'min_size_mm3': 50,",
    ),
    "evaluate.json scores without the clean-up": (
        "evaluate.json",
        lambda d: d["validate#postprocessing"].update(
            transforms=[t for t in d["validate#postprocessing"]["transforms"] if "Holes" not in t["_target_"]]
        ),
        "configs/inference.json's 'postprocessing' [RemoveSmallIslandsd({'min_size_mm3': 100, 'connectivity': 26}); "
        "FillHolesd({'applied_labels': [1], 'connectivity': 6})]; medseg evaluate would score labels medseg segment",
    ),
    "no LoadImaged": (
        "inference.json",
        lambda d: d["preprocessing"]["transforms"].pop(0),
        "configs/inference.json: key 'preprocessing#transforms#0': expected LoadImaged first",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_bundle_messages_name_bundle_file_and_key(mri_bundle: Path, case: str) -> None:
    config, change, message = BROKEN[case]
    bundle = mri_bundle
    edit_json(bundle / "configs" / config, change)
    problems = check_bundle(bundle, checks=QUICK_CHECKS)
    assert any(p.startswith(f"{bundle}: ") and message in p for p in problems), problems


def test_messages_name_the_bundle_as_given(mri_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = mri_bundle
    edit_json(bundle / "configs" / "metadata.json", _drop("numpy_version"))
    monkeypatch.chdir(bundle.parent)
    assert check_bundle("mri_brain_tumor", checks=["zoo_metadata", "metadata"]) == [
        "mri_brain_tumor: configs/metadata.json: missing key 'numpy_version' (required by meta_schema_20240725.json)"
    ]


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        (
            "docs/README.md",
            "docs/README.md: missing file (the model card; medseg bundle list and the Model Zoo show it)",
        ),
        (
            "configs/logging.conf",
            "configs/logging.conf: missing file (`python -m monai.bundle run` would fail without --logging_file: "
            "MONAI looks for it)",
        ),
        ("LICENSE", "LICENSE: missing file (the Model Zoo requires it)"),
        ("configs/train.json", "configs/evaluate.json: is layered over configs/train.json, which is missing"),
    ],
)
def test_missing_files(mri_bundle: Path, remove: str, message: str) -> None:
    bundle = mri_bundle
    (bundle / remove).unlink()
    assert f"{bundle}: {message}" in check_bundle(bundle, checks=QUICK_CHECKS)


def test_invalid_json_names_line_and_column(mri_bundle: Path) -> None:
    bundle = mri_bundle
    (bundle / "configs" / "inference.json").write_text('{\n  "device": "cpu",\n  oops\n}')
    problems = check_bundle(bundle, checks=QUICK_CHECKS)
    assert any(p.startswith(f"{bundle}: configs/inference.json: not valid JSON: line 3") for p in problems), problems


def test_slow_checks_are_skipped_with_a_note_when_the_bundle_is_unusable(mri_bundle: Path) -> None:
    bundle = mri_bundle
    edit_json(bundle / "configs" / "inference.json", _drop("network_def"))
    result = run_checks(bundle, checks=("net_in_out", "export", "run"))
    assert result.problems == []
    assert result.notes == [f"{c} check skipped: configs/inference.json has no 'network_def'" for c in SLOW_CHECKS]


def test_slow_checks_are_skipped_when_the_input_spec_cannot_be_evaluated(mri_bundle: Path) -> None:
    def bad_shape(meta: dict[str, Any]) -> None:
        meta["network_data_format"]["inputs"]["image"]["spatial_shape"] = ["16*k", 16, 16]

    edit_json(mri_bundle / "configs" / "metadata.json", bad_shape)
    result = run_checks(mri_bundle, checks=["export"])
    assert result.problems == [] and len(result.notes) == 1
    assert result.notes[0].startswith("export check skipped: configs/metadata.json has no usable network_data_format")
    assert "spatial_shape entry '16*k'" in result.notes[0]


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere: bundle folder does not exist"):
        check_bundle(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"checks \['speed'\]: expected some of zoo_files"):
        check_bundle(BUNDLES / "mri_brain_tumor", checks=["speed"])


def test_export_uses_a_nested_checkpoint_and_reports_weights_that_do_not_fit(mri_bundle: Path) -> None:
    from monai.bundle import ConfigParser

    bundle = mri_bundle
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def")
    torch.save({"model": network.state_dict(), "epoch": 3}, bundle / "models" / "model.pt")
    result = run_checks(bundle, checks=["export"])
    assert result.problems == [] and result.notes == []

    parser["num_classes"] = 3
    torch.save(parser.get_parsed_content("network_def", lazy=False).state_dict(), bundle / "models" / "model.pt")
    problems = check_bundle(bundle, checks=["export"])
    assert len(problems) == 1 and problems[0].startswith(f"{bundle}: models/model.pt: weights do not fit 'network_def'")


def test_net_in_out_catches_metadata_that_disagrees_with_the_network(mri_bundle: Path) -> None:
    bundle = mri_bundle
    edit_json(bundle / "configs" / "inference.json", lambda d: d.update(num_classes=3))
    problems = check_bundle(bundle, checks=["net_in_out"])
    assert len(problems) == 1
    assert problems[0].startswith(f"{bundle}: configs/inference.json: verify_net_in_out")
    assert "output channel number `3` doesn't match: `2`" in problems[0]


@pytest.mark.slow
def test_run_check_catches_a_label_map_off_the_input_grid(mri_bundle: Path) -> None:
    bundle = mri_bundle
    edit_json(bundle / "configs" / "inference.json", lambda d: d["postprocessing"]["transforms"].pop(4))  # Invertd
    problems = check_bundle(bundle, checks=["run"])
    assert len(problems) == 1
    assert problems[0].startswith(f"{bundle}: configs/inference.json: `python -m monai.bundle run")
    assert "the postprocessing must invert the preprocessing" in problems[0]


@pytest.mark.slow
def test_a_four_channel_mri_bundle_passes_every_check(mri_bundle: Path) -> None:
    """num_channels set to 4 in the three places the bundle docs name: the checks feed 4-channel data."""
    from pipelines.bundles.info import bundle_info
    from pipelines.data.phantoms.tissues import MR_CONTRASTS

    bundle = mri_bundle
    for config in ("inference.json", "train.json"):
        edit_json(bundle / "configs" / config, _set("num_channels", 4))

    def four_inputs(meta: dict[str, Any]) -> None:
        meta["network_data_format"]["inputs"]["image"].update(
            num_channels=4, channel_def={str(i): c for i, c in enumerate(MR_CONTRASTS)}
        )

    edit_json(bundle / "configs" / "metadata.json", four_inputs)
    result = run_checks(bundle)
    # the fixture has no weights (4-channel ones cannot be copied): that is the Zoo's one complaint
    assert result.part_problems("medseg") == []
    zoo = result.part_problems("zoo")
    assert len(zoo) == 1 and zoo[0].startswith(f"{bundle}: models/model.pt: missing file"), zoo
    assert bundle_info(bundle)["num_channels"] == 4
