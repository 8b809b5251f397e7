"""``medseg bundle check | list | info`` and the ``--bundle NAME|DIR`` / ``--bundles DIR`` options."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipelines.cli.bundle import add_bundle_parser, resolve_bundle_args
from pipelines.cli.main import build_parser, main
from tests.helpers import BUNDLES, copy_bundle_with_random_weights, edit_json


def cli(argv: list[str]) -> int:
    """Run ``medseg bundle ...`` through the subcommands as added to the medseg parser."""
    parser = argparse.ArgumentParser(prog="medseg")
    add_bundle_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.pop(key)


@pytest.fixture()
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user bundle folder, moved under ``tmp_path`` through ``XDG_DATA_HOME``."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "medseg" / "bundles"


def test_cli_check_prints_problems_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = copy_bundle_with_random_weights("mri_brain_tumor", tmp_path)
    assert cli(["bundle", "check", "--quick", "--part", "medseg", str(bundle)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{bundle}: OK (layout, metadata, configs; ")
    edit_json(bundle / "configs" / "metadata.json", _drop("name"))
    trust = ["--trust-bundle"]  # the bundle changed: its code needs trust again
    assert cli(["bundle", "check", "--quick", "--part", "medseg", str(bundle), *trust]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"[medseg] {bundle}: configs/metadata.json: missing key 'name' (")
    assert out[1:] == [f"{bundle}: medseg: 1 problem(s)"]


def test_cli_check_takes_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`bundle check --override KEY=VALUE` applies to the inference config as `segment` does; unknown ids refused."""
    bundle = copy_bundle_with_random_weights("mri_brain_tumor", tmp_path)
    quick = ["bundle", "check", "--quick", "--part", "medseg", str(bundle)]
    assert cli([*quick, "--override", "inferer#overlap=0.25"]) == 0
    capsys.readouterr()
    # a medseg-check key the override removes: the configs check sees the overridden config
    assert cli([*quick, "--override", "postprocessing#transforms=[]"]) == 1
    assert "key 'postprocessing': no Invertd" in capsys.readouterr().out
    assert main(["bundle", "check", *quick[2:], "--override", "inferer#overlapp=0.25"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "override 'inferer#overlapp'" in err[0] and "has no such id" in err[0]


def test_cli_list_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["bundle", "list", str(BUNDLES)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["folder", "name", "version", "modality", "labels", "network", "weights", "trusted"]
    assert all(line.split()[-1] == "shipped" for line in table[1:])
    assert any(line.startswith("ct_multiorgan_unetr") and " 13 " in line and "UNETR" in line for line in table)
    assert cli(["bundle", "info", str(BUNDLES / "mri_brain_tumor")]) == 0
    text = capsys.readouterr().out
    assert "MRI brain tumour SegResNet" in text and "1 tumor" in text and "[1.25, 1.25, 3.0] mm" in text
    assert cli(["bundle", "info", "--json", str(BUNDLES / "mri_brain_tumor")]) == 0
    assert json.loads(capsys.readouterr().out)["roi_size"] == [96, 96, 32]


def test_medseg_bundle_info_by_name(tmp_path: Path, user_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`medseg bundle info NAME`: the name is looked up in --bundles first, then the checkout's bundles/."""
    assert main(["bundle", "info", "mri_brain_tumor", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == str(BUNDLES / "mri_brain_tumor") and info["labels"] == {"0": "background", "1": "tumor"}

    mine = copy_bundle_with_random_weights("mri_brain_tumor", tmp_path / "mine")
    edit_json(mine / "configs" / "metadata.json", lambda d: d.update(name="my tumour model"))
    assert main(["bundle", "info", "mri_brain_tumor", "--bundles", str(tmp_path / "mine")]) == 0
    text = capsys.readouterr().out
    assert text.startswith("my tumour model 0.") and f"({mine})" in text.splitlines()[0]
    assert "weights         models/model.pt" in text and "sliding window  [96, 96, 32]" in text


def test_medseg_bundle_list_shows_every_folder_searched(
    tmp_path: Path, user_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_bundle_with_random_weights("mri_brain_tumor", tmp_path / "mine")
    assert main(["bundle", "list", "--bundles", str(tmp_path / "mine")]) == 0
    out = capsys.readouterr().out.splitlines()
    headings = [line for line in out if not line.startswith(" ")]
    assert headings == [
        f"{tmp_path / 'mine'}: 1 bundle(s)",
        f"{BUNDLES}: {len(list(BUNDLES.glob('*/configs/inference.json')))} bundle(s)",
        f"{user_folder}: (does not exist)",
    ]
    assert any(line.strip().startswith("ct_multiorgan_unetr") for line in out)


def test_a_bundle_name_not_found_lists_the_folders_searched(
    tmp_path: Path, user_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["segment", str(tmp_path / "scan.nii.gz"), "--bundle", "no_such_model", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("medseg: error: bundle 'no_such_model': no such folder here")
    assert f"{BUNDLES}; {user_folder} (does not exist)" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["segment", "scan.nii.gz", "--bundle", "ct_abdomen_unet", "-o", "out"],
        ["demo"],
        ["phantoms", "-o", "data"],
        ["train", "--bundle", "ct_abdomen_unet", "--manifest", "m.json"],
        ["evaluate", "--bundle", "ct_abdomen_unet", "--manifest", "m.json", "-o", "out"],
        ["batch", "m.json", "--bundle", "ct_abdomen_unet", "-o", "out"],
    ],
)
def test_every_bundle_option_takes_a_name(argv: list[str], user_folder: Path) -> None:
    args = resolve_bundle_args(build_parser().parse_args(argv))
    assert args.bundle == BUNDLES / "ct_abdomen_unet"


def test_bundles_folders_come_first(tmp_path: Path, user_folder: Path) -> None:
    mine = copy_bundle_with_random_weights("ct_abdomen_unet", tmp_path / "mine")
    copy_bundle_with_random_weights("ct_abdomen_unet", user_folder)
    argv = ["segment", "scan.nii.gz", "--bundle", "ct_abdomen_unet", "-o", "out"]
    assert resolve_bundle_args(build_parser().parse_args([*argv, "--bundles", str(mine.parent)])).bundle == mine
    assert resolve_bundle_args(build_parser().parse_args(argv)).bundle == BUNDLES / "ct_abdomen_unet"
    folder = resolve_bundle_args(build_parser().parse_args(["segment", "s", "--bundle", str(mine), "-o", "o"]))
    assert folder.bundle == mine
