"""Weights: read once, hashed from the bytes loaded, plain or nested checkpoints, errors that say what to do."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

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
