"""metadata.json: the network's input spec (spatial shape expressions), labels from channel_def."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.bundles.metadata import InputSpec, channel_labels, input_spec, spatial_shape


@pytest.mark.parametrize(
    ("spec", "kwargs", "expected"),
    [
        ([96, 96, 96], {}, (96, 96, 96)),
        (["16*n", "16*n", "16*n"], {}, (16, 16, 16)),
        (["16*n", "16 * n", 8], {"n": 3}, (48, 48, 8)),
        (["2**p", "32*2**p"], {"p": 3}, (8, 256)),
        (["*", "*", 4], {"any_size": 7}, (7, 7, 4)),
        (["(n+1)*8", "64//n"], {"n": 2}, (24, 32)),
        ([" 32 "], {}, (32,)),
    ],
)
def test_spatial_shape(spec: list[Any], kwargs: dict[str, int], expected: tuple[int, ...]) -> None:
    assert spatial_shape(spec, **kwargs) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (["16*k"], r"spatial_shape entry '16\*k': expected an int, '\*' or an expression of ints, n and p"),
        (["__import__('os').getcwd()"], r"expected an int, '\*' or an expression"),
        (["n.real"], r"expected an int, '\*' or an expression"),
        (["2**100"], r"spatial_shape entry '2\*\*100': exponent 100 outside 0..32"),
        (["8//0"], "division by zero"),
        (["16*"], r"spatial_shape entry '16\*': not an expression"),
        (["n-1"], r"spatial_shape entry 'n-1': gives size 0, expected 1 or more"),
        ([1.5], r"spatial_shape entry 1.5: expected an int or a string"),
        ([True], r"spatial_shape entry True: expected an int or a string"),
        ("96", r"spatial_shape '96': expected a list of sizes"),
    ],
)
def test_spatial_shape_refuses(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spatial_shape(spec)


def _meta(image: dict[str, Any] | None = None, channel_def: dict[str, str] | None = None) -> dict[str, Any]:
    outputs = {"pred": {"channel_def": channel_def}} if channel_def is not None else {}
    return {"network_data_format": {"inputs": {"image": image} if image is not None else {}, "outputs": outputs}}


def test_input_spec() -> None:
    meta = _meta({"num_channels": 4, "spatial_shape": ["16*n", "16*n", 8], "modality": "MR"})
    assert input_spec(meta, "m.json") == InputSpec(channels=4, spatial_shape=(16, 16, 8), modality="MR")
    assert input_spec(_meta({"num_channels": 1, "spatial_shape": [8, 8]}), "m.json").modality == ""


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({}, r"m.json: missing key 'network_data_format#inputs#image'"),
        (_meta({"spatial_shape": [8, 8]}), r"m.json: key 'network_data_format#inputs#image#num_channels': expected"),
        (_meta({"num_channels": 0, "spatial_shape": [8]}), "expected an int >= 1, got 0"),
        (_meta({"num_channels": 1}), r"m.json: missing key 'network_data_format#inputs#image#spatial_shape'"),
        (
            _meta({"num_channels": 1, "spatial_shape": ["8*q"]}),
            r"m.json: key 'network_data_format#inputs#image#spatial_shape': spatial_shape entry '8\*q'",
        ),
    ],
)
def test_input_spec_errors_name_file_and_key(meta: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        input_spec(meta, "m.json")


def test_channel_labels() -> None:
    assert channel_labels(_meta(channel_def={"0": "background", "2": "liver"}), "m.json") == {
        0: "background",
        2: "liver",
    }
    assert channel_labels({}, "m.json") == {}
    with pytest.raises(ValueError, match=r"m.json: channel_def key 'one' is not an integer label id"):
        channel_labels(_meta(channel_def={"one": "liver"}), "m.json")
