"""``bundle_info`` and ``list_bundles``: what ``medseg bundle info`` and ``list`` show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.bundles.info import bundle_info, list_bundles
from tests.helpers import BUNDLES

SHIPPED = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "ct_multiorgan_unetr",
            {
                "modality": "CT",
                "network": "PatchUNETR",
                "pixdim": [1.5, 1.5, 2.0],
                "roi_size": [64, 64, 64],
                "num_channels": 1,
            },
        ),
        (
            "mri_brain_tumor",
            {
                "modality": "MR",
                "network": "SegResNet",
                "pixdim": [1.25, 1.25, 3.0],
                "roi_size": [96, 96, 32],
                "num_channels": 1,
                "labels": {0: "background", 1: "tumor"},
            },
        ),
        ("ct_abdomen_unet", {"modality": "CT", "network": "UNet", "pixdim": [1.5, 1.5, 2.0]}),
    ],
)
def test_bundle_info(name: str, expected: dict[str, Any]) -> None:
    info = bundle_info(BUNDLES / name)
    assert {k: info[k] for k in expected} == expected
    assert info["version"] and info["name"] and "inference" in info["configs"]


def test_unetr_labels_are_the_13_btcv_organs() -> None:
    from pipelines.data.phantoms.tissues import CT_STRUCTURES

    labels = bundle_info(BUNDLES / "ct_multiorgan_unetr")["labels"]
    assert labels == {0: "background", **{i: n for n, i in CT_STRUCTURES.items() if n != "liver_tumor"}}


def test_bundle_info_names_an_invalid_inference_config(mri_bundle: Path) -> None:
    (mri_bundle / "configs" / "inference.json").write_text('{\n  "device": "cpu",\n  oops\n}')
    with pytest.raises(ValueError, match=r"configs/inference.json: not valid JSON: line 3 column 3"):
        bundle_info(mri_bundle)


def test_list_bundles(tmp_path: Path, mri_bundle: Path) -> None:
    assert [Path(i["path"]).name for i in list_bundles(BUNDLES)] == [
        n for n in SHIPPED if (BUNDLES / n / "configs" / "inference.json").is_file()
    ]
    assert mri_bundle.parent == tmp_path
    (tmp_path / "broken" / "configs").mkdir(parents=True)
    (tmp_path / "broken" / "configs" / "inference.json").write_text("{}")
    (tmp_path / "broken" / "configs" / "metadata.json").write_text("{not json")
    (tmp_path / "not_a_bundle").mkdir()
    infos = list_bundles(tmp_path)
    assert [Path(i["path"]).name for i in infos] == ["broken", "mri_brain_tumor"]
    assert "not valid JSON" in infos[0]["error"]
    with pytest.raises(FileNotFoundError, match="nowhere: bundles folder does not exist"):
        list_bundles(tmp_path / "nowhere")


def test_channel_0_of_a_multi_label_output_is_a_structure(mri_bundle: Path) -> None:
    """A BraTS-style output (one sigmoid channel per region) names a structure in channel 0: it is shown."""
    from pipelines.bundles.info import structures
    from tests.helpers import edit_json

    def multi_label(meta: dict[str, Any]) -> None:
        meta["network_data_format"]["outputs"]["pred"].update(
            num_channels=3, channel_def={"0": "TC", "1": "WT", "2": "ET"}
        )

    edit_json(mri_bundle / "configs" / "metadata.json", multi_label)
    info = bundle_info(mri_bundle)
    assert info["structures"] == {0: "TC", 1: "WT", 2: "ET"}
    assert structures({0: "Background", 1: "spleen"}) == {1: "spleen"}
    assert bundle_info(BUNDLES / "mri_brain_tumor")["structures"] == {1: "tumor"}


def test_info_and_list_evaluate_no_expression(
    tmp_path: Path, mri_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `$` expression that would create a file is shown as text by `bundle info` / `bundle list`, never run."""
    from pipelines.cli.main import main
    from tests.helpers import edit_json

    flag = tmp_path / "evaluated"
    expression = f"$__import__('pathlib').Path(r'{flag}').touch() or [64, 64, 32]"

    def change(config: dict[str, Any]) -> None:
        config["inferer"]["roi_size"] = expression
        config["pixdim"] = expression.replace("[64, 64, 32]", "[1.0, 1.0, 1.0]")  # Spacingd's @pixdim

    edit_json(mri_bundle / "configs" / "inference.json", change)
    info = bundle_info(mri_bundle)
    assert info["roi_size"] == expression and info["pixdim"].startswith("$__import__")
    assert info["network"] == "SegResNet"
    assert [i["roi_size"] for i in list_bundles(tmp_path)] == [expression]
    monkeypatch.chdir(tmp_path)
    assert main(["bundle", "info", str(mri_bundle)]) == 0
    assert expression in capsys.readouterr().out
    assert main(["bundle", "list", str(tmp_path)]) == 0
    (row,) = capsys.readouterr().out.splitlines()[1:]
    assert row.split()[0] == "mri_brain_tumor" and row.split()[-1] == "untrusted"  # changed since trusted
    assert not flag.exists()


def test_a_yaml_bundle_is_described_and_listed(tmp_path: Path, mri_bundle: Path) -> None:
    """configs/inference.yaml (as 6 Zoo bundles ship) is read as data like JSON; YAML configs are listed."""
    import json

    import yaml

    configs = mri_bundle / "configs"
    for name in ("inference", "train"):
        data = json.loads((configs / f"{name}.json").read_text())
        (configs / f"{name}.yaml").write_text(yaml.safe_dump(data))
        (configs / f"{name}.json").unlink()
    info = bundle_info(mri_bundle)
    assert {k: info[k] for k in ("network", "pixdim", "roi_size")} == {
        "network": "SegResNet",
        "pixdim": [1.25, 1.25, 3.0],
        "roi_size": [96, 96, 32],
    }
    assert {"inference", "train", "evaluate", "metadata"} <= set(info["configs"])
    assert [Path(i["path"]).name for i in list_bundles(tmp_path)] == ["mri_brain_tumor"]
