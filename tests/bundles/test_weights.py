"""Weights: read once, hashed from the bytes loaded, plain or nested checkpoints, errors that say what to do."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipelines.bundles import weights
from pipelines.bundles.bundle import load_bundle, parse_config
from pipelines.bundles.weights import (
    LoadedWeights,
    MissingWeightsError,
    checkpoint_key,
    load_weights,
    read_weights,
    require_weights,
)


def _network(bundle_root: Path, **overrides: Any) -> torch.nn.Module:
    return parse_config(load_bundle(bundle_root), "inference", overrides).get_parsed_content("network_def")


def test_load_weights_returns_the_sha256_of_the_file_bytes(mri_bundle: Path) -> None:
    source = _network(mri_bundle)
    torch.save(source.state_dict(), mri_bundle / "models" / "model.pt")
    network = _network(mri_bundle)
    loaded = load_weights(network, load_bundle(mri_bundle))
    path = mri_bundle.resolve() / "models" / "model.pt"
    assert loaded == LoadedWeights(path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), key="")
    for name, tensor in source.state_dict().items():
        assert torch.equal(network.state_dict()[name], tensor), name


def test_weights_are_read_once_and_loaded_from_those_bytes(mri_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.save(_network(mri_bundle).state_dict(), mri_bundle / "models" / "model.pt")
    reads: list[Path] = []
    sources: list[Any] = []
    read_bytes, torch_load = Path.read_bytes, torch.load

    def counting_read(self: Path) -> bytes:
        reads.append(self)
        return read_bytes(self)

    def recording_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        sources.append(f)
        return torch_load(f, *args, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", counting_read)
    monkeypatch.setattr(weights.torch, "load", recording_load)
    load_weights(_network(mri_bundle), load_bundle(mri_bundle))
    assert [p.name for p in reads] == ["model.pt"]
    assert len(sources) == 1 and isinstance(sources[0], io.BytesIO)


@pytest.mark.parametrize("key", ["model", "network"])
def test_nested_checkpoints_are_unwrapped(mri_bundle: Path, key: str) -> None:
    torch.save({key: _network(mri_bundle).state_dict(), "epoch": 3}, mri_bundle / "models" / "model.pt")
    assert load_weights(_network(mri_bundle), load_bundle(mri_bundle)).key == key
    state, loaded = read_weights(mri_bundle / "models" / "model.pt")
    assert loaded.key == key and "epoch" not in state


def test_checkpoint_key() -> None:
    assert checkpoint_key({"conv.weight": torch.zeros(1)}) == ""
    assert checkpoint_key({"model": {"w": 1}, "network": {"w": 2}}) == "model"
    assert checkpoint_key({"network": {"w": 2}, "optimizer": {}}) == "network"
    assert checkpoint_key({"model": "not a dict"}) == ""
    assert checkpoint_key([1, 2]) == ""


def test_weights_that_do_not_fit(mri_bundle: Path) -> None:
    torch.save(_network(mri_bundle, num_classes=3).state_dict(), mri_bundle / "models" / "model.pt")
    bundle = load_bundle(mri_bundle)
    with pytest.raises(ValueError, match=rf"models/model.pt: weights do not fit the network of {bundle.name} \("):
        load_weights(_network(mri_bundle), bundle)


def test_unreadable_weights(mri_bundle: Path) -> None:
    (mri_bundle / "models" / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"models/model.pt: not a readable PyTorch checkpoint"):
        load_weights(_network(mri_bundle), load_bundle(mri_bundle))


def test_missing_weights_say_how_to_get_them(mri_bundle: Path) -> None:
    bundle = load_bundle(mri_bundle)
    with pytest.raises(MissingWeightsError, match=r"models/model.pt: bundle .* has no trained weights") as caught:
        require_weights(bundle)
    assert isinstance(caught.value, FileNotFoundError) and "medseg train --bundle" in str(caught.value)
    with pytest.raises(MissingWeightsError):
        load_weights(_network(mri_bundle), bundle)


# -- the checkpoint the config names (issue 13) ---------------------------------------------------


def _segment_threshold(bundle: Path, tmp_path: Path, *extra: str) -> dict[str, Any]:
    import json

    from pipelines.cli.main import main
    from tests.helpers import cube_scan, write_nifti

    image, affine, _ = cube_scan("RAS")
    scan = write_nifti(tmp_path / "scan.nii.gz", image, affine)
    out = tmp_path / "out"
    args = ["segment", str(scan), "--bundle", str(bundle), "-o", str(out), "--device", "cpu", "--outputs", "labels"]
    assert main([*args, *extra]) == 0
    return json.loads((out / "scan" / "run.json").read_text())


def _zero_conv(path: Path, bias: tuple[float, float]) -> None:
    conv = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias[:] = torch.tensor(bias)
    torch.save({"model": conv.state_dict(), "epoch": 3}, path)


def test_the_checkpoint_the_config_names_is_the_one_loaded_and_recorded(tmp_path: Path) -> None:
    """Like wholeBody's model_lowres.pt: the config names another file than models/model.pt."""
    import nibabel as nib

    from tests.helpers import edit_json, trust_test_bundle, write_threshold_bundle

    bundle = write_threshold_bundle(tmp_path / "zoo_threshold")
    lowres = bundle / "models" / "model_lowres.pt"
    _zero_conv(lowres, (-1.0, 1.0))  # every voxel foreground, unlike models/model.pt

    def name_lowres(config: dict[str, Any]) -> None:
        config["handlers"][0]["load_path"] = "$@bundle_root + '/models/model_lowres.pt'"

    edit_json(bundle / "configs" / "inference.json", name_lowres)
    trust_test_bundle(bundle)
    run = _segment_threshold(bundle, tmp_path)
    expected = hashlib.sha256(lowres.read_bytes()).hexdigest()
    assert run["bundle"]["model_sha256"] == expected
    assert run["bundle"]["weights"] == {
        "file": "models/model_lowres.pt",
        "sha256": expected,
        "key": "model",
        "format": "state_dict",
        "named_by": "handlers#0#load_path",
        "note": "",
    }
    labels = np.asarray(nib.load(tmp_path / "out" / "scan" / "labels.nii.gz").dataobj)
    assert labels.min() == 1  # the low-resolution weights ran, not models/model.pt


def test_checkpoint_id_wins_and_override_changes_it(tmp_path: Path) -> None:
    from pipelines.bundles.weights import resolve_checkpoint
    from tests.helpers import edit_json, write_threshold_bundle

    bundle = write_threshold_bundle(tmp_path / "b")
    _zero_conv(bundle / "models" / "other.pt", (0.0, 1.0))
    edit_json(
        bundle / "configs" / "inference.json", lambda c: c.update(checkpoint="$@bundle_root + '/models/model.pt'")
    )
    opened = load_bundle(bundle)
    found = resolve_checkpoint(parse_config(opened), opened)
    assert found.named_by == "checkpoint" and found.path.name == "model.pt"
    parser = parse_config(opened, user_overrides={"checkpoint": "models/other.pt"})  # relative: to the bundle
    assert resolve_checkpoint(parser, opened).path == bundle.resolve() / "models" / "other.pt"


def test_a_named_checkpoint_that_is_missing_is_refused(tmp_path: Path) -> None:
    from pipelines.bundles.weights import resolve_checkpoint
    from tests.helpers import edit_json, write_threshold_bundle

    bundle = write_threshold_bundle(tmp_path / "b")

    def name_missing(config: dict[str, Any]) -> None:
        config["handlers"][0]["load_path"] = "$@bundle_root + '/models/model_lowres.pt'"

    edit_json(bundle / "configs" / "inference.json", name_missing)
    opened = load_bundle(bundle)
    with pytest.raises(MissingWeightsError, match=r"model_lowres.pt: bundle zoo_threshold's inference config names"):
        resolve_checkpoint(parse_config(opened), opened)
    with pytest.raises(MissingWeightsError, match=r"config id 'handlers#0#load_path'.*--override"):
        resolve_checkpoint(parse_config(opened), opened)


def test_torchscript_only_bundle_runs_and_records_the_ts_file(tmp_path: Path) -> None:
    from tests.helpers import write_threshold_bundle

    bundle = write_threshold_bundle(tmp_path / "zoo_threshold")
    conv = torch.nn.Conv3d(1, 2, 1)
    conv.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    torch.jit.save(torch.jit.script(conv), bundle / "models" / "model.ts")
    (bundle / "models" / "model.pt").unlink()
    from tests.helpers import trust_test_bundle

    trust_test_bundle(bundle)  # model.ts is a program: part of the trusted content
    run = _segment_threshold(bundle, tmp_path, "--precision", "auto")
    record = run["bundle"]["weights"]
    assert record["file"] == "models/model.ts" and record["format"] == "torchscript"
    assert record["sha256"] == hashlib.sha256((bundle / "models" / "model.ts").read_bytes()).hexdigest()
    assert "TorchScript export" in record["note"] and run["precision"] == "fp32"
