"""`medseg bundle check` in two parts: Zoo-shaped bundles written here pass the `zoo` part; medseg-only needs
are the `medseg` part's, each naming the command that would fail; one broken check never aborts the report."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.bundles.conformance import PARTS, QUICK_CHECKS, run_checks
from pipelines.bundles.zoo import SCHEMA_REQUIREMENTS
from pipelines.cli.main import main
from tests.helpers import BUNDLES, write_zoo_bundle, zoo_inference_config
from tests.label_app.servers import free_port

NETWORK = {
    "_target_": "UNet",
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 2,
    "channels": [4, 8],
    "strides": [2],
    "num_res_units": 0,
}

SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"


def _tensor(channels: int, channel_def: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "image",
        "format": "hounsfield",
        "modality": "CT",
        "num_channels": channels,
        "spatial_shape": ["16*n", "16*n", "16*n"],
        "dtype": "float32",
        "value_range": [0, 1],
        "is_patch_data": True,
        "channel_def": channel_def,
    }


ZOO_METADATA: dict[str, Any] = {
    "schema": SCHEMA_URL + "meta_schema_20240725.json",
    "version": "0.1.1",
    "changelog": {"0.1.1": "smaller network", "0.1.0": "first version"},
    "monai_version": "1.6.1",
    "pytorch_version": "2.13.0",
    "numpy_version": "2.4.6",
    "required_packages_version": {"nibabel": "5.4.2"},
    "name": "Zoo-shaped spleen test bundle",
    "task": "spleen segmentation",
    "description": "written by the test",
    "authors": "test",
    "copyright": "Copyright (c) test",
    "network_data_format": {
        "inputs": {"image": _tensor(1, {"0": "image"})},
        "outputs": {"pred": _tensor(2, {"0": "background", "1": "spleen"})},
    },
}

# The Zoo's train.json ids (MONAI TrainProperties) with a fixed epoch count and none of medseg's own keys.
ZOO_TRAIN: dict[str, Any] = {
    "bundle_root": ".",
    "device": "$torch.device('cpu')",
    "network_def": NETWORK,
    "network": "$@network_def.to(@device)",
    "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 1e-4},
    "train": {
        "preprocessing": {"_target_": "Compose", "transforms": []},
        "postprocessing": {"_target_": "Compose", "transforms": []},
        "handlers": [],
        "dataset": {"_target_": "Dataset", "data": []},
        "inferer": {"_target_": "SimpleInferer"},
        "trainer": {"_target_": "SupervisedTrainer", "max_epochs": 100},
    },
    "validate": {
        "evaluator": {"_target_": "SupervisedEvaluator"},
        "dataset": {"_target_": "Dataset", "data": []},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": []},
        "key_metric": {},
        "handlers": [],
    },
    "val_interval": 5,
    "initialize": ["$monai.utils.set_determinism(seed=0)"],
    "run": ["$@train#trainer.run()"],
}


def write_zoo_shaped(root: Path, metadata: dict[str, Any] | None = None) -> Path:
    """A bundle in the Model Zoo's shape: LICENSE, metadata, inference and train config, weights; no medseg key."""
    write_zoo_bundle(root, zoo_inference_config(NETWORK), metadata or ZOO_METADATA)
    (root / "configs" / "train.json").write_text(json.dumps(ZOO_TRAIN, indent=1))
    (root / "LICENSE").write_text("Apache License, Version 2.0\n")
    torch.manual_seed(0)
    network = torch.nn.Module()
    from monai.networks.nets import UNet

    network = UNet(**{k: v for k, v in NETWORK.items() if k != "_target_"})
    torch.save(network.state_dict(), root / "models" / "model.pt")
    return root


def test_a_zoo_shaped_bundle_passes_the_zoo_part_including_the_network_checks(tmp_path: Path) -> None:
    bundle = write_zoo_shaped(tmp_path / "spleen_ct_segmentation")
    result = run_checks(bundle, parts=["zoo"])
    assert result.problems == []
    assert set(result.seconds) == set(PARTS["zoo"])
    assert result.summary() == "zoo: OK"


def test_medseg_only_keys_are_the_medseg_parts_and_name_the_command_that_would_fail(tmp_path: Path) -> None:
    bundle = write_zoo_shaped(tmp_path / "spleen_ct_segmentation")
    result = run_checks(bundle, checks=QUICK_CHECKS)
    assert result.part_problems("zoo") == []
    medseg = result.part_problems("medseg")
    for key in ("max_epochs", "seed", "manifest"):
        assert any(f"configs/train.json: missing key {key!r} (medseg train" in p for p in medseg), medseg
    assert any("configs/logging.conf: missing file (`python -m monai.bundle run`" in p for p in medseg)
    assert all(part == "medseg" for part, _ in result.labelled_problems())
    assert result.summary() == f"zoo: OK; medseg: {len(medseg)} problem(s)"


@pytest.mark.parametrize(
    ("schema", "key"),
    [
        ("meta_schema_20240725.json", "required_packages_version"),
        ("meta_schema_20220729.json", "optional_packages_version"),
    ],
)
def test_the_schema_the_metadata_names_decides_the_required_keys(tmp_path: Path, schema: str, key: str) -> None:
    meta = copy.deepcopy(ZOO_METADATA)
    meta["schema"] = SCHEMA_URL + schema
    meta.pop("required_packages_version")
    bundle = write_zoo_shaped(tmp_path / "b", meta)
    problems = run_checks(bundle, checks=["zoo_metadata"]).problems
    assert problems == [f"{bundle}: configs/metadata.json: missing key {key!r} (required by {schema})"]
    assert key in SCHEMA_REQUIREMENTS[schema].required


def test_zoo_metadata_types_tensor_fields_and_changelog(tmp_path: Path) -> None:
    meta = copy.deepcopy(ZOO_METADATA)
    meta["version"] = "0.2.0"
    meta["authors"] = ["a", "b"]
    del meta["network_data_format"]["outputs"]["pred"]["dtype"]
    meta["network_data_format"]["inputs"]["image"]["num_channels"] = "1"
    meta["schema"] = "https://example.org/meta_schema_29990101.json"
    bundle = write_zoo_shaped(tmp_path / "b", meta)
    result = run_checks(bundle, checks=["zoo_metadata"])
    where = f"{bundle}: configs/metadata.json"
    assert result.problems == [
        f"{where}: key 'changelog': no entry for the current version '0.2.0' (entries: '0.1.1', '0.1.0')",
        f"{where}: key 'authors': expected a JSON string, got ['a', 'b'] (meta_schema_20240725.json)",
        f"{where}: key 'network_data_format#inputs#image#num_channels': expected a JSON integer, got '1' "
        "(meta_schema_20240725.json)",
        f"{where}: missing key 'network_data_format#outputs#pred#dtype' (required by meta_schema_20240725.json)",
    ]
    assert "is not one medseg knows" in result.notes[0]


def test_large_files_list_stands_in_for_the_weights(tmp_path: Path) -> None:
    bundle = write_zoo_shaped(tmp_path / "b")
    (bundle / "models" / "model.pt").unlink()
    assert "models/model.pt: missing file" in run_checks(bundle, checks=["zoo_files"]).problems[0]
    (bundle / "large_files.yml").write_text("large_files: []\n")
    assert run_checks(bundle, checks=["zoo_files"]).problems == []


def test_a_network_that_cannot_be_built_is_one_problem_per_check_and_the_report_goes_on(tmp_path: Path) -> None:
    inference = zoo_inference_config({**NETWORK, "channels": "not a list"})
    bundle = write_zoo_bundle(tmp_path / "broken", inference, ZOO_METADATA)
    (bundle / "LICENSE").write_text("x\n")
    result = run_checks(bundle, checks=["zoo_files", "net_in_out", "export", "run"])
    assert set(result.seconds) == {"zoo_files", "net_in_out", "export", "run"}  # every check ran
    assert len(result.found["net_in_out"]) == 1
    assert "verify_net_in_out with the metadata's input spec failed" in result.found["net_in_out"][0]
    assert result.found["export"] == [
        f"{bundle}: export check could not run: " + result.found["export"][0].split("export check could not run: ")[1]
    ]
    assert result.found["run"] and result.found["run"][0].startswith(f"{bundle}: ")


def test_cli_check_reports_both_parts_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = write_zoo_shaped(tmp_path / "spleen_ct_segmentation")
    trust = ["--trust-bundle"] if _has_trust_option() else []
    assert main(["bundle", "check", "--quick", "--part", "zoo", str(bundle), *trust]) == 0
    assert capsys.readouterr().out.strip().endswith("OK (zoo_files, zoo_metadata; 0.0 s)")
    assert main(["bundle", "check", "--quick", str(bundle), *trust]) == 1
    out = capsys.readouterr().out
    assert f"[medseg] {bundle}: configs/train.json: missing key 'manifest' (medseg train would fail" in out
    assert "[zoo]" not in out
    assert out.strip().splitlines()[-1].startswith(f"{bundle}: zoo: OK; medseg: ")


def _has_trust_option() -> bool:
    from pipelines.cli.main import build_parser

    try:
        build_parser().parse_args(["bundle", "check", "x", "--trust-bundle"])
    except SystemExit:
        return False
    return True


def test_shipped_bundles_pass_both_quick_parts() -> None:
    for bundle in sorted(p for p in BUNDLES.iterdir() if (p / "configs").is_dir()):
        result = run_checks(bundle, checks=QUICK_CHECKS)
        assert result.part_problems("medseg") == []
        assert result.part_problems("zoo") == []


# -- our bundles without medseg: plain `python -m monai.bundle run` -------------------------------

_WITHOUT_PIPELINES = (
    "import runpy, sys; sys.modules['pipelines'] = None; "  # `import pipelines` now raises ImportError
    "runpy.run_module('monai.bundle', run_name='__main__', alter_sys=True)"
)


# One process of a one-process torchrun (multi_gpu_train.json joins the process group in `initialize`).
_TORCHRUN_ENV = {
    **os.environ,
    "RANK": "0",
    "LOCAL_RANK": "0",
    "WORLD_SIZE": "1",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": str(free_port()),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir()))
@pytest.mark.parametrize(
    ("configs", "named"),
    [
        (["inference.json"], "inference.json"),
        (["train.json"], "train.json"),
        (["train.json", "evaluate.json"], "evaluate.json"),  # evaluate.json is layered over train.json
        (["train.json", "multi_gpu_train.json"], "multi_gpu_train.json"),  # as torchrun starts it (env below)
    ],
)
def test_plain_monai_run_without_medseg_fails_with_one_line_naming_package_and_version(
    name: str, configs: list[str], named: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    bundle = BUNDLES / name
    version = json.loads((bundle / "configs" / "metadata.json").read_text())["required_packages_version"]["medseg"]
    files = [str(bundle / "configs" / c) for c in configs]
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _WITHOUT_PIPELINES, "run", "--config_file",
         files[0] if len(files) == 1 else repr(files), "--bundle_root", str(bundle), "--datalist", "[]",
         "--output_dir", str(tmp_path / "out")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_TORCHRUN_ENV,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"{name}: configs/{named} needs medseg {version} (import name pipelines), listed in "
        "configs/metadata.json required_packages_version and not installed; "
        f"install it: pip install 'medseg=={version}'"
    )
    assert not (tmp_path / "out").exists()


# -- overrides, YAML configs and a shipped TorchScript model in the checks ----------------------------


def test_check_overrides_reach_every_check_and_an_unknown_id_is_refused_first(tmp_path: Path) -> None:
    bundle = write_zoo_shaped(tmp_path / "spleen_ct_segmentation")
    with pytest.raises(ValueError, match=r"override 'network_def#out_channel'.*has no such id"):
        run_checks(bundle, overrides={"network_def#out_channel": 3})
    assert run_checks(bundle, checks=["net_in_out", "export"]).problems == []
    result = run_checks(bundle, checks=["net_in_out", "export"], overrides={"network_def#out_channels": 3})
    (net,) = result.found["net_in_out"]  # the metadata says 2 output channels
    assert net.startswith(f"{bundle}: configs/inference.json: verify_net_in_out with the metadata's input spec failed")
    (export,) = result.found["export"]  # models/model.pt has 2 output channels
    assert export.startswith(f"{bundle}: models/model.pt: weights do not fit 'network_def'")


@pytest.mark.slow
def test_check_overrides_reach_the_plain_monai_run(tmp_path: Path) -> None:
    """The `run` check passes overrides to `python -m monai.bundle run` (an --args_file): this one breaks SaveImaged."""
    bundle = write_zoo_shaped(tmp_path / "spleen_ct_segmentation")
    result = run_checks(bundle, checks=["run"], overrides={"postprocessing#transforms#3#keys": "no_such_key"})
    (problem,) = result.found["run"]
    assert problem.startswith(f"{bundle}: configs/inference.json: `python -m monai.bundle run --config_file")
    assert "failed (exit 1)" in problem


def _as_yaml(bundle: Path) -> Path:
    import yaml

    config = bundle / "configs" / "inference.json"
    (bundle / "configs" / "inference.yaml").write_text(yaml.safe_dump(json.loads(config.read_text())))
    config.unlink()
    return bundle


def test_a_yaml_bundle_gets_the_network_checks(tmp_path: Path) -> None:
    bundle = _as_yaml(write_zoo_shaped(tmp_path / "spleen_ct_segmentation"))
    result = run_checks(bundle, parts=["zoo"])
    assert result.problems == [] and result.notes == []
    assert set(result.seconds) == set(PARTS["zoo"])  # net_in_out and export ran, not skipped
    broken = run_checks(bundle, checks=["net_in_out"], overrides={"network_def#out_channels": 3})
    assert broken.found["net_in_out"][0].startswith(f"{bundle}: configs/inference.yaml: verify_net_in_out")


def _shipped_torchscript(bundle: Path, out_channels: int = 2) -> Path:
    from monai.networks.nets import UNet

    network = UNet(**{**{k: v for k, v in NETWORK.items() if k != "_target_"}, "out_channels": out_channels})
    if out_channels == NETWORK["out_channels"]:
        network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    torch.jit.script(network.eval()).save(str(bundle / "models" / "model.ts"))
    return bundle / "models" / "model.ts"


def test_export_check_loads_a_shipped_torchscript_model(tmp_path: Path) -> None:
    bundle = write_zoo_shaped(tmp_path / "spleen_ct_segmentation")
    ts = _shipped_torchscript(bundle)
    assert run_checks(bundle, checks=["export"]).problems == []

    _shipped_torchscript(bundle, out_channels=3)  # not the network the config builds
    (problem,) = run_checks(bundle, checks=["export"]).problems
    assert problem.startswith(
        f"{bundle}: models/model.ts: the shipped TorchScript model differs from the eager network"
    )

    ts.write_bytes(b"not a TorchScript archive")
    (problem,) = run_checks(bundle, checks=["export"]).problems
    assert problem.startswith(f"{bundle}: models/model.ts: does not load and run with torch.jit.load: ")

    _shipped_torchscript(bundle)  # a TorchScript-only bundle: shape checked against the random-weights network
    (bundle / "models" / "model.pt").unlink()
    result = run_checks(bundle, checks=["export"])
    assert result.problems == [] and any("randomly initialised weights" in n for n in result.notes)
